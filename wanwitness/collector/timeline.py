"""Timeline: agent clocks mapped to UTC, and outages / unknown spans derived from them.

Time. An agent stamps records with `t`, its monotonic ms since boot; that clock
drifts (tens of ppm) against true time. Every message gives a pair (t at send, our
UTC at receipt), kept in `clock_points`. recv - t = offset + queueing delay with
delay >= 0, so the true offset line lies below every point: the lower convex hull
of (t, recv - t) is the tightest estimate that never claims a record happened after
it was received. Between hull vertices we interpolate; beyond them we extend the end
segment with its slope clamped to ±MAX_PPM, so one delayed point at an end cannot
fling extrapolated times away.

Outages. Per agent, `state` records are walked in seq order (seq only grows, also
across reboots). An outage class opens an outage at the record's `at` (the first
failed observation, retroactive); the next state record closes it at its own `at`.
`bound` (the last observation consistent with the previous state) gives the start's
uncertainty. A reboot ends an open outage at the old boot's last known time: the new
boot's detector starts fresh. An open outage in the latest boot is ongoing while the
agent is heard from; once it falls silent it ends where the agent's coverage ends, and
an ongoing unknown span begins: nothing witnessed the line after that, so no minute
there is claimed as down.

Retractions. A `retract` withdraws the open outage: it is not listed. Its `s` says
what the line was instead. When that is the outage the withdrawn one had switched from
(one record closed it and opened the withdrawn one at the same instant), that outage
is restored: it goes on from its own start, one outage with its own opening record
(the retraction joins `cont_seqs`, and `withdrawn` names what was taken back), never a
piece up to the switch and a new one after it. Otherwise `s` applies from the
retraction's `at` (`up`: nothing; another class: a new outage, e.g. `degraded` for a
mistaken `isp_down`). Retractions nest: a restored outage can itself be withdrawn, and
then the one it had switched from is restored. With `include_retracted` a withdrawn
outage is listed with `retracted: true` from its start to the retraction's `t` (as long
as the agent held it; that can be zero when it was withdrawn as it was opened).

No zero-length outages. An outage whose end is not after its start (isp_down at T and
local_down at the same T, a boot whose coverage ends at the instant an outage opened)
claimed no time: it is left out everywhere (`outages`, the claim), and it would share
its start, hence its id, with the outage that followed it. Nor is an outage cut in two
at an instant: a record opening the class of the outage that ended at that very
instant (after a zero-length outage or `up` between them) continues it, one outage
(the record joins its `cont_seqs`). Outages that lasted no time are passed over when
looking for the outage a retraction restores.

Unknown spans are periods without a witness: between two boots' coverage, or after
the last coverage when the agent has not been heard from for UNKNOWN_AFTER_HB
heartbeat periods. Unknown is neither up nor down.

Impossible values. The protocol bounds `t`, `at` and `bound` (docs/protocol.md,
"Bounds"), but a store may hold records from before it did. A span whose times fall
outside 2020..2100 or whose start uncertainty exceeds those bounds is left out with a
note naming it (`notes`), so one bad boot never hides another agent's outages.

All arithmetic is on integer ms, so SQLite and PostgreSQL give byte-identical output.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from bisect import bisect_right
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from wanwitness import store as s
from wanwitness.collector import protocol
from wanwitness.csvsafe import text
from wanwitness.errors import UserError

log = logging.getLogger(__name__)

MAX_PPM = 200          # extrapolation slope clamp; crystals are tens of ppm off
UNKNOWN_AFTER_HB = 3   # heartbeat periods without contact before time counts as unknown
UNKNOWN = "unknown"

END_RESTARTED = "agent restarted"
END_SILENT = "agent silent"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TIME_HELP = "use e.g. 2026-11-03 or 2026-11-03T09:12:00Z"


# --- clock ------------------------------------------------------------------------

def _div_round(num: int, den: int) -> int:
    """num / den rounded half up, den > 0: exact and the same on every machine."""
    return (2 * num + den) // (2 * den)


class ClockMap:
    """Maps one boot's agent ms to UTC ms from its (t, recv_ms) points."""

    def __init__(self, points: Iterable[tuple[int, int]]):
        lowest: dict[int, int] = {}
        for t, recv in points:
            off = recv - t
            # Of several points at one t only the least delayed one bounds the offset.
            if t not in lowest or off < lowest[t]:
                lowest[t] = off
        if not lowest:
            raise ValueError("a clock map needs at least one (t, recv_ms) point")
        hull: list[tuple[int, int]] = []
        for p in sorted(lowest.items()):  # monotone chain, lower half: O(n) after the sort
            while len(hull) >= 2:
                (x1, y1), (x2, y2) = hull[-2], hull[-1]
                # Drop hull[-1] unless hull[-2] -> hull[-1] -> p turns left (integer cross product).
                if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) > 0:
                    break
                hull.pop()
            hull.append(p)
        self.hull: tuple[tuple[int, int], ...] = tuple(hull)  # (t, offset) vertices
        self._ts = [p[0] for p in hull]

    def offset(self, t: int) -> int:
        """UTC - agent ms at agent time `t`."""
        hull = self.hull
        if len(hull) == 1:
            return hull[0][1]
        if t <= hull[0][0] or t >= hull[-1][0]:
            (t1, o1), (t2, o2) = (hull[0], hull[1]) if t <= hull[0][0] else (hull[-2], hull[-1])
            num, den = o2 - o1, t2 - t1
            if num * 1_000_000 > MAX_PPM * den:
                num, den = MAX_PPM, 1_000_000
            elif num * 1_000_000 < -MAX_PPM * den:
                num, den = -MAX_PPM, 1_000_000
            t0, o0 = hull[0] if t <= hull[0][0] else hull[-1]
            return o0 + _div_round(num * (t - t0), den)
        i = bisect_right(self._ts, t) - 1
        (t1, o1), (t2, o2) = hull[i], hull[i + 1]
        return o1 + _div_round((o2 - o1) * (t - t1), t2 - t1)

    def to_utc(self, t: int) -> int:
        return t + self.offset(t)


