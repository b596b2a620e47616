# How soon the detector calls `degraded` at the onset of 80 % loss, over many onsets:
# the lab's probe pattern (rounds of three anchors every 2 s, three watches between
# them), each probe lost at random. Prints one JSON line: per onset the lossy rounds
# until the call and whether an isp_down came first (withdrawn as degraded, HINDSIGHT).
# Run by bench/degraded_onsets.py: micropython degraded_onsets.py FIRST_SEED COUNT
import json
import sys

from dethelp import onset

first = int(sys.argv[1]) if len(sys.argv) > 1 else 1
count = int(sys.argv[2]) if len(sys.argv) > 2 else 400
rows = []
for seed in range(first, first + count):
    n, r = onset(seed)
    rows.append([n, "isp_down" in [x["s"] for x in r.recs],
                 any(x["s"] == "degraded" for x in r.recs)])
print(json.dumps({"first_seed": first, "onsets": rows}))
