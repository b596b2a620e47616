"""Ingest against the real databases: idempotence, acks, quarantine, the ledger."""

import json

import pytest
import sqlalchemy as sa

from tests.vectorlib import REGISTERED, REVOKED, load, payload
from wanwitness import store as s
from wanwitness.collector import ledger
from wanwitness.collector.agents import add_agent, set_enabled
from wanwitness.collector.ingest import Ingestor, Message

TOPIC = "wanwitness/a1/rec"


def batch(seqs, agent="a1", boot=1, **extra):
    recs = [{"seq": q, "t": q * 100, "utc": None, "k": "stats", **extra} for q in seqs]
    return json.dumps({"v": 1, "agent": agent, "boot": boot, "recs": recs}).encode()


@pytest.fixture
def ing(store):
    add_agent(store, REGISTERED)
    add_agent(store, REVOKED)
    set_enabled(store, REVOKED, False)
    return Ingestor(store)


def stored_seqs(store, agent="a1"):
    with store.engine.connect() as c:
        return c.execute(sa.select(s.records.c.seq).where(s.records.c.agent == agent)
                         .order_by(s.records.c.seq)).scalars().all()


def quarantine_reasons(store):
    with store.engine.connect() as c:
        return c.execute(sa.select(s.quarantine.c.reason).order_by(s.quarantine.c.id)).scalars().all()


def test_every_invalid_vector_is_quarantined_with_its_reason_and_ingest_goes_on(ing, store):
    vectors = load("invalid")
    msgs = [Message(v["topic"], payload(v), 1000 + i) for i, (_, v) in enumerate(vectors)]
    # A good batch after the bad ones, in the same commit.
    msgs.append(Message(TOPIC, batch([1, 2]), 5000))
    result = ing.ingest(msgs)
    assert result.stored == 2 and result.quarantined == len(vectors)
    assert quarantine_reasons(store) == [v["reason"] for _, v in vectors]
    assert stored_seqs(store) == [1, 2]
    with store.engine.connect() as c:
        big = c.execute(sa.select(s.quarantine.c.size, sa.func.length(s.quarantine.c.payload))
                        .where(s.quarantine.c.reason.like("%too large%"))).one()
    assert big == (70000, 65536)  # the size is recorded, the payload kept up to the limit
    assert ledger.verify(store).ok


def test_every_valid_vector_is_stored(ing, store):
    for i, (_, v) in enumerate(load("valid")):
        result = ing.ingest([Message(v["topic"], payload(v), 1000 + i)])
        assert result.quarantined == 0, result.reasons
    with store.engine.connect() as c:
        body = c.execute(sa.select(s.records.c.body).where(s.records.c.k == "future")).scalar()
    assert json.loads(body)["x"] == {"y": [1, 2, 3]}  # unknown kinds keep their fields


def test_duplicates_redeliveries_and_out_of_order_are_stored_once(ing, store):
    r1 = ing.ingest([Message(TOPIC, batch([1, 2, 3]), 10), Message(TOPIC, batch([3]), 11),
                     Message(TOPIC, batch([6, 5]), 12)])
    assert (r1.stored, r1.duplicates) == (5, 1)
    assert r1.acks == {"a1": 3}  # 4 is missing: the ack stops before the hole
    r2 = ing.ingest([Message(TOPIC, batch([1, 2, 3, 4]), 20)])  # a DUP redelivery plus the hole
    assert (r2.stored, r2.duplicates) == (1, 3)
    assert r2.acks == {"a1": 6}
    r3 = ing.ingest([Message(TOPIC, batch([5, 6]), 30)])
    # Nothing new, but an agent that resends missed our ack: it is said again.
    assert (r3.stored, r3.duplicates, r3.acks) == (0, 2, {"a1": 6})
    assert stored_seqs(store) == [1, 2, 3, 4, 5, 6]
    assert ledger.verify(store).count == 6


def test_same_seq_with_other_content_is_quarantined_and_the_first_kept(ing, store):
    ing.ingest([Message(TOPIC, batch([1]), 10)])
    r = ing.ingest([Message(TOPIC, batch([1, 2], note="forged"), 11)])
    assert r.stored == 1 and r.quarantined == 1
    assert quarantine_reasons(store) == [
        "conflicting record: seq 1 is already stored with different content"]
    with store.engine.connect() as c:
        body = c.execute(sa.select(s.records.c.body).where(s.records.c.seq == 1)).scalar()
    assert "forged" not in body


