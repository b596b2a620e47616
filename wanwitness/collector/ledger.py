"""The ledger: a hash chain per agent, and checkpoints that commit all of them.

Each agent's accepted records form its own chain (its own genesis, its own link
numbers), stored on the record row (schema.records: link, hash):

    h_0 = 32 zero bytes
    h_n = sha256(h_{n-1} || entry || ascii(recv_ms))
    entry = canonical JSON of {"agent": id, "boot": boot, "rec": record}

`recv_ms` is the collector's UTC milliseconds when the message arrived. Anyone with an
agent's records and its head can recompute its chain (the evidence bundle ships a
standalone verifier); editing, deleting or reordering a record breaks the link at
that number. Ingest extends a chain under a lock on that agent only, so agents never
wait for each other.

A checkpoint commits every agent's head at one moment: the Merkle root (RFC 6962
shape) over the leaves sorted by agent,

    leaf = sha256(0x00 || canonical JSON {"agent": id, "hash": h_n hex, "link": n})
    node = sha256(0x01 || left || right)      (the empty tree: sha256 of nothing)

so one trusted timestamp of a root covers every agent, and an agent's evidence needs
only its own chain plus the few sibling hashes from its leaf to the root (an
inclusion proof), none of the other agents' records or names.

Before migration 11 the ledger was one chain over all agents (h_pos over every
record in arrival order); it is kept frozen in `ledger_v1`, and `verify` still checks
it and the stamps made of it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from wanwitness import store as s

log = logging.getLogger("wanwitness.ledger")

GENESIS = bytes(32)
EMPTY_ROOT = hashlib.sha256(b"").digest()


def entry_bytes(agent: str, boot: int, body: str) -> bytes:
    """Canonical {"agent","boot","rec"} built around the stored canonical record."""
    # Keys sort as agent < boot < rec, so this concatenation *is* the canonical form.
    return (_entry_head(agent) + str(boot).encode() + b',"rec":' + body.encode("utf-8") + b"}")


@functools.lru_cache(maxsize=4096)
def _entry_head(agent: str) -> bytes:
    return b'{"agent":' + json.dumps(agent, ensure_ascii=False).encode("utf-8") + b',"boot":'


def link(prev: bytes, agent: str, boot: int, body: str, recv_ms: int) -> bytes:
    h = hashlib.sha256(prev)
    h.update(entry_bytes(agent, boot, body))
    h.update(str(recv_ms).encode())
    return h.digest()


# --- Merkle trees (RFC 6962 shape) -------------------------------------------------------

def leaf_hash(agent: str, n: int, head: str) -> bytes:
    doc = json.dumps({"agent": agent, "hash": head, "link": n}, sort_keys=True,
                     separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(b"\x00" + doc.encode("utf-8")).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(merkle_root(leaves[:k]), merkle_root(leaves[k:]))


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """The sibling hashes from leaf `index` up to the root, lowest first."""
    if len(leaves) <= 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return inclusion_proof(leaves[:k], index) + [merkle_root(leaves[k:])]
    return inclusion_proof(leaves[k:], index - k) + [merkle_root(leaves[:k])]


def root_from_proof(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes:
    """The root that leaf `index` of a tree of `size` leaves and its proof lead to;
    ValueError when the proof has not the length such a tree needs."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} of a tree of {size}")
    if size == 1:
        if path:
            raise ValueError("the proof is longer than the tree is deep")
        return leaf
    if not path:
        raise ValueError("the proof is shorter than the tree is deep")
    k = _split(size)
    if index < k:
        return node_hash(root_from_proof(leaf, index, k, path[:-1]), path[-1])
    return node_hash(path[-1], root_from_proof(leaf, index - k, size - k, path[:-1]))


# --- checkpoints ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Checkpoint:
    id: int
    made_ms: int
    root: str
    agents: int
    links: int


def _cp(row: Any) -> Checkpoint:
    return Checkpoint(int(row.id), int(row.made_ms), row.root, int(row.agents), int(row.links))


def _cp_select():
    C = s.checkpoints
    return sa.select(C.c.id, C.c.made_ms, C.c.root, C.c.agents, C.c.links)


def latest_checkpoint(conn: sa.Connection) -> Checkpoint | None:
    row = conn.execute(_cp_select().order_by(s.checkpoints.c.id.desc()).limit(1)).first()
    return _cp(row) if row is not None else None


def get_checkpoint(conn: sa.Connection, cp_id: int) -> Checkpoint | None:
    row = conn.execute(_cp_select().where(s.checkpoints.c.id == cp_id)).first()
    return _cp(row) if row is not None else None


