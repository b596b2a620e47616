"""What the web UI and its API read from the store, as plain dicts (JSON-ready).

The pages and `/api/v1` share these functions, so a page never shows something the
API would not say. Times are UTC ISO 8601 strings with milliseconds and a `Z`, as in
`wanwitness outages --json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from wanwitness import store as s
from wanwitness.collector import timeline
from wanwitness.collector.ledger import last_verify, verify_and_record
from wanwitness.config import Config
from wanwitness.errors import UserError

OUTAGE_CLASSES = ("isp_down", "local_down", "dns_down", "degraded", timeline.UNKNOWN)


def iso(ms: int | None) -> str | None:
    return None if ms is None else timeline.iso(ms)


def outage_dict(o: timeline.Outage) -> dict[str, Any]:
    """The fields of `wanwitness outages --json`, and the outage's length so far."""
    return {"agent": o.agent, "class": o.cls, "start": iso(o.start_ms), "end": iso(o.end_ms),
            "start_uncertainty_s": None if o.start_uncertainty_ms is None
            else o.start_uncertainty_ms / 1000,
            "evidence": o.evidence}


def outages(store: s.Store, *, agent: str | None = None, since_ms: int | None = None,
            until_ms: int | None = None, cls: str | None = None,
            now_ms: int | None = None) -> list[timeline.Outage]:
    rows = timeline.query(store, agent=agent, since_ms=since_ms, until_ms=until_ms,
                          now_ms=now_ms)
    return [o for o in rows if cls is None or o.cls == cls]


@dataclass
class _BootInfo:
    fw: str | None
    reset: str | None
    safe: bool | None
    hw: str | None = None


def _last_boots(conn: sa.Connection) -> dict[str, _BootInfo]:
    """Each agent's newest `boot` record: firmware, reset cause, safe mode."""
    R = s.records
    newest = (sa.select(R.c.agent, sa.func.max(R.c.seq).label("seq"))
              .where(R.c.k == "boot").group_by(R.c.agent).subquery())
    out: dict[str, _BootInfo] = {}
    for agent, body in conn.execute(
            sa.select(R.c.agent, R.c.body).join(newest, sa.and_(R.c.agent == newest.c.agent,
                                                                R.c.seq == newest.c.seq))):
        try:
            doc = json.loads(body)
        except ValueError:
            continue
        fw, reset, safe, hw = doc.get("fw"), doc.get("reset"), doc.get("safe"), doc.get("hw")
        out[agent] = _BootInfo(fw if isinstance(fw, str) else None,
                               reset if isinstance(reset, str) else None,
                               safe if isinstance(safe, bool) else None,
                               hw[:64] if isinstance(hw, str) and hw.isprintable() else None)
    return out


SEEN_RECENT = 200  # newest records of an agent searched for its LEDs' and targets' last word


def _seen(conn: sa.Connection, agent: str) -> dict[str, Any]:
    """What the witness sees, from its newest records: each LED's last state, each probe
    target's last result (the agent writes a probe record when a target's answer changes
    and for failures, so the newest one per target is its state now)."""
    R = s.records
    leds: dict[str, dict[str, Any]] = {}
    targets: dict[str, dict[str, Any]] = {}
    rows = conn.execute(sa.select(R.c.k, R.c.body, R.c.recv_ms)
                        .where(R.c.agent == agent, R.c.k.in_(("led", "probe")))
                        .order_by(R.c.seq.desc()).limit(SEEN_RECENT))
    for k, body, recv_ms in rows:
        try:
            doc = json.loads(body)
        except ValueError:
            continue
        if k == "led" and isinstance(doc.get("ch"), str) and doc["ch"] not in leds:
            leds[doc["ch"]] = {"state": doc.get("st"), "received": iso(recv_ms)}
        elif k == "probe" and isinstance(doc.get("tg"), str) and doc["tg"] not in targets:
            targets[doc["tg"]] = {"ok": doc.get("ok"), "rtt_ms": doc.get("rtt"),
                                  "error": doc.get("err"), "kind": doc.get("kind"),
                                  "received": iso(recv_ms)}
    return {"leds": dict(sorted(leds.items())), "targets": dict(sorted(targets.items()))}


