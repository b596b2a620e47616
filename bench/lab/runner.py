"""Run one outage-lab scenario end to end and score it.

    python -m bench.lab run bench/scenarios/cut-10s.json [--json OUT] [--keep] [--seed N]

What a run does (every process in a lab namespace, every address RFC 5737):

1. Validate the scenario (bench/lab/scenario.py): a bad file stops here, exit 2.
2. Build the Lab (bench/lab/topology.py). A work directory holds the SQLite store, the
   agent's config, flash image and control file, and every log.
3. Register agent "lab" in the store with the library (`add_agent`, as `wanwitness
   agent add --db` does) and write its config: broker 192.0.2.10:1883, gateway
   192.0.2.1, the lab's anchors, DNS 198.51.100.53 / example.test, no NTP, an
   "internet" LED on GPIO 34 and a "power" LED on GPIO 35, both with the levels
   `wanwitness calibrate` would measure (2500 dark, 52000 lit: the detector knows the
   power LED is lit from boot), hb_s 5, then the scenario's overrides.
4. Start the collector in the `server` namespace (`wanwitness collect --listen
   192.0.2.10:1883`, its embedded broker). A scenario that switches `broker` gets an
   external Mosquitto in `server` instead and the collector connects to it with
   `--broker` (see "broker" below).
5. Start the agent on the virtual board in `agent` (`wanwitness agent run --virtual`)
   and the peers (`python -m bench.lab.peers`) beside it against the same anchors.
6. Wait for the agent's boot record and its first `led` record (the internet LED
   seen blinking), let it settle (settle_s plus a random part of one probe interval,
   so that the timeline starts at a random phase of the agent's probe rounds), then
   play the timeline in real time.

The run's random choices, that phase and the packets `loss` drops (topology.drop_slots),
come from its seed (`--seed N`; without it a random one): the run logs it when it
starts and stores it in its result (`seed`), so a result can be reproduced with the
same seed. The phase is then the same to the microsecond, and the n-th packet through
the WAN each way is dropped or not alike; which packet is n-th can still differ
between runs when the agent's and the peers' packets interleave differently.
7. After duration_s, wait for the agent to deliver: every seq up to the highest
   stored one committed (agents.ack_seq = max_seq), and a heartbeat sent after that
   saying q = 0 and s = up. Heartbeats are not stored, so the lab reads them off the
   wire: a packet socket in the server namespace sees the agent's MQTT PUBLISH to
   `wanwitness/lab/hb` (plain MQTT inside the lab). Heartbeats come every hb_s = 5 s.
8. Stop everything, read `wanwitness outages --json`, the records, gaps and
   quarantine, and the peers' report; score (bench/lab/score.py).

The switches:

| set | what the lab does |
|---|---|
| wan, loss, dns | Lab.set_wan / set_loss / set_dns; truth times are when the command returned |
| router | Lab.set_router; the board's control file gets "wifi": "down" (the access point is the router) and both LEDs go dark at once; on: power LED at once, internet LED after the lag |
| wifi | down: control file "wifi": "down" first, then Lab.set_wifi(False); up: the link first, then the control file |
| power_led | dark: the power LED (GPIO 35) reads dark while the router, its Wi-Fi and the line work on (a sensor fault); lit: back to the router's state |
| broker | only with an external Mosquitto (started for scenarios that use the key): down = SIGKILL Mosquitto (a crash: sessions, queued messages and retained acks since its start are gone); up = start it again on the same config |
| collector | down = SIGKILL the collector's process group (with the embedded broker, the broker goes with it); up = start it again on the same store |
| agent_power | off = SIGKILL the board's supervisor and the MicroPython process (the power is gone, nothing restarts it); on = start `wanwitness agent run --virtual` again on the same flash image and state file (the boot says PWRON_RESET) |
| led_lag_s | the router's internet LED follows the WAN that many seconds late (default 0.2 s) |

The router's LEDs (`LedDriver`): the internet LED (GPIO 34) flickers with activity
(5 pulses a second, wanwitness.demo.LED_ACTIVE) while the router is on and its WAN was
up `led_lag_s` ago, and is dark (LED_DARK) otherwise; the power LED (GPIO 35) is
steadily lit while the router is on and the `power_led` switch is lit. Loss and DNS do
not change them.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from wanwitness.errors import UserError

from . import scenario as scn
from . import score
from .topology import AGENT, GATEWAY, IF_SERVER, REPO, SERVER, Lab, LabError, new_seed, now_ms

AGENT_ID = "lab"
BROKER_PORT = 1883
HB_S = 5
PIN_INTERNET = 34
PIN_POWER = 35
LED_ACTIVE = {"pattern": "flicker", "on": 52000, "off": 3000, "pulse_ms": 50, "rate_hz": 5,
              "noise": 300}
LED_DARK = {"level": 2500, "noise": 300}
LED_STEADY = {"level": 52000, "noise": 300}
SETTLE_S = 6.0
READY_TIMEOUT_S = 120.0
DRAIN_TIMEOUT_S = 120.0
START_TIMEOUT_S = 30.0


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that a run unwinds as on Ctrl-C."""


