"""The materialised outages (timeline.py, issue 18) never drift from a full derivation.

Random record streams, seeded: several boots with drifting clocks, state records of
every class, retractions (also of restored outages: nested), restatements, switches and
ups at the very instant of the last change (zero-length outages), bounds, records held
in the outbox and delivered late (after a reboot, too), messages reordered within and
between commits, heartbeats with queueing delays (clock points out of order), the
heartbeat period changed, and now and then an agent whose boots interleave in seq
order (derived in full). They are ingested through the real Ingestor in random
commits; after each commit (or a few) `query` must give exactly what deriving each
agent from scratch gives: the same spans, the same evidence (key order too), the same
order, the same notes, for random windows and `now` values (heard from, silent).
"""

from __future__ import annotations

import json
import random
import threading
from typing import Any

import pytest
import sqlalchemy as sa

from testing.records import T0, hb_message, rec_message
from wanwitness import store as s
from wanwitness.collector import timeline as tl
from wanwitness.collector.agents import add_agent
from wanwitness.collector.ingest import Ingestor, Message
from wanwitness.store import open_store

SEC, MIN, HOUR = 1000, 60_000, 3_600_000
CLASSES = ("up", "isp_down", "dns_down", "degraded", "local_down")


def oracle(store: s.Store, names: list[str], now: int, since: int | None,
           until: int | None) -> tuple[list[tl.Outage], list[str]]:
    """What `query` answered before materialising: each agent derived in full, stored in
    the derivation's order, read back from JSON and sorted as query sorts."""
    notes: list[str] = []
    rows: list[tuple[tl.Outage, int]] = []
    for name in names:
        try:
            kept = tl.derive(store, name, now_ms=now, notes=notes)
        except (ArithmeticError, ValueError, KeyError, TypeError) as e:
            notes.append(f"agent {name!r}: no outages computed: {type(e).__name__}: {e}")
            kept = []
        for o in kept:
            if (until is None or o.start_ms < until) and (since is None or o.end_ms is None
                                                          or o.end_ms > since):
                rows.append((tl.Outage(o.agent, o.cls, o.start_ms, o.end_ms, o.start_uncertainty_ms,
                                       json.loads(tl._compact(o.evidence))), len(rows)))
    rows.sort(key=lambda r: (r[0].start_ms, r[0].agent, r[0].cls, r[0].end_ms is None,
                             r[0].end_ms or 0, r[1]))
    return [o for o, _ in rows], notes


def exact(outs: list[tl.Outage]) -> list[Any]:
    """Everything of each span, the evidence's key order included."""
    return [(o.agent, o.cls, o.start_ms, o.end_ms, o.start_uncertainty_ms, json.dumps(o.evidence))
            for o in outs]


class Agent:
    """One simulated agent: boots with a drifting clock, an outbox, a seq counter."""

    def __init__(self, rng: random.Random, name: str, weird: bool):
        self.rng, self.name, self.weird = rng, name, weird
        self.seq = 0
        self.boots: list[tuple[int, int, float]] = []  # (boot, utc at t=0, ppm)
        self.outbox: list[tuple[int, dict[str, Any]]] = []  # (boot, record)
        self.last_at = 0
        self.state = "up"

    def t(self, utc: int, boot: int | None = None) -> int:
        b = self.boots[-1] if boot is None else next(x for x in self.boots if x[0] == boot)
        return max(0, round((utc - b[1]) * (1 + b[2] / 1e6)))

    def reboot(self, utc: int) -> None:
        boot = (self.boots[-1][0] if self.boots else 0) + self.rng.choice([1, 1, 2, 1000])
        self.boots.append((boot, utc - self.rng.randint(0, 2000), self.rng.uniform(-150, 150)))
        self.last_at = 0
        self.state = "up"
        self.record(utc, {"k": "boot", "reset": "power_on"})

    def record(self, utc: int, fields: dict[str, Any]) -> None:
        self.seq += 1
        boot = self.boots[-1][0]
        if self.weird and len(self.boots) > 1 and self.rng.random() < 0.3:
            boot = self.rng.choice(self.boots[:-1])[0]  # a record of an older boot, a newer seq
        t = self.t(utc, boot)
        rec = {"seq": self.seq, "t": t, "utc": None, **fields}
        if rec["k"] == "state":
            rec["at"] = min(rec["at"], t)
            if rec["bound"] is not None:
                rec["bound"] = min(rec["bound"], rec["at"])
        self.outbox.append((boot, rec))

    def state_record(self, utc: int) -> None:
        rng = self.rng
        t = self.t(utc)
        roll = rng.random()
        if roll < 0.2:
            at = self.last_at                       # at the very instant of the last change
        elif roll < 0.3:
            at = max(0, self.last_at - rng.randint(1, 5 * SEC))   # reported late
        else:
            at = max(0, t - rng.randint(0, 10 * SEC))
        retract = rng.random() < 0.25
        if rng.random() < 0.2:
            s_ = self.state                         # restated
        else:
            s_ = rng.choice(CLASSES)
        bound = None if rng.random() < 0.4 else max(0, at - rng.randint(0, 30 * SEC))
        fields: dict[str, Any] = {"k": "state", "s": s_, "at": at, "bound": bound,
                                  "ev": {"n": self.seq, "x": rng.choice([1, 2.5, "a"])}}
        if retract:
            fields["retract"] = True
        self.last_at = min(at, t)
        self.state = s_
        self.record(utc, fields)

    def flush(self, utc: int) -> list[Message]:
        """The outbox as batches (one per boot run), sent at `utc`."""
        msgs: list[Message] = []
        run: list[dict[str, Any]] = []
        boot = None
        for b, rec in self.outbox + [(None, None)]:
            if run and b != boot:
                assert boot is not None
                newest = max(r["t"] for r in run)
                sent = newest + self.rng.randint(0, 3 * SEC)
                msgs.append(rec_message(self.name, boot, run, utc + self.rng.randint(0, 2 * SEC),
                                        sent_t=sent if self.rng.random() < 0.8 else None))
                run = []
            if rec is not None:
                boot = b
                run.append(rec)
        self.outbox = []
        return msgs


