"""The ledger as a chain per agent: migration 11 from the single chain, concurrent
agents, stamps of checkpoints (the evidence bundle's side is in test_claims_households.py)."""

from __future__ import annotations

import hashlib
import json

import pytest
import sqlalchemy as sa

from wanwitness import store as s
from wanwitness.collector import ledger, protocol
from wanwitness.collector import stamp as st
from wanwitness.collector.agents import add_agent
from wanwitness.collector.ingest import Ingestor, Message


def _rec(seq: int, k: str = "stats") -> dict:
    return {"seq": seq, "t": seq * 100, "utc": None, "k": k}


def old_ingest(conn: sa.Connection, rows: list[tuple[str, int, dict, int]]) -> None:
    """Rows (agent, boot, record, recv_ms) written as ingest wrote them before migration
    11: one chain over every agent in table `ledger`, its head in `ledger_head`."""
    pos, prev_hex = conn.execute(sa.text("SELECT pos, hash FROM ledger_head WHERE id = 1")).one()
    prev = bytes.fromhex(prev_hex)
    for agent, boot, rec, recv in rows:
        body = protocol.canonical(rec).decode("utf-8")
        pos += 1
        prev = ledger.link(prev, agent, boot, body, recv)
        conn.execute(sa.text("INSERT INTO records (agent, seq, boot, t, utc, k, body, recv_ms, pos) "
                             "VALUES (:a, :q, :b, :t, NULL, :k, :body, :r, :p)"),
                     dict(a=agent, q=rec["seq"], b=boot, t=rec["t"], k=rec["k"], body=body, r=recv, p=pos))
        conn.execute(sa.text("INSERT INTO ledger (pos, agent, seq, recv_ms, hash) VALUES (:p, :a, :q, :r, :h)"),
                     dict(p=pos, a=agent, q=rec["seq"], r=recv, h=prev.hex()))
        conn.execute(sa.text("UPDATE agents SET max_seq = :q, ack_seq = :q WHERE id = :a"),
                     dict(q=rec["seq"], a=agent))
    conn.execute(sa.text("UPDATE ledger_head SET pos = :p, hash = :h WHERE id = 1"), dict(p=pos, h=prev.hex()))


def old_verify(conn: sa.Connection) -> tuple[int, str]:
    """The single chain's check as the code before migration 11 did it: recompute
    h_pos over every record in ledger order; it must end at ledger_head."""
    prev, n = ledger.GENESIS, 0
    for pos, agent, recv, digest, boot, body in conn.execute(sa.text(
            "SELECT l.pos, l.agent, l.recv_ms, l.hash, r.boot, r.body FROM ledger l JOIN records r "
            "ON r.agent = l.agent AND r.seq = l.seq AND r.pos = l.pos ORDER BY l.pos")):
        assert pos == n + 1
        prev = ledger.link(prev, agent, boot, body, recv)
        assert prev.hex() == digest, f"link {pos}"
        n = pos
    head = conn.execute(sa.text("SELECT pos, hash FROM ledger_head")).one()
    assert (head.pos, head.hash) == (n, prev.hex())
    return n, prev.hex()


def old_store(url: str) -> sa.Engine:
    """A store at the schema before migration 11, two agents' records interleaved in
    the single chain."""
    engine = sa.create_engine(url)
    s.migrate(engine, upto=10)
    with engine.begin() as conn:
        for agent in ("home", "flat"):
            conn.execute(sa.text("INSERT INTO agents (id, password_hash, enabled, hb_s, created_ms, ack_seq) "
                                 "VALUES (:a, 'x', :t, 30, 0, 0)"), dict(a=agent, t=True))
        old_ingest(conn, [("home", 1, _rec(1), 1000), ("flat", 1, _rec(1), 1001),
                          ("home", 1, _rec(2), 1002), ("home", 1, _rec(3), 1003),
                          ("flat", 1, _rec(2, "state"), 1004)])
    return engine