def chain_heads(conn: sa.Connection) -> list[tuple[str, int, str]]:
    """Every agent's head (agent, link, hash), agents with no link left out, sorted by
    agent (Python's order, the same on every backend). One statement: one snapshot."""
    A = s.agents
    rows = conn.execute(sa.select(A.c.id, A.c.chain_n, A.c.chain_hash).where(A.c.chain_n > 0)).all()
    return sorted((r.id, int(r.chain_n), r.chain_hash) for r in rows)


def checkpoint_heads(conn: sa.Connection, cp_id: int) -> list[tuple[str, int, str]]:
    H = s.checkpoint_heads
    rows = conn.execute(sa.select(H.c.agent, H.c.link, H.c.hash).where(H.c.checkpoint == cp_id)).all()
    return sorted((r.agent, int(r.link), r.hash) for r in rows)


def checkpoint_in(conn: sa.Connection) -> Checkpoint | None:
    """A checkpoint of the heads now, in the caller's transaction: the newest one when
    nothing changed since it, None when the ledger is empty."""
    heads = chain_heads(conn)
    if not heads:
        return None
    links = sum(n for _, n, _ in heads)
    last = latest_checkpoint(conn)
    if last is not None and last.links == links and last.agents == len(heads):
        return last
    root = merkle_root([leaf_hash(a, n, h) for a, n, h in heads]).hex()
    made = s.now_ms()
    key = conn.execute(s.checkpoints.insert().values(made_ms=made, root=root, agents=len(heads),
                                                     links=links)).inserted_primary_key
    assert key is not None
    cp_id = int(key[0])
    conn.execute(s.checkpoint_heads.insert(),
                 [dict(checkpoint=cp_id, agent=a, link=n, hash=h) for a, n, h in heads])
    return Checkpoint(cp_id, made, root, len(heads), links)


def covering_checkpoint(conn: sa.Connection, need: dict[str, int]) -> Checkpoint | None:
    """The checkpoint that best backs records up to link need[agent] of each agent:
    the earliest stamped one that commits them all, else the earliest that does (the
    newest when `need` is empty); None when none does yet."""
    H, S = s.checkpoint_heads, s.stamps
    if not need:
        return latest_checkpoint(conn)
    lower = 0
    for agent, n in sorted(need.items()):
        first = conn.execute(sa.select(sa.func.min(H.c.checkpoint))
                             .where(H.c.agent == agent, H.c.link >= n)).scalar()
        if first is None:
            return None
        lower = max(lower, int(first))
    stamped = conn.execute(sa.select(sa.func.min(S.c.checkpoint)).where(S.c.checkpoint >= lower)).scalar()
    return get_checkpoint(conn, int(stamped) if stamped is not None else lower)


def make_checkpoint(store: s.Store) -> tuple[Checkpoint | None, bool]:
    """A checkpoint of every agent's head now: (it, True) when made, (the newest, False)
    when nothing changed since it; (None, False) while the ledger is empty."""
    with store.engine.begin() as conn:
        before = latest_checkpoint(conn)
        cp = checkpoint_in(conn)
    return cp, cp is not None and (before is None or cp.id != before.id)


class Checkpointer:
    """`collect`'s checkpoints: every interval_s when records came since the last one.
    Its own thread; errors are logged and tried again at the next interval."""

    def __init__(self, store: s.Store, interval_s: int):
        self.store, self.interval_s = store, interval_s
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, name="wanwitness-checkpoint", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)

    def round(self) -> None:
        try:
            cp, made = make_checkpoint(self.store)
        except Exception as e:  # the store: logged, tried again later
            log.warning("checkpoint: %s", e)
            return
        if made and cp is not None:
            log.info("checkpoint %d: %d agent(s), %d link(s), root %s", cp.id, cp.agents, cp.links, cp.root)

    def run(self) -> None:
        while not self.stopping.wait(self.interval_s):
            self.round()


# --- verification ------------------------------------------------------------------------------

@dataclass
class VerifyResult:
    ok: bool
    count: int                      # links verified, all agents
    agents: int = 0                 # chains verified
    checkpoints: int = 0
    stamps: int = 0
    legacy: int = 0                 # links of the pre-migration single chain verified
    checkpoint: Checkpoint | None = None  # the newest checkpoint
    where: str | None = None        # what breaks: "agent A link 5", "checkpoint 3", ...
    problem: str | None = None
    broken_agent: str | None = None  # the agent, link and checkpoint named in `where`
    broken_link: int | None = None
    broken_checkpoint: int | None = None


