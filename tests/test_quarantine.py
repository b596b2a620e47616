"""The quarantine stays bounded: a quota per agent, repeats counted on one row, pruning;
and ingest isolates a message the store refuses without splitting the commit."""

from __future__ import annotations

import json
import math

import pytest
import sqlalchemy as sa

from testing.cli import one_line_error
from wanwitness import store as s
from wanwitness.collector import ledger
from wanwitness.collector.agents import add_agent
from wanwitness.collector.ingest import Ingestor, Message
from wanwitness.collector.protocol import MAX_PAYLOAD
from wanwitness.collector.quarantine import DEFAULT_MAX_BYTES, Quota, quotas
from wanwitness.store.schema import quarantine_quota

T0 = 1793685600000  # 2026-11-03T06:00:00Z


def bad_batch(i: int, agent: str = "a1", size: int = MAX_PAYLOAD) -> bytes:
    """A refused batch (a state record without `s`) padded to `size` bytes, unique per i."""
    head = json.dumps({"v": 1, "agent": agent, "boot": 1, "recs": [
        {"seq": 1, "t": i, "utc": None, "k": "state", "at": 0, "pad": ""}]})[:-4].encode()
    tail = b'"}]}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def good_batch(seqs, agent="a1") -> bytes:
    return json.dumps({"v": 1, "agent": agent, "boot": 1, "recs": [
        {"seq": q, "t": q, "utc": None, "k": "stats"} for q in seqs]}).encode()


def kept(store):
    Q = s.quarantine
    with store.engine.connect() as c:
        return c.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(Q.c.count), 0),
                                   sa.func.coalesce(sa.func.sum(sa.func.length(Q.c.payload)), 0))
                         ).one()


@pytest.fixture
def ing(store):
    add_agent(store, "a1")
    add_agent(store, "b2")
    return Ingestor(store)


def test_a_flood_of_1000_invalid_64_kib_batches_stays_within_the_quota(ing, store, ww):
    assert len(bad_batch(0)) == MAX_PAYLOAD
    total = 0
    for group in range(10):  # as the collector commits them: up to batch_max at a time
        msgs = [Message("wanwitness/a1/rec", bad_batch(group * 100 + i), T0 + group * 100 + i)
                for i in range(100)]
        result = ing.ingest(msgs)
        total += result.quarantined
        assert result.reasons[0] == "invalid batch: recs[0].s: missing"
    assert total == 1000
    rows, copies, payload_bytes = kept(store)
    # 4 MiB per agent by default: 64 payloads of 64 KiB are kept, the rest only counted.
    assert (rows, copies, payload_bytes) == (64, 64, 64 * MAX_PAYLOAD)
    assert payload_bytes <= DEFAULT_MAX_BYTES
    [use] = quotas(store)
    assert (use.bucket, use.kept_rows, use.copies, use.dropped) == ("a1", 64, 64, 936)
    assert use.dropped_bytes == 936 * MAX_PAYLOAD
    # The good records of the same agent still go in, whatever the quarantine holds.
    assert ing.ingest([Message("wanwitness/a1/rec", good_batch([1, 2]), T0 + 5000)]).stored == 2
    listing = ww("quarantine", "list", "--db", store.url)
    assert listing.returncode == 0, listing.stderr
    assert "   1000     64      936  a1 (4.0 MiB kept)" in listing.stdout


def test_unknown_senders_share_one_bucket_and_a_row_quota_holds(store):
    add_agent(store, "a1")
    ing = Ingestor(store, quota=Quota(max_rows=10, max_bytes=10**9))
    for i in range(30):  # a new made-up agent name each time
        ing.ingest([Message(f"wanwitness/x{i}/rec", good_batch([1], agent=f"x{i}"), T0 + i),
                    Message("wanwitness/a1/rec", bad_batch(i, size=200), T0 + i)])
    assert {u.bucket: (u.kept_rows, u.dropped) for u in quotas(store)} == {
        "": (10, 20), "a1": (10, 20)}
    assert kept(store)[0] == 20


def test_a_refused_batch_resent_50_times_is_one_row_with_count_50(ing, store, ww):
    payload = bad_batch(7, size=300)
    ing.ingest([Message("wanwitness/a1/rec", payload, T0 + i) for i in range(20)])  # one commit
    for i in range(20, 50):
        assert ing.ingest([Message("wanwitness/a1/rec", payload, T0 + i * 15_000)]).quarantined == 1
    Q = s.quarantine
    with store.engine.connect() as c:
        [row] = c.execute(sa.select(Q.c.count, Q.c.recv_ms, Q.c.last_recv_ms)).all()
    assert tuple(row) == (50, T0, T0 + 49 * 15_000)
    # Another agent sending the same bytes, or another reason, is another row.
    ing.ingest([Message("wanwitness/b2/rec", payload, T0 + 1)])
    assert kept(store)[:2] == (2, 51)
    listing = ww("quarantine", "list", "--db", store.url).stdout
    assert "(300 B x50, last 2026-11-03 06:12:15Z): invalid batch: recs[0].s: missing" in listing