LINE_STATES = ("up", "isp_down", "local_down", "dns_down", "degraded", timeline.UNKNOWN, "never_seen")


def line_state(spans: list[timeline.Outage], last_recv_ms: int | None) -> tuple[str, int | None]:
    """An agent's line state now and since when (UTC ms), from its outages and unknown
    spans: an ongoing one's class, else `never_seen` (nothing ever heard) or `up` since
    the last span ended (None: no span ever)."""
    ongoing = [o for o in spans if o.end_ms is None]
    if ongoing:
        # An outage outranks an unknown span that overlaps it at the end.
        now_span = min(ongoing, key=lambda o: (o.cls == timeline.UNKNOWN, -o.start_ms))
        return now_span.cls, now_span.start_ms
    if last_recv_ms is None:
        return "never_seen", None
    return "up", max((o.end_ms or 0 for o in spans), default=0) or None


def agents(store: s.Store, *, now_ms: int | None = None,
           status: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Every registered agent: the line's state now and since when, the last outage,
    when it was last heard from and what its newest heartbeat said of the board."""
    now = s.now_ms() if now_ms is None else now_ms
    spans = timeline.query(store, now_ms=now)
    by_agent: dict[str, list[timeline.Outage]] = {}
    for o in spans:
        by_agent.setdefault(o.agent, []).append(o)
    A = s.agents
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(A.c.id, A.c.enabled, A.c.hb_s, A.c.created_ms,
                                      A.c.last_recv_ms, A.c.last_hb, A.c.last_hb_ms)
                            .order_by(A.c.id)).all()
        boots = _last_boots(conn)
        seen = {r.id: _seen(conn, r.id) for r in rows}
    out = []
    for r in rows:
        mine = by_agent.get(r.id, [])
        ended = [o for o in mine if o.end_ms is not None and o.cls != timeline.UNKNOWN]
        state, since = line_state(mine, r.last_recv_ms)
        last = max(ended, key=lambda o: o.start_ms, default=None)
        try:
            health = json.loads(r.last_hb) if r.last_hb else {}
        except ValueError:
            health = {}
        boot = boots.get(r.id, _BootInfo(None, None, None))
        out.append({
            "id": r.id, "enabled": bool(r.enabled), "hb_s": r.hb_s,
            "state": state, "since": iso(since),
            "status": (status or {}).get(r.id),
            "last_seen": iso(r.last_recv_ms),
            "last_heartbeat": iso(r.last_hb_ms),
            "heap_free": health.get("heap"), "heap_peak": health.get("peak"),
            "rssi": health.get("rssi"), "outbox": health.get("q"),
            "flash_erases": health.get("fe"),
            "safe_mode": health.get("safe", boot.safe),
            "firmware": boot.fw, "hardware": boot.hw, "reset_cause": boot.reset,
            "last_outage": outage_dict(last) if last else None,
            "sees": seen[r.id],
        })
    return out


def ledger(store: s.Store, *, verify: bool = False) -> dict[str, Any]:
    """Each agent's chain (length, head), the newest checkpoint with its stamps, and the
    last verification (by `wanwitness ledger verify` or here); `verify`: verify the
    ledger now first (it reads every record)."""
    from wanwitness.collector.ledger import chain_heads, latest_checkpoint
    if verify:
        verify_and_record(store)
    with store.engine.connect() as conn:
        heads = chain_heads(conn)
        cp = latest_checkpoint(conn)
        stamped = 0 if cp is None else conn.execute(
            sa.select(sa.func.count()).where(s.stamps.c.checkpoint == cp.id)).scalar_one()
        last_ms = conn.execute(sa.select(s.records.c.recv_ms).order_by(s.records.c.pos.desc())
                               .limit(1)).scalar()
    done = last_verify(store)
    verified = None
    if done is not None:
        broken = done.get("broken_at")
        verified = {"at": iso(done.get("at_ms")), "ok": bool(done.get("ok")),
                    "count": done.get("count"), "agents": done.get("agents"),
                    "checkpoint": done.get("checkpoint"),
                    "broken_at": None if broken is None else str(broken), "problem": done.get("problem")}
    return {"count": sum(n for _, n, _ in heads),
            "chains": [{"agent": a, "links": n, "head": h} for a, n, h in heads],
            "checkpoint": None if cp is None else {
                "checkpoint": cp.id, "made": iso(cp.made_ms), "root": cp.root, "agents": cp.agents,
                "links": cp.links, "stamps": stamped},
            "last_record": iso(last_ms), "last_verify": verified}


# --- the period calendar ------------------------------------------------------------------

CALENDAR_CLASSES = ("up", "isp_down", "local_down", "dns_down", "degraded", timeline.UNKNOWN)


def _period_now(start_day: int, tz: ZoneInfo, now_ms: int) -> str:
    local = datetime.fromtimestamp(now_ms / 1000, UTC).astimezone(tz)
    y, m = local.year, local.month
    if local.day < start_day:
        y, m = (y - 1, 12) if m == 1 else (y, m - 1)
    return f"{y:04d}-{m:02d}"


def _first_heard(conn: sa.Connection, agent: str) -> int | None:
    return conn.execute(sa.select(sa.func.min(s.boots.c.first_recv_ms))
                        .where(s.boots.c.agent == agent)).scalar()


def pick_agent(store: s.Store, agent: str | None) -> tuple[str | None, list[str]]:
    """`agent`, checked, or when None the first agent heard from, else the first one
    (None: no agents); and every agent's name."""
    rows = _agent_ids(store)
    names = [r.id for r in rows]
    if agent is None:
        heard = [r.id for r in rows if r.last_recv_ms is not None]
        return (heard or names or [None])[0], names
    if agent not in names:
        raise UserError(f"no agent named {agent!r} (wanwitness agent list)")
    return agent, names


def calendar(store: s.Store, conf: Config, *, period: str | None = None, agent: str | None = None,
             now_ms: int | None = None) -> dict[str, Any]:
    """One 24-hour strip per local day of a billing period for one agent: what the line
    was, in segments with their share of the day; the tickets' opening and closing, and
    the configured rule pack's deadlines for each ticket, as marks. Time the witness did
    not see is `unknown` (hatched), time before its first contact and after now is left
    empty: no strip is drawn across a gap as if the line were up."""
    from wanwitness.claims import tickets as tk
    from wanwitness.claims.model import Tariff
    from wanwitness.claims.rules import get as get_pack

    now = s.now_ms() if now_ms is None else now_ms
    agent, names = pick_agent(store, agent)
    # With [lines], the agent's line: its tariff, rule pack and tickets (none: no line).
    line = conf.line_of(agent) if conf.lines and agent is not None else None
    if line is not None:
        conf = conf.for_line(line)
    tz = ZoneInfo(conf.tariff.timezone)
    tariff = Tariff(Decimal(0), "XXX", conf.tariff.period_start_day, conf.tariff.timezone)
    try:
        p = tariff.period(period or _period_now(conf.tariff.period_start_day, tz, now))
    except ValueError as e:
        raise UserError(str(e)) from None
    start_ms, end_ms = tk.to_ms(p.start), tk.to_ms(p.end)
    spans: list[timeline.Outage] = []
    first = None
    if agent is not None:
        spans = timeline.query(store, agent=agent, since_ms=start_ms, until_ms=end_ms, now_ms=now)
        with store.engine.connect() as conn:
            first = _first_heard(conn, agent)
    seen_from = max(start_ms, first) if first is not None else None
    seen_to = min(end_ms, now)

    marks: list[tuple[int, str, str]] = []  # (ms, kind, text)
    pack = None
    if conf.claim.rules:
        try:
            pack = get_pack(conf.claim.rules)
        except UserError:
            pack = None
    tickets = tk.list_all(store)
    if conf.lines:
        tickets = tk.of_line(tickets, conf)[0] if line is not None else []
    for t in tickets:
        marks.append((tk.to_ms(t.opened), "opened", f"ticket {t.number} reported"))
        if t.closed is not None:
            marks.append((tk.to_ms(t.closed), "closed", f"ticket {t.number} closed"))
        if pack is not None and (t.closed is None or t.closed > p.start):
            for at, what in pack.milestones(t, tz, conf.claim.options):
                marks.append((tk.to_ms(at), "deadline", f"ticket {t.number}, {pack.name}: {what}"))

    days = []
    for d in p.days():
        d0 = tk.to_ms(datetime(d.year, d.month, d.day, tzinfo=tz))
        nxt = date.fromordinal(d.toordinal() + 1)
        d1 = tk.to_ms(datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz))
        length = d1 - d0

        def seg(a: int, b: int, cls: str, title: str) -> dict[str, Any] | None:
            a, b = max(a, d0), min(b, d1)
            if b <= a:
                return None
            return {"cls": cls, "left": round(100 * (a - d0) / length, 3),
                    "width": round(100 * (b - a) / length, 3), "title": title,
                    "start": iso(a), "end": iso(b)}

        segs = []
        if seen_from is not None and seen_to > seen_from:
            base = seg(seen_from, seen_to, "up", "up")
            if base:
                segs.append(base)
        for o in spans:
            end = o.end_ms if o.end_ms is not None else now
            what = o.cls.replace("_", " ")
            piece = seg(o.start_ms, end, o.cls,
                        f"{what} {_clock(o.start_ms, tz)}–{_clock(end, tz)}"
                        f"{'' if o.end_ms is not None else ' (going on)'}")
            if piece:
                segs.append(piece)
        day_marks = [{"kind": kind, "left": round(100 * (ms - d0) / length, 3),
                      "title": f"{_clock(ms, tz)} {text}"}
                     for ms, kind, text in sorted(marks) if d0 <= ms < d1]
        down_ms = sum(min(o.end_ms if o.end_ms is not None else now, d1) - max(o.start_ms, d0)
                      for o in spans if o.cls != timeline.UNKNOWN
                      and o.start_ms < d1 and (o.end_ms if o.end_ms is not None else now) > d0)
        days.append({"date": d.isoformat(), "weekday": d.strftime("%a"), "hours": length / 3_600_000,
                     "segments": segs, "marks": day_marks, "down_s": max(down_ms, 0) / 1000,
                     "future": d0 >= now})
    return {"period": p.label, "agent": agent, "agents": names, "timezone": tz.key, "line": line,
            "days": days, "rules": pack.name if pack else None}