def log(text: str) -> None:
    print(f"lab {time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANWITNESS_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def probe_phase(seed: int, interval_s: float) -> float:
    """Seconds (0..interval_s) the timeline starts after the settling time, by the seed."""
    return random.Random(f"wwlab-phase-{seed}").uniform(0, interval_s)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


# --- the router's LEDs and the board's Wi-Fi: the control file --------------------------

class LedDriver:
    """Keeps the virtual board's control file in line with the router.

    note() is called after every switch with the ms it took effect; a thread re-checks
    every 5 ms, so a lagging LED changes on time.
    """

    def __init__(self, path: Path, lab: Lab, lag_s: float = scn.DEFAULT_LED_LAG_S):
        self.path = path
        self.lab = lab
        self.lag_s = lag_s
        self.wifi_switch = True            # the board's own link (the `wifi` key)
        self.power_led_switch = True       # the power LED's sensor (the `power_led` key)
        self.power = True
        self._wan: list[tuple[int, bool]] = [(0, True)]   # (ms, router on and WAN up)
        self._lock = threading.RLock()
        self._written: tuple | None = None
        self.changes: list[tuple[int, str, str]] = []     # (ms, what, value) for the log
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lab-leds", daemon=True)

    def start(self) -> None:
        self.apply()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def note(self, t_ms: int) -> None:
        """The router's state changed at t_ms (read it from the Lab now)."""
        with self._lock:
            st = self.lab.router_state()
            self.power = st["power"]
            if st["wan"] != self._wan[-1][1]:
                self._wan.append((t_ms, st["wan"]))
            self.apply()

    def set_lag(self, lag_s: float) -> None:
        with self._lock:
            self.lag_s = float(lag_s)
            self.apply()

    def set_wifi(self, up: bool) -> None:
        with self._lock:
            self.wifi_switch = up
            self.apply()

    def set_power_led(self, lit: bool) -> None:
        with self._lock:
            self.power_led_switch = lit
            self.apply()

    def _wan_at(self, t_ms: float) -> bool:
        value = True
        for t, v in self._wan:
            if t <= t_ms:
                value = v
            else:
                break
        return value

    def desired(self, now: int) -> tuple:
        # (internet LED lit, power LED lit, board Wi-Fi up); a subclass may add items
        # that change the control file (control_doc's extra arguments)
        internet = self.power and self._wan_at(now - self.lag_s * 1000)
        return internet, self.power and self.power_led_switch, self.wifi_switch and self.power

    def apply(self) -> None:
        with self._lock:
            want = self.desired(now_ms())
            if want == self._written:
                return
            control = self.control_doc(*want)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(control))
            os.replace(tmp, self.path)
            t = now_ms()
            old = self._written
            for i, name in enumerate(("internet_led", "power_led", "board_wifi")):
                if old is None or old[i] != want[i]:
                    self.changes.append((t, name, "on" if want[i] else "off"))
            self._written = want

    def control_doc(self, internet: bool, power: bool, wifi: bool, *extra: Any) -> dict[str, Any]:
        """The control file: the internet LED flickers with activity while lit."""
        return {"wifi": "up" if wifi else "down", "rssi": -55,
                "ifconfig": [AGENT, "255.255.255.0", GATEWAY, "198.51.100.53"],
                "adc": {str(PIN_INTERNET): LED_ACTIVE if internet else LED_DARK,
                        str(PIN_POWER): LED_STEADY if power else LED_DARK}}

    def _loop(self) -> None:
        while not self._stop.wait(0.005):
            try:
                self.apply()
            except OSError as e:
                log(f"LED driver: cannot write {self.path}: {e}")


