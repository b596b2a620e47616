"""Several collectors on one PostgreSQL behind Mosquitto's shared subscriptions (issue 18).

    .venv/bin/python -m bench.scale [--agents 1000] [--collectors 1,2,3] [--phase-s 30]
        [--backlog 100] [--kill-run-s 60] [--kill-every-s 20] [--profile DIR] [--json OUT]

For each number of collectors N: a fresh PostgreSQL database (127.0.0.1:5432, created
and dropped here) with the agents registered (`add_agent`), a private Mosquitto on a
free loopback port (anonymous, with the queue limits of `wanwitness broker
mosquitto-config`), N `wanwitness collect --shared bench --no-web` processes, and the
population of simulated agents in this one asyncio process: one paho-mqtt client per
agent driven from the event loop (its socket registered with add_reader/add_writer,
loop_read/loop_write/loop_misc called from there), no thread per agent. Each agent
keeps its records until a retained ack covers them, sends one batch at a time (at most
900 bytes of records, oldest first), resends what an ack has not covered after 15 s
and everything after a reconnect, like the firmware (docs/protocol.md § Resends).

Phases, each measured on its own:
- `1x`: every agent at the firmware's worst realistic rate (3,900 records a day,
  bench/README.md "flash wear": probe, led, stats and state records) and a heartbeat
  every 30 s with latency lines, for --phase-s;
- `10x`: ten times both;
- `backlog`: every agent back from an outage with --backlog records at once: how fast
  the collectors drain it is their capacity.
After the phases of the largest N, the kill run: 10x for --kill-run-s with one
collector SIGKILLed (and started again) every --kill-every-s; then records lost and
duplicates stored (both must be 0) and, per kill, the time until every record made
before it is covered by an ack.

Figures: records/s ingested, ack latency p50/p99 (a record made -> an ack covering it
received by its agent), CPU seconds of each collector (/proc via psutil), of the
database backends serving them, of Mosquitto and of this process; the share of the
collectors' database sessions found waiting on a lock (pg_stat_activity, sampled).
--profile DIR runs the first collector under cProfile (DIR/collector-<N>.prof; the
top functions are printed): its CPU figures are then not comparable.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import pstats
import random
import resource
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
import sqlalchemy as sa

from bench.cleanup import Cleanup
from bench.ingest import new_pg_database
from testing.brokers import Mosquitto
from testing.collector import CollectorProcess
from wanwitness.collector.agents import add_agent
from wanwitness.store import open_store

HOST = "127.0.0.1"
PREFIX = "wanwitness"
GROUP = "bench"
HB_S = 30                      # the firmware's default hb_s
RECORDS_PER_DAY = 3900         # the firmware's worst realistic rate (bench/README.md)
RESEND_S = 15.0                # the firmware's RESEND_MS
BATCH_BYTES = 900              # the firmware's Outbox.pending(900)
# What `wanwitness broker mosquitto-config` writes for the queues.
MOSQUITTO_EXTRA = "max_inflight_messages 100\nmax_queued_messages 100000\n"
DEFAULT_PG_ADMIN = os.environ.get("WANWITNESS_TEST_PG",
                                  "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REPO = Path(__file__).resolve().parent.parent


# --- the population -------------------------------------------------------------------

class SimAgent:
    """One simulated agent on the population's event loop (the firmware's delivery rules)."""

    def __init__(self, pop: Population, name: str, ob: str):
        self.pop = pop
        self.name = name
        self.ob = ob
        self.t0 = time.monotonic()
        self.next_seq = 1
        self.outbox: dict[int, tuple[str, float]] = {}  # seq -> (record JSON, made at)
        self.sent_at: dict[int, float] = {}
        self.inflight: int | None = None  # the mid of the batch awaiting its PUBACK
        self.acked = 0
        self.connected = False
        self.lost_at = 0.0
        self.state = "up"
        self.topic = f"{pop.prefix}/{name}"
        c = self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"ww-{name}",
                                      clean_session=True, protocol=mqtt.MQTTv311)
        if pop.passwords:
            c.username_pw_set(name, pop.passwords[name])
        c.will_set(f"{self.topic}/status", "offline", qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        loop = pop.loop
        c.on_socket_open = lambda cl, _u, sock: loop.add_reader(sock, functools.partial(cl.loop_read, 20))
        c.on_socket_close = lambda _cl, _u, sock: loop.remove_reader(sock)
        c.on_socket_register_write = lambda cl, _u, sock: loop.add_writer(sock, cl.loop_write)
        c.on_socket_unregister_write = lambda _cl, _u, sock: loop.remove_writer(sock)

    def now_t(self) -> int:
        return int((time.monotonic() - self.t0) * 1000)

    # -- records ---------------------------------------------------------------------
    def add(self) -> None:
        seq, t = self.next_seq, self.now_t()
        self.next_seq += 1
        rec = self.pop.record(self, seq, t)
        self.outbox[seq] = (json.dumps(rec, separators=(",", ":")), time.monotonic())
        self.pump(time.monotonic())

    def heartbeat(self) -> None:
        if not self.connected:
            return
        t = self.now_t()
        self.client.publish(f"{self.topic}/hb", (
            f'{{"boot":1,"t":{t},"utc":{time.time_ns() // 1_000_000},"s":"{self.state}",'
            f'"heap":91000,"peak":60000,"q":{len(self.outbox)},"rssi":-61,"safe":false,'
            f'"fe":0,"ob":"{self.ob}","lat":{{"gw:192.0.2.1":[12,0,2,3,9],'
            f'"198.51.100.7":[12,1,10,14,40],"dns:198.51.100.53":[6,0,4,5,8]}}}}'), qos=0)
        self.pop.heartbeats += 1

    def pump(self, now: float) -> None:
        """The next batch when none awaits its PUBACK: the oldest records not sent within
        RESEND_S, up to BATCH_BYTES."""
        if not self.connected or self.inflight is not None or not self.outbox:
            return
        chosen: list[int] = []
        parts: list[str] = []
        size = 0
        resend_s = self.pop.resend_s
        for seq, (body, _made) in self.outbox.items():
            last = self.sent_at.get(seq)
            if last is not None and now - last < resend_s:
                if chosen:
                    break
                continue
            if chosen and size + len(body) > BATCH_BYTES:
                break
            chosen.append(seq)
            parts.append(body)
            size += len(body)
        if not chosen:
            return
        payload = (f'{{"v":1,"agent":"{self.name}","ob":"{self.ob}","boot":1,"t":{self.now_t()},'
                   f'"recs":[{",".join(parts)}]}}')
        info = self.client.publish(f"{self.topic}/rec", payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return
        self.inflight = info.mid
        self.pop.resent += sum(1 for seq in chosen if seq in self.sent_at)
        for seq in chosen:
            self.sent_at[seq] = now
        self.pop.batches += 1

    # -- paho callbacks (on the event loop) ---------------------------------------------
    def _on_connect(self, client, _u, _flags, reason_code, _p) -> None:
        if reason_code.is_failure:
            return
        client.subscribe(f"{self.topic}/ack", qos=1)
        client.publish(f"{self.topic}/status", "online", qos=1, retain=True)
        self.connected = True
        self.inflight = None
        self.sent_at.clear()  # everything unacked goes again after a (re)connect
        self.pump(time.monotonic())

    def _on_disconnect(self, *_a) -> None:
        self.connected = False
        self.inflight = None
        self.lost_at = time.monotonic()

    def _on_publish(self, _c, _u, mid, _rc, _p) -> None:
        if mid == self.inflight:
            self.inflight = None
            self.pump(time.monotonic())

    def _on_message(self, _c, _u, msg) -> None:
        try:
            doc = json.loads(msg.payload)
            seq = int(doc["seq"])
        except (ValueError, KeyError, TypeError):
            return
        if doc.get("ob") != self.ob:
            return
        if seq > self.next_seq - 1:
            self.pop.acks_above.append(f"{self.name}: ack {seq} above its last seq {self.next_seq - 1}")
            return
        if self.pop.on_ack is not None:
            self.pop.on_ack(self.name, seq)
        if seq <= self.acked:
            return
        now = time.monotonic()
        lat = self.pop.latencies
        for s in range(self.acked + 1, seq + 1):
            item = self.outbox.pop(s, None)
            self.sent_at.pop(s, None)
            if item is not None:
                lat.append((now, now - item[1]))
        self.acked = seq
        self.pump(now)


class Population:
    """Simulated agents in one asyncio process: `async with Population(...)`, then set
    `rate_x` (1 = the firmware's worst realistic rate), `add_backlog(n)`, `wait_acked()`."""

    def __init__(self, names: list[str], port: int, *, passwords: dict[str, str] | None = None,
                 prefix: str = PREFIX, resend_s: float = RESEND_S, hb_s: float = HB_S,
                 seed: int = 1, on_ack: Callable[[str, int], None] | None = None):
        self.loop = asyncio.get_running_loop()
        self.port = port
        self.prefix = prefix
        self.passwords = passwords or {}
        self.resend_s = resend_s
        self.hb_s = hb_s
        self.rng = random.Random(seed)
        self.on_ack = on_ack
        self.rate_x = 0.0
        self.latencies: list[tuple[float, float]] = []  # (acked at, seconds since made)
        self.acks_above: list[str] = []
        self.batches = 0
        self.heartbeats = 0
        self.resent = 0  # records published again (no ack covered them within resend_s)
        self.agents = [SimAgent(self, n, f"{self.rng.getrandbits(32):08x}") for n in names]
        self._tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> Population:
        await self.connect()
        self._tasks = [asyncio.create_task(self._produce()), asyncio.create_task(self._misc())]
        return self

    async def __aexit__(self, *exc) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for a in self.agents:
            try:
                a.client.disconnect()
                a.client.loop_write()
            except Exception:
                pass
            sock = a.client.socket()
            if sock is not None:
                self.loop.remove_reader(sock)
                self.loop.remove_writer(sock)
                sock.close()

    async def connect(self, timeout: float = 60) -> None:
        for i, a in enumerate(self.agents):
            a.client.connect(HOST, self.port, keepalive=60)
            if i % 20 == 19:
                await asyncio.sleep(0)  # let CONNACKs in while the rest connect
        deadline = time.monotonic() + timeout
        while not all(a.connected for a in self.agents):
            if time.monotonic() > deadline:
                n = sum(not a.connected for a in self.agents)
                raise TimeoutError(f"{n} simulated agent(s) not connected within {timeout} s")
            await asyncio.sleep(0.05)

    # -- load ------------------------------------------------------------------------------
    def record(self, agent: SimAgent, seq: int, t: int) -> dict:
        """A record of the kinds the firmware writes (docs/protocol.md § Records)."""
        utc = time.time_ns() // 1_000_000
        rec: dict = {"seq": seq, "t": t, "utc": utc}
        r = self.rng.random()
        if seq == 1:
            rec.update(k="boot", reset="PWRON_RESET", fw="bench", hw=None, safe=False, hb_s=HB_S)
        elif r < 0.70:
            ok = self.rng.random() < 0.5
            rec.update(k="probe", tg=self.rng.choice(("gw:192.0.2.1", "198.51.100.7", "dns:198.51.100.53")),
                       ok=ok, rtt=self.rng.randrange(2, 60) if ok else None, kind="icmp",
                       err=None if ok else "timeout")
        elif r < 0.85:
            rec.update(k="led", ch=self.rng.choice(("wan", "power")),
                       st=self.rng.choice(("on", "off", "blink")), at=t)
        elif r < 0.95:
            rec.update(k="stats", heap_free=90000 + self.rng.randrange(5000), q=len(agent.outbox),
                       wifi_changes=0, mqtt_connects=1)
        else:
            old, agent.state = agent.state, "isp_down" if agent.state == "up" else "up"
            rec.update(k="state", s=agent.state, **{"from": old}, at=t, bound=max(0, t - 2000),
                       ev={"by": "probe", "rounds": 3, "gw_fail": 0, "dns_fail": 3, "anc_ok": 0,
                           "anc_n": 3, "loss": 1.0})
        return rec

    def add_backlog(self, n: int) -> None:
        for a in self.agents:
            for _ in range(n):
                a.add()

    async def _produce(self) -> None:
        """Records and heartbeats at `rate_x` times the realistic rates, spread over the
        agents at random (records) and round robin (heartbeats)."""
        tick = 0.05
        rec_credit = hb_credit = 0.0
        hb_next = 0
        n = len(self.agents)
        last = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            dt, last = now - last, now
            rec_credit += self.rate_x * n * RECORDS_PER_DAY / 86400 * dt
            hb_credit += self.rate_x * n / self.hb_s * dt
            while rec_credit >= 1:
                rec_credit -= 1
                self.agents[self.rng.randrange(n)].add()
            while hb_credit >= 1:
                hb_credit -= 1
                self.agents[hb_next].heartbeat()
                hb_next = (hb_next + 1) % n

    async def _misc(self) -> None:
        """Keep-alives, reconnects, and resends of what no ack covered in time."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for a in self.agents:
                a.client.loop_misc()
                if not a.connected and now - a.lost_at > 1.0 and a.client.socket() is None:
                    try:
                        a.client.reconnect()
                    except OSError:
                        a.lost_at = now
                a.pump(now)

    # -- state -----------------------------------------------------------------------------
    def made(self) -> dict[str, int]:
        return {a.name: a.next_seq - 1 for a in self.agents}

    def acked(self) -> dict[str, int]:
        return {a.name: a.acked for a in self.agents}

    def covers(self, target: dict[str, int]) -> bool:
        return all(a.acked >= target[a.name] for a in self.agents)

    async def wait_acked(self, target: dict[str, int] | None = None, timeout: float = 300) -> float:
        """Seconds until every agent's ack covers `target` (default: all it made)."""
        target = target or self.made()
        start = time.monotonic()
        while not self.covers(target):
            if time.monotonic() - start > timeout:
                behind = sum(a.acked < target[a.name] for a in self.agents)
                raise TimeoutError(f"{behind} agent(s) not acked within {timeout} s")
            await asyncio.sleep(0.05)
        return time.monotonic() - start


# --- measuring ----------------------------------------------------------------------------

def cpu_s(pid: int) -> float:
    try:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except psutil.Error:
        return 0.0


class PgWatch:
    """The database side of our collectors: their backends' CPU, and how often they wait on a lock."""

    def __init__(self, admin_url: str, dbname: str):
        self.engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.dbname = dbname
        self.samples = self.waiting = 0

    def backends(self) -> dict[int, float]:
        with self.engine.connect() as conn:
            pids = conn.exec_driver_sql(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend' "
                "AND pid <> pg_backend_pid()", (self.dbname,)).scalars().all()
        return {pid: cpu_s(pid) for pid in pids}

    def sample(self) -> None:
        with self.engine.connect() as conn:
            row = conn.exec_driver_sql(
                "SELECT count(*) FILTER (WHERE state = 'active'), "
                "count(*) FILTER (WHERE state = 'active' AND wait_event_type = 'Lock') "
                "FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() "
                "AND application_name <> 'bench'", (self.dbname,)).one()
        self.samples += row[0]
        self.waiting += row[1]

    def dispose(self) -> None:
        self.engine.dispose()


@dataclass
class Phase:
    collectors: int
    phase: str
    seconds: float
    records: int
    records_per_s: float
    heartbeats_per_s: float
    ack_p50_ms: float
    ack_p99_ms: float
    collector_cpu_s: list[float]
    db_cpu_s: float
    mosquitto_cpu_s: float
    bench_cpu_s: float
    lock_wait_pct: float  # of the active database sessions sampled, those waiting on a lock
    machine_busy_pct: float  # all cores, everything on the box (a shared machine)
    extra: dict = field(default_factory=dict)


def machine_busy() -> tuple[float, float]:
    t = psutil.cpu_times()
    return t.idle + getattr(t, "iowait", 0.0), sum(t)


class Rig:
    """Mosquitto, a fresh database, N collectors, for one number of collectors."""

    def __init__(self, n: int, agents: int, work: Path, admin_url: str, cleanup: Cleanup,
                 profile: Path | None):
        self.n, self.work, self.cleanup = n, work, cleanup
        self.broker = Mosquitto(work / "mosquitto", extra_conf=MOSQUITTO_EXTRA)
        self.broker.start()
        cleanup.push("stop mosquitto", self.broker.close)
        self.db_url = new_pg_database(admin_url, cleanup)
        self.dbname = sa.engine.make_url(self.db_url).database or ""
        store = open_store(self.db_url)
        self.names = [f"a{i:05d}" for i in range(agents)]
        for name in self.names:
            add_agent(store, name)
        store.dispose()
        self.pg = PgWatch(admin_url, self.dbname)
        cleanup.push("pg watch", self.pg.dispose)
        self.engine = sa.create_engine(self.db_url, connect_args={"application_name": "bench"})
        cleanup.push("bench engine", self.engine.dispose)
        self.collectors: list[CollectorProcess] = []
        for i in range(n):
            c = ProfiledCollector(work / f"collector{i + 1}", self.db_url, broker=self.broker.url,
                                  extra_args=("--shared", GROUP), new_session=True,
                                  extra_env={"PYTHONPATH": str(REPO)},
                                  profile=profile / f"collector-{n}.prof" if profile and i == 0 else None)
            self.collectors.append(c)
            cleanup.push(f"stop collector {i + 1}", c.stop)
        for c in self.collectors:
            c.start(wait=False)
        for c in self.collectors:
            c.wait_ready(60)

    def stored(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM records")).scalar() or 0)

    def pids(self) -> list[int]:
        return [c.proc.pid for c in self.collectors if c.proc is not None]

    def close(self) -> None:
        for c in self.collectors:
            c.stop()


class ProfiledCollector(CollectorProcess):
    def __init__(self, *a, profile: Path | None = None, **kw):
        super().__init__(*a, **kw)
        self.profile = profile

    def command(self) -> list[str]:
        cmd = super().command()
        if self.profile is None:
            return cmd
        return [cmd[0], "-m", "cProfile", "-o", str(self.profile), *cmd[1:]]


class Meter:
    """CPU and counts between start() and stop() of one phase."""

    def __init__(self, rig: Rig, pop: Population):
        self.rig, self.pop = rig, pop

    async def start(self) -> None:
        rig = self.rig
        self.t0 = time.monotonic()
        self.stored0 = await asyncio.to_thread(rig.stored)
        self.cpu0 = {pid: cpu_s(pid) for pid in rig.pids()}
        self.db0 = await asyncio.to_thread(rig.pg.backends)
        self.mq0 = cpu_s(rig.broker.proc.pid) if rig.broker.proc else 0.0
        self.me0 = cpu_s(os.getpid())
        self.hb0 = self.pop.heartbeats
        self.resent0 = self.pop.resent
        self.idle0, self.total0 = machine_busy()
        rig.pg.samples = rig.pg.waiting = 0
        self._sampler = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            await asyncio.to_thread(self.rig.pg.sample)
            await asyncio.sleep(0.25)

    async def stop(self, n: int, name: str, records: int | None = None, **extra) -> Phase:
        rig, pop = self.rig, self.pop
        self._sampler.cancel()
        t1 = time.monotonic()
        secs = t1 - self.t0
        stored = await asyncio.to_thread(rig.stored)
        db1 = await asyncio.to_thread(rig.pg.backends)
        idle1, total1 = machine_busy()
        lats = sorted(lat for at, lat in pop.latencies if self.t0 <= at <= t1)
        q = statistics.quantiles(lats, n=100) if len(lats) >= 2 else [0.0] * 99
        recs = stored - self.stored0 if records is None else records
        return Phase(
            collectors=n, phase=name, seconds=round(secs, 1), records=recs,
            records_per_s=round(recs / secs, 1),
            heartbeats_per_s=round((pop.heartbeats - self.hb0) / secs, 1),
            ack_p50_ms=round(q[49] * 1000), ack_p99_ms=round(q[98] * 1000),
            collector_cpu_s=[round(cpu_s(pid) - self.cpu0.get(pid, 0.0), 1) for pid in rig.pids()],
            db_cpu_s=round(sum(v - self.db0.get(pid, 0.0) for pid, v in db1.items()), 1),
            mosquitto_cpu_s=round((cpu_s(rig.broker.proc.pid) if rig.broker.proc else 0.0) - self.mq0, 1),
            bench_cpu_s=round(cpu_s(os.getpid()) - self.me0, 1),
            lock_wait_pct=round(100 * rig.pg.waiting / rig.pg.samples, 1) if rig.pg.samples else 0.0,
            machine_busy_pct=round(100 * (1 - (idle1 - self.idle0) / max(1e-9, total1 - self.total0)), 1),
            extra={"records resent": pop.resent - self.resent0, **extra})


# --- the runs -------------------------------------------------------------------------------

async def run_n(n: int, args, work: Path, cleanup: Cleanup, kill_run: bool) -> list[Phase]:
    rig = await asyncio.to_thread(Rig, n, args.agents, work / f"n{n}", args.pg_admin, cleanup,
                                  args.profile)
    out: list[Phase] = []
    try:
        async with Population(rig.names, rig.broker.port, seed=n) as pop:
            for name, x in (("1x", 1.0), ("10x", 10.0)):
                pop.rate_x = x
                await asyncio.sleep(min(5.0, args.phase_s / 3))  # settle at the new rate
                meter = Meter(rig, pop)
                await meter.start()
                await asyncio.sleep(args.phase_s)
                out.append(await meter.stop(n, name))
                print(row(out[-1]), flush=True)
            pop.rate_x = 0.0
            await pop.wait_acked()
            meter = Meter(rig, pop)
            await meter.start()
            pop.add_backlog(args.backlog)
            await pop.wait_acked(timeout=600)
            out.append(await meter.stop(n, "backlog", records=args.backlog * args.agents))
            print(row(out[-1]), flush=True)
            if kill_run and args.kill_run_s > 0:
                out.append(await kill_run_phase(n, args, rig, pop))
                print(row(out[-1]), flush=True)
    finally:
        await asyncio.to_thread(rig.close)
    return out


async def kill_run_phase(n: int, args, rig: Rig, pop: Population) -> Phase:
    pop.rate_x = 10.0
    meter = Meter(rig, pop)
    await meter.start()
    kills: list[tuple[float, dict[str, int]]] = []
    catch_up: list[float] = []
    waits: list[asyncio.Task] = []
    start = time.monotonic()
    k = 0
    while time.monotonic() - start < args.kill_run_s:
        await asyncio.sleep(min(args.kill_every_s, args.kill_run_s - (time.monotonic() - start)))
        if time.monotonic() - start >= args.kill_run_s - 1:
            break
        victim = rig.collectors[k % n]
        k += 1
        target = pop.made()
        await asyncio.to_thread(victim.kill)
        kills.append((time.monotonic(), target))
        waits.append(asyncio.create_task(pop.wait_acked(target, timeout=300)))
        await asyncio.to_thread(victim.start)  # started again at once, a new client id
    pop.rate_x = 0.0
    drain = await pop.wait_acked(timeout=300)
    for t in waits:
        catch_up.append(await t)
    phase = await meter.stop(n, f"kill every {args.kill_every_s:g} s")
    with rig.engine.connect() as conn:
        stored, distinct = conn.execute(sa.text(
            "SELECT count(*), count(DISTINCT (agent, seq)) FROM records")).one()
        per_agent = dict(conn.execute(sa.text("SELECT agent, max(seq) FROM records GROUP BY agent")).all())
    made = pop.made()
    lost = sum(made[a] for a in made) - distinct
    holes = sum(1 for a, m in made.items() if per_agent.get(a, 0) != m)
    phase.extra = {**phase.extra, "kills": len(kills), "records made": sum(made.values()), "records lost": lost,
                   "agents whose last record is missing": holes,
                   "duplicates stored": stored - distinct,
                   "acks above an agent's last seq": len(pop.acks_above),
                   "catch-up after each kill, s": [round(c, 1) for c in catch_up],
                   "drain after the run, s": round(drain, 1)}
    return phase


HEADER = ("| collectors | phase | s | records | rec/s | hb/s | ack p50 ms | ack p99 ms | CPU s per "
          "collector | DB backends CPU s | Mosquitto CPU s | bench CPU s | DB lock waits % | box busy % |")


def row(p: Phase) -> str:
    return (f"| {p.collectors} | {p.phase} | {p.seconds:g} | {p.records} | {p.records_per_s:g} | "
            f"{p.heartbeats_per_s:g} | {p.ack_p50_ms:g} | {p.ack_p99_ms:g} | "
            f"{' / '.join(f'{c:g}' for c in p.collector_cpu_s)} | {p.db_cpu_s:g} | "
            f"{p.mosquitto_cpu_s:g} | {p.bench_cpu_s:g} | {p.lock_wait_pct:g} | {p.machine_busy_pct:g} |")


def raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, need), hard))