def test_gap_records_let_the_ack_pass_what_the_agent_dropped(ing, store):
    gap = json.dumps({"v": 1, "agent": "a1", "boot": 1, "recs": [
        {"seq": 9, "t": 900, "utc": None, "k": "gap", "drop": [[3, 5], [7, 8]]}]}).encode()
    r = ing.ingest([Message(TOPIC, batch([1, 2, 6]), 10), Message(TOPIC, gap, 11)])
    assert r.acks == {"a1": 9}
    r = ing.ingest([Message(TOPIC, batch([10]), 12)])
    assert r.acks == {"a1": 10}


def test_acks_are_per_agent_and_heartbeats_feed_the_boot(ing, store):
    add_agent(store, "b2")
    r = ing.ingest([Message(TOPIC, batch([1]), 10),
                    Message("wanwitness/b2/rec", batch([1, 2], agent="b2", boot=7), 11),
                    Message("wanwitness/b2/hb", b'{"boot":7,"t":99000,"heap":1}', 12),
                    Message("wanwitness/b2/status", b"online", 13)])
    assert r.acks == {"a1": 1, "b2": 2} and r.quarantined == 0
    with store.engine.connect() as c:
        boot = c.execute(sa.select(s.boots).where(s.boots.c.agent == "b2")).one()
    assert (boot.boot, boot.last_t, boot.first_seq, boot.last_recv_ms) == (7, 99000, 1, 12)


def hb(t, lat, recv_ms):
    return Message("wanwitness/a1/hb", json.dumps({"boot": 1, "t": t, "lat": lat}).encode(), recv_ms)


def latency_rows(store, span=300_000):
    with store.engine.connect() as c:
        L = s.latency
        return [tuple(r) for r in c.execute(
            sa.select(L.c.bucket_ms, L.c.target, L.c.sent, L.c.lost, L.c.rtt_min, L.c.rtt_max,
                      L.c.med_w, L.c.med_n).where(L.c.span_ms == span)
            .order_by(L.c.bucket_ms, L.c.target))]


def test_heartbeat_latency_summaries_add_up_in_five_minute_buckets(ing, store):
    # Two heartbeats in one transaction and one in the next fall in the same bucket; the
    # fourth opens the next bucket. A target that never answered keeps its NULL times.
    b0 = 1_764_000_000_000 // 300_000 * 300_000
    ing.ingest([hb(30_000, {"198.51.100.7": [15, 3, 12, 20, 80], "dns:198.51.100.53": [15, 15, None, None, None]}, b0 + 1_000),
                hb(60_000, {"198.51.100.7": [15, 0, 9, 18, 40]}, b0 + 31_000)])
    ing.ingest([hb(90_000, {"198.51.100.7": [15, 5, 30, 50, 95], "dns:198.51.100.53": [15, 0, 4, 5, 6]}, b0 + 61_000),
                hb(390_000, {"198.51.100.7": [15, 15, None, None, None]}, b0 + 301_000)])
    assert latency_rows(store) == [
        (b0, "198.51.100.7", 45, 8, 9, 95, 20 * 12 + 18 * 15 + 50 * 10, 37),
        (b0, "dns:198.51.100.53", 30, 15, 4, 6, 5 * 15, 15),
        (b0 + 300_000, "198.51.100.7", 15, 15, None, None, 0, 0),
    ]
    h0 = b0 // 3_600_000 * 3_600_000   # the hour's bucket has them all (b0 is not late in it)
    assert b0 + 300_000 < h0 + 3_600_000
    assert latency_rows(store, 3_600_000) == [
        (h0, "198.51.100.7", 60, 23, 9, 95, 20 * 12 + 18 * 15 + 50 * 10, 37),
        (h0, "dns:198.51.100.53", 30, 15, 4, 6, 5 * 15, 15),
    ]
    # a heartbeat's other fields are as before: its health is the newest one
    with store.engine.connect() as c:
        assert json.loads(c.execute(sa.select(s.agents.c.last_hb).where(s.agents.c.id == "a1"))
                          .scalar_one())["t"] == 390_000


def test_a_malformed_latency_entry_is_left_out_and_the_heartbeat_kept(ing, store):
    b0 = 1_764_000_000_000 // 300_000 * 300_000
    r = ing.ingest([hb(30_000, {"198.51.100.7": [15, 16, 1, 2, 3],       # more lost than sent
                                "198.51.100.8": [15, 0, 9, 5, 40],       # median below min
                                "with space": [1, 0, 1, 1, 1],
                                "198.51.100.9": [True, 0, 1, 1, 1],      # a bool is no count
                                "203.0.113.9": [4, 1, 10, 11, 12]}, b0)])
    assert r.quarantined == 0
    assert latency_rows(store) == [(b0, "203.0.113.9", 4, 1, 10, 12, 33, 3)]


