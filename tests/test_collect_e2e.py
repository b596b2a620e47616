"""The collector end to end: real brokers, real databases, real process kills.

Five simulated agents (testing.simagent: the agent's delivery contract in
CPython) stream 10,000 records. Whatever is killed, every record must be stored
exactly once, the ledger must verify, and no ack may be ahead of the database.
"""

from __future__ import annotations

import random
import threading
import time

import pytest
import sqlalchemy as sa

from testing.brokers import Mosquitto, free_port
from testing.collector import CollectorProcess
from testing.simagent import SimAgent
from tests.vectorlib import load, payload
from wanwitness import store as s
from wanwitness.broker.mosquitto import write_mosquitto_config
from wanwitness.broker.passwords import hash_password
from wanwitness.collector import ledger
from wanwitness.collector.agents import add_agent
from wanwitness.store import open_store

AGENTS = [f"agent{i}" for i in range(1, 6)]
PER_AGENT = 2000
BATCHES = [1, 5, 20, 1, 10]  # records per message, per agent
COLLECTOR = ("wanwitness-collector", "collector-secret")
PACE_S = 0.06  # 400 steps of 25 records: a 25 s stream that spans all the kills


class AckAudit:
    """Checks, whenever an agent receives an ack, that the store already has it all."""

    def __init__(self, db_url: str):
        self.engine = open_store(db_url).engine
        self.violations: list[str] = []
        self.checked = 0
        self.lock = threading.Lock()

    def __call__(self, agent: str, seq: int) -> None:
        with self.engine.connect() as conn:
            have = conn.execute(sa.select(sa.func.count()).select_from(s.records)
                                .where(s.records.c.agent == agent, s.records.c.seq <= seq)).scalar()
        with self.lock:
            self.checked += 1
            if have != seq:
                self.violations.append(f"{agent}: ack {seq} but only {have} records <= {seq} committed")


def register(db_url: str) -> dict[str, str]:
    st = open_store(db_url)
    creds = {name: add_agent(st, name) for name in AGENTS}
    st.dispose()
    return creds


def stream(creds, host, port, audit, *, pace_s: float = 0.0, during=None, timeout=240):
    """Run the agents until all 10,000 records are acked; `during` runs meanwhile."""
    sims = [SimAgent(name, creds[name], host, port, batch=BATCHES[i], resend_s=10.0, window=200,
                     on_ack=audit, seed=i) for i, name in enumerate(AGENTS)]
    for sim in sims:
        sim.start()

    producing = threading.Event()
    producing.set()
    # The last records wait until `during` is done: whatever it does (kills, restarts)
    # happens while the agents are still producing, however slow the machine is.
    during_done = threading.Event()
    if during is None:
        during_done.set()

    def produce():
        chunk = 5 if pace_s else 100
        steps = PER_AGENT // chunk
        for step in range(steps):
            if step == steps - 1:
                during_done.wait(timeout)
            for sim in sims:
                sim.add_many(chunk)
            if pace_s:
                time.sleep(pace_s)
        producing.clear()

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    if during:
        try:
            during(producing)
        finally:
            during_done.set()
    producer.join()
    try:
        for sim in sims:
            assert sim.wait_drained(timeout), f"{sim.id}: {sim.pending()} records never acked"
    finally:
        for sim in sims:
            sim.stop()
    return sims


def assert_exactly_once(db_url: str, audit: AckAudit) -> None:
    st = open_store(db_url)
    with st.engine.connect() as conn:
        per_agent = dict(conn.execute(sa.select(s.records.c.agent, sa.func.count())
                                      .group_by(s.records.c.agent)).all())
        bounds = dict(conn.execute(sa.select(s.records.c.agent, sa.func.max(s.records.c.seq))
                                   .group_by(s.records.c.agent)).all())
        quarantined = conn.execute(sa.select(sa.func.count()).select_from(s.quarantine)).scalar()
    assert per_agent == {name: PER_AGENT for name in AGENTS}
    assert bounds == {name: PER_AGENT for name in AGENTS}
    assert quarantined == 0
    result = ledger.verify(st)
    assert result.ok and result.count == len(AGENTS) * PER_AGENT, result
    assert audit.checked > 0
    assert audit.violations == []
    st.dispose()


@pytest.fixture
def mosquitto_for(tmp_path):
    """A private Mosquitto with the files `wanwitness broker mosquitto-config` writes."""
    started = []

    def make(creds: dict[str, str]) -> Mosquitto:
        files = write_mosquitto_config(
            tmp_path / "mosq-conf", [(n, hash_password(p)) for n, p in creds.items()],
            (COLLECTOR[0], hash_password(COLLECTOR[1])))
        by_name = {p.name: p for p in files}
        m = Mosquitto(tmp_path / "mosq", password_file=by_name["passwd"], acl_file=by_name["acl"],
                      extra_conf="max_queued_messages 100000\nmax_inflight_messages 100\n"
                                 "autosave_interval 1\n")
        m.start()
        started.append(m)
        return m

    yield make
    for m in started:
        m.stop()


def _collector_on(tmp_path, db_url, m: Mosquitto) -> CollectorProcess:
    return CollectorProcess(tmp_path / "collector", db_url, broker=f"mqtt://127.0.0.1:{m.port}",
                            username=COLLECTOR[0], password=COLLECTOR[1])