def _clock_maps(conn: sa.Connection, agent: str) -> dict[int, ClockMap]:
    CP = s.clock_points
    points: dict[int, list[tuple[int, int]]] = {}
    for boot, t, recv in conn.execute(sa.select(CP.c.boot, CP.c.t, CP.c.recv_ms)
                                      .where(CP.c.agent == agent)):
        points.setdefault(boot, []).append((t, recv))
    return {boot: ClockMap(pts) for boot, pts in points.items()}


def clock_map(store: s.Store, agent: str, boot: int) -> ClockMap:
    """The clock map of one boot; raises UserError when nothing was heard from it."""
    with store.engine.connect() as conn:
        maps = _clock_maps(conn, agent)
    if boot not in maps:
        raise UserError(f"agent {agent!r} boot {boot}: nothing received from it")
    return maps[boot]


# --- outages ----------------------------------------------------------------------

@dataclass
class Outage:
    agent: str
    cls: str                       # an outage state, or "unknown"
    start_ms: int
    end_ms: int | None             # None: ongoing
    start_uncertainty_ms: int | None
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Boot:
    boot: int
    first_recv_ms: int
    last_recv_ms: int
    last_t: int
    clock: ClockMap
    cov_start: int = 0             # UTC ms of the first and last thing heard from this boot
    cov_end: int = 0


@dataclass
class _Open:
    cls: str
    boot: int
    seq: int
    start_ms: int
    unc_ms: int | None
    ev: Any
    cont: list[int] = field(default_factory=list)
    # The outage this one's opening record switched from (closed at this one's start):
    # what a retraction restores. `item`: its listed piece once a switch closed it
    # (None: left out, it had no length).
    prev: _Open | None = None
    item: Outage | None = None
    withdrawn: list[dict[str, Any]] = field(default_factory=list)


def _load_boots(conn: sa.Connection, agent: str) -> dict[int, _Boot]:
    B, R, CP = s.boots, s.records, s.clock_points
    maps = _clock_maps(conn, agent)
    first_t: dict[int, int] = {}
    for table in (R, CP):
        for boot, t in conn.execute(sa.select(table.c.boot, sa.func.min(table.c.t))
                                    .where(table.c.agent == agent).group_by(table.c.boot)):
            first_t[boot] = min(t, first_t.get(boot, t))
    boots: dict[int, _Boot] = {}
    for row in conn.execute(sa.select(B.c.boot, B.c.first_recv_ms, B.c.last_recv_ms, B.c.last_t)
                            .where(B.c.agent == agent)):
        # Ingest writes a clock point with every boot row; should one be missing, the
        # newest t and newest receipt still bound the offset from above.
        clock = maps.get(row.boot) or ClockMap([(row.last_t, row.last_recv_ms)])
        b = _Boot(row.boot, row.first_recv_ms, row.last_recv_ms, row.last_t, clock)
        b.cov_start = clock.to_utc(min(first_t.get(row.boot, row.last_t), row.last_t))
        b.cov_end = max(b.cov_start, clock.to_utc(row.last_t))
        boots[row.boot] = b
    return boots


def _plausible(o: Outage) -> str | None:
    """Why a derived span cannot be real, or None when it can."""
    lo, hi = protocol.UTC_MIN, protocol.UTC_MAX
    for name, ms in (("start", o.start_ms), ("end", o.end_ms)):
        if ms is not None and not lo <= ms <= hi:
            return f"its {name} {ms} ms is not a time between 2020 and 2100"
    unc = o.start_uncertainty_ms
    if unc is not None and not 0 <= unc <= protocol.MAX_T:
        return f"its start uncertainty {unc} ms is over 100 years"
    return None


def _tell(notes: list[str] | None, note: str) -> None:
    # To the caller's list when it keeps one (the CLI prints them), else to the log.
    if notes is None:
        log.warning("%s", note)
    else:
        notes.append(note)


def _skip_note(o: Outage, why: str) -> str:
    ev = o.evidence
    if o.cls == UNKNOWN:
        what = f"unknown span after boot {ev.get('prev_boot')}"
    else:
        what = f"{o.cls} outage opened by record seq {ev.get('open_seq')} (boot {ev.get('boot')})"
    return (f"agent {o.agent!r}: {what} left out: {why} (the agent's records or clock points "
            "hold values beyond the protocol's bounds, stored before they were checked)")


def _switched_from(o: _Open, state: str) -> _Open | None:
    """The outage of class `state` that `o` switched from, passing over outages between
    them that lasted no time; None when `o` did not switch from one."""
    p = o.prev
    while p is not None and p.cls != state and p.item is None and p.prev is not None:
        p = p.prev
    return p if p is not None and p.cls == state else None


def _close_item(agent: str, o: _Open, end_ms: int | None, close_seq: int | None, *,
                retracted: bool = False, **extra: Any) -> Outage | None:
    """The span of outage `o` ended at `end_ms` (None: ongoing) by record `close_seq`;
    None when it lasted no time (and was not withdrawn)."""
    evidence: dict[str, Any] = {"boot": o.boot, "open_seq": o.seq, "close_seq": close_seq,
                                "ev": o.ev}
    if o.cont:
        # later records that restated the same state (a restoring retraction too)
        evidence["cont_seqs"] = list(o.cont)
    if o.withdrawn:
        evidence["withdrawn"] = list(o.withdrawn)
    if retracted:
        evidence["retracted"] = True
    evidence.update(extra)
    end = None if end_ms is None else max(end_ms, o.start_ms)
    if end == o.start_ms and not retracted:
        return None  # zero length: nothing was down, and it would claim nothing
    return Outage(agent, o.cls, o.start_ms, end, o.unc_ms, evidence)


