"""Outbox ids (docs/protocol.md § Outbox ids): a re-flashed board's new stream of seqs and
boots is stored after everything its agent had, against the real databases."""

import json

import pytest
import sqlalchemy as sa

from wanwitness import store as s
from wanwitness.collector import ledger
from wanwitness.collector.agents import add_agent
from wanwitness.collector.ingest import Ingestor, Message, ack_payload

TOPIC = "wanwitness/a1/rec"
HB = "wanwitness/a1/hb"
OLD, NEW = "0a1b2c3d", "4e5f6a7b"


def batch(seqs, boot=1, ob=None, **extra):
    recs = [{"seq": q, "t": q * 100, "utc": None, "k": "stats", **extra} for q in seqs]
    doc = {"v": 1, "agent": "a1", "boot": boot, "recs": recs}
    if ob is not None:
        doc["ob"] = ob
    return json.dumps(doc).encode()


def hb(boot, t, ob=None):
    doc = {"boot": boot, "t": t, "heap": 1}
    if ob is not None:
        doc["ob"] = ob
    return json.dumps(doc).encode()


@pytest.fixture
def ing(store):
    add_agent(store, "a1")
    return Ingestor(store)


def stored(store):
    """(seq, boot, body) of every stored record of a1, in seq order."""
    with store.engine.connect() as c:
        rows = c.execute(sa.select(s.records.c.seq, s.records.c.boot, s.records.c.body)
                         .where(s.records.c.agent == "a1").order_by(s.records.c.seq)).all()
    return [(r.seq, r.boot, json.loads(r.body)) for r in rows]


def boots(store):
    with store.engine.connect() as c:
        return c.execute(sa.select(s.boots.c.boot).where(s.boots.c.agent == "a1")
                         .order_by(s.boots.c.boot)).scalars().all()


def reasons(store):
    with store.engine.connect() as c:
        return c.execute(sa.select(s.quarantine.c.reason).order_by(s.quarantine.c.id)).scalars().all()


def ack_sent(result):
    """The retained ack the collector publishes for a1 after this commit."""
    return json.loads(ack_payload(result.acks["a1"], result.streams.get("a1")))


def test_a_reflashed_board_is_stored_after_its_earlier_records_and_boots(ing, store):
    r = ing.ingest([Message(TOPIC, batch([1, 2, 3], boot=1, ob=OLD), 10),
                    Message(TOPIC, batch([4, 5], boot=2, ob=OLD), 20)])
    assert ack_sent(r) == {"seq": 5, "ob": OLD}
    # The flash is erased: a new outbox id, seq 1 and boot 1 again.
    r = ing.ingest([Message(TOPIC, batch([1, 2, 3], boot=1, ob=NEW), 30)])
    assert (r.stored, r.duplicates, r.quarantined) == (3, 0, 0)
    assert ack_sent(r) == {"seq": 3, "ob": NEW}  # in the new outbox's own numbering
    rows = stored(store)
    assert [(seq, boot) for seq, boot, _ in rows] == [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2),
                                                      (6, 3), (7, 3), (8, 3)]
    assert rows[0][2] == {"seq": 1, "t": 100, "utc": None, "k": "stats"}  # as sent
    # The new stream's bodies carry the stored seq and the outbox they came from.
    assert rows[5][2] == {"seq": 6, "t": 100, "utc": None, "k": "stats", "ob": NEW}
    assert boots(store) == [1, 2, 3]
    assert ledger.verify(store).ok
    # Its next boot follows on.
    r = ing.ingest([Message(TOPIC, batch([4], boot=2, ob=NEW), 40)])
    assert ack_sent(r) == {"seq": 4, "ob": NEW}
    assert stored(store)[-1][:2] == (9, 4)