def test_migration_11_turns_the_single_chain_into_a_chain_per_agent(db_url, tsa):
    engine = old_store(db_url)
    with engine.begin() as conn:
        n, head = old_verify(conn)  # the old code's check passes before
        assert n == 5
    # A stamp of the old head, as `wanwitness stamp` made it before.
    reply, gen_ms = st.request_token(tsa.url, head, [], 10)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO stamps (pos, hash, tsa, gen_ms, reply, created_ms) "
                             "VALUES (5, :h, :u, :g, :r, 0)"), dict(h=head, u=tsa.url, g=gen_ms, r=reply))
    assert s.migrate(engine) == [11, 12]
    engine.dispose()

    store = s.open_store(db_url)
    try:
        r = ledger.verify(store)
        assert r.ok, r.problem
        assert (r.count, r.agents, r.checkpoints, r.stamps, r.legacy) == (5, 2, 1, 1, 5)
        with store.engine.connect() as conn:
            links = conn.execute(sa.select(s.records.c.agent, s.records.c.seq, s.records.c.link)
                                 .order_by(s.records.c.pos)).all()
            assert [tuple(x) for x in links] == [("home", 1, 1), ("flat", 1, 1), ("home", 2, 2),
                                                 ("home", 3, 3), ("flat", 2, 2)]
            heads = ledger.chain_heads(conn)
            assert [(a, n) for a, n, _ in heads] == [("flat", 2), ("home", 3)]
            assert ledger.checkpoint_heads(conn, r.checkpoint.id) == heads
        # Ingest goes on from the migrated heads, and the old stamp stays checked.
        ing = Ingestor(store)
        recs = [_rec(4), _rec(5)]
        res = ing.ingest([Message("wanwitness/home/rec", json.dumps(
            {"v": 1, "agent": "home", "boot": 1, "recs": recs}).encode(), 2000)])
        assert res.stored == 2
        with store.engine.connect() as conn:
            assert conn.execute(sa.select(s.records.c.link, s.records.c.pos)
                                .where(s.records.c.agent == "home", s.records.c.seq == 5)).one() == (5, 7)
        r = ledger.verify(store)
        assert r.ok and (r.count, r.stamps, r.legacy) == (7, 1, 5)
        # An edit of a record the old chain covers breaks both chains: verify names it.
        with store.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE records SET recv_ms = 999 WHERE agent = 'flat' AND seq = 1")
        r = ledger.verify(store)
        assert not r.ok and r.where == "agent flat link 1 (seq 1)"
    finally:
        store.dispose()


def test_a_migrated_store_keeps_the_old_chain_checked(sqlite_url):
    """Records laundered into fresh per-agent chains (edited, chains recomputed) still
    contradict the frozen single chain."""
    old_store(sqlite_url).dispose()
    store = s.open_store(sqlite_url)
    try:
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM checkpoint_heads")
            conn.exec_driver_sql("DELETE FROM checkpoints")
            conn.exec_driver_sql("UPDATE records SET recv_ms = 999 WHERE agent = 'home' AND seq = 2")
            prev, n = ledger.GENESIS, 0
            for row in conn.execute(sa.select(s.records).where(s.records.c.agent == "home")
                                    .order_by(s.records.c.link)).all():
                prev = ledger.link(prev, row.agent, row.boot, row.body, row.recv_ms)
                n = row.link
                conn.execute(s.records.update().where(s.records.c.agent == "home", s.records.c.seq == row.seq)
                             .values(hash=prev.hex()))
            conn.execute(s.agents.update().where(s.agents.c.id == "home").values(chain_n=n, chain_hash=prev.hex()))
        r = ledger.verify(store)
        assert not r.ok and r.where == "old single chain link 3 (home seq 2)"
        assert "receive time 999" in r.problem
    finally:
        store.dispose()


def test_agents_chain_separately_and_a_stamp_covers_them_all(store, tsa):
    for agent in ("home", "flat"):
        add_agent(store, agent)
    ing = Ingestor(store)

    def msg(agent, seqs, recv):
        return Message(f"wanwitness/{agent}/rec", json.dumps(
            {"v": 1, "agent": agent, "boot": 1, "recs": [_rec(q) for q in seqs]}).encode(), recv)

    ing.ingest([msg("home", [1, 2], 1000), msg("flat", [1], 1001), msg("home", [3], 1002)])
    with store.engine.connect() as conn:
        assert [(a, n) for a, n, _ in ledger.chain_heads(conn)] == [("flat", 1), ("home", 3)]
        flat = conn.execute(sa.select(s.records.c.hash).where(s.records.c.agent == "flat")).scalar_one()
    # flat's chain depends on nothing of home's
    body = protocol.canonical(_rec(1)).decode()
    assert flat == ledger.link(ledger.GENESIS, "flat", 1, body, 1001).hex()
    done, errors = st.stamp(store, [tsa.url], [], 10)
    assert errors == [] and len(done) == 1 and done[0].checkpoint == 1
    with store.engine.connect() as conn:
        cp = ledger.latest_checkpoint(conn)
        assert cp is not None and done[0].hash == cp.root
        assert cp.root == ledger.merkle_root(
            [ledger.leaf_hash(a, n, h) for a, n, h in ledger.chain_heads(conn)]).hex()
    r = ledger.verify(store)
    assert r.ok and r.stamps == 1
    # A stamp whose token is another root's: named.
    with store.engine.begin() as conn:
        conn.execute(s.stamps.update().values(hash="00" * 32))
    r = ledger.verify(store)
    assert not r.ok and r.broken_checkpoint == 1 and r.where.startswith("stamp 1 by ")