class _Fold:
    """The walk over an agent's state records in seq order: `feed` one at a time; `out`
    holds the spans so far, `cur` the outage open now. Boots fold independently: an
    outage's `prev` and the continued `last` are always of the record's own boot, and a
    record of another boot first ends the open outage at its boot's end."""

    def __init__(self, agent: str, boots: dict[int, _Boot], include_retracted: bool):
        self.agent = agent
        self.boots = boots
        self.include_retracted = include_retracted
        self.out: list[Outage] = []
        self.cur: _Open | None = None
        self.last: _Open | None = None  # the newest outage a record ended (not a retraction)
        self.max_at: int | None = None  # the greatest `at` fed (agent ms)

    def close(self, o: _Open, end_ms: int | None, close_seq: int | None, *,
              retracted: bool = False, **extra: Any) -> Outage | None:
        item = _close_item(self.agent, o, end_ms, close_seq, retracted=retracted, **extra)
        if item is not None:
            self.out.append(item)
        return item

    def close_at_boot_end(self, o: _Open, reason: str) -> None:
        b = self.boots[o.boot]
        self.close(o, b.cov_end, None, end=reason, end_t=b.last_t)

    def resume(self, o: _Open, seq: int) -> _Open:
        out = self.out
        if o.item is not None:  # its piece up to the switch: it goes on instead
            # (found from the end: only withdrawn outages were listed after it)
            i = len(out) - 1
            while out[i] is not o.item:
                i -= 1
            del out[i]
            o.item = None
        o.cont.append(seq)  # the record saying it again
        return o

    def feed(self, seq: int, boot: int, t: int, body: str) -> None:
        boots = self.boots
        rec = json.loads(body)
        if boot not in boots:
            return  # cannot happen through ingest: records and boots commit together
        clock = boots[boot].clock
        at = rec["at"]
        at_ms = clock.to_utc(at)
        if self.max_at is None or at > self.max_at:
            self.max_at = at
        cur = self.cur
        if cur is not None and boot != cur.boot:
            self.close_at_boot_end(cur, END_RESTARTED)
            cur = self.cur = None
        state = rec["s"]
        if rec.get("retract") is True and cur is not None:
            # Never confirmed (e.g. opened by an LED and contradicted): not an outage.
            if self.include_retracted:
                # Listed for as long as the agent held it: to the retraction's t.
                self.close(cur, max(at_ms, clock.to_utc(t)), seq, retracted=True)
            back = _switched_from(cur, state)
            if back is not None:
                # Back to the outage it had switched from: that one goes on from its
                # own start, as if never interrupted (not a new piece from here).
                back.withdrawn.append({"class": cur.cls, "open_seq": cur.seq, "retract_seq": seq})
                self.cur = self.resume(back, seq)
                return
            cur = self.cur = None
        if cur is not None and state == cur.cls:
            cur.cont.append(seq)
            return
        switched = cur
        if cur is not None:
            cur.item = self.close(cur, at_ms, seq)
            if cur.item is not None:
                self.last = cur
            cur = self.cur = None
        last = self.last
        if last is not None and last.cls == state and last.boot == boot and \
                last.item is not None and last.item.end_ms == at_ms:
            # Only something that lasted no time since the last outage of this class
            # ended (isp_down, local_down at the same instant, isp_down again; an up
            # at the instant the LED opens it again): that outage goes on.
            self.cur = self.resume(last, seq)
            return
        if state in protocol.OUTAGE_STATES:
            bound = rec.get("bound")
            self.cur = _Open(state, boot, seq, at_ms,
                             at - bound if bound is not None else None, rec.get("ev"),
                             prev=switched)


def _derive(conn: sa.Connection, agent: str, now_ms: int, include_retracted: bool,
            *, lock: bool = False, notes: list[str] | None = None,
            coverage: dict[int, int] | None = None) -> list[Outage]:
    A, R = s.agents, s.records
    q = sa.select(A.c.hb_s, A.c.last_recv_ms).where(A.c.id == agent)
    if lock:
        # PostgreSQL: one rebuild per agent at a time, or two could interleave their
        # delete and insert and leave duplicate rows. SQLite already serialises writers.
        q = q.with_for_update()
    arow = conn.execute(q).first()
    if arow is None:
        raise UserError(f"no agent named {agent!r} (wanwitness agent list)")
    boots = _load_boots(conn, agent)
    if coverage is not None:
        coverage.update({b.boot: b.cov_end for b in boots.values()})
    if not boots:
        return []
    order = sorted(boots.values(), key=lambda b: (b.cov_start, b.first_recv_ms, b.boot))
    latest = order[-1]
    gap_ms = UNKNOWN_AFTER_HB * arow.hb_s * 1000
    last_contact = arow.last_recv_ms if arow.last_recv_ms is not None else max(
        b.last_recv_ms for b in order)
    silent = now_ms - last_contact > gap_ms

    fold = _Fold(agent, boots, include_retracted)
    rows = conn.execute(sa.select(R.c.seq, R.c.boot, R.c.t, R.c.body)
                        .where(R.c.agent == agent, R.c.k == "state").order_by(R.c.seq))
    for seq, boot, t, body in rows:
        fold.feed(seq, boot, t, body)
    out, cur = fold.out, fold.cur
    if cur is not None:
        if cur.boot != latest.boot:
            fold.close_at_boot_end(cur, END_RESTARTED)
        elif silent:
            fold.close_at_boot_end(cur, END_SILENT)
        else:
            fold.close(cur, None, None)  # ongoing

    # Unknown spans: between boots, and after the last coverage once the agent is silent.
    reach, reach_boot = order[0].cov_end, order[0]
    for b in order[1:]:
        if b.cov_start - reach > gap_ms:
            out.append(Outage(agent, UNKNOWN, reach, b.cov_start, None, {
                "reason": "no agent running", "prev_boot": reach_boot.boot,
                "prev_last_t": reach_boot.last_t, "next_boot": b.boot}))
        if b.cov_end >= reach:
            reach, reach_boot = b.cov_end, b
    if silent:
        out.append(Outage(agent, UNKNOWN, reach, None, None, {
            "reason": "agent not heard from", "prev_boot": reach_boot.boot,
            "prev_last_t": reach_boot.last_t, "last_recv_ms": last_contact}))

    kept = []
    for o in out:
        why = _plausible(o)
        if why is None:
            kept.append(o)
            continue
        _tell(notes, _skip_note(o, why))
    kept.sort(key=lambda o: (o.start_ms, o.cls))
    return kept


def derive(store: s.Store, agent: str, *, now_ms: int | None = None,
           include_retracted: bool = False, notes: list[str] | None = None,
           coverage: dict[int, int] | None = None) -> list[Outage]:
    """Outages and unknown spans of one agent, computed from its records (read only:
    the `outages` table is left as it is); what had to be left out is described in
    `notes`. `coverage`, when given, gets each boot's end of coverage: the UTC ms of
    the last thing heard from it (an ongoing outage is witnessed up to its boot's)."""
    now = s.now_ms() if now_ms is None else now_ms
    with store.engine.connect() as conn:
        return _derive(conn, agent, now, include_retracted, notes=notes, coverage=coverage)


