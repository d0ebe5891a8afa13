# Everything a fresh machine needs, from Python 3.11+ and make alone.
#   make demo   - create .venv, install, run the simulated line with the daemon
#   make test   - create .venv, install, run the test suite
#   make lint   - ruff (lint + format check) and mypy --strict
#   make bench  - the benchmarks: figures + benchmarks/results/<date>-<commit>.json
#                 (BENCH_ARGS="--only line", "--quick", ...; see BENCHMARKS.md)
#   make bench-report - BENCHMARKS.md's tables from the latest results files
#   make faults - the fault-injection suite, long (FAULT_SCALE=30: faults last minutes)
#   make fuzz   - the fuzz tests at length (docs/fuzzing.md); make fuzz-atheris for atheris

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint bench bench-report faults fuzz fuzz-atheris clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/sorterd demo $(DEMO_ARGS)

# Most of the suite's time is real processes waiting on real time (a line at 20,000 items/h,
# a broker down for seconds): three workers on two cores, then the tests marked `alone` (a
# real browser held to 2 s) with the machine to themselves. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 3
# (Exit 5 is "no test selected": PYTEST_ARGS may name files of one part only.)
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m "not alone" $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(BIN)/python -m pytest -m alone $(PYTEST_ARGS) || [ $$? -eq 5 ]

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

bench-report: $(STAMP)
	$(BIN)/python -m benchmarks.report $(REPORT_ARGS)

FAULT_SCALE ?= 30
faults: $(STAMP)
	SORTERD_FAULT_SCALE=$(FAULT_SCALE) $(BIN)/python -m pytest tests/faults -p no:randomly $(PYTEST_ARGS)

FUZZ_EXAMPLES ?= 100000
FUZZ_SECONDS ?= 120

fuzz: $(STAMP)
	SORTERD_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest tests/fuzz --timeout=0 $(PYTEST_ARGS)

fuzz-atheris: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[fuzz]"
	fuzz/run_all.sh $(FUZZ_SECONDS) $(BIN)/python

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .fuzz-corpus