def test_resends_after_a_reflash_are_duplicates_and_a_changed_one_a_conflict(ing, store):
    ing.ingest([Message(TOPIC, batch([1, 2], ob=OLD), 10)])
    ing.ingest([Message(TOPIC, batch([1, 2], ob=NEW), 20)])
    r = ing.ingest([Message(TOPIC, batch([1, 2], ob=NEW), 30)])  # its ack was lost
    assert (r.stored, r.duplicates) == (0, 2)
    assert ack_sent(r) == {"seq": 2, "ob": NEW}  # said again
    r = ing.ingest([Message(TOPIC, batch([2, 3], ob=NEW, note="changed"), 40)])
    assert (r.stored, r.quarantined) == (1, 1)
    assert reasons(store) == ["conflicting record: seq 4 is already stored with different content"]
    assert [seq for seq, _, _ in stored(store)] == [1, 2, 3, 4, 5]


def test_legacy_batches_without_an_outbox_id_keep_the_agents_numbering(ing, store):
    r = ing.ingest([Message(TOPIC, batch([1, 2, 3]), 10), Message(HB, hb(1, 500), 11)])
    assert ack_sent(r) == {"seq": 3}  # no outbox named: what older agents understand
    assert "a1" not in r.streams
    # The board is erased and gets this firmware: a first outbox id after its legacy seqs.
    r = ing.ingest([Message(TOPIC, batch([1], ob=NEW), 20), Message(HB, hb(1, 700, NEW), 21)])
    assert ack_sent(r) == {"seq": 1, "ob": NEW}
    assert [(seq, boot) for seq, boot, _ in stored(store)] == [(1, 1), (2, 1), (3, 1), (4, 2)]
    with store.engine.connect() as c:
        last_t = dict(c.execute(sa.select(s.boots.c.boot, s.boots.c.last_t)
                                .where(s.boots.c.agent == "a1")).all())
    assert last_t == {1: 500, 2: 700}  # the new heartbeat fed the new boot, not the old one
    assert reasons(store) == []


def test_a_new_agents_first_outbox_is_not_shifted(ing, store):
    r = ing.ingest([Message(TOPIC, batch([1, 2], boot=1, ob=OLD), 10)])
    assert ack_sent(r) == {"seq": 2, "ob": OLD}
    assert stored(store)[0] == (1, 1, {"seq": 1, "t": 100, "utc": None, "k": "stats"})


def test_gap_ranges_of_a_reflashed_board_are_shifted_and_count_for_the_ack(ing, store):
    ing.ingest([Message(TOPIC, batch([1, 2, 3], ob=OLD), 10)])
    gap = json.dumps({"v": 1, "agent": "a1", "ob": NEW, "boot": 1, "recs": [
        {"seq": 4, "t": 400, "utc": None, "k": "gap", "drop": [[1, 3]], "kinds": {"probe": 3}}]})
    r = ing.ingest([Message(TOPIC, gap.encode(), 20)])
    assert ack_sent(r) == {"seq": 4, "ob": NEW}
    assert stored(store)[-1][2]["drop"] == [[4, 6]]
    assert stored(store)[-1][0] == 7


def test_both_outboxes_in_one_commit_follow_each_other(ing, store):
    """The collector was away; the broker hands it the old flash's last batches and the
    new flash's first ones in one commit."""
    r = ing.ingest([Message(TOPIC, batch([1, 2, 3], ob=OLD), 10),
                    Message(TOPIC, batch([4], boot=2, ob=OLD), 11),
                    Message(TOPIC, batch([1, 2], ob=NEW), 12)])
    assert r.stored == 6 and r.quarantined == 0
    assert [(seq, boot) for seq, boot, _ in stored(store)] == [(1, 1), (2, 1), (3, 1), (4, 2),
                                                               (5, 3), (6, 3)]
    assert [b.get("ob") for _, _, b in stored(store)] == [None] * 4 + [NEW, NEW]
    assert ack_sent(r) == {"seq": 2, "ob": NEW}