def _agent_ids(store: s.Store) -> list[str]:
    with store.engine.connect() as conn:
        return list(conn.execute(sa.select(s.agents.c.id).order_by(s.agents.c.id)).scalars())


# --- materialised outages ---------------------------------------------------------
#
# `query` reads outages kept up to date per agent and boot (issue 18), not derived
# again from the whole history. What it keeps (schema.outages, outage_boots,
# outage_agents) is, per boot, the boot's clock hull and its own fold's spans and open
# outage; per agent, what joins the boots (an outage a reboot ended, unknown spans
# between boots) and what the time of a query decides (the last open outage: ongoing,
# or ended by silence; the unknown span after silence), made when read.
#
# Exactness. The fold of the records of one boot does not depend on other boots (see
# _Fold) as long as each boot's state records are one run in seq order, which is what
# ingest stores for an agent whose seq only grows; an agent whose boots interleave
# (or whose data the fold cannot read) is marked `full` and derived in full on every
# query, as before. A boot's spans depend on its state records and on its clock map
# only through to_utc(at): a boot is folded again when it got a state record, or when
# its hull changed below its greatest `at` (a new point at the end changes the map only
# after the hull's last vertex it keeps; _stable_upto). The hull of all points is the
# hull of the stored hull and the new points (a point above a lower hull stays above
# every larger set's). Ties in the answer's order are broken by each span's place in
# the full derivation (ord1, ord2). tests/test_timeline_materialised.py compares the
# answer with a full derivation after every batch of random record streams.
#
# When. Ingest does nothing more than it did: its own writes are the marks of what is
# new (the agent's chain head `agents.chain_n` and each record's `link`, the ids of its
# clock points), and both grow in commit order per agent, because ingest writes an
# agent's records and points only under that agent's lock (pg_advisory_xact_lock on
# PostgreSQL, SQLite's single writer). The first reader after new messages takes the
# same lock, folds in what is past the agent's marks, and commits the state with its new
# marks in one transaction: collectors never see half an update, two readers never
# update one agent at once, and ingest pays no statement for it (its statements per
# commit are what issue 18 counts). What a query costs: the agent's boots touched since
# the last query (their new points, and a fold of a boot's state records when its hull
# moved under them), a pass over the agent's boots' summaries, and the answer.

_AFTER_FOLDS = 1 << 62      # ord1 of the last open outage's end, after every boot's fold
_UNKNOWNS = _AFTER_FOLDS + 1
_SILENT = _AFTER_FOLDS + 2
_NO_MORE = 1 << 62          # _stable_upto: the maps agree everywhere


class _Fallback(Exception):
    """The agent's records do not fold boot by boot: derive it in full."""


def _lock_agent(conn: sa.Connection, agent: str) -> None:
    """The agent's ingest lock, for this transaction (PostgreSQL; SQLite has one writer)."""
    if conn.dialect.name == "postgresql":
        from wanwitness.collector.ingest import chain_lock_key
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": chain_lock_key(agent)})


def _stable_upto(old: list[tuple[int, int]], new: list[tuple[int, int]]) -> int | None:
    """The agent ms up to which the maps of hulls `old` and `new` ((t, offset) vertices)
    give the same times; None when they may differ anywhere."""
    if old == new:
        return _NO_MORE
    k = 0
    while k < min(len(old), len(new)) and old[k] == new[k]:
        k += 1
    # Two common vertices: the first segment (extrapolation before it) and the
    # segments up to the k-th vertex are the same.
    return old[k - 1][0] if k >= 2 else None


def _open_dump(o: _Open | None) -> str | None:
    if o is None:
        return None
    return _compact({"cls": o.cls, "boot": o.boot, "seq": o.seq, "start_ms": o.start_ms,
                     "unc_ms": o.unc_ms, "ev": o.ev, "cont": o.cont, "withdrawn": o.withdrawn})


def _open_load(text: str) -> _Open:
    d = json.loads(text)
    return _Open(d["cls"], d["boot"], d["seq"], d["start_ms"], d["unc_ms"], d["ev"],
                 cont=d["cont"], withdrawn=d["withdrawn"])


@dataclass
class _Mat:
    """One boot's row of outage_boots."""
    boot: int
    hull: list[tuple[int, int]]    # (t, recv_ms) of the hull's vertices
    first_t: int | None
    sseq_min: int | None
    sseq_max: int | None
    max_at: int | None
    first_recv_ms: int
    last_recv_ms: int
    last_t: int
    cov_start: int = 0
    cov_end: int = 0
    open: str | None = None
    n_items: int = 0
    n_notes: int = 0

    def clock(self) -> ClockMap:
        # As _load_boots: without points, the newest t and receipt bound the offset.
        return ClockMap(self.hull) if self.hull else ClockMap([(self.last_t, self.last_recv_ms)])

    def cover(self, clock: ClockMap) -> None:
        first = self.last_t if self.first_t is None else self.first_t
        self.cov_start = clock.to_utc(min(first, self.last_t))
        self.cov_end = max(self.cov_start, clock.to_utc(self.last_t))

    def values(self, agent: str) -> dict[str, Any]:
        return {"agent": agent, "boot": self.boot, "hull": json.dumps(self.hull),
                "first_t": self.first_t, "sseq_min": self.sseq_min, "sseq_max": self.sseq_max,
                "max_at": self.max_at, "first_recv_ms": self.first_recv_ms,
                "last_recv_ms": self.last_recv_ms, "last_t": self.last_t,
                "cov_start": self.cov_start, "cov_end": self.cov_end, "open": self.open,
                "n_items": self.n_items, "n_notes": self.n_notes}


def _mat_of(row: Any) -> _Mat:
    return _Mat(row.boot, [(t, r) for t, r in json.loads(row.hull)], row.first_t, row.sseq_min,
                row.sseq_max, row.max_at, row.first_recv_ms, row.last_recv_ms, row.last_t,
                row.cov_start, row.cov_end, row.open, row.n_items, row.n_notes)


def _hull_points(clock: ClockMap) -> list[tuple[int, int]]:
    return [(t, t + off) for t, off in clock.hull]


