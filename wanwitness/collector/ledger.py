"""The ledger: every accepted record is chained into one hash chain.

    h_0   = 32 zero bytes
    h_pos = sha256(h_{pos-1} || entry || ascii(recv_ms))
    entry = canonical JSON of {"agent": id, "boot": boot, "rec": record}

`recv_ms` is the collector's UTC milliseconds when the message arrived. Anyone with
the records and the head hash can recompute the chain (the evidence bundle ships a
standalone copy of `verify_rows`); editing, deleting or reordering a record breaks
the link at that position.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import sqlalchemy as sa

from wanwitness import store as s

GENESIS = bytes(32)


def entry_bytes(agent: str, boot: int, body: str) -> bytes:
    """Canonical {"agent","boot","rec"} built around the stored canonical record."""
    # Keys sort as agent < boot < rec, so this concatenation *is* the canonical form.
    return (b'{"agent":' + json.dumps(agent, ensure_ascii=False).encode("utf-8")
            + b',"boot":' + str(boot).encode() + b',"rec":' + body.encode("utf-8") + b"}")


def link(prev: bytes, agent: str, boot: int, body: str, recv_ms: int) -> bytes:
    h = hashlib.sha256(prev)
    h.update(entry_bytes(agent, boot, body))
    h.update(str(recv_ms).encode())
    return h.digest()


@dataclass
class VerifyResult:
    ok: bool
    count: int
    head: str
    broken_pos: int | None = None
    problem: str | None = None


def verify_rows(rows: Iterable[tuple]) -> VerifyResult:
    """rows: (pos, ledger agent, ledger seq, ledger recv, hash, rec agent, rec seq, boot,
    body, rec recv) in pos order, rec columns None when the record row is missing."""
    prev = GENESIS
    expect = 1
    count = 0
    for pos, agent, seq, recv, hexhash, r_agent, _r_seq, boot, body, r_recv in rows:
        where = f"link {pos} ({agent} seq {seq})"
        if pos != expect:
            return VerifyResult(False, count, prev.hex(), expect,
                                f"link {expect} is missing (next link is {pos})")
        if body is None:
            return VerifyResult(False, count, prev.hex(), pos, f"{where}: its record is missing")
        if r_recv != recv:
            return VerifyResult(False, count, prev.hex(), pos,
                                f"{where}: record receive time {r_recv} differs from the ledger's {recv}")
        h = link(prev, r_agent, boot, body, recv)
        if h.hex() != hexhash:
            return VerifyResult(False, count, prev.hex(), pos,
                                f"{where}: hash mismatch (record edited, replaced or reordered)")
        prev = h
        expect += 1
        count += 1
    return VerifyResult(True, count, prev.hex())


def _rows(conn: sa.Connection, upto: int | None = None, batch: int = 5000) -> Iterator[tuple]:
    L, R = s.ledger, s.records
    last = 0
    while True:
        q = (sa.select(L.c.pos, L.c.agent, L.c.seq, L.c.recv_ms, L.c.hash,
                       R.c.agent, R.c.seq, R.c.boot, R.c.body, R.c.recv_ms)
             .select_from(L.outerjoin(R, sa.and_(R.c.agent == L.c.agent, R.c.seq == L.c.seq,
                                                 R.c.pos == L.c.pos)))
             .where(L.c.pos > last).order_by(L.c.pos).limit(batch))
        if upto is not None:
            q = q.where(L.c.pos <= upto)
        chunk = conn.execute(q).all()
        if not chunk:
            return
        yield from (tuple(r) for r in chunk)
        last = chunk[-1][0]


def verify(store: s.Store) -> VerifyResult:
    # The head is read first and the chain walked up to it: a collector committing
    # meanwhile only adds links after it (ingest writes records, links and the head in
    # one transaction), so a live store never looks broken.
    L, R = s.ledger, s.records
    with store.engine.connect() as conn:
        head = conn.execute(sa.select(s.ledger_head.c.pos, s.ledger_head.c.hash)).first()
        result = verify_rows(_rows(conn, head.pos if head is not None else None))
        if not result.ok:
            return result
        # Records without their link, whenever they were written.
        orphans = conn.execute(sa.select(sa.func.count()).select_from(
            R.outerjoin(L, sa.and_(L.c.pos == R.c.pos, L.c.agent == R.c.agent, L.c.seq == R.c.seq)))
            .where(L.c.pos.is_(None))).scalar_one()
    if head is not None and (head.pos != result.count or head.hash != result.head):
        return VerifyResult(False, result.count, result.head, result.count + 1,
                            f"the chain ends at link {result.count} but the head says link "
                            f"{head.pos}: links after {result.count} were deleted")
    if orphans:
        return VerifyResult(False, result.count, result.head, None,
                            f"{orphans} record(s) are not in the ledger")
    return result


LAST_VERIFY_KEY = "ledger.last_verify"


def verify_and_record(store: s.Store) -> VerifyResult:
    """`verify`, and its result kept in the store's settings (what the web UI and
    `GET /api/v1/ledger` show as the last verification)."""
    result = verify(store)
    store.set_setting(LAST_VERIFY_KEY, json.dumps({
        "at_ms": s.now_ms(), "ok": result.ok, "count": result.count, "head": result.head,
        "broken_at": result.broken_pos, "problem": result.problem}, sort_keys=True))
    return result


def last_verify(store: s.Store) -> dict | None:
    """The last recorded verification (`verify_and_record`), or None."""
    text = store.setting(LAST_VERIFY_KEY)
    if not text:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None
