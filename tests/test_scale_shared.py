"""Several collectors on one PostgreSQL behind Mosquitto's shared subscriptions
(`wanwitness collect --shared GROUP`, issue 18).

The acceptance run: Mosquitto (a private one) + PostgreSQL + 3 collectors, 300 simulated
agents x 50 records (bench/scale.py's population: one asyncio process), one collector
SIGKILLed mid-run and started again: every agent's ack reaches 50, each record is stored
once, no ack is ever ahead of the database, and `wanwitness verify` passes.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time

import pytest
import sqlalchemy as sa

from bench.scale import MOSQUITTO_EXTRA, Population
from testing.brokers import Mosquitto
from testing.cli import one_line_error
from testing.collector import CollectorProcess
from wanwitness.collector.agents import add_agent
from wanwitness.collector.duty import Duty
from wanwitness.store import open_store

AGENTS = 300
PER_AGENT = 50


class AckAudit:
    """Whenever an agent takes an ack, the database must already hold every record it
    covers. Checked from a thread of its own, many acks per query: an ack checked late
    can only look better, so what it finds is real."""

    def __init__(self, db_url: str):
        self.engine = open_store(db_url).engine
        self.got: queue.Queue[tuple[str, int]] = queue.Queue()
        self.violations: list[str] = []
        self.checked = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def __call__(self, agent: str, seq: int) -> None:
        self.got.put((agent, seq))

    def _run(self) -> None:
        while not (self._stop.is_set() and self.got.empty()):
            highest: dict[str, int] = {}
            try:
                agent, seq = self.got.get(timeout=0.1)
            except queue.Empty:
                continue
            highest[agent] = seq
            while len(highest) < 500:
                try:
                    agent, seq = self.got.get_nowait()
                except queue.Empty:
                    break
                highest[agent] = max(seq, highest.get(agent, 0))
            with self.engine.connect() as conn:
                have = dict(conn.execute(
                    sa.text("SELECT agent, count(*) FROM records r JOIN (SELECT * FROM "
                            "jsonb_each_text(CAST(:acks AS jsonb))) a ON r.agent = a.key "
                            "AND r.seq <= CAST(a.value AS bigint) GROUP BY agent"),
                    {"acks": json.dumps(highest)}).all())
            for agent, seq in highest.items():
                self.checked += 1
                if have.get(agent, 0) != seq:
                    self.violations.append(f"{agent}: ack {seq}, but {have.get(agent, 0)} "
                                           f"record(s) <= {seq} committed")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.engine.dispose()


@pytest.fixture
def broker(tmp_path):
    b = Mosquitto(tmp_path / "mosquitto", extra_conf=MOSQUITTO_EXTRA).start()
    yield b
    b.close()


def test_three_shared_collectors_one_killed_store_every_record_once(tmp_path, pg_url, broker, ww):
    names = [f"a{i:03d}" for i in range(AGENTS)]
    store = open_store(pg_url)
    for name in names:
        add_agent(store, name)
    store.dispose()
    collectors = [CollectorProcess(tmp_path / f"c{i}", pg_url, broker=broker.url,
                                   extra_args=("--shared", "g")) for i in range(3)]
    audit = AckAudit(pg_url)
    try:
        for c in collectors:
            c.start(wait=False)
        for c in collectors:
            c.wait_ready()

        async def run() -> list[str]:
            async with Population(names, broker.port, resend_s=3.0, hb_s=5.0, on_ack=audit) as pop:
                for step in range(PER_AGENT // 5):
                    if step == PER_AGENT // 10:  # halfway: one collector dies, and comes back
                        await asyncio.to_thread(collectors[1].kill)
                        await asyncio.sleep(1.0)
                        await asyncio.to_thread(collectors[1].start)
                    for a in pop.agents:
                        for _ in range(5):
                            a.add()
                    for _ in range(5):  # heartbeats as well, 5 rounds of everyone
                        for a in pop.agents:
                            a.heartbeat()
                    await asyncio.sleep(0.3)
                await pop.wait_acked({n: PER_AGENT for n in names}, timeout=120)
                assert pop.acked() == {n: PER_AGENT for n in names}
                return pop.acks_above

        acks_above = asyncio.run(run())
        time.sleep(0.5)
    finally:
        audit.close()
        for c in collectors:
            c.stop()
    assert acks_above == []
    assert audit.violations == [] and audit.checked > 0
    # The kill really happened mid-run, and the others took the agents' records meanwhile.
    assert collectors[1].starts == 2
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        per_record = conn.execute(sa.text(
            "SELECT count(*) FILTER (WHERE n <> 1), count(*), min(seq), max(seq) "
            "FROM (SELECT agent, seq, count(*) AS n FROM records GROUP BY agent, seq) r")).one()
        per_agent = conn.execute(sa.text(
            "SELECT count(*) FROM (SELECT agent FROM records GROUP BY agent "
            "HAVING count(*) = :n AND max(seq) = :n) a"), {"n": PER_AGENT}).scalar()
    engine.dispose()
    assert per_record == (0, AGENTS * PER_AGENT, 1, PER_AGENT)
    assert per_agent == AGENTS
    for c in collectors:
        assert "Traceback" not in c.log()
    verified = ww.process("verify", "--db", pg_url)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith("ok: ")


# --- refusals -------------------------------------------------------------------------------

def test_shared_with_the_embedded_broker_is_refused(ww, pg_url):
    line = one_line_error(ww.process("collect", "--shared", "g", "--db", pg_url, "--no-web"))
    assert "several collectors need an external broker" in line and "--shared" in line


def test_shared_group_from_the_config_with_the_embedded_broker_is_refused(ww, tmp_path, pg_url):
    conf = tmp_path / "config.toml"
    conf.write_text('[broker]\nshare_group = "g"\n')
    line = one_line_error(ww.process("--config", str(conf), "collect", "--db", pg_url, "--no-web"))
    assert line.startswith("wanwitness: [broker] share_group: several collectors need an external broker")


def test_shared_on_sqlite_is_refused(ww, tmp_path):
    line = one_line_error(ww.process("collect", "--shared", "g", "--broker", "mqtt://127.0.0.1:1",
                                     "--db", f"sqlite:///{tmp_path / 'w.db'}", "--no-web"))
    assert "several collectors need one PostgreSQL database" in line


@pytest.mark.parametrize("group", ["a/b", "a+", "#", ""])
def test_bad_group_name_is_one_line(ww, group):
    line = one_line_error(ww.process("collect", "--shared", group, "--broker", "mqtt://127.0.0.1:1",
                                     "--no-web"))
    assert line.startswith("wanwitness: --shared: ")


# --- work done by one of the collectors ------------------------------------------------------

class _Work:
    def __init__(self, log: list[str], name: str):
        self.log, self.name = log, name

    def start(self) -> None:
        self.log.append(f"{self.name} start")

    def changed(self) -> None:
        pass

    def close(self) -> None:
        self.log.append(f"{self.name} close")


def _wait(check, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.02)


def test_one_collector_publishes_to_home_assistant_and_another_takes_over(pg_url):
    stores = [open_store(pg_url), open_store(pg_url)]
    log: list[str] = []
    duties = [Duty(st, "publisher", lambda i=i: _Work(log, f"c{i}"), retry_s=0.1)
              for i, st in enumerate(stores)]
    try:
        duties[0].start()
        _wait(lambda: duties[0].held)
        duties[1].start()
        time.sleep(0.5)  # several tries: the lock is taken
        assert not duties[1].held and log == ["c0 start"]
        duties[0].close()  # that collector stops (or dies: its session ends the same way)
        _wait(lambda: duties[1].held)
        assert log == ["c0 start", "c0 close", "c1 start"]
    finally:
        for d in duties:
            d.close()
        for st in stores:
            st.dispose()