def _clock(ms: int, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(tz).strftime("%H:%M:%S")


def _agent_ids(store: s.Store) -> list[Any]:
    with store.engine.connect() as conn:
        return list(conn.execute(sa.select(s.agents.c.id, s.agents.c.last_recv_ms)
                                 .order_by(s.agents.c.id)))


# --- one outage and the records behind it --------------------------------------------------

def outage_detail(store: s.Store, agent: str, start: str, *,
                  now_ms: int | None = None) -> dict[str, Any]:
    """The outage (or unknown span) of `agent` that starts at `start` (its ISO time as
    listed), and the ledger records it was derived from: opening, restating and closing
    state records, each with its position and hash in the chain."""
    rows = timeline.query(store, agent=agent, now_ms=now_ms)
    found = [o for o in rows if iso(o.start_ms) == start]
    if not found:
        raise UserError(f"no outage of {agent!r} starts at {start} (wanwitness outages --agent {agent})")
    o = found[0]
    ev = o.evidence
    roles = [("opened it", ev.get("open_seq"))]
    roles += [("restated it", q) for q in ev.get("cont_seqs") or []]
    roles.append(("closed it", ev.get("close_seq")))
    wanted = {q: role for role, q in roles if isinstance(q, int) and not isinstance(q, bool)}
    R = s.records
    records = []
    if wanted:
        with store.engine.connect() as conn:
            for r in conn.execute(
                    sa.select(R.c.seq, R.c.boot, R.c.k, R.c.t.label("agent_t"), R.c.body, R.c.recv_ms,
                              R.c.link, R.c.hash)
                    .where(R.c.agent == agent, R.c.seq.in_(sorted(wanted))).order_by(R.c.seq)):
                records.append({"seq": r.seq, "role": wanted[r.seq], "boot": r.boot, "kind": r.k,
                                "t": r.agent_t, "received": iso(r.recv_ms), "link": r.link,
                                "hash": r.hash, "body": json.loads(r.body)})
    end_note = None
    if o.end_ms is not None and ev.get("close_seq") is None:
        end_note = ev.get("end") or "ended without a closing record (the agent restarted or went silent)"
    return {"outage": outage_dict(o), "records": records, "end_note": end_note,
            "duration_s": None if o.end_ms is None else (o.end_ms - o.start_ms) / 1000}