def stream(rng: random.Random, names: list[str], boots: tuple[int, int] = (1, 4),
           steps: tuple[int, int] = (2, 14)) -> list[tuple[int, list[Message]]]:
    """(utc, messages) in delivery order: each entry one commit; `boots` boots (least,
    most) of `steps` events an agent."""
    agents = [Agent(rng, n, weird=rng.random() < 0.15) for n in names]
    events: list[tuple[int, Message]] = []
    for a in agents:
        utc = T0 + rng.randint(0, 10 * MIN)
        for _ in range(rng.randint(*boots)):
            a.reboot(utc)
            for _ in range(rng.randint(*steps)):
                utc += rng.choice([0, SEC, 20 * SEC, 2 * MIN, 15 * MIN])
                roll = rng.random()
                if roll < 0.55:
                    a.state_record(utc)
                elif roll < 0.65:
                    a.record(utc, {"k": "probe", "tg": "gw", "ok": True})
                if roll >= 0.65 or rng.random() < 0.6:
                    for m in a.flush(utc):   # else held: delivered later
                        events.append((m.recv_ms, m))
                if rng.random() < 0.5:
                    delay = rng.choice([0, 50, 400, 3 * SEC, 90 * SEC])
                    events.append((utc + delay, hb_message(a.name, a.boots[-1][0], a.t(utc), utc + delay)))
            if rng.random() < 0.5:
                utc += rng.choice([10 * SEC, 5 * MIN, 2 * HOUR])  # down or silent between boots
            late = a.flush(utc + rng.choice([0, 30 * SEC, 3 * HOUR]))
            events.extend((m.recv_ms, m) for m in late)    # some after the next boot began
    events.sort(key=lambda e: e[0])
    for i in range(len(events) - 1):                       # some overtake each other
        if rng.random() < 0.1:
            events[i], events[i + 1] = events[i + 1], events[i]
    commits: list[tuple[int, list[Message]]] = []
    i = 0
    while i < len(events):
        n = rng.choice([1, 1, 1, 2, 3, 5])
        chunk = [m for _, m in events[i:i + n]]
        rng.shuffle(chunk)
        commits.append((max(e[0] for e in events[i:i + n]), chunk))
        i += n
    return commits


def check(store: s.Store, rng: random.Random, names: list[str], utc: int) -> None:
    now = utc + rng.choice([0, 10 * SEC, 2 * MIN, 3 * HOUR])
    window = rng.choice([(None, None), (utc - HOUR, None), (None, utc - 30 * MIN),
                         (utc - 2 * HOUR, utc - HOUR + rng.randint(0, HOUR))])
    one = rng.choice(names)
    for who, asked in ((dict(agent=one), [one]), ({}, names), (dict(agents=names[:2]), sorted(names[:2]))):
        notes: list[str] = []
        got = tl.query(store, since_ms=window[0], until_ms=window[1], now_ms=now, notes=notes, **who)
        want, want_notes = oracle(store, asked, now, *window)
        assert exact(got) == exact(want), (who, window, now)
        assert notes == want_notes


def run_stream(store: s.Store, seed: int) -> None:
    rng = random.Random(seed)
    names = ["a1", "b2", "c3"]
    for n in names:
        add_agent(store, n, hb_s=30)
    ing = Ingestor(store)
    for i, (utc, msgs) in enumerate(stream(rng, names)):
        ing.ingest(msgs)
        if rng.random() < 0.03:
            with store.engine.begin() as conn:  # the heartbeat period changed
                conn.execute(s.agents.update().where(s.agents.c.id == rng.choice(names))
                             .values(hb_s=rng.choice([10, 30, 600])))
        if rng.random() < 0.6 or i % 7 == 0:
            check(store, rng, names, utc)
    check(store, rng, names, utc)