# --- heartbeats, read off the wire ----------------------------------------------------------

_CLONE_NEWNET = 0x40000000
_ETH_P_IP = 0x0800
_HB = re.compile(rb'/hb\{"boot":(\d+),"t":(\d+),[^}]*?"s":"([a-z_]+)"[^}]*?"q":(\d+)')


def socket_in_netns(netns: str, factory: Callable[[], socket.socket]) -> socket.socket:
    """A socket created inside network namespace `netns` (setns in a throwaway thread)."""
    box: dict[str, Any] = {}

    def run() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        try:
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                box["error"] = OSError(err, f"setns {netns}: {os.strerror(err)}")
                return
            box["sock"] = factory()
        except OSError as e:
            box["error"] = e
        finally:
            os.close(fd)

    t = threading.Thread(target=run, name="lab-setns")  # this thread's namespace dies with it
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["sock"]


@dataclass
class Heartbeat:
    recv_ms: int
    boot: int
    t: int
    s: str
    q: int


class HeartbeatTap:
    """The agent's heartbeats as they reach the server (AF_PACKET in the server ns)."""

    def __init__(self, netns: str, agent_ip: str = AGENT, port: int = BROKER_PORT):
        self.sock = socket_in_netns(netns, lambda: socket.socket(
            socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(_ETH_P_IP)))
        self.sock.bind((IF_SERVER, _ETH_P_IP))
        self.src = socket.inet_aton(agent_ip)
        self.port = port
        self.beats: list[Heartbeat] = []
        self._tail = b""  # the stream's last KiB (feed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lab-hbtap", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def latest(self) -> Heartbeat | None:
        return self.beats[-1] if self.beats else None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self.sock], [], [], 0.2)
                if not r:
                    continue
                pkt = self.sock.recv(65535)
            except OSError:
                return
            self.feed(pkt, now_ms())

    def feed(self, pkt: bytes, t_ms: int) -> None:
        if len(pkt) < 40 or pkt[0] >> 4 != 4 or pkt[9] != 6 or pkt[12:16] != self.src:
            return
        ihl = (pkt[0] & 15) * 4
        if struct.unpack("!H", pkt[ihl + 2:ihl + 4])[0] != self.port:
            return
        payload = pkt[ihl + (pkt[ihl + 12] >> 4) * 4:]
        if not payload:
            return
        # The stream, not each segment: the agent sends a PUBLISH's header and topic and
        # its payload in two writes (two segments), so a heartbeat's topic and body
        # arrive apart. What ends in this segment counts; a retransmitted one once.
        tail = self._tail
        data = tail + payload
        for m in _HB.finditer(data):
            if m.end() <= len(tail):
                continue
            hb = Heartbeat(t_ms, int(m[1]), int(m[2]), m[3].decode(), int(m[4]))
            if self.beats and (self.beats[-1].boot, self.beats[-1].t) == (hb.boot, hb.t):
                continue
            self.beats.append(hb)
        self._tail = data[-1024:]


# --- the run ----------------------------------------------------------------------------

