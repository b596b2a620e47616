"""One agent's month of outages in a year of 1,000 agents: what a query costs.

Builds a store with a year of history for --agents agents (default 1,000): a boot a
week, a clock point an hour (8,760 an agent), ~3 outages a week of every class, seconds
to 2 hours long, one in ten withdrawn by a retraction. The rows are written in bulk,
as ingest writes them (records with their agent's hash chain, boots, clock points,
agents' chain heads), not through ingest: that would take hours. Then, for one agent:

- `full derivation`: `timeline.derive` of the agent, what every query cost before the
  outages were materialised (issue 18 item 3);
- `first query`: `timeline.query(agent, month)` on a store whose materialised state
  for the agent is not made yet (after migration 12 it is; this is the cost of making
  it, once);
- `warm`: the same query again, nothing new;
- `after new records`: a message (a state record, alternately an outage opening and
  ending, and its clock point) ingested through the real Ingestor before each query.

Median and p99 over --runs runs, SQLite and PostgreSQL. Wall-clock times on whatever
machine it runs on: figures, never assertions.

    .venv/bin/python -m bench.outage_query [--agents 1000] [--runs 200]
        [--backends sqlite,postgresql] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from testing.records import rec_message
from wanwitness import store as s
from wanwitness.collector import ledger, protocol
from wanwitness.collector import timeline as tl
from wanwitness.collector.ingest import Ingestor
from wanwitness.store import open_store

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
YEAR0 = 1_767_225_600_000          # 2026-01-01T00:00:00Z
SEC, MIN, HOUR, DAY = 1000, 60_000, 3_600_000, 86_400_000
WEEK = 7 * DAY
CLASSES = ("isp_down", "dns_down", "degraded", "local_down")


def agent_rows(agent: str, rng: random.Random, pos: list[int]) -> dict[str, list[Any]]:
    """One agent's year: rows of records, boots, clock points, and its agents row."""
    recs: list[tuple[Any, ...]] = []
    boots: list[tuple[Any, ...]] = []
    points: list[tuple[Any, ...]] = []
    seq, prev, link = 0, ledger.GENESIS, 0

    def record(boot: int, t: int, recv: int, body: dict[str, Any]) -> None:
        nonlocal seq, prev, link
        seq += 1
        rec = {"seq": seq, "t": t, "utc": None, **body}
        text = protocol.canonical(rec).decode()
        prev = ledger.link(prev, agent, boot, text, recv)
        link += 1
        pos[0] += 1
        recs.append((agent, seq, boot, t, None, body["k"], text, recv, pos[0], link, prev.hex()))

    for b in range(52):
        boot = b + 1
        start = YEAR0 + b * WEEK + rng.randint(0, 5 * MIN)
        end = YEAR0 + (b + 1) * WEEK - rng.randint(SEC, 20 * SEC)
        ppm = rng.uniform(-40, 40)

        def t_of(utc: int) -> int:
            return round((utc - start) * (1 + ppm / 1e6))  # noqa: B023 (this boot's)

        first_seq = seq + 1
        record(boot, 0, start + 200, {"k": "boot", "reset": "power_on", "safe": False})
        at = start + rng.randint(HOUR, 2 * DAY)
        while at < end - 3 * HOUR:
            length = rng.choice([10 * SEC, 2 * MIN, 15 * MIN, HOUR, 2 * HOUR])
            seen = at + rng.randint(0, 20 * SEC)
            record(boot, t_of(seen), seen + 300, {
                "k": "state", "s": rng.choice(CLASSES), "at": t_of(at), "bound": t_of(at) - 2_500,
                "ev": {"anchors": {"ok": 0, "of": 3}}})
            back = at + length
            retract = rng.random() < 0.1
            body: dict[str, Any] = {"k": "state", "s": "up", "at": t_of(back), "bound": None,
                                    "ev": {"anchors": {"ok": 3, "of": 3}}}
            if retract:
                body["retract"] = True
            record(boot, t_of(back + 5 * SEC), back + 5 * SEC + 300, body)
            at += rng.randint(DAY, 3 * DAY)
        for utc in range(start, end, HOUR):
            points.append((agent, boot, t_of(utc), utc + rng.randint(5, 400)))
        points.append((agent, boot, t_of(end), end + 50))
        boots.append((agent, boot, start + 200, end + 50, t_of(end), first_seq, "power_on"))
    last_recv = boots[-1][3]
    return {"records": recs, "boots": boots, "points": points,
            "agent": [(agent, "x", True, 30, YEAR0, seq, last_recv, seq, link, prev.hex())]}


COLUMNS = {
    "records": "agent, seq, boot, t, utc, k, body, recv_ms, pos, link, hash",
    "boots": "agent, boot, first_recv_ms, last_recv_ms, last_t, first_seq, reset",
    "clock_points": "agent, boot, t, recv_ms",
    "agents": "id, password_hash, enabled, hb_s, created_ms, ack_seq, last_recv_ms, max_seq, "
              "chain_n, chain_hash",
}


