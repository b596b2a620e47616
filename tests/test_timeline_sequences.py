"""Every order of LED change, probe round and retraction for two LEDs, through the real
detector and the real timeline: no zero-length outage anywhere, no overlap, evidence
that exists and says what it should.

tests/mpy/detector_sequences.py runs the agent's Detector on MicroPython over every
sequence of up to 5 or 6 events (the internet and power LEDs going dark and coming
back, good / isp-failed / gateway-failed probe rounds, and the board's Wi-Fi link when
the detector has `link()`), for a few debounce settings and LED timings, and prints the
state records of each sequence; the retractions are the detector's own. Each distinct
record list, and each prefix of it (a batch delivered in part), becomes one agent in
one store, ingested as the agent sends it. Then every agent's timeline is checked, as
the ledger view (`derive`), with the agent heard from and silent, with the retracted
outages listed, in `wanwitness outages --json`, and in a claim whose evidence bundle
must verify.
"""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from testing.mpy import ROOT, micropython, mpy_path
from testing.records import T0, rec_message
from tests.test_claims_build import write_config
from tests.test_claims_bundle import verify
from wanwitness import config as cfg
from wanwitness import store as s
from wanwitness.claims import build as b
from wanwitness.claims.bundle import write_bundle
from wanwitness.claims.model import Item, RuleResult, money
from wanwitness.collector import protocol
from wanwitness.collector import timeline as tl
from wanwitness.collector.agents import add_agent
from wanwitness.collector.ingest import Ingestor
from wanwitness.store import open_store

DRIVER = ROOT / "tests" / "mpy" / "detector_sequences.py"
# (events at most, down_rounds, up_rounds, LED ms after the newest round began): quick
# debounce and the default-like one; an LED change between rounds, at a round's own ms,
# and one reported late (dated before the round just processed). Longer runs pass too
# but take 75 s (6 events with quick debounce, 7 more once: 370k sequences, 2,887
# timelines, tried 2026-12-02).
VARIANTS = [(5, 1, 1, 500), (5, 1, 1, 0), (5, 1, 1, -500),
            (6, 2, 2, 500), (6, 2, 2, 0), (6, 2, 2, -500)]
DAY = 24 * 3_600_000
HB_S = 30
BOOT = 7


@dataclass(frozen=True)
class Case:
    agent: str
    origin: str                            # the variant and events that made it
    recs: tuple[tuple[int, dict[str, Any]], ...]   # (t written, state record body)


def sequences_tried(max_len: int, link: bool) -> int:
    """How many event sequences the driver's rules allow, counted here independently."""
    def count(n: int, wan: bool, power: bool, link_down: bool) -> int:
        if n == 0:
            return 0
        total = 2 + count(n - 1, not wan, power, link_down) + count(n - 1, wan, not power, link_down)
        if link:
            total += 1 + count(n - 1, wan, power, not link_down)
        if not link_down:
            total += 3 + 3 * count(n - 1, wan, power, link_down)
        return total
    return count(max_len, False, False, False)


def timeline_key(recs) -> str:
    """What the timeline makes of a record list: the classes, retractions and the order
    of the times (`t`, `at`) as ranks; record lists with one key give one timeline, shifted."""
    rank = {v: i for i, v in enumerate(sorted({x for t, r in recs for x in (t, r["at"])}))}
    return json.dumps([[rank[t], r["s"], rank[r["at"]], r.get("retract", False)] for t, r in recs])


