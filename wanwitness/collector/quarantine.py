"""Quarantine: what was refused and why (`write`), for `wanwitness quarantine list`."""

from __future__ import annotations

from datetime import UTC

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from wanwitness import store as s
from wanwitness.collector.protocol import MAX_PAYLOAD


def write(conn: Connection, *, recv_ms: int, topic: str, payload: bytes, agent: str | None,
          reason: str) -> None:
    """The one place a refused message is kept: its bytes (up to the largest message
    accepted), where it came from and why, each cut to its column's size."""
    conn.execute(s.quarantine.insert().values(
        recv_ms=recv_ms, topic=topic[:1000], agent=agent[:200] if agent else None,
        reason=reason[:2000], size=len(payload), payload=payload[:MAX_PAYLOAD]))


def counts(store: s.Store) -> list[tuple[str, int]]:
    """Number of quarantined messages per kind of reason (the text before the first ':')."""
    Q = s.quarantine
    with store.engine.connect() as conn:
        reasons = conn.execute(sa.select(Q.c.reason)).scalars().all()
    tally: dict[str, int] = {}
    for reason in reasons:
        key = reason.split(":", 1)[0]
        tally[key] = tally.get(key, 0) + 1
    return sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))


def summary(store: s.Store, limit: int = 50) -> str:
    from datetime import datetime
    Q = s.quarantine
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(Q.c.id, Q.c.recv_ms, Q.c.topic, Q.c.reason, Q.c.size)
                            .order_by(Q.c.id.desc()).limit(limit)).all()
    if not rows:
        return "quarantine is empty"
    lines = ["count  reason"]
    lines += [f"{n:>5}  {reason}" for reason, n in counts(store)]
    lines.append("")
    for r in reversed(rows):
        when = datetime.fromtimestamp(r.recv_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"#{r.id} {when}Z {r.topic} ({r.size} B): {r.reason}")
    return "\n".join(lines)
