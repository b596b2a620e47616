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
from collections.abc import Collection, Iterable
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

    out: list[Outage] = []
    cur: _Open | None = None

    def close(o: _Open, end_ms: int | None, close_seq: int | None, *, retracted: bool = False,
              **extra: Any) -> Outage | None:
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
        item = Outage(agent, o.cls, o.start_ms, end, o.unc_ms, evidence)
        out.append(item)
        return item

    def close_at_boot_end(o: _Open, reason: str) -> None:
        b = boots[o.boot]
        close(o, b.cov_end, None, end=reason, end_t=b.last_t)

    last: _Open | None = None  # the newest outage a record ended (not a retraction)

    def resume(o: _Open, seq: int) -> _Open:
        if o.item is not None:  # its piece up to the switch: it goes on instead
            # (found from the end: only withdrawn outages were listed after it)
            i = len(out) - 1
            while out[i] is not o.item:
                i -= 1
            del out[i]
            o.item = None
        o.cont.append(seq)  # the record saying it again
        return o

    rows = conn.execute(sa.select(R.c.seq, R.c.boot, R.c.t, R.c.body)
                        .where(R.c.agent == agent, R.c.k == "state").order_by(R.c.seq))
    for seq, boot, t, body in rows:
        rec = json.loads(body)
        if boot not in boots:
            continue  # cannot happen through ingest: records and boots commit together
        clock = boots[boot].clock
        at_ms = clock.to_utc(rec["at"])
        if cur is not None and boot != cur.boot:
            close_at_boot_end(cur, END_RESTARTED)
            cur = None
        state = rec["s"]
        if rec.get("retract") is True and cur is not None:
            # Never confirmed (e.g. opened by an LED and contradicted): not an outage.
            if include_retracted:
                # Listed for as long as the agent held it: to the retraction's t.
                close(cur, max(at_ms, clock.to_utc(t)), seq, retracted=True)
            back = _switched_from(cur, state)
            if back is not None:
                # Back to the outage it had switched from: that one goes on from its
                # own start, as if never interrupted (not a new piece from here).
                back.withdrawn.append({"class": cur.cls, "open_seq": cur.seq, "retract_seq": seq})
                cur = resume(back, seq)
                continue
            cur = None
        if cur is not None and state == cur.cls:
            cur.cont.append(seq)
            continue
        switched = cur
        if cur is not None:
            cur.item = close(cur, at_ms, seq)
            if cur.item is not None:
                last = cur
            cur = None
        if last is not None and last.cls == state and last.boot == boot and \
                last.item is not None and last.item.end_ms == at_ms:
            # Only something that lasted no time since the last outage of this class
            # ended (isp_down, local_down at the same instant, isp_down again; an up
            # at the instant the LED opens it again): that outage goes on.
            cur = resume(last, seq)
            continue
        if state in protocol.OUTAGE_STATES:
            bound = rec.get("bound")
            cur = _Open(state, boot, seq, at_ms,
                        rec["at"] - bound if bound is not None else None, rec.get("ev"),
                        prev=switched)
    if cur is not None:
        if cur.boot != latest.boot:
            close_at_boot_end(cur, END_RESTARTED)
        elif silent:
            close_at_boot_end(cur, END_SILENT)
        else:
            close(cur, None, None)  # ongoing

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


def rebuild(store: s.Store, agent: str | None = None, *, now_ms: int | None = None,
            notes: list[str] | None = None) -> int:
    """Recompute the `outages` rows of one agent (or all); returns how many were written.
    An agent whose records cannot be read as a timeline gets no rows and a note; the
    others are not affected."""
    now = s.now_ms() if now_ms is None else now_ms
    names = _agent_ids(store) if agent is None else [agent]
    tbl = s.outages
    total = 0
    for name in names:
        with store.engine.begin() as conn:
            try:
                found = _derive(conn, name, now, False, lock=True, notes=notes)
            except (ArithmeticError, ValueError, KeyError, TypeError) as e:
                # Stored data this code cannot read (never written by today's ingest).
                _tell(notes, f"agent {name!r}: no outages computed: {type(e).__name__}: {e}")
                found = []
            conn.execute(tbl.delete().where(tbl.c.agent == name))
            if found:
                conn.execute(tbl.insert(), [
                    {"agent": o.agent, "class": o.cls, "start_ms": o.start_ms, "end_ms": o.end_ms,
                     "start_unc_ms": o.start_uncertainty_ms, "evidence": _compact(o.evidence)}
                    for o in found])
        total += len(found)
    return total


def query(store: s.Store, *, agent: str | None = None, since_ms: int | None = None,
          until_ms: int | None = None, now_ms: int | None = None,
          notes: list[str] | None = None,
          agents: Collection[str] | None = None) -> list[Outage]:
    """Rebuild, then the outages and unknown spans overlapping [since, until) of one
    agent, of `agents` (a line's), or of all; what had to be left out is described in
    `notes`."""
    if agents is not None and agent is None:
        known = set(_agent_ids(store))
        for name in sorted(set(agents) & known):
            rebuild(store, name, now_ms=now_ms, notes=notes)
    else:
        rebuild(store, agent, now_ms=now_ms, notes=notes)
    tbl = s.outages
    q = sa.select(tbl.c.id, tbl.c.agent, tbl.c["class"], tbl.c.start_ms, tbl.c.end_ms, tbl.c.start_unc_ms,
                  tbl.c.evidence)
    if agent is not None:
        q = q.where(tbl.c.agent == agent)
    if agents is not None:
        q = q.where(tbl.c.agent.in_(list(agents)))
    if until_ms is not None:
        q = q.where(tbl.c.start_ms < until_ms)
    if since_ms is not None:
        q = q.where(sa.or_(tbl.c.end_ms.is_(None), tbl.c.end_ms > since_ms))
    with store.engine.connect() as conn:
        rows = list(conn.execute(q).all())
    # Sorted here, not in SQL: the backends order NULLs differently.
    rows.sort(key=lambda r: (r.start_ms, r.agent, r[2], r.end_ms is None, r.end_ms or 0, r.id))
    return [Outage(r.agent, r[2], r.start_ms, r.end_ms, r.start_unc_ms, json.loads(r.evidence))
            for r in rows]


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