def _tamper(store, sql):
    with store.engine.begin() as c:
        c.exec_driver_sql(sql)


@pytest.fixture
def chained(ing, store):
    for i in range(5):
        ing.ingest([Message(TOPIC, batch([2 * i + 1, 2 * i + 2]), 1000 + i)])
    result = ledger.verify(store)
    assert result.ok and result.count == 10
    return store


def test_verify_detects_an_edited_record(chained):
    _tamper(chained, "UPDATE records SET body = replace(body, '\"k\":\"stats\"', '\"k\":\"statz\"') WHERE seq = 4")
    r = ledger.verify(chained)
    assert not r.ok and (r.broken_agent, r.broken_link) == ("a1", 4) and "hash mismatch" in r.problem
    assert r.where == "agent a1 link 4 (seq 4)"


def test_verify_detects_an_edited_receive_time(chained):
    _tamper(chained, "UPDATE records SET recv_ms = recv_ms - 60000 WHERE seq = 7")
    r = ledger.verify(chained)
    assert not r.ok and r.broken_link == 7


def test_verify_detects_a_deleted_record(chained):
    _tamper(chained, "DELETE FROM records WHERE seq = 5")
    r = ledger.verify(chained)
    assert not r.ok and r.broken_link == 5 and "link 5 is missing" in r.problem


def test_verify_detects_a_deleted_tail(chained):
    _tamper(chained, "DELETE FROM records WHERE seq >= 9")
    r = ledger.verify(chained)
    assert not r.ok and "links after 8 were deleted" in r.problem


def test_verify_detects_a_deleted_tail_with_its_head_rewound(chained):
    """A chain cut short and its head moved back is consistent in itself: the
    checkpoint made before says otherwise."""
    ledger.make_checkpoint(chained)
    with chained.engine.begin() as c:
        h8 = c.execute(sa.select(s.records.c.hash).where(s.records.c.seq == 8)).scalar_one()
        c.exec_driver_sql("DELETE FROM records WHERE seq >= 9")
        c.execute(s.agents.update().values(chain_n=8, chain_hash=h8))
    r = ledger.verify(chained)
    assert not r.ok and r.broken_checkpoint == 1 and (r.broken_agent, r.broken_link) == ("a1", 10)
    assert "whose chain has only 8 link(s)" in r.problem


def test_verify_detects_reordered_records(chained):
    # Swap the content and receive times of links 3 and 6, keeping every row in place.
    with chained.engine.begin() as c:
        rows = {r.seq: r for r in c.execute(sa.select(s.records).where(s.records.c.seq.in_([3, 6])))}
        for a, b in ((3, 6), (6, 3)):
            c.execute(s.records.update().where(s.records.c.seq == a)
                      .values(body=rows[b].body.replace(f'"seq":{b}', f'"seq":{a}'), t=rows[b]._mapping["t"]))
    r = ledger.verify(chained)
    assert not r.ok and r.broken_link == 3


def test_verify_detects_swapped_links(chained):
    _tamper(chained, "UPDATE records SET link = -link WHERE seq IN (2, 8)")
    _tamper(chained, "UPDATE records SET link = 8 WHERE link = -2")
    _tamper(chained, "UPDATE records SET link = 2 WHERE link = -8")
    r = ledger.verify(chained)
    assert not r.ok and r.broken_link == 2


def test_verify_detects_a_record_added_without_its_link(chained):
    with chained.engine.begin() as c:
        row = c.execute(sa.select(s.records).where(s.records.c.seq == 10)).one()._asdict()
        c.execute(s.records.insert().values({**row, "seq": 11, "pos": 11, "link": None, "hash": None,
                                             "body": row["body"].replace('"seq":10', '"seq":11')}))
    r = ledger.verify(chained)
    assert not r.ok and r.where == "agent a1 seq 11" and "in no chain" in r.problem


