"""What one bad message costs a group commit: time to ingest 1000 one-record batches
with and without a message the store refuses among them (SQLite in a temp dir).

    .venv/bin/python -m bench.ingest_isolation [--messages N] [--repeat K]

The bad message is a real store error on one agent (its seq already stored above what
its agents row says: the records' primary key refuses it). Ingest bisects the group with
savepoints inside the one transaction (collector/ingest.py); before, the collector
re-committed such a group message by message.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from wanwitness import store as s
from wanwitness.collector.agents import add_agent
from wanwitness.collector.ingest import Ingestor, Message
from wanwitness.store import open_store


def _batch(seq: int, agent: str) -> bytes:
    return json.dumps({"v": 1, "agent": agent, "boot": 1, "recs": [
        {"seq": seq, "t": seq, "utc": None, "k": "stats"}]}).encode()


def run(n: int, bad: bool, workdir: Path) -> tuple[float, int, int]:
    st = open_store(f"sqlite:///{workdir / ('bad.db' if bad else 'good.db')}")
    add_agent(st, "a1")
    add_agent(st, "b2")
    ing = Ingestor(st)
    ing.ingest([Message("wanwitness/b2/rec", _batch(3, "b2"), 1)])
    with st.engine.begin() as c:
        c.execute(s.agents.update().where(s.agents.c.id == "b2").values(max_seq=0))
    msgs = [Message("wanwitness/a1/rec", _batch(i, "a1"), 10 + i) for i in range(1, n + 1)]
    if bad:
        msgs.insert(n // 2, Message("wanwitness/b2/rec", _batch(3, "b2"), 5))
    t0 = time.perf_counter()
    result = ing.ingest(msgs)
    elapsed = time.perf_counter() - t0
    st.dispose()
    return elapsed, result.stored, result.quarantined


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # the quarantine's own log lines
    for bad in (False, True):
        times = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as d:
                elapsed, stored, quarantined = run(args.messages, bad, Path(d))
            times.append(elapsed)
        print(f"{args.messages} messages {'+ 1 bad' if bad else 'all good'}: "
              f"best {min(times) * 1000:.0f} ms of {args.repeat} (stored {stored}, "
              f"quarantined {quarantined}, one commit)")


if __name__ == "__main__":
    main()