class Run:
    """One scenario in one lab: start(), play(), drain(), stop(), collect()."""

    def __init__(self, sc: scn.Scenario, workdir: Path, *, settle_s: float = SETTLE_S,
                 drain_timeout_s: float = DRAIN_TIMEOUT_S, seed: int | None = None):
        self.sc = sc
        self.seed = new_seed() if seed is None else seed
        self.dir = workdir
        self.settle_s = settle_s
        self.drain_timeout_s = drain_timeout_s
        self.db_url = f"sqlite:///{workdir / 'wanwitness.db'}"
        self.collector_conf = workdir / "collector.toml"
        self.board_conf = workdir / "lab.config.json"
        self.flash = workdir / "lab.flash"
        self.control = workdir / "control.json"
        self.state_file = workdir / "board-state.json"
        self.peers_json = workdir / "peers.json"
        self.mosquitto_dir = workdir / "mosquitto"
        self.external_broker = sc.uses("broker")
        self.lab = Lab(logdir=workdir / "lab", seed=self.seed)
        self.env = _child_env()
        self.collector: subprocess.Popen | None = None
        self.mosquitto: subprocess.Popen | None = None
        self.supervisor: subprocess.Popen | None = None
        self.peers: subprocess.Popen | None = None
        self.leds: LedDriver | None = None
        self.tap: HeartbeatTap | None = None
        self.times_ms: list[int] = []
        self.t0_ms = 0
        self.end_ms = 0
        self.drained = False
        self.phase_s = 0.0
        self.probe_interval_s = float(sc.agent.get("probe", {}).get("interval_s", 2))
        self.notes: list[str] = []
        self._logs: list[IO] = []
        self.ready_led: tuple[str, ...] = ("blink",)   # the internet LED's first reading
        self.agent_args: list[str] = []                # more `agent run --virtual` options

    # -- processes -----------------------------------------------------------------

    def _log_file(self, name: str) -> IO:
        f = open(self.dir / name, "ab")
        self._logs.append(f)
        return f

    def _spawn(self, ns: str, argv: list[str], logname: str) -> subprocess.Popen:
        out = self._log_file(logname)
        return self.lab.popen(ns, argv, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                              cwd=str(self.dir))

    @staticmethod
    def _kill_group(p: subprocess.Popen | None, sig: int = signal.SIGKILL) -> None:
        if p is None or p.poll() is not None:
            return
        try:
            os.killpg(p.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _wait_log(self, name: str, offset: int, text: str, proc: subprocess.Popen,
                  timeout: float = START_TIMEOUT_S) -> None:
        path = self.dir / name
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    if text.encode() in f.read():
                        return
            except FileNotFoundError:
                pass
            if proc.poll() is not None:
                raise LabError(f"lab: {name.removesuffix('.log')} exited (status "
                               f"{proc.returncode}); see {path}")
            time.sleep(0.05)
        raise LabError(f"lab: {path} never said {text!r} within {timeout:.0f} s")

    def _size(self, name: str) -> int:
        try:
            return (self.dir / name).stat().st_size
        except FileNotFoundError:
            return 0

    def start_mosquitto(self) -> None:
        off = self._size("mosquitto.log")
        # Mosquitto logs into mosquitto.log itself (its stdout is block-buffered).
        self.mosquitto = self._spawn("server", [shutil.which("mosquitto") or "/usr/sbin/mosquitto",
                                                "-c", str(self.mosquitto_dir / "lab.conf")],
                                     "mosquitto.out")
        self._wait_log("mosquitto.log", off, "running", self.mosquitto)

    def start_collector(self) -> None:
        argv = [sys.executable, "-m", "wanwitness", "--config", str(self.collector_conf),
                "collect", "--db", self.db_url, "--no-web"]
        if self.external_broker:
            argv += ["--broker", f"mqtt://{SERVER}:{BROKER_PORT}"]
        else:
            argv += ["--listen", f"{SERVER}:{BROKER_PORT}"]
        for attempt in range(20):
            off = self._size("collector.log")
            self.collector = self._spawn("server", argv, "collector.log")
            try:
                self._wait_log("collector.log", off, "connected to", self.collector)
                return
            except LabError:
                # The embedded broker's port may still be held by the killed one's socket.
                self._kill_group(self.collector)
                if attempt == 19:
                    raise
                time.sleep(0.5)

    def start_agent(self) -> None:
        self.supervisor = self._spawn("agent", [
            sys.executable, "-m", "wanwitness", "agent", "run", "--virtual",
            "--config", str(self.board_conf), "--flash", str(self.flash),
            "--control", str(self.control), *self.agent_args], "agent.log")

    def agent_power_off(self) -> None:
        sup = self.supervisor
        if sup is None:
            return
        boards = _children(sup.pid)
        os.kill(sup.pid, signal.SIGKILL)             # the supply first: nothing restarts it
        for pid in boards:                           # then the CPU (its own session)
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        sup.wait(5)

    # -- set-up ---------------------------------------------------------------------

    def setup_files(self) -> None:
        from wanwitness import store as s
        from wanwitness.collector.agents import add_agent, board_config, write_board_config
        store = s.open_store(self.db_url)
        try:
            password = add_agent(store, AGENT_ID, hb_s=HB_S)
        finally:
            store.dispose()
        conf = board_config(AGENT_ID, password, broker_host=SERVER, broker_port=BROKER_PORT,
                            hb_s=HB_S, wifi_ssid="lab-wifi", wifi_password="lab-wifi-key")
        conf["probe"] = {"interval_s": 2, "gateway": GATEWAY,
                         "anchors": list(self.lab.addresses["anchors"]),
                         "dns": {"server": self.lab.addresses["dns"], "name": "example.test"},
                         "ntp": None}
        # Calibrated, as the setup guide has it (`wanwitness calibrate` writes the levels
        # it measured): a channel without levels learns them only when its LED changes,
        # so a power LED lit since boot would stay unknown to the detector.
        levels = [LED_DARK["level"], LED_STEADY["level"]]
        conf["leds"] = [{"pin": PIN_INTERNET, "role": "internet", "levels": levels},
                        {"pin": PIN_POWER, "role": "power", "levels": levels}]
        for key, value in self.sc.agent.items():
            if isinstance(value, dict) and isinstance(conf.get(key), dict):
                conf[key] = {**conf[key], **value}
            else:
                conf[key] = value
        write_board_config(self.board_conf, conf)
        toml = "[collector]\nlog_level = \"info\"\n"
        if self.external_broker:
            toml += self._mosquitto_files()
        self.collector_conf.write_text(toml)

    def _mosquitto_files(self) -> str:
        from wanwitness import store as s
        from wanwitness.broker.mosquitto import CONF, write_mosquitto_config
        from wanwitness.broker.passwords import hash_password, new_secret
        from wanwitness.collector.agents import password_hashes
        if not shutil.which("mosquitto") and not Path("/usr/sbin/mosquitto").exists():
            raise LabError("lab: the scenario switches the broker, which needs Mosquitto: "
                           "apt-get install -y mosquitto")
        secret = new_secret()
        store = s.open_store(self.db_url)
        try:
            # The snippet's own listener, on the lab server's address only.
            write_mosquitto_config(self.mosquitto_dir, password_hashes(store),
                                   ("lab-collector", hash_password(secret)),
                                   listen=(SERVER, BROKER_PORT))
        finally:
            store.dispose()
        snippet = (self.mosquitto_dir / CONF).read_text()
        (self.mosquitto_dir / "lab.conf").write_text(
            snippet + f"persistence_location {self.mosquitto_dir}/\n"
            f"log_dest file {self.dir / 'mosquitto.log'}\nlog_type error\nlog_type warning\nlog_type notice\n"
            "log_type information\nconnection_messages true\nuser root\n")
        return ("[broker]\n"
                f"url = \"mqtt://{SERVER}:{BROKER_PORT}\"\n"
                "username = \"lab-collector\"\n"
                f"password = \"{secret}\"\n")

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        log(f"{self.sc.name}: seed {self.seed}; building the lab; work directory {self.dir}")
        self.lab.up()
        self.setup_files()
        self.tap = HeartbeatTap(self.lab.ns["server"])
        self.tap.start()
        self.leds = self.make_leds()
        self.leds.start()
        if self.external_broker:
            self.start_mosquitto()
        self.start_collector()
        self.start_agent()
        anchors = ",".join(self.lab.addresses["anchors"])
        budget = READY_TIMEOUT_S + self.settle_s + self.sc.duration_s + self.drain_timeout_s + 600
        self.peers = self._spawn("agent", [sys.executable, "-m", "bench.lab.peers",
                                           "--targets", anchors, "--duration", f"{budget:.0f}",
                                           "--json", str(self.peers_json)], "peers.log")
        log(f"{self.sc.name}: collector, agent and peers started; waiting for the agent")
        self.wait_ready()
        # The agent's probe rounds tick every interval_s from its boot; without a random
        # offset every scenario would start at nearly the same phase of that tick, and
        # the probe-timed errors would all be the same fraction of an interval.
        self.phase_s = probe_phase(self.seed, self.probe_interval_s)
        log(f"{self.sc.name}: agent online; settling {self.settle_s + self.phase_s:.2f} s")
        time.sleep(self.settle_s + self.phase_s)

    def make_leds(self) -> LedDriver:
        return LedDriver(self.control, self.lab)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            kinds = self._kinds()
            if "boot" in kinds and any(("led", "internet", st) in kinds for st in self.ready_led):
                return
            assert self.supervisor is not None and self.collector is not None
            if self.supervisor.poll() is not None:
                raise LabError(f"lab: the agent's board exited; see {self.dir / 'agent.log'}")
            time.sleep(0.25)
        raise LabError(f"lab: no boot record and LED reading from the agent after "
                       f"{READY_TIMEOUT_S:.0f} s; see {self.dir / 'agent.log'} and "
                       f"{self.dir / 'collector.log'}")

    def _kinds(self) -> set:
        import sqlalchemy as sa

        from wanwitness import store as s
        store = s.open_store(self.db_url, migrate_schema=False)
        try:
            with store.engine.connect() as conn:
                rows = conn.execute(sa.select(s.records.c.k, s.records.c.body)
                                    .where(s.records.c.agent == AGENT_ID)).all()
        finally:
            store.dispose()
        out: set = set()
        for k, body in rows:
            out.add(k)
            if k == "led":
                b = json.loads(body)
                out.add(("led", b.get("ch"), b.get("st")))
        return out

    # -- the timeline ---------------------------------------------------------------

    def apply(self, e: scn.Entry) -> int:
        lab, leds = self.lab, self.leds
        assert leds is not None
        k, v = e.key, e.value
        if k == "wan":
            t = lab.set_wan(v == "up")
            leds.note(t)
        elif k == "loss":
            t = lab.set_loss(int(v))
        elif k == "dns":
            t = lab.set_dns(v == "up")
        elif k == "router":
            t = lab.set_router(v == "on")
            leds.note(t)
        elif k == "wifi":
            if v == "down":
                leds.set_wifi(False)
                t = lab.set_wifi(False)
            else:
                t = lab.set_wifi(True)
                leds.set_wifi(True)
        elif k == "power_led":
            leds.set_power_led(v == "lit")
            t = now_ms()
        elif k == "led_lag_s":
            leds.set_lag(float(v))
            t = now_ms()
        elif k == "broker":
            if v == "down":
                self._kill_group(self.mosquitto)
                if self.mosquitto:
                    self.mosquitto.wait(5)
                t = now_ms()
            else:
                self.start_mosquitto()
                t = now_ms()
        elif k == "collector":
            if v == "down":
                self._kill_group(self.collector)
                if self.collector:
                    self.collector.wait(5)
                t = now_ms()
            else:
                self.start_collector()
                t = now_ms()
        elif k == "agent_power":
            if v == "off":
                self.agent_power_off()
            else:
                self.start_agent()
            t = now_ms()
        else:  # scenario.parse() lets no other key through
            raise LabError(f"lab: unknown key {k!r}")
        return t

    def play(self) -> None:
        self.t0_ms = now_ms()
        t0 = time.monotonic()
        log(f"{self.sc.name}: timeline starts ({len(self.sc.timeline)} entries, "
            f"{self.sc.duration_s:g} s)")
        for e in self.sc.timeline:
            self._sleep_until(t0 + e.at)
            t = self.apply(e)
            self.times_ms.append(t)
            log(f"{self.sc.name}: +{(t - self.t0_ms) / 1000:7.3f} s  {e.key} -> {e.value}")
        self._sleep_until(t0 + self.sc.duration_s)
        self.end_ms = now_ms()

    @staticmethod
    def _sleep_until(when: float) -> None:
        while True:
            left = when - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))

    # -- delivery ---------------------------------------------------------------------

    def _acks(self) -> tuple[int, int]:
        import sqlalchemy as sa

        from wanwitness import store as s
        store = s.open_store(self.db_url, migrate_schema=False)
        try:
            with store.engine.connect() as conn:
                row = conn.execute(sa.select(s.agents.c.ack_seq, s.agents.c.max_seq)
                                   .where(s.agents.c.id == AGENT_ID)).first()
        finally:
            store.dispose()
        return (row.ack_seq, row.max_seq) if row else (0, 0)

    def drain(self) -> bool:
        """Wait until the agent has delivered everything (see the module docstring)."""
        assert self.tap is not None
        start = now_ms()
        deadline = time.monotonic() + self.drain_timeout_s
        last = None
        while time.monotonic() < deadline:
            hb = self.tap.latest()
            ack, top = self._acks()  # read after the heartbeat arrived
            last = (ack, top, hb)
            # q = 0: nothing the agent had written was unacked when it sent the heartbeat,
            # so every seq up to then is covered by ack_seq; ack_seq = max_seq: no hole.
            if (top > 0 and ack >= top and hb is not None and hb.recv_ms > start
                    and hb.q == 0 and hb.s == "up"):
                self.drained = True
                log(f"{self.sc.name}: delivered: seq {top} acked, heartbeat q=0, "
                    f"after {(now_ms() - start) / 1000:.1f} s")
                return True
            time.sleep(0.25)
        ack, top, hb = last if last else (0, 0, None)
        note = (f"not drained after {self.drain_timeout_s:.0f} s: ack_seq {ack}, max_seq {top}, "
                f"last heartbeat {hb}")
        self.notes.append(note)
        log(f"{self.sc.name}: WARNING {note}")
        return False

    # -- the end ----------------------------------------------------------------------

    def stop(self) -> None:
        if self.peers is not None and self.peers.poll() is None:
            self.peers.send_signal(signal.SIGTERM)
            try:
                self.peers.wait(15)
            except subprocess.TimeoutExpired:
                self.notes.append("peers did not stop on SIGTERM")
        for p in (self.supervisor, self.collector, self.mosquitto):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in (self.supervisor, self.collector, self.mosquitto):
            if p is not None:
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    self._kill_group(p)
        for part in (self.leds, self.tap):
            if part is not None:
                part.stop()

    def close(self) -> None:
        try:
            self.stop()
        finally:
            self.lab.close()
            for f in self._logs:
                f.close()

    def through(self) -> dict[str, Any]:
        """The whole run: start, play, drain, stop, collect; the lab torn down after it."""
        try:
            self.start()
            self.play()
            self.drain()
            self.stop()
            return self.collect()
        finally:
            self.close()

    def collect(self) -> dict[str, Any]:
        import sqlalchemy as sa

        from wanwitness import store as s
        p = subprocess.run([sys.executable, "-m", "wanwitness", "--config", str(self.collector_conf),
                            "outages", "--json", "--db", self.db_url, "--agent", AGENT_ID],
                           capture_output=True, text=True, env=self.env, cwd=str(REPO))
        if p.returncode != 0:
            raise LabError(f"lab: `wanwitness outages --json` failed: {p.stderr.strip()}")
        rows = json.loads(p.stdout)
        (self.dir / "outages.json").write_text(p.stdout)
        store = s.open_store(self.db_url, migrate_schema=False)
        try:
            with store.engine.connect() as conn:
                recs = conn.execute(sa.select(s.records.c.seq, s.records.c.recv_ms)
                                    .where(s.records.c.agent == AGENT_ID)).all()
                gaps = conn.execute(sa.select(s.gaps.c.first, s.gaps.c.last)
                                    .where(s.gaps.c.agent == AGENT_ID)).all()
                conflicts = conn.execute(
                    sa.select(sa.func.count()).select_from(s.quarantine)
                    .where(s.quarantine.c.agent == AGENT_ID,
                           s.quarantine.c.reason.like("conflicting record%"))).scalar() or 0
        finally:
            store.dispose()
        try:
            peers = score.peer_outages(json.loads(self.peers_json.read_text()))
        except (OSError, ValueError) as e:
            self.notes.append(f"no peers report: {e}")
            peers = {}
        truth = [{"class": t.cls, "start_ms": t.start_ms, "end_ms": t.end_ms}
                 for t in scn.truth(self.sc, self.times_ms)]
        found = score.found_from_outages(rows)
        res = score.result(self.sc.name, truth, found, {r.seq: r.recv_ms for r in recs},
                           [r.seq for r in recs], [(g.first, g.last) for g in gaps],
                           int(conflicts), peers)
        res["seed"] = self.seed
        res["sample_gap_max_ms"] = sample_gap_max((self.dir / "agent.log").read_text(errors="replace")
                                                  if (self.dir / "agent.log").exists() else "")
        extras = {
            "t0": self.t0_ms, "applied": [
                {"at": e.at, "set": e.key, "to": e.value, "ms": t, "offset_s": (t - self.t0_ms) / 1000}
                for e, t in zip(self.sc.timeline, self.times_ms)],
            "faults": [f.to_json() for f in scn.fault_spans(self.sc, self.times_ms, self.end_ms)],
            "leds": [{"ms": t, "what": w, "to": v} for t, w, v in (self.leds.changes if self.leds else [])],
            "drained": self.drained, "phase_s": round(self.phase_s, 3), "notes": self.notes,
            "workdir": str(self.dir),
            "records": len(recs)}
        _write_json(self.dir / "details.json", {"result": res, **extras})
        return res