@pytest.fixture(scope="module")
def generated():
    """The detector's record lists, one per timeline key, with every prefix (a batch
    delivered in part); and the driver's last line per variant."""
    env = dict(os.environ, MICROPYPATH=mpy_path())  # compiles the agent, once
    procs = [subprocess.Popen([micropython(), "-X", "heapsize=64M", str(DRIVER), *map(str, v)],
                              cwd=DRIVER.parent, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for v in VARIANTS]
    outputs = []
    try:
        for v, proc in zip(VARIANTS, procs):  # all running at once, read in turn
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, f"{DRIVER.name} {v}: {err or out[-2000:]}"
            outputs.append(out)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    cases: dict[str, Case] = {}
    summaries = []
    for v, out in zip(VARIANTS, outputs):
        lines = [json.loads(line) for line in out.splitlines()]
        summaries.append((v[0], lines[-1]))
        for line in lines[:-1]:
            recs = [(t, r) for t, r in line["recs"]]
            for n in range(1, len(recs) + 1):
                k = timeline_key(recs[:n])
                if k not in cases:
                    origin = f"down={v[1]} up={v[2]} led{v[3]:+d}ms {line['seq']}"
                    if n < len(recs):
                        origin += f" (first {n} of {len(recs)} records)"
                    cases[k] = Case(f"s{len(cases):05d}", origin, tuple(recs[:n]))
    return list(cases.values()), summaries


@pytest.fixture(scope="module")
def filled(generated, tmp_path_factory):
    """One SQLite store, one agent per record list, each ingested in one batch."""
    cases, _ = generated
    url = f"sqlite:///{tmp_path_factory.mktemp('seq') / 'wanwitness.db'}"
    store = open_store(url)
    add_agent(store, cases[0].agent, hb_s=HB_S)
    with store.engine.begin() as conn:
        pw = conn.execute(sa.select(s.agents.c.password_hash)).scalar_one()
        conn.execute(s.agents.insert(), [
            {"id": c.agent, "password_hash": pw, "enabled": True, "hb_s": HB_S,
             "created_ms": T0, "ack_seq": 0} for c in cases[1:]])
    messages = []
    for c in cases:
        recs = [{"seq": 1, "t": 0, "utc": None, "k": "boot", "reset": "PWRON_RESET"}]
        recs += [{"seq": i + 2, "t": t, "utc": None, **body} for i, (t, body) in enumerate(c.recs)]
        last = c.recs[-1][0]
        # An exact clock, no delay: agent t = UTC - T0.
        messages.append(rec_message(c.agent, BOOT, recs, T0 + last, sent_t=last))
    result = Ingestor(store).ingest(messages)
    assert result.quarantined == 0, result.reasons[:3]
    yield store, url, {c.agent: c for c in cases}
    store.dispose()


def test_the_driver_tried_every_order(generated):
    cases, summaries = generated
    for max_len, summary in summaries:
        assert summary["done"] == sequences_tried(max_len, summary["link"])
    kinds = {"retract": 0, "restore": 0, "same_instant_switch": 0, "confirmed": 0}
    for c in cases:
        recs = [r for _, r in c.recs]
        for prev, r in zip(recs, recs[1:]):
            if r.get("retract"):
                kinds["retract"] += 1
                kinds["restore"] += r["s"] in protocol.OUTAGE_STATES
            elif r["s"] != prev["s"] and r["at"] == prev["at"] and prev["s"] != "up":
                kinds["same_instant_switch"] += 1
            if r.get("ev", {}).get("confirmed"):
                kinds["confirmed"] += 1
    # The sequences reach what this file is about (the figures for the report).
    tried = sum(summary["done"] for _, summary in summaries)
    print(f"{tried} sequences, {len(cases)} timelines (records after: {kinds})")
    assert all(kinds.values()), kinds


def utc_of(t: int) -> int:
    return T0 + t


def check_timeline(case: Case, outs: list[tl.Outage], *, ongoing_ok: bool) -> None:
    """The invariants of one agent's outages (no unknown spans: one boot, heard or not)."""
    where = f"{case.agent} ({case.origin})"
    by_seq = {i + 2: body for i, (_, body) in enumerate(case.recs)}
    made = {i + 2: t for i, (t, _) in enumerate(case.recs)}
    prev_end = None
    for o in outs:
        ev = o.evidence
        what = f"{where}: {o.cls} {o.start_ms - T0}..{None if o.end_ms is None else o.end_ms - T0}"
        if ev.get("retracted"):
            assert o.end_ms is not None and o.end_ms >= o.start_ms, what
            assert o.end_ms == utc_of(made[ev["close_seq"]]), what
            assert by_seq[ev["close_seq"]].get("retract") is True, what
            continue
        assert o.cls in protocol.OUTAGE_STATES, what
        assert o.end_ms is None or o.end_ms > o.start_ms, f"zero length: {what}"
        assert o.end_ms is not None or ongoing_ok, what
        assert prev_end is None or o.start_ms >= prev_end, f"overlap: {what}"
        assert o.end_ms is not None or o is [x for x in outs if not x.evidence.get("retracted")][-1], \
            f"ongoing, not last: {what}"
        prev_end = o.end_ms
        # The opening record is a state record of this class, at this start.
        opener = by_seq[ev["open_seq"]]
        assert opener["s"] == o.cls and ev["boot"] == BOOT, what
        assert utc_of(opener["at"]) == o.start_ms, what
        conts = ev.get("cont_seqs", [])
        assert conts == sorted(conts) and all(q > ev["open_seq"] for q in conts), what
        for q in conts:
            assert by_seq[q]["s"] == o.cls, f"{what}: cont seq {q} says {by_seq[q]['s']}"
        if ev["close_seq"] is not None:
            closer = by_seq[ev["close_seq"]]
            assert ev["close_seq"] > max([ev["open_seq"], *conts]), what
            assert closer["s"] != o.cls and not closer.get("retract"), what
            assert utc_of(closer["at"]) == o.end_ms, what
        elif o.end_ms is not None:
            # Ended where the agent fell silent: its newest record's t.
            assert ev["end"] == tl.END_SILENT and o.end_ms == utc_of(case.recs[-1][0]), what
        for w in ev.get("withdrawn", []):
            assert by_seq[w["open_seq"]]["s"] == w["class"], what
            assert by_seq[w["retract_seq"]]["s"] == o.cls, what
            assert by_seq[w["retract_seq"]].get("retract") is True, what
            assert w["retract_seq"] in conts, what
    # No two outages share a start: it is their id in a claim.
    listed = [o for o in outs if not o.evidence.get("retracted")]
    assert len({o.start_ms for o in listed}) == len(listed), where
    # One outage is never cut in two at an instant (a switch taken back, an up of no length).
    for one, two in zip(listed, listed[1:]):
        assert not (one.cls == two.cls and one.end_ms == two.start_ms), \
            f"{where}: {one.cls} cut in two at {two.start_ms - T0}"


def test_every_sequence_gives_a_sound_timeline(filled):
    store, _, cases = filled
    with store.engine.connect() as conn:
        for name, case in cases.items():
            # Heard from: the withdrawn outages listed too, and checked as such.
            listed = tl._derive(conn, name, utc_of(case.recs[-1][0]) + 1_000, True)
            check_timeline(case, listed, ongoing_ok=True)
            heard = [o for o in listed if not o.evidence.get("retracted")]
            # The line is down exactly when the newest record left it in an outage
            # class, and in that class.
            final = case.recs[-1][1]["s"]
            ongoing = [o.cls for o in heard if o.end_ms is None]
            assert ongoing == ([final] if final in protocol.OUTAGE_STATES else []), case.origin
            # Silent for a day: what was open ends where the agent fell silent, and an
            # unknown span follows.
            silent = tl._derive(conn, name, T0 + DAY, False)
            *closed, unknown = silent
            assert (unknown.cls, unknown.end_ms) == (tl.UNKNOWN, None), case.origin
            assert unknown.start_ms == utc_of(case.recs[-1][0]), case.origin
            check_timeline(case, closed, ongoing_ok=False)


def test_outages_json_lists_no_zero_length_item(filled, ww):
    store, url, cases = filled
    proc = ww("outages", "--db", url, "--json")
    assert proc.returncode == 0, proc.stderr
    items = json.loads(proc.stdout)
    assert items, "no outage at all"
    zero = [o for o in items if o["end"] == o["start"]]
    assert zero == []
    ids = [(o["agent"], o["start"]) for o in items]
    assert len(set(ids)) == len(ids)
    # the same outages as the timeline's own view (the agents are silent by now)
    with store.engine.connect() as conn:
        derived = sum(len(tl._derive(conn, name, tl.s.now_ms(), False)) for name in cases)
    assert len(items) == derived


class ClaimAll:
    """A rule pack claiming every second of every claimable outage."""
    name = "claim-all"

    def describe(self, options=None):
        return {"name": self.name, "title": "Everything", "country": None,
                "source": "tests/test_timeline_sequences.py", "source_url": None,
                "clock_start": "outage", "grace": "none", "unit": "second", "options": {}}

    def parse_options(self, raw):
        return {}

    def compute(self, outages, tickets, tariff, period, options):
        counted, items = {}, []
        for o in outages:
            if o.cls in ("local_down", "unknown") or o.end is None:
                continue
            secs = (min(o.end, period.end) - max(o.start, period.start)).total_seconds()
            if secs > 0:
                counted[o.id] = secs
                items.append(Item("downtime", money(tariff.monthly_fee / 1000), {"seconds": secs},
                                  [o.id], [], self.name))
        return RuleResult(items, counted_s=counted)


def test_the_claim_has_no_zero_length_outage_and_its_evidence_verifies(filled, tmp_path):
    store, _, _ = filled
    conf = cfg.load(write_config(tmp_path / "config.toml"), env={})
    inputs = b.from_store(store, conf, "2026-11", now=datetime(2026, 12, 15, tzinfo=UTC))
    claim = b.build(inputs, ClaimAll(), {})
    assert claim["outages"]
    assert [o["id"] for o in claim["outages"] if o["end"] == o["start"]] == []
    assert all(o["duration_s"] > 0 for o in claim["outages"])
    ids = [o["id"] for o in claim["outages"]]
    assert len(set(ids)) == len(ids)
    claimed = [o for o in claim["outages"] if o["claimed"]]
    assert claimed and all(o["records"][0]["role"] == "open" for o in claimed)
    # among them outages restored by a retraction, citing it as a record of their own
    restored = [o for o in claimed if o["evidence"].get("withdrawn")]
    assert restored and all(o["evidence"]["withdrawn"][-1]["retract_seq"] in
                            [r["seq"] for r in o["records"] if r["role"] == "cont"] for o in restored)
    write_bundle(tmp_path / "evidence.zip", store, claim, inputs)
    with zipfile.ZipFile(tmp_path / "evidence.zip") as zf:
        zf.extractall(tmp_path / "bundle")
    proc = verify(tmp_path / "bundle")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"behind {len(claimed)} claimed outage(s) are in the chain" in proc.stdout