def _row(agent: str, o: Outage, src: int, boot: int | None, ord1: int, ord2: int) -> dict[str, Any]:
    why = _plausible(o)
    return {"agent": agent, "class": o.cls, "start_ms": o.start_ms, "end_ms": o.end_ms,
            "start_unc_ms": o.start_uncertainty_ms, "evidence": _compact(o.evidence),
            "src": src, "boot": boot, "ord1": ord1, "ord2": ord2,
            "note": None if why is None else _skip_note(o, why)}


def _fold_boot(conn: sa.Connection, agent: str, m: _Mat, clock: ClockMap) -> None:
    """Fold boot `m`'s state records again and store its spans (src 0)."""
    R, OT = s.records, s.outages
    conn.execute(OT.delete().where(OT.c.agent == agent, OT.c.src == 0, OT.c.boot == m.boot))
    m.open, m.n_items, m.n_notes, m.max_at = None, 0, 0, None
    if m.sseq_min is None:
        return
    b = _Boot(m.boot, m.first_recv_ms, m.last_recv_ms, m.last_t, clock, m.cov_start, m.cov_end)
    fold = _Fold(agent, {m.boot: b}, False)
    for seq, boot, t, body in conn.execute(
            sa.select(R.c.seq, R.c.boot, R.c.t, R.c.body)
            .where(R.c.agent == agent, R.c.k == "state", R.c.seq >= m.sseq_min,
                   R.c.seq <= m.sseq_max).order_by(R.c.seq)):
        if boot != m.boot:
            raise _Fallback(f"record seq {seq} of boot {boot} lies among boot {m.boot}'s")
        fold.feed(seq, boot, t, body)
    rows = [_row(agent, o, 0, m.boot, m.sseq_min, i) for i, o in enumerate(fold.out)]
    if rows:
        conn.execute(OT.insert(), rows)
    m.open, m.n_items, m.max_at = _open_dump(fold.cur), len(rows), fold.max_at
    m.n_notes = sum(1 for r in rows if r["note"] is not None)


def _assemble(conn: sa.Connection, agent: str, hb_s: int, last_recv_ms: int | None,
              link: int, clock_id: int) -> None:
    """What joins the agent's boots (src 1 rows) and its outage_agents row, from every
    boot's summary."""
    OT, OB, OA = s.outages, s.outage_boots, s.outage_agents
    mats = [_mat_of(r) for r in conn.execute(sa.select(OB).where(OB.c.agent == agent))]
    runs = sorted((m for m in mats if m.sseq_min is not None), key=lambda m: m.sseq_min or 0)
    for a, b in zip(runs, runs[1:]):
        assert a.sseq_max is not None and b.sseq_min is not None
        if a.sseq_max >= b.sseq_min:
            raise _Fallback(f"the state records of boots {a.boot} and {b.boot} interleave")
    rows: list[dict[str, Any]] = []
    tail: dict[str, Any] | None = None
    last_contact = last_recv_ms
    if mats:
        order = sorted(mats, key=lambda m: (m.cov_start, m.first_recv_ms, m.boot))
        latest = order[-1]
        gap_ms = UNKNOWN_AFTER_HB * hb_s * 1000
        if last_contact is None:
            last_contact = max(m.last_recv_ms for m in mats)
        for i, m in enumerate(runs):
            if m.open is None:
                continue
            restart = _close_item(agent, _open_load(m.open), m.cov_end, None,
                                  end=END_RESTARTED, end_t=m.last_t)
            if i < len(runs) - 1:
                if restart is not None:
                    rows.append(_row(agent, restart, 1, m.boot, m.sseq_min or 0, m.n_items))
            elif m.boot != latest.boot:
                if restart is not None:
                    rows.append(_row(agent, restart, 1, m.boot, _AFTER_FOLDS, 0))
            else:
                tail = {"open": m.open, "cov_end": m.cov_end, "last_t": m.last_t}
        reach, reach_boot = order[0].cov_end, order[0]
        for n, m in enumerate(order[1:]):
            if m.cov_start - reach > gap_ms:
                rows.append(_row(agent, Outage(agent, UNKNOWN, reach, m.cov_start, None, {
                    "reason": "no agent running", "prev_boot": reach_boot.boot,
                    "prev_last_t": reach_boot.last_t, "next_boot": m.boot}), 1, None, _UNKNOWNS, n))
            if m.cov_end >= reach:
                reach, reach_boot = m.cov_end, m
        tail = {"open": None, **(tail or {}), "reach": reach, "reach_boot": reach_boot.boot,
                "reach_last_t": reach_boot.last_t}
    conn.execute(OT.delete().where(OT.c.agent == agent, OT.c.src == 1))
    if rows:
        conn.execute(OT.insert(), rows)
    values = {"link": link, "clock_id": clock_id, "hb_s": hb_s, "last_contact": last_contact,
              "tail": None if tail is None else _compact(tail), "full": False,
              "n_notes": sum(m.n_notes for m in mats) + sum(1 for r in rows if r["note"] is not None)}
    if conn.execute(OA.update().where(OA.c.agent == agent).values(**values)).rowcount == 0:
        conn.execute(OA.insert().values(agent=agent, **values))


def _marks(conn: sa.Connection, agent: str) -> tuple[Any, int]:
    """The agent's row (hb_s, last_recv_ms, chain_n) and its newest clock point's id."""
    A, CP = s.agents, s.clock_points
    arow = conn.execute(sa.select(A.c.hb_s, A.c.last_recv_ms, A.c.chain_n)
                        .where(A.c.id == agent)).first()
    if arow is None:
        raise UserError(f"no agent named {agent!r} (wanwitness agent list)")
    clock_id = conn.execute(sa.select(sa.func.max(CP.c.id)).where(CP.c.agent == agent)).scalar()
    return arow, clock_id or 0