def test_prune_deletes_rows_last_seen_before_a_date_and_frees_the_quota(ing, store, ww):
    day = 86_400_000
    ing.ingest([Message("wanwitness/a1/rec", bad_batch(1, size=300), T0),
                Message("wanwitness/a1/rec", bad_batch(2, size=300), T0)])
    ing.ingest([Message("wanwitness/a1/rec", bad_batch(2, size=300), T0 + 3 * day)])  # seen again
    proc = ww("quarantine", "prune", "--db", store.url, "--before", "2026-11-05")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ("pruned 1 quarantine row(s) standing for 1 refused message(s), "
                                   "last seen before 2026-11-05T00:00:00.000Z")
    assert kept(store) == (1, 2, 300)
    [use] = quotas(store)
    assert (use.kept_rows, use.kept_bytes) == (1, 300)
    assert one_line_error(ww("quarantine", "prune", "--db", store.url, "--before", "last week")) == (
        "wanwitness: --before 'last week': not a date/time (use e.g. 2026-11-03 or "
        "2026-11-03T09:12:00Z)")
    assert ww("quarantine", "prune", "--db", store.url).returncode == 2  # --before is required


def test_a_message_the_store_refuses_is_quarantined_and_the_rest_commits_once(ing, store):
    # b2's row says nothing is stored above seq 0, but seq 3 is (an inconsistent store):
    # inserting it again breaks the records' primary key for b2's message only.
    ing.ingest([Message("wanwitness/b2/rec", good_batch([3], agent="b2"), T0)])
    with store.engine.begin() as c:
        c.execute(s.agents.update().where(s.agents.c.id == "b2").values(max_seq=0))
    commits, savepoints = [], []
    sa.event.listen(store.engine, "commit", lambda conn: commits.append(1))
    sa.event.listen(store.engine, "rollback_savepoint", lambda conn, name, ctx: savepoints.append(name))
    msgs = [Message("wanwitness/a1/rec", good_batch([i]), T0 + i) for i in range(1, 25)]
    msgs.insert(10, Message("wanwitness/b2/rec", good_batch([1, 2, 3], agent="b2"), T0 + 100))
    result = ing.ingest(msgs)
    assert len(commits) == 1  # one transaction, not a commit per message
    # The group's savepoint, then halves down to the bad message: 2 log2 n at most.
    assert 2 <= len(savepoints) <= 1 + 2 * math.ceil(math.log2(len(msgs)))
    assert result.stored == 24 and result.quarantined == 1 and result.acks == {"a1": 24}
    assert result.reasons == ["internal error: IntegrityError: UNIQUE constraint failed: "
                              "records.agent, records.seq"] or (
        result.reasons[0].startswith("internal error: IntegrityError: duplicate key value")
        and "\n" not in result.reasons[0])  # PostgreSQL's words
    with store.engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(s.records)
                         .where(s.records.c.agent == "a1")).scalar() == 24
        assert c.execute(sa.select(quarantine_quota.c.bucket)).scalars().all() == ["b2"]
    assert ledger.verify(store).ok


def test_migration_4_counts_what_an_older_quarantine_holds(tmp_path):
    import hashlib

    from wanwitness.store import MIGRATIONS, migrate, open_store
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'v3.db'}")
    with engine.begin() as conn:
        s.schema_migrations.create(conn)
        for version, name, fn in MIGRATIONS:
            if version <= 3:
                fn(conn)
                conn.execute(s.schema_migrations.insert().values(version=version, name=name,
                                                                 applied_ms=0))
        conn.exec_driver_sql("INSERT INTO agents (id, password_hash, enabled, hb_s, created_ms, "
                             "ack_seq) VALUES ('a1', 'x', 1, 30, 0, 0)")
        for agent, payload in (("a1", b"one"), ("a1", b"two!"), ("stranger", b"three")):
            conn.execute(sa.text("INSERT INTO quarantine (recv_ms, topic, agent, reason, size, "
                                 "payload) VALUES (5, 't', :a, 'r', 3, :p)"), {"a": agent, "p": payload})
    assert 4 in migrate(engine)
    engine.dispose()
    st = open_store(f"sqlite:///{tmp_path / 'v3.db'}")
    Q = s.quarantine
    with st.engine.connect() as c:
        rows = c.execute(sa.select(Q.c.count, Q.c.last_recv_ms, Q.c.sha256).order_by(Q.c.id)).all()
    assert [tuple(r) for r in rows] == [(1, 5, hashlib.sha256(p).hexdigest())
                                        for p in (b"one", b"two!", b"three")]
    assert {u.bucket: (u.kept_rows, u.kept_bytes) for u in quotas(st)} == {"a1": (2, 7), "": (1, 5)}
    st.dispose()
