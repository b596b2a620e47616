"""A store failure is never a bad message: nothing is quarantined or acked for it.

Real processes: a private Mosquitto with the files `wanwitness broker
mosquitto-config` writes, `wanwitness collect` as a process, agents' batches published
with the agents' own credentials. The SQLite file is corrupted between two runs of the
collector; the second run must stop with one clear line and ack nothing, and once the
file is restored from its backup, the broker still holds every message: a third run
stores them all.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time

import paho.mqtt.client as mqtt
import pytest
import sqlalchemy as sa

from testing.brokers import Mosquitto, free_port
from testing.collector import CollectorProcess
from wanwitness import store as s
from wanwitness.broker.mosquitto import write_mosquitto_config
from wanwitness.broker.passwords import hash_password
from wanwitness.collector import ledger
from wanwitness.collector.agents import add_agent
from wanwitness.store import open_store

pytestmark = pytest.mark.integration

COLLECTOR = ("wanwitness-collector", "collector-secret")
AGENTS = ("a1", "a2")


class Agent:
    """An agent's MQTT side: publishes batches as the agent does, records its acks."""

    def __init__(self, name: str, password: str, port: int):
        self.name = name
        self.acks: list[int] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"ww-{name}",
                                  clean_session=True, protocol=mqtt.MQTTv311)
        self.client.username_pw_set(name, password)
        self.client.on_connect = lambda c, *_: c.subscribe(f"wanwitness/{name}/ack", qos=1)
        self.client.on_message = self._on_ack
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()

    def _on_ack(self, _c, _u, msg) -> None:
        with self.lock:
            self.acks.append(json.loads(msg.payload)["seq"])

    def send(self, first: int, last: int, per_batch: int = 5) -> None:
        """Batches of records first..last, each PUBACKed by the broker before returning."""
        for lo in range(first, last + 1, per_batch):
            recs = [{"seq": q, "t": 1000 * q, "utc": None, "k": "stats", "heap": 40000}
                    for q in range(lo, min(lo + per_batch, last + 1))]
            doc = {"v": 1, "agent": self.name, "boot": 1, "t": 1000 * recs[-1]["seq"], "recs": recs}
            info = self.client.publish(f"wanwitness/{self.name}/rec",
                                       json.dumps(doc, separators=(",", ":")), qos=1)
            info.wait_for_publish(10)
            assert info.is_published()

    def newest_ack(self) -> int:
        with self.lock:
            return max(self.acks, default=0)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_for(check, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def corrupt_pages(path, tables: tuple[str, ...]) -> None:
    """Overwrite the root pages of `tables` with garbage, as a failing disk would."""
    with sqlite3.connect(path) as db:
        size = db.execute("PRAGMA page_size").fetchone()[0]
        roots = [db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (t,)).fetchone()[0]
                 for t in tables]
    with open(path, "r+b") as f:
        for page in roots:
            f.seek((page - 1) * size)
            f.write(bytes([0x5A, 0xA5]) * (size // 2))


def counts(db_url: str, *, verify: bool = False) -> tuple[dict[str, int], int, dict[str, int]]:
    st = open_store(db_url)
    with st.engine.connect() as c:
        per_agent = dict(c.execute(sa.select(s.records.c.agent, sa.func.count())
                                   .group_by(s.records.c.agent)).all())
        quarantined = c.execute(sa.select(sa.func.count()).select_from(s.quarantine)).scalar()
        acks = dict(c.execute(sa.select(s.agents.c.id, s.agents.c.ack_seq)).all())
    if verify:  # only once the collector has stopped: a commit may land between its reads
        assert ledger.verify(st).ok
    st.dispose()
    return per_agent, quarantined, acks


@pytest.fixture
def setup(tmp_path):
    made = []

    def make(db_url: str):
        made.append(_setup(tmp_path, db_url))
        return made[-1][:3]
    yield make
    for col, broker, agents in ((m[1], m[3], m[2]) for m in made):
        for a in agents:
            a.close()
        col.stop()
        broker.stop()


def _setup(tmp_path, db_url: str):
    st = open_store(db_url)
    creds = {name: add_agent(st, name) for name in AGENTS}
    st.dispose()
    files = write_mosquitto_config(tmp_path / "mosq-conf",
                                   [(n, hash_password(p)) for n, p in creds.items()],
                                   (COLLECTOR[0], hash_password(COLLECTOR[1])))
    by_name = {p.name: p for p in files}
    broker = Mosquitto(tmp_path / "mosq", password_file=by_name["passwd"], acl_file=by_name["acl"],
                       extra_conf="max_queued_messages 100000\nmax_inflight_messages 100\n")
    broker.start()
    col = CollectorProcess(tmp_path / "collector", db_url, broker=f"mqtt://127.0.0.1:{broker.port}",
                           username=COLLECTOR[0], password=COLLECTOR[1])
    agents = [Agent(n, creds[n], broker.port) for n in AGENTS]
    return db_url, col, agents, broker


def test_a_corrupt_sqlite_file_stops_the_collector_and_nothing_is_acked(setup, tmp_path):
    db_path = tmp_path / "wanwitness.db"
    db_url, col, agents = setup(f"sqlite:///{db_path}")
    # A first run: 20 records per agent, stored and acked.
    col.start()
    for a in agents:
        a.send(1, 20)
    assert wait_for(lambda: all(a.newest_ack() == 20 for a in agents)), [a.acks for a in agents]
    assert col.stop() == 0
    backup = tmp_path / "backup.db"
    shutil.copy(db_path, backup)

    # The disk damages the file; the collector starts again (the agents' table is intact,
    # so it connects), and the agents send 30 more records each.
    corrupt_pages(db_path, ("records", "ix_records_link"))
    col.start()
    for a in agents:
        a.send(21, 50)  # each one PUBACKed by the broker: it owns them now
    assert col.proc is not None
    col.proc.wait(60)
    log = col.log().rsplit("--- start 2", 1)[1]
    assert col.proc.returncode == 3, log
    assert "Traceback" not in log
    assert (f"wanwitness: the store {db_path} is corrupt (database disk image is malformed): "
            "ingest stopped") in log
    assert "Restore the file from a backup" in log
    assert "quarantined" not in log.replace("0 quarantined this run", "")
    time.sleep(0.5)
    assert [a.newest_ack() for a in agents] == [20, 20]  # no ack for what was not stored
    for a in agents:
        a.close()  # from here on no agent resends anything: only the broker has them

    # Restored from the backup, the collector gets every message from the broker.
    shutil.copy(backup, db_path)
    col.start()
    assert wait_for(lambda: counts(db_url)[0] == {"a1": 50, "a2": 50}), col.log_tail()
    assert col.stop() == 0
    per_agent, quarantined, acks = counts(db_url, verify=True)
    assert quarantined == 0 and acks == {"a1": 50, "a2": 50}
    assert "Traceback" not in col.log()


def test_collect_on_a_file_that_is_not_a_database_says_so_and_exits_3(tmp_path, ww):
    bad = tmp_path / "wanwitness.db"
    bad.write_bytes(b"this is not SQLite " * 500)
    proc = ww.process("collect", "--db", f"sqlite:///{bad}", "--listen", f"127.0.0.1:{free_port()}",
                      timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip() == (
        f"wanwitness: --db: store sqlite:///{bad}: the database file is corrupt (file is not a "
        "database): restore it from a backup")


def test_a_read_only_or_lost_postgresql_is_retried_and_nothing_is_acked_meanwhile(setup, pg_url,
                                                                                 pg_admin):
    db_url, col, agents = setup(pg_url)
    name = sa.engine.make_url(pg_url).database

    def switch(read_only: bool) -> None:
        # New sessions take the setting; ending the collector's current ones is also a
        # lost connection in the middle of its work.
        with pg_admin.connect() as c:
            c.exec_driver_sql(f'ALTER DATABASE "{name}" SET default_transaction_read_only = '
                              f"{'on' if read_only else 'off'}")
            c.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))

    col.start()
    for a in agents:
        a.send(1, 10)
    assert wait_for(lambda: all(a.newest_ack() == 10 for a in agents))
    switch(read_only=True)
    try:
        for a in agents:
            a.send(11, 30)
        assert wait_for(lambda: "read-only transaction); nothing is acknowledged; retrying"
                        in col.log())
        time.sleep(1.0)
        assert [a.newest_ack() for a in agents] == [10, 10]
    finally:
        switch(read_only=False)
    assert wait_for(lambda: all(a.newest_ack() == 30 for a in agents), 60), col.log_tail()
    assert col.stop() == 0
    per_agent, quarantined, acks = counts(db_url, verify=True)
    assert per_agent == {"a1": 30, "a2": 30} and quarantined == 0
    assert acks == {"a1": 30, "a2": 30}
    log = col.log()
    assert "Traceback" not in log and "quarantined a message" not in log
