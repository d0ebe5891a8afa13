import time, json
from benchmarks.feeds_index import _warm, _messages, DESTINATIONS
from sorter.feeds import LiveManifest, parse_preadvice, parse_customs
import sorter.feeds as F
_warm()
msgs=[r for r,c in _messages(200_000, 5_000_000)]
def run():
    live = LiveManifest(None, DESTINATIONS)
    t=time.perf_counter(); batches=[parse_preadvice(m) for m in msgs]; t1=time.perf_counter()
    for b in batches: live.apply(b,0)
    t2=time.perf_counter()
    t3=time.perf_counter(); [json.loads(m) for m in msgs]; t4=time.perf_counter()
    return (t1-t)/200_000*1e6, (t2-t1)/200_000*1e6, (t4-t3)/200_000*1e6
for _ in range(3): print("parse %.2f us/row  apply %.2f us/row  (json.loads alone %.2f)" % run())
