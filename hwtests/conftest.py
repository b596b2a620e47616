"""Hardware tests: a board on a serial line, from deploy to an outage at the collector.

    pytest hwtests                      # the virtual board (default; CI runs this)
    pytest hwtests --virtual            # the same, said explicitly
    pytest hwtests --port /dev/ttyUSB0 --wifi-ssid HOME --wifi-password SECRET
                                        # a real ESP32 with MicroPython (wanwitness flash)

On the virtual board everything is driven by the test: the light on each sensor (the
board's control file), the internet (TCP listeners on loopback standing in for the
gateway and the anchors). On a real board the test asks you, on the terminal, to do
the physical part (cover a sensor, unplug the WAN cable) and waits for it; run it
with `-s` so you see the prompts. The board must reach this machine's broker port:
`--broker-host` is this machine's address on your LAN (default: found by a route
lookup that sends nothing).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from testing.brokers import Mosquitto, MqttClient
from testing.collector import CollectorProcess
from wanwitness import store as s
from wanwitness.broker.mosquitto import write_mosquitto_config
from wanwitness.broker.passwords import hash_password
from wanwitness.collector.agents import add_agent, board_config, write_board_config
from wanwitness.demo import LoopbackHost
from wanwitness.loopback import free_port
from wanwitness.virtual.supervisor import find_micropython

ROOT = Path(__file__).resolve().parent.parent
AGENT = "hwtest"
VIRTUAL_PINS = [34, 35]  # two sensors on the virtual ESP32 (ADC1): internet and power LED
BRIGHT, DARK = 52000, 3000
COLLECTOR = ("wanwitness-collector", "hwtest-collector-secret")


def pytest_addoption(parser):
    g = parser.getgroup("wanwitness hardware tests")
    g.addoption("--port", help="serial port of a real board (else the virtual board)")
    g.addoption("--virtual", action="store_true", help="use the virtual board (the default)")
    g.addoption("--board", help="board profile of the real board (default: by its chip)")
    g.addoption("--leds", help="real board: comma-separated sensor GPIOs, first = internet LED")
    g.addoption("--wifi-ssid", default="", help="real board: Wi-Fi network")
    g.addoption("--wifi-password", default="", help="real board: Wi-Fi password")
    g.addoption("--broker-host", help="real board: this machine's LAN address")


def _lan_address() -> str:
    # connect() on UDP only picks the route: no packet is sent
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("192.0.2.1", 9))
        return sock.getsockname()[0]


@dataclass
class Rig:
    """Everything a hardware test touches: board, collector, the lab's internet."""
    port: str
    virtual: bool
    workdir: Path
    config_path: Path
    db_url: str
    broker_port: int
    leds: list[int]
    control: Path | None = None
    gateway: LoopbackHost | None = None
    anchors: list[LoopbackHost] = field(default_factory=list)
    collector: CollectorProcess | None = None
    mosquitto: Mosquitto | None = None
    board_proc: subprocess.Popen | None = None

    # -- broker and collector ----------------------------------------------------------

    def start_broker_and_collector(self, password: str, listen_host: str) -> None:
        files = {p.name: p for p in write_mosquitto_config(
            self.workdir / "mq-conf", [(AGENT, hash_password(password))],
            (COLLECTOR[0], hash_password(COLLECTOR[1])))}
        self.mosquitto = Mosquitto(self.workdir / "mq", port=self.broker_port,
                                   password_file=files["passwd"], acl_file=files["acl"])
        self.mosquitto.host = listen_host  # a real board connects from the LAN
        self.mosquitto.start()
        self.collector = CollectorProcess(self.workdir / "collector", self.db_url,
                                          broker=f"mqtt://127.0.0.1:{self.broker_port}",
                                          username=COLLECTOR[0], password=COLLECTOR[1])
        self.collector.start()

    def watch(self, *topics: str) -> MqttClient:
        """An MQTT client (as the collector's user) subscribed to the agent's topics."""
        c = MqttClient(f"mqtt://127.0.0.1:{self.broker_port}", username=COLLECTOR[0],
                       password=COLLECTOR[1]).connect()
        for t in topics:
            c.subscribe(f"wanwitness/{AGENT}/{t}", 1)
        return c

    def collector_log(self) -> str:
        return self.collector.log() if self.collector else ""

    def records(self, kind: str | None = None) -> list[dict]:
        store = s.open_store(self.db_url)
        try:
            with store.engine.connect() as conn:
                rows = conn.execute(s.records.select().where(s.records.c.agent == AGENT)
                                    .order_by(s.records.c.seq)).mappings().all()
        finally:
            store.dispose()
        out = []
        for r in rows:
            rec = json.loads(r["body"])
            rec["seq"], rec["boot"] = r["seq"], r["boot"]
            if kind is None or rec.get("k") == kind:
                out.append(rec)
        return out

    def wait_records(self, pred, timeout: float, what: str) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            recs = [r for r in self.records() if pred(r)]
            if recs:
                return recs
            time.sleep(0.5)
        raise AssertionError(f"no {what} reached the collector within {timeout:g} s; "
                             f"collector log:\n{self.collector_log()[-3000:]}")

    # -- the virtual board's world ----------------------------------------------------

    def light(self, levels: dict[int, int]) -> None:
        assert self.control is not None
        control = {"wifi": "up", "rssi": -58,
                   "adc": {str(p): {"level": v, "noise": 300} for p, v in levels.items()}}
        tmp = self.control.with_name(self.control.name + ".tmp")
        tmp.write_text(json.dumps(control))
        os.replace(tmp, self.control)

    def internet(self, up: bool) -> None:
        for h in self.anchors + ([self.gateway] if self.gateway else []):
            if h is self.gateway:
                continue  # the router stays on: it is the line that fails
            h.up() if up else h.down()

    def ask(self, text: str) -> None:
        """A real board: tell the person at the desk what to do now."""
        print(f"\n>>> {text}", file=sys.__stderr__, flush=True)