@pytest.mark.parametrize("size", range(1, 12))
def test_every_inclusion_proof_leads_to_the_root(size):
    leaves = [hashlib.sha256(bytes([i])).digest() for i in range(size)]
    root = ledger.merkle_root(leaves)
    for i, leaf in enumerate(leaves):
        proof = ledger.inclusion_proof(leaves, i)
        assert ledger.root_from_proof(leaf, i, size, proof) == root
        if proof:
            with pytest.raises(ValueError):
                ledger.root_from_proof(leaf, i, size, proof[:-1])
            assert ledger.root_from_proof(leaf, i, size, [bytes(32)] + proof[1:]) != root
    # domain separation: a node is never taken for a leaf
    if size >= 2:
        assert ledger.merkle_root(leaves[:2]) != hashlib.sha256(leaves[0] + leaves[1]).digest()


def test_a_claim_is_backed_by_the_earliest_stamped_checkpoint_that_commits_its_records(store):
    add_agent(store, "home")
    ing = Ingestor(store)

    def put(seqs, recv):
        ing.ingest([Message("wanwitness/home/rec", json.dumps(
            {"v": 1, "agent": "home", "boot": 1, "recs": [_rec(q) for q in seqs]}).encode(), recv)])

    put([1, 2], 1000)
    ledger.make_checkpoint(store)          # 1: links 1-2
    put([3], 1001)
    ledger.make_checkpoint(store)          # 2: links 1-3
    put([4], 1002)
    ledger.make_checkpoint(store)          # 3: links 1-4
    with store.engine.connect() as conn:
        pick = [ledger.covering_checkpoint(conn, {"home": n}) for n in (2, 3, 4, 5)]
    assert [None if cp is None else cp.id for cp in pick] == [1, 2, 3, None]
    with store.engine.begin() as conn:   # checkpoint 3 stamped: it backs every earlier record too
        conn.execute(s.stamps.insert().values(pos=3, hash="00" * 32, tsa="t", gen_ms=0, reply=b"",
                                              created_ms=0, checkpoint=3))
        pick = [ledger.covering_checkpoint(conn, {"home": n}) for n in (2, 4)]
        assert [cp.id for cp in pick if cp] == [3, 3]
        assert ledger.covering_checkpoint(conn, {}).id == 3  # no record cited: the newest


def test_postgresql_ingest_waits_for_its_own_agents_chain_only(pg_url):
    """A transaction holding agent home's chain lock (another collector in the middle of
    a commit) holds up ingest of home, never of flat: no global lock."""
    import threading
    import time

    from wanwitness.collector.ingest import chain_lock_key
    store = s.open_store(pg_url)
    try:
        for agent in ("home", "flat"):
            add_agent(store, agent)

        def msg(agent, seq):
            return Message(f"wanwitness/{agent}/rec", json.dumps(
                {"v": 1, "agent": agent, "boot": 1, "recs": [_rec(seq)]}).encode(), 1000 + seq)

        holder = store.engine.connect()
        tx = holder.begin()
        holder.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": chain_lock_key("home")})
        results: dict[str, int] = {}

        def ingest(agent):
            results[agent] = Ingestor(store).ingest([msg(agent, 1)]).stored

        other = threading.Thread(target=ingest, args=("flat",))
        other.start()
        other.join(60)
        assert not other.is_alive() and results == {"flat": 1}  # not held up
        mine = threading.Thread(target=ingest, args=("home",))
        mine.start()
        waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        deadline = time.monotonic() + 60
        with store.engine.connect() as probe:
            while probe.execute(sa.text(waiting)).scalar_one() == 0:
                assert time.monotonic() < deadline, "ingest of home never waited for its lock"
                assert mine.is_alive(), "ingest of home did not wait for its chain's lock"
                time.sleep(0.02)
        assert "home" not in results
        tx.rollback()
        holder.close()
        mine.join(60)
        assert not mine.is_alive() and results == {"flat": 1, "home": 1}
        r = ledger.verify(store)
        assert r.ok and (r.count, r.agents) == (2, 2)
    finally:
        store.dispose()


def test_collects_checkpointer_commits_the_heads_when_records_came(sqlite_url):
    from wanwitness import config as cfg
    store = s.open_store(sqlite_url)
    try:
        add_agent(store, "home")
        maker = ledger.Checkpointer(store, cfg.SCHEMA["collector"]["checkpoint_s"][1])
        assert maker.interval_s == 3600
        maker.round()                         # an empty ledger: nothing to commit
        Ingestor(store).ingest([Message("wanwitness/home/rec", json.dumps(
            {"v": 1, "agent": "home", "boot": 1, "recs": [_rec(1)]}).encode(), 1000)])
        maker.round()
        maker.round()                         # nothing new: no second checkpoint
        with store.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(s.checkpoints)).scalar_one() == 1
    finally:
        store.dispose()