def fill(store: s.Store, agents: int, seed: int) -> dict[str, int]:
    """Write the year in bulk through the driver (COPY on PostgreSQL)."""
    rng = random.Random(seed)
    pos = [0]
    counts = dict.fromkeys(COLUMNS, 0)
    raw = store.engine.raw_connection()
    try:
        drv: Any = raw.driver_connection
        if store.dialect == "sqlite":
            # The store's connections commit each statement (connect.py): one transaction
            # per 100 agents here, and no fsync while filling.
            drv.execute("PRAGMA synchronous=OFF")
            drv.execute("BEGIN")
        for i in range(agents):
            rows = agent_rows(f"agent{i:04d}", rng, pos)
            for table, key in (("agents", "agent"), ("records", "records"), ("boots", "boots"),
                               ("clock_points", "points")):
                data = rows[key]
                counts[table] += len(data)
                if store.dialect == "postgresql":
                    with drv.cursor() as cur, cur.copy(
                            f"COPY {table} ({COLUMNS[table]}) FROM STDIN") as cp:
                        for r in data:
                            cp.write_row(r)
                else:
                    marks = ", ".join("?" * len(COLUMNS[table].split(",")))
                    drv.executemany(f"INSERT INTO {table} ({COLUMNS[table]}) VALUES ({marks})", data)
            if i % 100 == 99:
                drv.commit()
                if store.dialect == "sqlite":
                    drv.execute("BEGIN")
        drv.commit()
        if store.dialect == "sqlite":
            drv.execute("PRAGMA synchronous=FULL")
    finally:
        raw.close()
    with store.engine.begin() as conn:
        if store.dialect == "postgresql":
            conn.exec_driver_sql("SELECT setval('records_pos_seq', (SELECT MAX(pos) FROM records))")
            conn.exec_driver_sql("ANALYZE")
        else:
            conn.exec_driver_sql("ANALYZE")
    return counts


def stats(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {"median_ms": round(statistics.median(xs) * 1000, 2),
            "p99_ms": round(xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1000, 2), "n": len(xs)}


def measure(store: s.Store, agent: str, runs: int) -> dict[str, Any]:
    since = YEAR0 + 181 * DAY
    until = since + 30 * DAY
    now = YEAR0 + 52 * WEEK + MIN
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    full = tl.derive(store, agent, now_ms=now)
    out["full_derivation"] = stats([time.perf_counter() - t0])
    out["full_derivation_spans"] = len(full)
    t0 = time.perf_counter()
    month = tl.query(store, agent=agent, since_ms=since, until_ms=until, now_ms=now)
    out["first_query"] = stats([time.perf_counter() - t0])
    out["month_spans"] = len(month)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        tl.query(store, agent=agent, since_ms=since, until_ms=until, now_ms=now)
        times.append(time.perf_counter() - t0)
    out["warm"] = stats(times)
    # New messages for the agent: its boot goes on past the year's end.
    with store.engine.connect() as conn:
        boot, last_t, last_recv, seq = conn.execute(sa.text(
            "SELECT b.boot, b.last_t, b.last_recv_ms, a.max_seq FROM boots b JOIN agents a "
            "ON a.id = b.agent WHERE b.agent = :a ORDER BY b.boot DESC LIMIT 1"), {"a": agent}).one()
    ing = Ingestor(store)
    times = []
    ingest_times = []
    for i in range(runs):
        seq += 1
        last_t += 10 * MIN
        last_recv += 10 * MIN
        rec = {"seq": seq, "t": last_t, "utc": None, "k": "state",
               "s": "up" if i % 2 else "isp_down", "at": last_t - 2 * SEC, "bound": None, "ev": {}}
        t0 = time.perf_counter()
        res = ing.ingest([rec_message(agent, boot, [rec], last_recv + 150, sent_t=last_t)])
        ingest_times.append(time.perf_counter() - t0)
        assert res.stored == 1, res.reasons
        now = last_recv + 200
        t0 = time.perf_counter()
        tl.query(store, agent=agent, since_ms=since, until_ms=until, now_ms=now)
        times.append(time.perf_counter() - t0)
    out["after_new_records"] = stats(times)
    out["ingest_commit"] = stats(ingest_times)
    # And the whole year of that agent, warm.
    times = []
    for _ in range(max(10, runs // 10)):
        t0 = time.perf_counter()
        year = tl.query(store, agent=agent, now_ms=now)
        times.append(time.perf_counter() - t0)
    out["year_warm"] = stats(times)
    out["year_spans"] = len(year)
    return out


def run(backend: str, agents: int, runs: int, seed: int) -> dict[str, Any]:
    admin = None
    name = ""
    tmp = tempfile.TemporaryDirectory(prefix="ww-outq-")
    if backend == "postgresql":
        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        name = f"ww_outq_{uuid.uuid4().hex[:10]}"
        with admin.connect() as c:
            c.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = sa.engine.make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{Path(tmp.name) / 'wanwitness.db'}"
    store = open_store(url)
    try:
        t0 = time.perf_counter()
        counts = fill(store, agents, seed)
        built = time.perf_counter() - t0
        result = {"backend": backend, "agents": agents, "rows": counts, "fill_s": round(built, 1),
                  **measure(store, f"agent{agents // 2:04d}", runs)}
    finally:
        store.dispose()
        if admin is not None:
            with admin.connect() as c:
                c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()
        tmp.cleanup()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args()
    results = []
    for backend in args.backends.split(","):
        r = run(backend, args.agents, args.runs, args.seed)
        results.append(r)
        print(f"{backend}: {args.agents} agents, rows {r['rows']}, filled in {r['fill_s']} s")
        print(f"  one agent, full derivation (every query before): {r['full_derivation']['median_ms']} ms"
              f" ({r['full_derivation_spans']} spans)")
        print(f"  month query, first (makes the agent's state): {r['first_query']['median_ms']} ms"
              f" ({r['month_spans']} spans)")
        for key, label in (("warm", "month query, warm"),
                           ("after_new_records", "month query after a new record"),
                           ("ingest_commit", "the ingest commit of that record"),
                           ("year_warm", f"the agent's year, warm ({r['year_spans']} spans)")):
            print(f"  {label}: median {r[key]['median_ms']} ms, p99 {r[key]['p99_ms']} ms"
                  f" (n={r[key]['n']})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
