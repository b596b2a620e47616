"""Quarantine: what was refused and why (`write`), bounded per agent; listing and pruning.

A refused message is kept once per distinct refusal: the same agent, reason and payload
(SHA-256) again only counts up `count` and `last_recv_ms`, so an agent resending a
batch the collector refuses adds nothing but a number. Each agent has a quota of rows
and payload bytes, and everyone who is not a registered agent shares one (bucket ""),
or a flood of made-up names would bypass it. Beyond the quota a refusal is counted in
`quarantine_quota` and not kept: the first rows are the sample, the counts stay exact.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from wanwitness import store as s
from wanwitness.collector.protocol import MAX_PAYLOAD
from wanwitness.store.schema import quarantine_quota

DEFAULT_MAX_ROWS = 1000
DEFAULT_MAX_BYTES = 4 * 1024 * 1024  # 64 full-size payloads

KEPT, REPEAT, DROPPED = "kept", "repeat", "dropped"
UNKNOWN_BUCKET = ""


@dataclass(frozen=True)
class Quota:
    """Per agent: most rows and payload bytes kept (`[collector] quarantine_max_*`)."""
    max_rows: int = DEFAULT_MAX_ROWS
    max_bytes: int = DEFAULT_MAX_BYTES


def write(conn: Connection, *, recv_ms: int, topic: str, payload: bytes, agent: str | None,
          reason: str, registered: bool = False, quota: Quota | None = None) -> str:
    """The one place a refused message is kept: its bytes (up to the largest message
    accepted), where it came from and why, each cut to its column's size. Returns
    KEPT, REPEAT (an identical refusal: counted on its row) or DROPPED (over quota:
    counted only). `registered`: `agent` is a registered agent, with its own quota."""
    Q, QQ = s.quarantine, quarantine_quota
    quota = quota or Quota()
    digest = hashlib.sha256(payload).hexdigest()
    # PostgreSQL's text holds no NUL; MQTT forbids it in topics, but a refusal must never fail.
    topic, reason = _text(topic[:1000]), _text(reason[:2000])
    who = _text(agent[:200]) if agent else None
    same = conn.execute(sa.select(Q.c.id).where(
        Q.c.sha256 == digest, Q.c.reason == reason,
        Q.c.agent.is_(None) if who is None else Q.c.agent == who).limit(1)).scalar()
    if same is not None:
        conn.execute(Q.update().where(Q.c.id == same).values(
            count=Q.c.count + 1,
            last_recv_ms=sa.case((sa.func.coalesce(Q.c.last_recv_ms, Q.c.recv_ms) < recv_ms, recv_ms),
                                 else_=sa.func.coalesce(Q.c.last_recv_ms, Q.c.recv_ms))))
        return REPEAT
    bucket = who if registered and who else UNKNOWN_BUCKET
    used = conn.execute(sa.select(QQ.c.kept_rows, QQ.c.kept_bytes)
                        .where(QQ.c.bucket == bucket)).first()
    if used is None:
        conn.execute(QQ.insert().values(bucket=bucket, kept_rows=0, kept_bytes=0, dropped=0,
                                        dropped_bytes=0))
        rows, nbytes = 0, 0
    else:
        rows, nbytes = used
    kept = payload[:MAX_PAYLOAD]
    where = QQ.c.bucket == bucket
    if rows + 1 > quota.max_rows or nbytes + len(kept) > quota.max_bytes:
        conn.execute(QQ.update().where(where).values(
            dropped=QQ.c.dropped + 1, dropped_bytes=QQ.c.dropped_bytes + len(payload),
            last_dropped_ms=recv_ms))
        return DROPPED
    conn.execute(Q.insert().values(
        recv_ms=recv_ms, last_recv_ms=recv_ms, topic=topic, agent=who, reason=reason,
        size=len(payload), payload=kept, sha256=digest, count=1))
    conn.execute(QQ.update().where(where).values(kept_rows=QQ.c.kept_rows + 1,
                                                 kept_bytes=QQ.c.kept_bytes + len(kept)))
    return KEPT


def _text(value: str) -> str:
    return value.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def _bucket_of() -> sa.ColumnElement[str]:
    """A quarantine row's bucket: its agent when registered, else ""."""
    Q = s.quarantine
    return sa.case((Q.c.agent.in_(sa.select(s.agents.c.id)), Q.c.agent), else_=sa.literal(""))