def test_a_rebuilt_chain_contradicts_the_checkpoint_before(chained):
    """Records edited and the chain recomputed over them (hashes and head): only a
    checkpoint made before can tell, and verify names it, the agent and the link."""
    ledger.make_checkpoint(chained)
    with chained.engine.begin() as c:
        c.exec_driver_sql("UPDATE records SET recv_ms = recv_ms + 1 WHERE seq = 6")
        prev, n, h = ledger.GENESIS, 0, ""
        for r in c.execute(sa.select(s.records).order_by(s.records.c.link)).all():
            prev = ledger.link(prev, r.agent, r.boot, r.body, r.recv_ms)
            n, h = r.link, prev.hex()
            c.execute(s.records.update().where(s.records.c.seq == r.seq).values(hash=h))
        c.execute(s.agents.update().values(chain_n=n, chain_hash=h))
    r = ledger.verify(chained)
    assert not r.ok and (r.broken_checkpoint, r.broken_agent, r.broken_link) == (1, "a1", 10)
    assert "rebuilt after the checkpoint" in r.problem


def test_checkpoints_commit_every_head_and_only_when_something_changed(ing, store):
    assert ledger.make_checkpoint(store) == (None, False)
    ing.ingest([Message(TOPIC, batch([1, 2]), 1000)])
    cp, made = ledger.make_checkpoint(store)
    assert made and cp is not None and (cp.id, cp.agents, cp.links) == (1, 1, 2)
    assert ledger.make_checkpoint(store) == (cp, False)
    ing.ingest([Message(TOPIC, batch([3]), 1001)])
    cp2, made = ledger.make_checkpoint(store)
    assert made and cp2 is not None and (cp2.id, cp2.links) == (2, 3)
    with store.engine.connect() as c:
        assert ledger.checkpoint_heads(c, 2) == ledger.chain_heads(c)
    r = ledger.verify(store)
    assert r.ok and r.checkpoints == 2 and r.checkpoint == cp2


def test_verify_of_a_live_store_never_reports_it_broken(ing, store):
    """verify while the collector commits: the chain grows under it, it is never broken."""
    import threading
    done = threading.Event()

    def collect():
        for i in range(150):
            ing.ingest([Message(TOPIC, batch([2 * i + 1, 2 * i + 2]), 1000 + i)])
        done.set()

    writer = threading.Thread(target=collect)
    writer.start()
    results = []
    while not done.is_set():
        results.append(ledger.verify(store))
    writer.join()
    results.append(ledger.verify(store))
    assert [r.problem for r in results if not r.ok] == []
    assert len(results) > 1 and results[-1].count == 300


def test_migrations_upgrade_a_version_1_store(tmp_path):
    """A store made by version 1 gets agents.max_seq filled in from its records."""
    import sqlalchemy as sa2

    from wanwitness.store import MIGRATIONS, migrate, open_store
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa2.create_engine(url)
    with engine.begin() as conn:
        s.schema_migrations.create(conn)
        version, name, fn = MIGRATIONS[0]
        fn(conn)
        conn.execute(s.schema_migrations.insert().values(version=1, name=name, applied_ms=0))
        conn.exec_driver_sql("INSERT INTO agents (id, password_hash, enabled, hb_s, created_ms, ack_seq)"
                             " VALUES ('a1', 'x', 1, 30, 0, 2)")
        conn.exec_driver_sql("INSERT INTO records (agent, seq, boot, t, utc, k, body, recv_ms, pos)"
                             " VALUES ('a1', 1, 1, 0, NULL, 'stats', '{}', 0, 1),"
                             " ('a1', 7, 1, 0, NULL, 'stats', '{}', 0, 2)")
    assert migrate(engine) == [v for v, _, _ in MIGRATIONS[1:]]  # 2 onwards
    assert migrate(engine) == []
    st = open_store(url)
    with st.engine.connect() as conn:
        assert conn.execute(sa.select(s.agents.c.max_seq)).scalar() == 7
    st.dispose()
    engine.dispose()


def test_ack_fast_path_and_slow_path_agree(ing, store):
    # In order: no lookups needed. Then a hole, filled later by a redelivery.
    assert ing.ingest([Message(TOPIC, batch(range(1, 51)), 10)]).acks == {"a1": 50}
    assert ing.ingest([Message(TOPIC, batch([52, 53]), 11)]).acks == {}
    assert ing.ingest([Message(TOPIC, batch([51]), 12)]).acks == {"a1": 53}
    assert ing.ingest([Message(TOPIC, batch([54]), 13)]).acks == {"a1": 54}
    with store.engine.connect() as c:
        assert c.execute(sa.select(s.agents.c.max_seq, s.agents.c.ack_seq)
                         .where(s.agents.c.id == "a1")).one() == (54, 54)
