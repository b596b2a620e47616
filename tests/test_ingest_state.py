"""What ingest knows of an agent comes from the database in each transaction: another
collector's commits (several collectors on one PostgreSQL, `collect --shared`), a
revocation between two commits and a commit that rolled back are all seen by the next
commit. These would catch any state carried from one commit to the next going stale."""

from __future__ import annotations

import json
import random
import threading

import sqlalchemy as sa

from wanwitness import store as s
from wanwitness.collector import ledger
from wanwitness.collector.agents import add_agent, set_enabled
from wanwitness.collector.ingest import Ingestor, Message

OB1, OB2 = "0badcafe", "12345678"


def rec_msg(seqs, recv, *, boot=1, ob=OB1, agent="home", extra=None) -> Message:
    recs = [{"seq": q, "t": q * 100, "utc": None, "k": "stats", **(extra or {})} for q in seqs]
    return Message(f"wanwitness/{agent}/rec", json.dumps(
        {"v": 1, "agent": agent, "boot": boot, "ob": ob, "recs": recs}).encode(), recv)


def hb_msg(t, recv, *, boot=1, ob=OB1, agent="home") -> Message:
    return Message(f"wanwitness/{agent}/hb", json.dumps(
        {"boot": boot, "t": t, "ob": ob, "lat": {"gw:192.0.2.1": [4, 1, 2, 3, 9]}}).encode(), recv)


def agent_row(store, agent="home"):
    A = s.agents
    with store.engine.connect() as c:
        return c.execute(sa.select(A.c.ack_seq, A.c.max_seq, A.c.ob, A.c.chain_n, A.c.last_recv_ms)
                         .where(A.c.id == agent)).one()


def stored(store, agent="home"):
    R = s.records
    with store.engine.connect() as c:
        return c.execute(sa.select(R.c.seq).where(R.c.agent == agent).order_by(R.c.seq)).scalars().all()


def test_two_collectors_taking_turns_on_one_agent_each_see_what_the_other_stored(db_url):
    """Collectors A and B (separate engines, as separate processes would have) take turns
    with one agent's messages: acks, chain, streams, duplicates and a revocation all
    follow what the other one committed last."""
    store_a, store_b = s.open_store(db_url), s.open_store(db_url)
    try:
        add_agent(store_a, "home")
        a, b = Ingestor(store_a), Ingestor(store_b)
        r = a.ingest([rec_msg([1, 2, 3], 1000), hb_msg(350, 1001)])
        assert (r.stored, r.acks) == (3, {"home": 3})
        r = b.ingest([rec_msg([4, 5], 1010)])  # B sees A's ack 3 and chain head 3
        assert (r.stored, r.acks) == (2, {"home": 5})
        r = a.ingest([rec_msg([2], 1020), rec_msg([7], 1021)])  # a resend: A sees B's 4 and 5
        assert (r.stored, r.duplicates, r.acks) == (1, 1, {"home": 5})
        r = b.ingest([rec_msg([6], 1030)])  # B sees A's 7 above the hole
        assert (r.stored, r.acks) == (1, {"home": 7})
        # A re-flashed board: B starts the new outbox after everything A and B stored.
        r = b.ingest([rec_msg([1, 2], 1040, ob=OB2)])
        assert (r.stored, r.acks, r.streams) == (2, {"home": 9}, {"home": (OB2, 7)})
        # A maps the new outbox with B's stream row and refuses the old one past its end.
        r = a.ingest([rec_msg([3], 1050, ob=OB2), rec_msg([8], 1051, ob=OB1)])
        assert (r.stored, r.quarantined, r.acks) == (1, 1, {"home": 10})
        assert r.reasons[0].startswith("replaced outbox: seq 8 of outbox '0badcafe'")
        assert agent_row(store_b) == (10, 10, OB2, 10, 1050)  # the refused one is not heard
        # Revoked between two commits: the next commit of either refuses the agent.
        set_enabled(store_a, "home", False)
        r = b.ingest([rec_msg([4], 1060, ob=OB2)])
        assert (r.stored, r.quarantined) == (0, 1) and "revoked" in r.reasons[0]
        assert stored(store_a) == list(range(1, 11))
        v = ledger.verify(store_b)
        assert v.ok and v.count == 10
    finally:
        store_a.dispose()
        store_b.dispose()