async def main_async(args) -> list[Phase]:
    cleanup = Cleanup()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: [t.cancel() for t in asyncio.all_tasks()])
    phases: list[Phase] = []
    with tempfile.TemporaryDirectory(prefix="ww-scale-") as tmp:
        try:
            counts = args.collectors
            for n in counts:
                phases += await run_n(n, args, Path(tmp), cleanup, kill_run=n == max(counts))
        finally:
            await asyncio.to_thread(cleanup.run)
    return phases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--collectors", default="1,2,3", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--phase-s", type=float, default=30.0)
    ap.add_argument("--backlog", type=int, default=20, help="records per agent in the backlog phase "
                    "(20: a 7-minute outage at the worst realistic rate)")
    ap.add_argument("--kill-run-s", type=float, default=60.0)
    ap.add_argument("--kill-every-s", type=float, default=20.0)
    ap.add_argument("--pg-admin", default=DEFAULT_PG_ADMIN)
    ap.add_argument("--profile", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        args.profile = args.profile.resolve()
    raise_fd_limit(args.agents + 512)
    print(f"{args.agents} agents, collectors {args.collectors}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    print(HEADER, flush=True)
    phases = asyncio.run(main_async(args))
    print("\n" + HEADER + "\n" + "|---" * (HEADER.count("|") - 1) + "|")
    for p in phases:
        print(row(p))
    for p in phases:
        print(f"{p.collectors} collectors, {p.phase}: " + ", ".join(f"{k}: {v}" for k, v in p.extra.items()))
    if args.json:
        args.json.write_text(json.dumps([asdict(p) for p in phases], indent=1))
    if args.profile:
        for prof in sorted(args.profile.glob("collector-*.prof")):
            print(f"\n{prof.name}: top functions by own time")
            pstats.Stats(str(prof)).sort_stats("tottime").print_stats(15)
    failed = [p for p in phases if p.extra.get("records lost") or p.extra.get("duplicates stored")
              or p.extra.get("acks above an agent's last seq")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
