# Encode every valid protocol vector the way the agent does (outbox framing, then
# app.encode_batch) and print the batches for tests/test_agent_encoder.py to check
# against wanwitness.collector.protocol. Usage: micropython encode_vectors.py VECTOR_DIR WORK_DIR
import json
import os
import sys

import app
from outbox import Outbox

vdir, work = sys.argv[1], sys.argv[2]
for name in sorted(os.listdir(vdir)):
    if not name.endswith(".json"):
        continue
    with open(vdir + "/" + name) as f:
        vec = json.load(f)
    batch = vec["payload"]
    d = work + "/" + name[:-5]
    os.mkdir(d)
    os.chdir(d)
    ob = Outbox("ob")
    ob.open()
    ob.last_seq = batch["recs"][0]["seq"] - 1  # start where the vector's seqs start
    ob.ob = batch.get("ob", "")                # the vector's outbox id (a fresh one is random)
    for rec in batch["recs"]:
        rec = dict(rec)
        rec.pop("seq")
        ob.append(rec)
    recs = ob.pending(100000)
    t = batch.get("t", max(r["t"] for r in batch["recs"]))
    out = app.encode_batch(batch["agent"], batch["boot"], t, recs, ob.ob)
    print("BATCH", name, out.hex() if hasattr(out, "hex") else "".join("%02x" % b for b in out))
    ob.deinit()
    os.chdir(work)
print("done")