def _build(conn: sa.Connection, agent: str) -> None:
    """The agent's materialised state from scratch (its old state deleted)."""
    B, R, CP, OT, OB, OA = s.boots, s.records, s.clock_points, s.outages, s.outage_boots, s.outage_agents
    arow, clock_id = _marks(conn, agent)
    for table in (OT, OB, OA):
        conn.execute(table.delete().where(table.c.agent == agent))
    points: dict[int, list[tuple[int, int]]] = {}
    for boot, t, recv in conn.execute(sa.select(CP.c.boot, CP.c.t, CP.c.recv_ms)
                                      .where(CP.c.agent == agent)):
        points.setdefault(boot, []).append((t, recv))
    first_t: dict[int, int] = {}
    for table in (R, CP):
        for boot, t in conn.execute(sa.select(table.c.boot, sa.func.min(table.c.t))
                                    .where(table.c.agent == agent).group_by(table.c.boot)):
            first_t[boot] = min(t, first_t.get(boot, t))
    ranges = {boot: (lo, hi) for boot, lo, hi in conn.execute(
        sa.select(R.c.boot, sa.func.min(R.c.seq), sa.func.max(R.c.seq))
        .where(R.c.agent == agent, R.c.k == "state").group_by(R.c.boot))}
    mats: list[_Mat] = []
    for row in conn.execute(sa.select(B.c.boot, B.c.first_recv_ms, B.c.last_recv_ms, B.c.last_t)
                            .where(B.c.agent == agent)):
        lo, hi = ranges.pop(row.boot, (None, None))
        pts = points.get(row.boot)
        hull = _hull_points(ClockMap(pts)) if pts else []
        mats.append(_Mat(row.boot, hull, first_t.get(row.boot), lo, hi, None, row.first_recv_ms,
                         row.last_recv_ms, row.last_t))
    if ranges:
        raise _Fallback(f"state records of boots {sorted(ranges)} that have no boots row")
    for m in mats:
        clock = m.clock()
        m.cover(clock)
        _fold_boot(conn, agent, m, clock)
    if mats:
        conn.execute(OB.insert(), [m.values(agent) for m in mats])
    _assemble(conn, agent, arow.hb_s, arow.last_recv_ms, arow.chain_n, clock_id)


def _update(conn: sa.Connection, agent: str, arow: Any, clock_id: int, mrow: Any) -> None:
    """Fold in what ingest stored for the agent past its marks."""
    B, R, CP, OB = s.boots, s.records, s.clock_points, s.outage_boots
    new_pts: dict[int, list[tuple[int, int]]] = {}
    least: dict[int, int] = {}
    if clock_id != mrow.clock_id:
        for boot, t, recv in conn.execute(sa.select(CP.c.boot, CP.c.t, CP.c.recv_ms)
                                          .where(CP.c.agent == agent, CP.c.id > mrow.clock_id)):
            new_pts.setdefault(boot, []).append((t, recv))
            least[boot] = min(t, least.get(boot, t))
    new_state: dict[int, list[int]] = {}
    if arow.chain_n != mrow.link:
        for seq, boot, t, k in conn.execute(sa.select(R.c.seq, R.c.boot, R.c.t, R.c.k)
                                            .where(R.c.agent == agent, R.c.link > mrow.link)):
            least[boot] = min(t, least.get(boot, t))
            if k == "state":
                new_state.setdefault(boot, []).append(seq)
    touched = sorted(least)
    if touched:
        old = {r.boot: _mat_of(r) for r in conn.execute(
            sa.select(OB).where(OB.c.agent == agent, OB.c.boot.in_(touched)))}
        brows = {r.boot: r for r in conn.execute(
            sa.select(B.c.boot, B.c.first_recv_ms, B.c.last_recv_ms, B.c.last_t)
            .where(B.c.agent == agent, B.c.boot.in_(touched)))}
        for boot in touched:
            brow = brows.get(boot)
            if brow is None:
                raise _Fallback(f"records or clock points of boot {boot} that has no boots row")
            m = old.get(boot)
            if m is None:
                m = _Mat(boot, [], None, None, None, None, brow.first_recv_ms, brow.last_recv_ms,
                         brow.last_t)
            old_hull = m.hull
            if boot in new_pts:
                m.hull = _hull_points(ClockMap(m.hull + new_pts[boot]))
            m.first_t = least[boot] if m.first_t is None else min(m.first_t, least[boot])
            seqs = new_state.get(boot, [])
            if seqs:
                m.sseq_min = min(seqs) if m.sseq_min is None else min(m.sseq_min, *seqs)
                m.sseq_max = max(seqs) if m.sseq_max is None else max(m.sseq_max, *seqs)
            m.first_recv_ms, m.last_recv_ms, m.last_t = brow.first_recv_ms, brow.last_recv_ms, brow.last_t
            clock = m.clock()
            m.cover(clock)
            if m.sseq_min is not None:
                stable = _stable_upto([(t, r - t) for t, r in old_hull], list(clock.hull)) \
                    if old_hull and m.hull else None
                if seqs or stable is None or m.max_at is None or m.max_at > stable:
                    _fold_boot(conn, agent, m, clock)
            if boot in old:
                conn.execute(OB.update().where(OB.c.agent == agent, OB.c.boot == boot)
                             .values(**m.values(agent)))
            else:
                conn.execute(OB.insert().values(**m.values(agent)))
    _assemble(conn, agent, arow.hb_s, arow.last_recv_ms, arow.chain_n, clock_id)


def _set_full(conn: sa.Connection, agent: str, why: str) -> None:
    """The agent is derived in full from now on: nothing of it is kept."""
    OT, OB, OA = s.outages, s.outage_boots, s.outage_agents
    log.info("agent %r: outages derived in full on every query: %s", agent, why)
    for table in (OT, OB, OA):
        conn.execute(table.delete().where(table.c.agent == agent))
    conn.execute(OA.insert().values(agent=agent, link=0, clock_id=0, hb_s=0, n_notes=0, full=True))


_UNREADABLE = (_Fallback, ArithmeticError, ValueError, KeyError, TypeError)


def _materialise(conn: sa.Connection, agent: str, *, again: bool = False) -> bool:
    """Bring the agent's materialised state up to date (from scratch with `again`), in
    the caller's transaction, which holds the agent's lock; False: it is derived in
    full (its records do not fold boot by boot)."""
    OA = s.outage_agents
    arow, clock_id = _marks(conn, agent)
    mrow = None if again else conn.execute(sa.select(OA).where(OA.c.agent == agent)).first()
    if mrow is not None and mrow.full:
        return False
    if mrow is not None and (mrow.link, mrow.clock_id, mrow.hb_s) == (arow.chain_n, clock_id, arow.hb_s):
        return True
    try:
        with conn.begin_nested():
            if mrow is None:
                _build(conn, agent)
            else:
                _update(conn, agent, arow, clock_id, mrow)
    except _UNREADABLE as e:
        _set_full(conn, agent, f"{type(e).__name__}: {e}")
        return False
    return True


