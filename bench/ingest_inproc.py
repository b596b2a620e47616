"""Ingest alone, in-process: `Ingestor.ingest` on a fresh SQLite store, no MQTT.

    PYTHONPATH=TREE .venv/bin/python -m bench.ingest_inproc [LABEL]

30,000 `stats` records of 5 agents, one or 20 records per message, 500 messages per
commit (what the collector's group commit gives under load); prints the best of 3 of
CPU µs per record and records/s. For comparing two trees of the code back to back
(bench/README.md, "After per-agent chains"): the MQTT end of bench.ingest is the same
for both and only adds noise.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time

from wanwitness.collector.agents import add_agent
from wanwitness.collector.ingest import Ingestor, Message
from wanwitness.store import open_store


def run(per_msg: int, n: int = 30_000, group: int = 500, agents: int = 5) -> tuple[float, float]:
    """(CPU µs per record, records per second) of one run."""
    with tempfile.TemporaryDirectory() as d:
        st = open_store(f"sqlite:///{d}/w.db")
        for a in range(agents):
            add_agent(st, f"a{a}")
        ing = Ingestor(st)
        seqs = [0] * agents
        msgs = []
        for i in range(n // per_msg):
            a = i % agents
            recs = []
            for _ in range(per_msg):
                seqs[a] += 1
                recs.append({"seq": seqs[a], "t": seqs[a] * 100, "utc": None, "k": "stats", "x": "y" * 40})
            msgs.append(Message(f"wanwitness/a{a}/rec", json.dumps(
                {"v": 1, "agent": f"a{a}", "boot": 1, "recs": recs}).encode(), 1000 + i))
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for i in range(0, len(msgs), group):
            ing.ingest(msgs[i:i + group])
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        st.dispose()
    return cpu / n * 1e6, n / wall


def main() -> None:
    label = sys.argv[1] if len(sys.argv) > 1 else "ingest"
    for per in (1, 20):
        cpu, rate = min(run(per) for _ in range(3))
        print(f"{label} per_msg={per}: {cpu:.1f} us CPU/rec, {rate:,.0f} rec/s")


if __name__ == "__main__":
    main()