@pytest.mark.parametrize("seed", range(40))
def test_materialised_outages_equal_a_full_derivation_sqlite(sqlite_url, seed):
    store = open_store(sqlite_url)
    try:
        run_stream(store, seed)
    finally:
        store.dispose()


@pytest.mark.parametrize("seed", range(12))
def test_materialised_outages_equal_a_full_derivation_postgresql(pg_url, seed):
    store = open_store(pg_url)
    try:
        run_stream(store, 1000 + seed)
    finally:
        store.dispose()


def test_the_streams_reach_the_cases_that_matter(sqlite_url):
    """The generator is not vacuous: its streams give every outage class, restored and
    withdrawn outages, reboots mid-outage, unknown spans and agents derived in full."""
    store = open_store(sqlite_url)
    seen: set[str] = set()
    try:
        for seed in range(40):
            with store.engine.begin() as conn:
                for table in (s.records, s.clock_points, s.boots, s.agents, s.streams,
                              s.outages, s.outage_boots, s.outage_agents, s.gaps):
                    conn.execute(table.delete())
            run_stream(store, seed)
            for o in tl.query(store, now_ms=T0 + 100 * HOUR):
                seen.add(o.cls)
                seen.update(k for k in ("withdrawn", "cont_seqs") if k in o.evidence)
                if o.evidence.get("end") == tl.END_RESTARTED:
                    seen.add("restarted")
            with store.engine.connect() as conn:
                if conn.execute(sa.select(s.outage_agents.c.agent)
                                .where(s.outage_agents.c.full.is_(True))).first():
                    seen.add("full")
    finally:
        store.dispose()
    assert seen >= {*CLASSES[1:], "unknown", "withdrawn", "cont_seqs", "restarted", "full"}


def test_an_existing_store_is_materialised_by_the_migration(db_url):
    """A store with history from before migration 12 answers as a full derivation."""
    store = open_store(db_url, migrate_schema=False)
    s.migrate(store.engine, upto=11)
    rng = random.Random(7)
    names = ["a1", "b2", "c3"]
    for n in names:
        add_agent(store, n, hb_s=30)
    ing = Ingestor(store)
    commits = stream(rng, names)
    for _, msgs in commits:
        ing.ingest(msgs)
    last = commits[-1][0]
    store.dispose()
    store = open_store(db_url)  # migration 12
    try:
        with store.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(s.outage_agents)).scalar() == 3
        for now in (last, last + 3 * HOUR):
            got = tl.query(store, now_ms=now)
            assert got and exact(got) == exact(oracle(store, names, now, None, None)[0])
    finally:
        store.dispose()


def test_two_collectors_ingesting_and_reading_at_once_agree_with_a_full_derivation(pg_url):
    """PostgreSQL, two collectors (engines): each agent's commits go to either one, and
    both read all the while; every answer is the full derivation of a state the store
    was in (the materialised state is shared and updated under the agents' locks)."""
    stores = [open_store(pg_url), open_store(pg_url)]
    rng = random.Random(5)
    names = ["a1", "b2"]
    for n in names:
        add_agent(stores[0], n, hb_s=30)
    per_agent = {n: stream(rng, [n], boots=(6, 8), steps=(20, 40)) for n in names}
    now = max(u for c in per_agent.values() for u, _ in c) + MIN
    states: dict[str, list[Any]] = {n: [exact(oracle(stores[0], [n], now, None, None)[0])]
                                    for n in names}
    done = threading.Event()
    errors: list[BaseException] = []
    answers: list[tuple[str, Any]] = []

    def ingest(name: str) -> None:
        ings = [Ingestor(st) for st in stores]
        try:
            for i, (_, msgs) in enumerate(per_agent[name]):
                ings[i % 2].ingest(msgs)
                # Only this thread writes this agent: the store is in this state now.
                states[name].append(exact(oracle(stores[i % 2], [name], now, None, None)[0]))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def read(st: s.Store) -> None:
        try:
            while not done.is_set():
                for n in names:
                    answers.append((n, exact(tl.query(st, agent=n, now_ms=now))))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    writers = [threading.Thread(target=ingest, args=(n,)) for n in names]
    readers = [threading.Thread(target=read, args=(st,)) for st in stores]
    for th in writers + readers:
        th.start()
    for th in writers:
        th.join()
    done.set()
    for th in readers:
        th.join()
    try:
        assert not errors, errors
        assert len(answers) > 10 and min(len(v) for v in states.values()) > 40
        for n, answer in answers:
            assert answer in states[n]
        for n in names:
            assert exact(tl.query(stores[1], agent=n, now_ms=now)) == states[n][-1]
    finally:
        for st in stores:
            st.dispose()