def test_an_old_outbox_after_the_new_one_fills_its_holes_and_is_refused_beyond(ing, store):
    ing.ingest([Message(TOPIC, batch([1, 2, 3, 5], boot=2, ob=OLD), 10)])  # 4 still on its way
    ing.ingest([Message(TOPIC, batch([1], ob=NEW), 20)])                    # stored as 6, boot 3
    # The old stream's late record lands in its own place: nothing collides there.
    r = ing.ingest([Message(TOPIC, batch([4], boot=2, ob=OLD), 30)])
    assert (r.stored, r.quarantined) == (1, 0)
    # Past the takeover it would collide with the new outbox's seqs or boots: refused.
    r = ing.ingest([Message(TOPIC, batch([6, 7], boot=2, ob=OLD), 40),
                    Message(TOPIC, batch([8], boot=3, ob=OLD), 41),
                    Message(HB, hb(3, 900, OLD), 42)])
    assert (r.stored, r.quarantined) == (0, 3)
    assert reasons(store) == [
        "replaced outbox: seq 6 of outbox '0a1b2c3d' lies past where a newer outbox of this "
        "agent took over (another board with this agent's credentials, or older firmware?)",
        "replaced outbox: seq 7 of outbox '0a1b2c3d' lies past where a newer outbox of this "
        "agent took over (another board with this agent's credentials, or older firmware?)",
        "replaced outbox: boot 3 of outbox '0a1b2c3d' lies past where a newer outbox of this "
        "agent took over (another board with this agent's credentials, or older firmware?)"]
    assert [(seq, boot) for seq, boot, _ in stored(store)] == [(1, 2), (2, 2), (3, 2), (4, 2),
                                                               (5, 2), (6, 3)]
    assert boots(store) == [2, 3]  # the old board's boot 3 heartbeat fed nothing
    # Older firmware under an agent that has outbox ids: its seqs would collide too.
    r = ing.ingest([Message(TOPIC, batch([1]), 50)])
    assert r.quarantined == 1 and reasons(store)[-1].startswith(
        "replaced outbox: boot 1 of outbox (none: batches without an outbox id) lies past")
    assert ledger.verify(store).ok


def test_a_heartbeat_of_a_new_outbox_before_its_first_batch_starts_its_stream(ing, store):
    ing.ingest([Message(TOPIC, batch([1, 2], boot=4, ob=OLD), 10)])
    r = ing.ingest([Message(HB, hb(1, 300, NEW), 20)])
    assert ack_sent(r) == {"seq": 0, "ob": NEW}  # replaces the old outbox's retained ack
    assert boots(store) == [4, 5]
    r = ing.ingest([Message(TOPIC, batch([1], boot=1, ob=NEW), 30)])
    assert stored(store)[-1][:2] == (3, 5)


def test_migration_5_upgrades_a_store_with_agents_and_records(tmp_path):
    """A store from before outbox ids: its agents continue as legacy streams."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = s.open_store(url, migrate_schema=False)
    with old.engine.begin() as conn:
        s.schema_migrations.create(conn)
        for version, name, fn in s.MIGRATIONS:
            if version < 5:
                fn(conn)
                conn.execute(s.schema_migrations.insert().values(version=version, name=name,
                                                                 applied_ms=0))
        conn.exec_driver_sql("INSERT INTO agents (id, password_hash, enabled, hb_s, created_ms,"
                             " ack_seq, max_seq) VALUES ('a1', 'x', 1, 30, 0, 0, 0)")
    old.dispose()
    assert not sa.inspect(sa.create_engine(url)).has_table("streams")
    st = s.open_store(url)
    try:
        assert s.migrate(st.engine) == []
        ing = Ingestor(st)
        assert ack_sent(ing.ingest([Message(TOPIC, batch([1, 2]), 10)])) == {"seq": 2}
        assert ack_sent(ing.ingest([Message(TOPIC, batch([1], ob=NEW), 20)])) == {"seq": 1, "ob": NEW}
        assert [seq for seq, _, _ in stored(st)] == [1, 2, 3]
        with st.engine.connect() as c:
            assert c.execute(sa.select(s.agents.c.ob)).scalar() == NEW
    finally:
        st.dispose()