def materialise_all(conn: sa.Connection) -> None:
    """Every agent's materialised state from scratch (migration 12)."""
    for agent in list(conn.execute(sa.select(s.agents.c.id).order_by(s.agents.c.id)).scalars()):
        _materialise(conn, agent, again=True)


def _stale(store: s.Store, names: list[str] | None) -> set[str]:
    """Of these agents (None: all), those whose materialised state is not up to date or
    who are derived in full; one statement."""
    A, CP, OA = s.agents, s.clock_points, s.outage_agents
    newest = (sa.select(sa.func.max(CP.c.id)).where(CP.c.agent == A.c.id)
              .correlate(A).scalar_subquery())
    q = (sa.select(A.c.id, A.c.chain_n, A.c.hb_s, newest.label("clock_id"), OA.c.link,
                   OA.c.clock_id.label("mat_clock_id"), OA.c.hb_s.label("mat_hb_s"), OA.c.full)
         .select_from(A.outerjoin(OA, OA.c.agent == A.c.id)))
    if names is not None:
        q = q.where(A.c.id.in_(names))
    with store.engine.connect() as conn:
        return {r.id for r in conn.execute(q)
                if r.link is None or r.full or (r.link, r.mat_clock_id, r.mat_hb_s)
                != (r.chain_n, r.clock_id or 0, r.hb_s)}


def _tail(agent: str, mrow: Any, now_ms: int) -> list[tuple[Outage, int, int]]:
    """What the time of the query decides: the last open outage (ongoing, or ended by
    silence) and the unknown span after a silent agent, with their ord keys."""
    if mrow.tail is None:
        return []  # no boots
    tail = json.loads(mrow.tail)
    silent = now_ms - mrow.last_contact > UNKNOWN_AFTER_HB * mrow.hb_s * 1000
    out: list[tuple[Outage, int, int]] = []
    if tail["open"] is not None:
        last = _open_load(tail["open"])
        item = (_close_item(agent, last, tail["cov_end"], None, end=END_SILENT, end_t=tail["last_t"])
                if silent else _close_item(agent, last, None, None))
        if item is not None:
            out.append((item, _AFTER_FOLDS, 0))
    if silent:
        out.append((Outage(agent, UNKNOWN, tail["reach"], None, None, {
            "reason": "agent not heard from", "prev_boot": tail["reach_boot"],
            "prev_last_t": tail["reach_last_t"], "last_recv_ms": mrow.last_contact}), _SILENT, 0))
    for span, _, _ in out:
        span.evidence = json.loads(_compact(span.evidence))  # as read back from a row
    return out


def rebuild(store: s.Store, agent: str | None = None, *, now_ms: int | None = None,
            notes: list[str] | None = None) -> int:
    """Make the materialised outages of one agent (or all) again from their records
    (what `query` keeps up to date by itself; for a store edited by other means than
    ingest); returns how many outages and unknown spans the agent(s) have now. An agent
    whose records cannot be read as a timeline gets none and a note; the others are not
    affected."""
    names = _agent_ids(store) if agent is None else [agent]
    for name in names:
        with store.engine.begin() as conn:
            _lock_agent(conn, name)
            _materialise(conn, name, again=True)
    return len(query(store, agent=agent, now_ms=now_ms, notes=notes))


def query(store: s.Store, *, agent: str | None = None, since_ms: int | None = None,
          until_ms: int | None = None, now_ms: int | None = None,
          notes: list[str] | None = None,
          agents: Collection[str] | None = None) -> list[Outage]:
    """The outages and unknown spans overlapping [since, until) of one agent, of
    `agents` (a line's), or of all; what had to be left out is described in `notes`.
    The same as deriving each agent's timeline from its records (`derive`), read from
    the materialised outages, brought up to date first (see above)."""
    now = s.now_ms() if now_ms is None else now_ms
    if agent is not None:
        names: list[str] | None = [agent]
    elif agents is not None:
        known = set(_agent_ids(store))
        names = sorted(set(agents) & known)
    else:
        names = None
    if agent is not None and not _agent_ids_has(store, agent):
        raise UserError(f"no agent named {agent!r} (wanwitness agent list)")
    stale = _stale(store, names)
    order = names if names is not None else _agent_ids(store)
    said: dict[str, list[str]] = {}      # agent -> its notes
    full: dict[str, list[Outage]] = {}   # agents derived in full: their answer
    for name in order:
        if name not in stale:
            continue
        with store.engine.begin() as conn:
            _lock_agent(conn, name)
            if not _materialise(conn, name):
                full[name] = _derive_full(conn, name, now, said.setdefault(name, []))

    OT, OA = s.outages, s.outage_agents
    q = sa.select(OT.c.agent, OT.c["class"], OT.c.start_ms, OT.c.end_ms, OT.c.start_unc_ms,
                  OT.c.evidence, OT.c.ord1, OT.c.ord2).where(OT.c.note.is_(None))
    qa = sa.select(OA).where(OA.c.full.is_(False))
    if agent is not None:
        q, qa = q.where(OT.c.agent == agent), qa.where(OA.c.agent == agent)
    if agents is not None:
        q, qa = q.where(OT.c.agent.in_(list(agents))), qa.where(OA.c.agent.in_(list(agents)))
    if until_ms is not None:
        q = q.where(OT.c.start_ms < until_ms)
    if since_ms is not None:
        q = q.where(sa.or_(OT.c.end_ms.is_(None), OT.c.end_ms > since_ms))

    def within(o: Outage) -> bool:
        return ((until_ms is None or o.start_ms < until_ms)
                and (since_ms is None or o.end_ms is None or o.end_ms > since_ms))

    found: list[tuple[Outage, int, int]] = []
    with _snapshot(store) as conn:
        mrows = {r.agent: r for r in conn.execute(qa)}
        for r in conn.execute(q):
            found.append((Outage(r.agent, r[1], r.start_ms, r.end_ms, r.start_unc_ms,
                                 json.loads(r.evidence)), r.ord1, r.ord2))
        for name in order:
            mrow = mrows.get(name)
            if mrow is None:
                continue
            kept_notes: list[tuple[int, int, str]] = []
            if mrow.n_notes:
                kept_notes += [(r.ord1, r.ord2, r.note) for r in conn.execute(
                    sa.select(OT.c.ord1, OT.c.ord2, OT.c.note)
                    .where(OT.c.agent == name, OT.c.note.is_not(None)))]
            for o, o1, o2 in _tail(name, mrow, now):
                why = _plausible(o)
                if why is not None:
                    kept_notes.append((o1, o2, _skip_note(o, why)))
                elif within(o):
                    found.append((o, o1, o2))
            said[name] = [note for _, _, note in sorted(kept_notes)]
    for name in order:
        if name not in mrows and name not in full:
            # Derived in full since this query's first look (another reader found its
            # boots interleaved): as such.
            with store.engine.begin() as conn:
                _lock_agent(conn, name)
                full[name] = _derive_full(conn, name, now, said.setdefault(name, []))
    for items in full.values():
        for i, o in enumerate(items):
            if within(o):
                o.evidence = json.loads(_compact(o.evidence))  # as read back from a row
                found.append((o, 0, i))
    for name in order:
        for note in said.get(name, ()):
            _tell(notes, note)
    # Sorted here, not in SQL: the backends order NULLs differently.
    found.sort(key=lambda x: (x[0].start_ms, x[0].agent, x[0].cls, x[0].end_ms is None,
                              x[0].end_ms or 0, x[1], x[2]))
    return [o for o, _, _ in found]