RE_SAMPLE_GAP = re.compile(r" gap=(\d+)")


def sample_gap_max(agent_log: str) -> int | None:
    """The agent's longest gap between two LED sample turns (ms) over the run: the
    largest `gap=` of its console's heap lines (each the maximum since that boot)."""
    return max((int(m[1]) for m in RE_SAMPLE_GAP.finditer(agent_log)), default=None)


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            out.append(int(entry))
    return out


def check_tools() -> None:
    from wanwitness.virtual.supervisor import find_micropython
    try:
        find_micropython()
    except UserError as e:
        raise LabError(f"lab: {e}") from None


def run_scenario(sc: scn.Scenario, *, workdir: Path | None = None, keep: bool = False,
                 settle_s: float = SETTLE_S, drain_timeout_s: float = DRAIN_TIMEOUT_S,
                 seed: int | None = None) -> dict[str, Any]:
    """Run one validated scenario in a fresh lab; the scored result (score.result's shape,
    plus `seed`: the seed it ran with, a random one if none was given).

    Raises LabError (or UserError) when the lab itself could not run.
    """
    check_tools()
    made = workdir is None
    wd = Path(tempfile.mkdtemp(prefix=f"wwlab-{re.sub(r'[^a-z0-9-]', '', sc.name.lower())[:20]}-")) \
        if workdir is None else Path(workdir)
    wd = wd.resolve()
    run = Run(sc, wd, settle_s=settle_s, drain_timeout_s=drain_timeout_s, seed=seed)
    ok = interrupted = False
    try:
        res = run.through()
        ok = True
        return res
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        if made and (ok or interrupted) and not keep:
            shutil.rmtree(wd, ignore_errors=True)
        elif not ok and not interrupted:
            log(f"{sc.name}: the run (seed {run.seed}) failed; its files are in {wd}")


def describe(res: dict[str, Any]) -> str:
    lines = [f"scenario {res['scenario']} (seed {res.get('seed', '?')}): "
             f"{len(res['truth'])} true outage(s), {len(res['found'])} found, "
             f"{res['missed']} missed, {res['false']} false, "
             f"{res.get('misclassified', 0)} misclassified, "
             f"records lost {res['records_lost']}, duplicated {res['records_duplicated']}"]
    for m in res["matched"]:
        lines.append(f"  {m['class']:<10} start {m['start_err_s']:+} s  end "
                     f"{'open' if m['end_err_s'] is None else format(m['end_err_s'], '+')} s  "
                     f"detected after {m['detect_latency_s']} s")
    for f in res["found"]:
        if f.get("verdict") != "matched":
            lines.append(f"  found {f['class']} {f['start']} .. {f['end']}: {f.get('verdict')}")
    for name, p in res["peers"].items():
        lines.append(f"  peer {name:<20} missed {p['missed']} false {p['false']} "
                     f"start {p['start_err_s_median']} end {p['end_err_s_median']}")
    return "\n".join(lines)