@pytest.fixture(scope="session")
def rig(request, tmp_path_factory):
    port = request.config.getoption("--port")
    virtual = port is None or request.config.getoption("--virtual")
    if port and request.config.getoption("--virtual"):
        pytest.exit("give either --port or --virtual", returncode=2)
    work = tmp_path_factory.mktemp("hw")
    db_url = f"sqlite:///{work / 'wanwitness.db'}"
    broker_port = free_port()
    store = s.open_store(db_url)
    try:
        password = add_agent(store, AGENT, hb_s=5)
    finally:
        store.dispose()
    if virtual:
        find_micropython()
        broker_host, listen_host = "127.0.0.1", "127.0.0.1"
        leds = VIRTUAL_PINS
        wifi = ("hwtest-wifi", "hwtest")
    else:
        broker_host = request.config.getoption("--broker-host") or _lan_address()
        listen_host = "0.0.0.0"
        given = request.config.getoption("--leds")
        leds = [int(x) for x in given.split(",")] if given else []
        wifi = (request.config.getoption("--wifi-ssid"), request.config.getoption("--wifi-password"))
        if not wifi[0]:
            pytest.exit("a real board needs --wifi-ssid and --wifi-password", returncode=2)
    conf = board_config(AGENT, password, broker_host=broker_host, broker_port=broker_port,
                        hb_s=5, wifi_ssid=wifi[0], wifi_password=wifi[1])
    conf["wdt_s"] = 10
    roles = ["internet", "power", "wan", "lan"]
    conf["leds"] = [{"pin": p, "role": roles[i]} for i, p in enumerate(leds)]
    rig = Rig(port or str(work / "ttyVBOARD"), virtual, work, work / f"{AGENT}.config.json",
              db_url, broker_port, leds)
    if virtual:
        rig.gateway = LoopbackHost()
        rig.anchors = [LoopbackHost(), LoopbackHost()]
        conf["probe"] = {"interval_s": 1, "timeout_ms": 800, "gateway": rig.gateway.target,
                         "anchors": [a.target for a in rig.anchors], "dns": None, "ntp": None}
        rig.control = work / "control.json"
        rig.light({VIRTUAL_PINS[0]: BRIGHT, VIRTUAL_PINS[1]: BRIGHT})
        log = open(work / "board.log", "ab")
        rig.board_proc = subprocess.Popen(
            [sys.executable, "-m", "wanwitness", "agent", "run", "--virtual", "--serial", rig.port,
             "--flash", str(work / "board.flash"), "--control", str(rig.control)],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 30
        while not os.path.exists(rig.port):
            assert rig.board_proc.poll() is None, (work / "board.log").read_text()
            assert time.monotonic() < deadline, "the virtual board's serial port did not appear"
            time.sleep(0.1)
    write_board_config(rig.config_path, conf)
    rig.start_broker_and_collector(password, listen_host)
    yield rig
    rig.collector.stop()
    rig.mosquitto.close()
    if rig.board_proc is not None and rig.board_proc.poll() is None:
        rig.board_proc.send_signal(signal.SIGTERM)
        try:
            rig.board_proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(rig.board_proc.pid, signal.SIGKILL)
            rig.board_proc.wait()
    for h in rig.anchors + ([rig.gateway] if rig.gateway else []):
        h.down()