class _Broken(Exception):
    def __init__(self, where: str, problem: str, agent: str | None = None, link: int | None = None,
                 checkpoint: int | None = None):
        super().__init__(f"{where}: {problem}")
        self.where, self.problem = where, problem
        self.agent, self.link, self.checkpoint = agent, link, checkpoint


def _walk_chain(conn: sa.Connection, agent: str, upto: int, marks: set[int],
                batch: int = 5000) -> dict[int, str]:
    """Recompute one agent's chain up to link `upto`; returns its hashes at `marks`."""
    R = s.records
    prev, expect, found = GENESIS, 1, {}
    while expect <= upto:
        rows = conn.execute(
            sa.select(R.c.link, R.c.seq, R.c.boot, R.c.body, R.c.recv_ms, R.c.hash)
            .where(R.c.agent == agent, R.c.link >= expect, R.c.link <= upto)
            .order_by(R.c.link).limit(batch)).all()
        if not rows:
            raise _Broken(f"agent {agent} link {expect}",
                          f"the chain ends at link {expect - 1} but the agent's head says link "
                          f"{upto}: links after {expect - 1} were deleted", agent, expect)
        for n, seq, boot, body, recv, digest in rows:
            where = f"agent {agent} link {n} (seq {seq})"
            if n != expect:
                raise _Broken(f"agent {agent} link {expect}",
                              f"link {expect} is missing (the next is link {n}, seq {seq})", agent, expect)
            h = link(prev, agent, boot, body, recv)
            if h.hex() != digest:
                raise _Broken(where, "hash mismatch (record edited, replaced or reordered)", agent, n)
            if n in marks:
                found[n] = digest
            prev, expect = h, expect + 1
    return found


def _walk_legacy(conn: sa.Connection, upto: int, marks: set[int], batch: int = 5000) -> dict[int, str]:
    """Recompute the pre-migration single chain (ledger_v1) up to link `upto`."""
    L, R = s.ledger_v1, s.records
    prev, expect, found = GENESIS, 1, {}
    while expect <= upto:
        rows = conn.execute(
            sa.select(L.c.pos, L.c.agent, L.c.seq, L.c.recv_ms, L.c.hash, R.c.boot, R.c.body, R.c.recv_ms)
            .select_from(L.outerjoin(R, sa.and_(R.c.agent == L.c.agent, R.c.seq == L.c.seq,
                                                R.c.pos == L.c.pos)))
            .where(L.c.pos >= expect, L.c.pos <= upto).order_by(L.c.pos).limit(batch)).all()
        if not rows:
            raise _Broken(f"old single chain link {expect}",
                          f"it ends at link {expect - 1}, its head says link {upto}")
        for pos, agent, seq, recv, digest, boot, body, r_recv in rows:
            where = f"old single chain link {pos} ({agent} seq {seq})"
            if pos != expect:
                raise _Broken(f"old single chain link {expect}", f"link {expect} is missing")
            if body is None:
                raise _Broken(where, "its record is missing")
            if r_recv != recv:
                raise _Broken(where, f"record receive time {r_recv} differs from the ledger's {recv}")
            h = link(prev, agent, boot, body, recv)
            if h.hex() != digest:
                raise _Broken(where, "hash mismatch (record edited, replaced or reordered)")
            if pos in marks:
                found[pos] = digest
            prev, expect = h, expect + 1
    return found


def stamp_imprint(reply: bytes) -> bytes:
    """The SHA-256 messageImprint of a stored TimeStampResp (ValueError if unreadable)."""
    import rfc3161_client as tsp
    from cryptography import x509
    info = tsp.decode_timestamp_response(reply).tst_info
    if info.message_imprint.hash_algorithm != x509.ObjectIdentifier("2.16.840.1.101.3.4.2.1"):
        raise ValueError("its imprint is not SHA-256")
    return bytes(info.message_imprint.message)


def verify(store: s.Store) -> VerifyResult:
    """Every agent's chain, every checkpoint (its root recomputes from its heads, each
    head is a link of its chain), every stamp (its imprint is the hash it names, which is
    a checkpoint's root or a link of the old single chain), and the old single chain."""
    result = VerifyResult(True, 0)
    try:
        _verify(store, result)
    except _Broken as e:
        result.ok, result.where, result.problem = False, e.where, e.problem
        result.broken_agent, result.broken_link, result.broken_checkpoint = e.agent, e.link, e.checkpoint
    return result


