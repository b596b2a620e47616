"""What the web UI and its API read from the store, as plain dicts (JSON-ready).

The pages and `/api/v1` share these functions, so a page never shows something the
API would not say. Times are UTC ISO 8601 strings with milliseconds and a `Z`, as in
`wanwitness outages --json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from wanwitness import store as s
from wanwitness.collector import timeline
from wanwitness.collector.ledger import last_verify, verify_and_record

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
        fw, reset, safe = doc.get("fw"), doc.get("reset"), doc.get("safe")
        out[agent] = _BootInfo(fw if isinstance(fw, str) else None,
                               reset if isinstance(reset, str) else None,
                               safe if isinstance(safe, bool) else None)
    return out


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
    out = []
    for r in rows:
        mine = by_agent.get(r.id, [])
        ongoing = [o for o in mine if o.end_ms is None]
        ended = [o for o in mine if o.end_ms is not None and o.cls != timeline.UNKNOWN]
        if ongoing:
            # An outage outranks an unknown span that overlaps it at the end.
            now_span = min(ongoing, key=lambda o: (o.cls == timeline.UNKNOWN, -o.start_ms))
            state, since = now_span.cls, now_span.start_ms
        elif r.last_recv_ms is None:
            state, since = "never_seen", None
        else:
            state = "up"
            last_end = max((o.end_ms or 0 for o in mine), default=0)
            since = last_end or None
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
            "firmware": boot.fw, "reset_cause": boot.reset,
            "last_outage": outage_dict(last) if last else None,
        })
    return out


def ledger(store: s.Store, *, verify: bool = False) -> dict[str, Any]:
    """The ledger's head and length, and the last verification of its chain (by
    `wanwitness verify` or here); `verify`: recompute the chain now first (it reads
    every record)."""
    if verify:
        verify_and_record(store)
    with store.engine.connect() as conn:
        head = conn.execute(sa.select(s.ledger_head.c.pos, s.ledger_head.c.hash)
                            .where(s.ledger_head.c.id == 1)).first()
        last_ms = conn.execute(sa.select(sa.func.max(s.ledger.c.recv_ms))).scalar()
    done = last_verify(store)
    verified = None
    if done is not None:
        verified = {"at": iso(done.get("at_ms")), "ok": bool(done.get("ok")),
                    "count": done.get("count"), "head": done.get("head"),
                    "broken_at": done.get("broken_at"), "problem": done.get("problem")}
    return {"count": head.pos if head else 0, "head": head.hash if head else None,
            "last_record": iso(last_ms), "last_verify": verified}
