#!/usr/bin/env bash
# Run every atheris harness for SECONDS each (default 120) on a seeded corpus; print the
# executions and any crash. Usage: fuzz/run_all.sh [SECONDS] [PYTHON]
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-120}
python=${2:-python3}
corpus=.fuzz-corpus
"$python" fuzz/seeds.py "$corpus"
mkdir -p "$corpus/crashes"
status=0
for name in telegram manifest config commands; do
    log="$corpus/$name.log"
    "$python" "fuzz/fuzz_$name.py" -max_total_time="$seconds" -rss_limit_mb=4096 \
        -timeout=10 -artifact_prefix="$corpus/crashes/$name-" "$corpus/$name" >"$log" 2>&1
    rc=$?
    runs=$(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1)
    echo "$name: ${runs:-no summary} (exit $rc)"
    if [ $rc -ne 0 ]; then
        status=1
        grep -E "Uncaught Python exception|Error|Assertion" "$log" | head -5
    fi
done
exit $status