def _verify(store: s.Store, result: VerifyResult) -> None:
    # Checkpoints and stamps are read first, the heads next, the records last: a
    # collector committing meanwhile only adds links after the heads read, and a
    # checkpoint made meanwhile is not looked at, so a live store never looks broken.
    C, S = s.checkpoints, s.stamps
    with store.engine.connect() as conn:
        stamp_rows = conn.execute(sa.select(S.c.id, S.c.pos, S.c.hash, S.c.tsa, S.c.reply,
                                            S.c.checkpoint).order_by(S.c.id)).all()
        cps = [_cp(r) for r in conn.execute(_cp_select().order_by(C.c.id))]
        marks: dict[str, dict[int, list[tuple[int, str]]]] = {}
        for cp in cps:
            heads = checkpoint_heads(conn, cp.id)
            root = merkle_root([leaf_hash(a, n, h) for a, n, h in heads]).hex()
            if root != cp.root or len(heads) != cp.agents:
                raise _Broken(f"checkpoint {cp.id}", f"its root {cp.root} does not recompute from "
                              f"its {len(heads)} head(s) (they give {root})", checkpoint=cp.id)
            for a, n, h in heads:
                marks.setdefault(a, {}).setdefault(n, []).append((cp.id, h))
        result.checkpoints = len(cps)
        result.checkpoint = cps[-1] if cps else None
        heads = chain_heads(conn)
        known = {a for a, _, _ in heads}
        for agent in sorted(set(marks) - known):
            cp_id = min(c for links in marks[agent].values() for c, _ in links)
            raise _Broken(f"checkpoint {cp_id}", f"it commits agent {agent}, which has no chain",
                          agent, checkpoint=cp_id)
        for agent, n, head in heads:
            at = _walk_chain(conn, agent, n, set(marks.get(agent, {})) | {n})
            if at[n] != head:
                raise _Broken(f"agent {agent} link {n}", f"the agent's head says hash {head}, the "
                              f"chain has {at[n]} (the head was rewritten)", agent, n)
            for m, named in sorted(marks.get(agent, {}).items()):
                for cp_id, h in named:
                    if m > n:
                        raise _Broken(f"checkpoint {cp_id}", f"it commits link {m} of agent {agent}, "
                                      f"whose chain has only {n} link(s) (links were deleted)",
                                      agent, m, cp_id)
                    if at[m] != h:
                        raise _Broken(f"checkpoint {cp_id}", f"it commits agent {agent} link {m} with "
                                      f"hash {h}, the chain has {at[m]} there (the chain was "
                                      "rebuilt after the checkpoint)", agent, m, cp_id)
            result.count += n
            result.agents += 1
        unchained = conn.execute(sa.select(s.records.c.agent, s.records.c.seq)
                                 .where(s.records.c.link.is_(None)).limit(1)).first()
        if unchained is not None:
            raise _Broken(f"agent {unchained.agent} seq {unchained.seq}",
                          "the record is in no chain (no link number)", unchained.agent)
        # The old single chain (stores made before migration 11) and its stamps.
        old = conn.execute(sa.select(s.ledger_v1_head.c.pos, s.ledger_v1_head.c.hash)).first()
        legacy_marks = {int(r.pos) for r in stamp_rows if r.checkpoint is None}
        legacy_at: dict[int, str] = {}
        if old is not None and old.pos:
            legacy_at = _walk_legacy(conn, int(old.pos), legacy_marks | {int(old.pos)})
            if legacy_at[int(old.pos)] != old.hash:
                raise _Broken(f"old single chain link {old.pos}",
                              f"its head says hash {old.hash}, the chain has {legacy_at[int(old.pos)]}")
            result.legacy = int(old.pos)
    _check_stamps(stamp_rows, {cp.id: cp for cp in cps}, legacy_at, result)


def _check_stamps(stamp_rows: Sequence[Any], by_id: dict[int, Checkpoint], legacy_at: dict[int, str],
                  result: VerifyResult) -> None:
    for r in stamp_rows:
        if r.checkpoint is None:
            name = f"stamp {r.id} by {r.tsa} (old single chain link {r.pos})"
            expect = legacy_at.get(int(r.pos))
            if expect is None:
                raise _Broken(name, f"the old single chain has no link {r.pos}")
        else:
            name = f"stamp {r.id} by {r.tsa} (checkpoint {r.checkpoint})"
            stamped = by_id.get(int(r.checkpoint))
            if stamped is None:
                raise _Broken(name, f"there is no checkpoint {r.checkpoint}", checkpoint=r.checkpoint)
            expect = stamped.root
        cp_id = None if r.checkpoint is None else int(r.checkpoint)
        if r.hash != expect:
            raise _Broken(name, f"it names hash {r.hash}, the ledger has {expect} there "
                          "(rebuilt after the stamp)", checkpoint=cp_id)
        try:
            got = stamp_imprint(bytes(r.reply))
        except Exception as e:  # any unreadable token is the finding
            raise _Broken(name, f"its token is unreadable: {e}", checkpoint=cp_id) from None
        if got != hashlib.sha256(bytes.fromhex(expect)).digest():
            raise _Broken(name, f"its token stamps another value than SHA-256 of {expect}",
                          checkpoint=cp_id)
        result.stamps += 1