class Killer:
    """Kill and restart something `times` times at random moments of the stream."""

    def __init__(self, kill, start, times: int, seed: int, down_s=(0.0, 0.0)):
        self.kill, self.start, self.times = kill, start, times
        self.rng = random.Random(seed)
        self.down_s = down_s
        self.mid_stream = 0  # kills while the agents were still producing records

    def __call__(self, producing: threading.Event) -> None:
        for _ in range(self.times):
            time.sleep(self.rng.uniform(0.05, 0.6))
            if producing.is_set():
                self.mid_stream += 1
            self.kill()
            time.sleep(self.rng.uniform(*self.down_s))
            self.start()


def test_10000_records_through_mosquitto(db_url, tmp_path, mosquitto_for):
    creds = register(db_url)
    m = mosquitto_for(creds)
    col = _collector_on(tmp_path, db_url, m)
    col.start()
    audit = AckAudit(db_url)
    try:
        stream(creds, m.host, m.port, audit)
    finally:
        col.stop()
    assert_exactly_once(db_url, audit)
    assert "Traceback" not in col.log()


def test_10000_records_through_the_embedded_broker(db_url, tmp_path):
    creds = register(db_url)
    port = free_port()
    col = CollectorProcess(tmp_path / "collector", db_url, listen=("127.0.0.1", port))
    col.start()
    audit = AckAudit(db_url)
    try:
        stream(creds, "127.0.0.1", port, audit)
    finally:
        col.stop()
    assert_exactly_once(db_url, audit)
    assert "Traceback" not in col.log()


@pytest.mark.slow
def test_collector_sigkilled_20_times_mid_stream_mosquitto(db_url, tmp_path, mosquitto_for):
    creds = register(db_url)
    m = mosquitto_for(creds)
    col = _collector_on(tmp_path, db_url, m)
    col.start()
    audit = AckAudit(db_url)
    killer = Killer(col.kill, col.start, 20, seed=20)
    try:
        stream(creds, m.host, m.port, audit, pace_s=PACE_S, during=killer)
    finally:
        col.stop()
    assert col.starts == 21 and killer.mid_stream == 20
    assert_exactly_once(db_url, audit)
    assert "Traceback" not in col.log()


@pytest.mark.slow
def test_collector_sigkilled_20_times_mid_stream_embedded(db_url, tmp_path):
    creds = register(db_url)
    port = free_port()
    col = CollectorProcess(tmp_path / "collector", db_url, listen=("127.0.0.1", port))
    col.start()
    audit = AckAudit(db_url)
    killer = Killer(col.kill, col.start, 20, seed=21)
    try:
        stream(creds, "127.0.0.1", port, audit, pace_s=PACE_S, during=killer)
    finally:
        col.stop()
    assert col.starts == 21 and killer.mid_stream == 20
    assert_exactly_once(db_url, audit)
    assert "Traceback" not in col.log()


@pytest.mark.slow
def test_mosquitto_sigkilled_and_restarted_mid_stream(db_url, tmp_path, mosquitto_for):
    creds = register(db_url)
    m = mosquitto_for(creds)
    col = _collector_on(tmp_path, db_url, m)
    col.start()
    audit = AckAudit(db_url)
    killer = Killer(m.kill, m.start, 3, seed=7, down_s=(0.2, 1.5))
    try:
        stream(creds, m.host, m.port, audit, pace_s=PACE_S / 3, during=killer)
    finally:
        col.stop()
    assert killer.mid_stream == 3
    assert_exactly_once(db_url, audit)
    assert "Traceback" not in col.log()


def test_invalid_vectors_over_mqtt_are_quarantined_and_ingest_continues(db_url, tmp_path, mosquitto_for):
    """Each invalid vector, published for real, lands in quarantine with its reason."""
    import paho.mqtt.client as mqtt

    st = open_store(db_url)
    creds = {"a1": add_agent(st, "a1"), "old": add_agent(st, "old")}
    from wanwitness.collector.agents import set_enabled
    set_enabled(st, "old", False)
    m = mosquitto_for(creds)
    col = _collector_on(tmp_path, db_url, m)
    col.start()
    # The collector's own account can publish anywhere: the broker's ACL would
    # otherwise refuse some of these before they reach us.
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="vector-publisher")
    pub.username_pw_set(*COLLECTOR)
    pub.connect("127.0.0.1", m.port)
    pub.loop_start()
    # Only what a `+/rec` subscription delivers (an odd topic never reaches us by MQTT).
    vectors = [(n, v) for n, v in load("invalid") if v["topic"].count("/") == 2]
    assert len(vectors) >= 25
    try:
        for _, v in vectors:
            pub.publish(v["topic"], payload(v), qos=1).wait_for_publish(10)
        good = b'{"v":1,"agent":"a1","boot":1,"recs":[{"seq":1,"t":5,"utc":null,"k":"stats"}]}'
        pub.publish("wanwitness/a1/rec", good, qos=1).wait_for_publish(10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with st.engine.connect() as conn:
                n = conn.execute(sa.select(sa.func.count()).select_from(s.records)).scalar()
            if n:
                break
            time.sleep(0.1)
    finally:
        pub.loop_stop()
        pub.disconnect()
        col.stop()
    with st.engine.connect() as conn:
        reasons = conn.execute(sa.select(s.quarantine.c.reason)).scalars().all()
        n = conn.execute(sa.select(sa.func.count()).select_from(s.records)).scalar()
    assert sorted(reasons) == sorted(v["reason"] for _, v in vectors)
    assert n == 1
    log = col.log()
    assert "Traceback" not in log
    assert "quarantined a message on wanwitness/a1/rec: invalid batch: batch.recs: empty" in log
    st.dispose()