def _derive_full(conn: sa.Connection, agent: str, now_ms: int, notes: list[str]) -> list[Outage]:
    """An agent derived in full, as every query did before materialising (rebuild)."""
    try:
        return _derive(conn, agent, now_ms, False, notes=notes)
    except (ArithmeticError, ValueError, KeyError, TypeError) as e:
        # Stored data this code cannot read (never written by today's ingest).
        notes.append(f"agent {agent!r}: no outages computed: {type(e).__name__}: {e}")
        return []


def _agent_ids_has(store: s.Store, agent: str) -> bool:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(s.agents.c.id).where(s.agents.c.id == agent)).first() is not None


@contextmanager
def _snapshot(store: s.Store) -> Iterator[sa.Connection]:
    """A transaction whose statements all see one state of the store (PostgreSQL:
    REPEATABLE READ; SQLite: its transactions already do)."""
    with store.engine.connect() as conn:
        if store.dialect == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


# --- output -----------------------------------------------------------------------

def iso(ms: int) -> str:
    """UTC ms -> '2026-11-03T09:12:00.123Z'."""
    sec, milli = divmod(ms, 1000)
    return (_EPOCH + timedelta(seconds=sec)).strftime("%Y-%m-%dT%H:%M:%S") + f".{milli:03d}Z"


def _compact(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _seconds(ms: int | None) -> float | None:
    # int / 1000 is correctly rounded, and its repr is the shortest form: 2500 -> 2.5
    return None if ms is None else ms / 1000


def _sorted_keys(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _sorted_keys(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list):
        return [_sorted_keys(v) for v in obj]
    return obj


def to_json(outages: list[Outage]) -> str:
    """A JSON list; fixed key order, evidence keys sorted, no trailing newline."""
    return json.dumps([{
        "agent": o.agent,
        "class": o.cls,
        "start": iso(o.start_ms),
        "end": None if o.end_ms is None else iso(o.end_ms),
        "start_uncertainty_s": _seconds(o.start_uncertainty_ms),
        "evidence": _sorted_keys(o.evidence),
    } for o in outages], indent=2, ensure_ascii=False)


CSV_HEADER = ("agent", "class", "start", "end", "start_uncertainty_s", "evidence")


def to_csv(outages: list[Outage]) -> str:
    """CSV with a header line; `end` is empty while ongoing; lines end in \\n. Text
    cells are neutralised against spreadsheet formulas (csvsafe; agent ids from the
    store never need it, an outages file read in file mode may)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_HEADER)
    for o in outages:
        unc = _seconds(o.start_uncertainty_ms)
        w.writerow([text(o.agent), text(o.cls), iso(o.start_ms),
                    "" if o.end_ms is None else iso(o.end_ms),
                    "" if unc is None else repr(unc), text(_compact(o.evidence))])
    return buf.getvalue()


def duration(ms: int) -> str:
    """9_000_000 -> '2h 30m 00s'; days for long outages."""
    sec = max(ms, 0) // 1000
    d, rem = divmod(sec, 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    if d:
        return f"{d}d {h:02d}h {m:02d}m"
    if h:
        return f"{h}h {m:02d}m {sec:02d}s"
    if m:
        return f"{m}m {sec:02d}s"
    return f"{sec}s"


def to_table(outages: list[Outage], *, now_ms: int | None = None) -> str:
    """A text table for people; an ongoing span's duration runs to now and ends in '+'."""
    if not outages:
        return "no outages or unknown spans"
    now = s.now_ms() if now_ms is None else now_ms

    def when(ms: int) -> str:
        return iso(ms)[:19].replace("T", " ")

    rows = [("agent", "class", "start (UTC)", "end (UTC)", "duration", "start ±")]
    for o in outages:
        if o.end_ms is None:
            end, dur = "ongoing", duration(now - o.start_ms) + "+"
        else:
            end, dur = when(o.end_ms), duration(o.end_ms - o.start_ms)
        unc = "" if o.start_uncertainty_ms is None else f"{o.start_uncertainty_ms / 1000:.1f}s"
        rows.append((o.agent, o.cls, when(o.start_ms), end, dur, unc))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i == 4 else c.ljust(w)
                       for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows]
    down = sum(1 for o in outages if o.cls != UNKNOWN)
    lines.append(f"{down} outage(s), {len(outages) - down} unknown span(s)")
    return "\n".join(lines)


def parse_time(text: str, *, option: str) -> int:
    """ISO 8601 date or date-time -> UTC ms; no offset means UTC; a date is its midnight."""
    try:
        dt = datetime.fromisoformat(text.strip())
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return (dt - _EPOCH) // timedelta(milliseconds=1)
    except (ValueError, OverflowError):
        raise UserError(f"{option} {text!r}: not a date/time ({_TIME_HELP})") from None