def prune(store: s.Store, before_ms: int) -> tuple[int, int]:
    """Delete the rows last seen before `before_ms` and the drop counts of quotas last
    dropping before it; returns (rows deleted, messages they stood for)."""
    Q, QQ = s.quarantine, quarantine_quota
    last = sa.func.coalesce(Q.c.last_recv_ms, Q.c.recv_ms)
    with store.engine.begin() as conn:
        rows, copies = conn.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(Q.c.count), 0))
                                    .where(last < before_ms)).one()
        conn.execute(Q.delete().where(last < before_ms))
        conn.execute(QQ.update().where(QQ.c.last_dropped_ms < before_ms)
                     .values(dropped=0, dropped_bytes=0, last_dropped_ms=None))
        # What is left counts against each quota again.
        bucket = _bucket_of().label("bucket")
        left = {b: (n, size) for b, n, size in conn.execute(
            sa.select(bucket, sa.func.count(), sa.func.coalesce(sa.func.sum(sa.func.length(Q.c.payload)), 0))
            .group_by(bucket))}
        for b in conn.execute(sa.select(QQ.c.bucket)).scalars().all():
            n, size = left.get(b, (0, 0))
            conn.execute(QQ.update().where(QQ.c.bucket == b).values(kept_rows=n, kept_bytes=size))
    return int(rows), int(copies)


def counts(store: s.Store) -> list[tuple[str, int]]:
    """Messages refused per kind of reason (the text before the first ':'), repeats
    included; what was dropped over quota is counted per agent (`quotas`)."""
    Q = s.quarantine
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(Q.c.reason, Q.c.count)).all()
    tally: dict[str, int] = {}
    for reason, n in rows:
        key = reason.split(":", 1)[0]
        tally[key] = tally.get(key, 0) + n
    return sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))


@dataclass(frozen=True)
class BucketUse:
    bucket: str            # agent id, or "" for unknown senders
    kept_rows: int
    kept_bytes: int
    copies: int            # messages the kept rows stand for (repeats included)
    dropped: int
    dropped_bytes: int


def quotas(store: s.Store) -> list[BucketUse]:
    Q, QQ = s.quarantine, quarantine_quota
    bucket = _bucket_of().label("bucket")
    with store.engine.connect() as conn:
        copies: dict[str, int] = {b: n for b, n in conn.execute(
            sa.select(bucket, sa.func.sum(Q.c.count)).group_by(bucket))}
        rows = conn.execute(sa.select(QQ).order_by(QQ.c.bucket)).all()
    return [BucketUse(r.bucket, r.kept_rows, r.kept_bytes, int(copies.get(r.bucket) or 0),
                      r.dropped, r.dropped_bytes)
            for r in rows if r.kept_rows or r.dropped]


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S") + "Z"


def _size(n: int) -> str:
    return f"{n / 1048576:.1f} MiB" if n >= 1048576 else f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} B"


def summary(store: s.Store, limit: int = 50) -> str:
    Q = s.quarantine
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(Q.c.id, Q.c.recv_ms, Q.c.last_recv_ms, Q.c.count, Q.c.topic,
                                      Q.c.reason, Q.c.size)
                            .order_by(Q.c.id.desc()).limit(limit)).all()
    use = quotas(store)
    if not rows and not use:
        return "quarantine is empty"
    lines = ["refused   kept  dropped  agent"]
    for u in use:
        lines.append(f"{u.copies + u.dropped:>7}  {u.kept_rows:>5}  {u.dropped:>7}  "
                     f"{u.bucket or '(unknown senders)'} ({_size(u.kept_bytes)} kept)")
    lines += ["", "count  reason (messages kept, repeats included)"]
    lines += [f"{n:>5}  {reason}" for reason, n in counts(store)]
    lines.append("")
    for r in reversed(rows):
        again = f" x{r.count}, last {_when(r.last_recv_ms)}" if r.count > 1 and r.last_recv_ms else ""
        lines.append(f"#{r.id} {_when(r.recv_ms)} {r.topic} ({r.size} B{again}): {r.reason}")
    return "\n".join(lines)