def test_collectors_racing_on_one_agent_store_each_record_once_in_one_chain(pg_url):
    """PostgreSQL, two collectors at once on the same agent (shared subscriptions deal an
    agent's messages to both, resends included): every record stored once, the chain
    exact, the ack at the top, the boots' and latency rows summed over both."""
    stores = [s.open_store(pg_url) for _ in range(2)]
    try:
        add_agent(stores[0], "home")
        rng = random.Random(7)
        plan: list[list[list[Message]]] = [[], []]
        for i in range(60):
            seqs = [3 * i + 1, 3 * i + 2, 3 * i + 3]
            msgs = [rec_msg(seqs, 10_000 + i), hb_msg(300 * i + 50, 10_000 + i)]
            plan[rng.randrange(2)].append(msgs)
            if rng.random() < 0.3:  # resent, to whichever collector
                plan[rng.randrange(2)].append([rec_msg(seqs, 20_000 + i)])
        acks: list[int] = []
        errors: list[BaseException] = []

        def run(k: int) -> None:
            ing = Ingestor(stores[k])
            try:
                for msgs in plan[k]:
                    acks.append(ing.ingest(msgs).acks.get("home", 0))
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors and not any(t.is_alive() for t in threads)
        assert stored(stores[0]) == list(range(1, 181))
        assert agent_row(stores[0])[:4] == (180, 180, OB1, 180)
        assert max(acks) == 180
        v = ledger.verify(stores[1])
        assert v.ok and v.count == 180
        with stores[0].engine.connect() as c:
            boot = c.execute(sa.select(s.boots.c.last_t, s.boots.c.first_seq)).one()
            sent = c.execute(sa.select(sa.func.sum(s.latency.c.sent))
                             .where(s.latency.c.span_ms == s.LATENCY_SPANS_MS[0])).scalar_one()
        assert tuple(boot) == (180 * 100, 1)  # the newest t heard: seq 180's
        assert sent == 60 * 4
    finally:
        for st in stores:
            st.dispose()


def test_a_commit_that_rolled_back_leaves_no_trace_and_its_retry_stores_it_once(db_url):
    """The store fails at the commit's last statement (disk full, connection lost):
    nothing of it stays, in the database or in the collector; the same messages again
    (the broker redelivers them) are stored once, chained and acked as if first sent."""
    store = s.open_store(db_url)
    try:
        add_agent(store, "home")
        ing = Ingestor(store)
        ing.ingest([rec_msg([1, 2], 1000)])
        failed = []

        def fail_once(conn, cursor, statement, params, context, executemany):
            if statement.startswith("UPDATE agents") and not failed:
                failed.append(statement)
                raise sa.exc.OperationalError(statement, params, Exception("disk I/O error"))

        sa.event.listen(store.engine, "before_cursor_execute", fail_once)
        batch = [rec_msg([3, 4], 1010), hb_msg(450, 1011), rec_msg([5], 1012, boot=2)]
        try:
            ing.ingest(batch)
        except sa.exc.OperationalError:
            pass
        else:
            raise AssertionError("the commit did not fail")
        assert failed
        assert stored(store) == [1, 2] and agent_row(store)[:4] == (2, 2, OB1, 2)
        r = ing.ingest(batch)
        assert (r.stored, r.duplicates, r.acks) == (3, 0, {"home": 5})
        assert stored(store) == [1, 2, 3, 4, 5] and agent_row(store)[:4] == (5, 5, OB1, 5)
        with store.engine.connect() as c:
            boots = c.execute(sa.select(s.boots.c.boot, s.boots.c.first_seq).order_by(s.boots.c.boot)).all()
        assert [tuple(b) for b in boots] == [(1, 1), (2, 5)]
        v = ledger.verify(store)
        assert v.ok and v.count == 5
    finally:
        store.dispose()