LAST_VERIFY_KEY = "ledger.last_verify"


def verify_and_record(store: s.Store) -> VerifyResult:
    """`verify`, and its result kept in the store's settings (what the web UI and
    `GET /api/v1/ledger` show as the last verification)."""
    result = verify(store)
    cp = result.checkpoint
    store.set_setting(LAST_VERIFY_KEY, json.dumps({
        "at_ms": s.now_ms(), "ok": result.ok, "count": result.count, "agents": result.agents,
        "checkpoints": result.checkpoints, "stamps": result.stamps,
        "checkpoint": cp.id if cp else None, "root": cp.root if cp else None,
        "broken_at": result.where, "problem": result.problem}, sort_keys=True))
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


# --- reading chains (the evidence bundle) ------------------------------------------------------

def chain_links(conn: sa.Connection, agent: str, upto: int, batch: int = 5000) -> Iterator[Any]:
    """One agent's links 1..upto in order: rows (link, seq, boot, body, recv_ms, hash)."""
    R = s.records
    last = 0
    while last < upto:
        rows = conn.execute(sa.select(R.c.link, R.c.seq, R.c.boot, R.c.body, R.c.recv_ms, R.c.hash)
                            .where(R.c.agent == agent, R.c.link > last, R.c.link <= upto)
                            .order_by(R.c.link).limit(batch)).all()
        if not rows:
            return
        yield from rows
        last = int(rows[-1].link)


# --- migration 11: from one chain to a chain per agent --------------------------------------------

def migrate_to_chains(conn: sa.Connection) -> None:
    """Schema migration 11. The single chain becomes `ledger_v1` (kept, checked by
    `verify`, its stamps with it); each agent's chain is computed from its records in
    their old order; a first checkpoint commits the heads."""
    ex = conn.exec_driver_sql
    ex("ALTER TABLE agents ADD COLUMN chain_n BIGINT NOT NULL DEFAULT 0")
    ex("ALTER TABLE agents ADD COLUMN chain_hash VARCHAR(64)")
    ex("ALTER TABLE records ADD COLUMN link BIGINT")
    ex("ALTER TABLE records ADD COLUMN hash VARCHAR(64)")
    ex("ALTER TABLE stamps ADD COLUMN checkpoint BIGINT")
    ex("ALTER TABLE ledger RENAME TO ledger_v1")
    ex("ALTER TABLE ledger_head RENAME TO ledger_v1_head")
    m = sa.MetaData()
    s.checkpoints.to_metadata(m).create(conn)
    s.checkpoint_heads.to_metadata(m).create(conn)
    if conn.dialect.name == "postgresql":
        ex("CREATE SEQUENCE records_pos_seq")
        ex("SELECT setval('records_pos_seq', COALESCE(MAX(pos), 0) + 1, false) FROM records")
    R = s.records
    heads: dict[str, tuple[int, bytes]] = {}
    update = sa.text("UPDATE records SET link = :n, hash = :h WHERE agent = :a AND seq = :s")
    last = 0
    while True:
        rows = conn.execute(sa.select(R.c.pos, R.c.agent, R.c.seq, R.c.boot, R.c.body, R.c.recv_ms)
                            .where(R.c.pos > last).order_by(R.c.pos).limit(5000)).all()
        if not rows:
            break
        params = []
        for _pos, agent, seq, boot, body, recv in rows:
            n, prev = heads.get(agent, (0, GENESIS))
            h = link(prev, agent, boot, body, recv)
            heads[agent] = (n + 1, h)
            params.append({"n": n + 1, "h": h.hex(), "a": agent, "s": seq})
        conn.execute(update, params)
        last = rows[-1].pos
    for agent, (n, h) in sorted(heads.items()):
        conn.execute(s.agents.update().where(s.agents.c.id == agent)
                     .values(chain_n=n, chain_hash=h.hex()))
    ex("CREATE UNIQUE INDEX ix_records_link ON records (agent, link)")
    cp = checkpoint_in(conn)
    if cp is not None:
        log.info("ledger migrated: %d agent chain(s), %d link(s), checkpoint %d root %s",
                 cp.agents, cp.links, cp.id, cp.root)

