"""`wanwitness demo`: the whole chain on one machine, with a scripted outage.

A collector with its embedded broker and SQLite ledger, the real agent on the
virtual board, and a pretend internet on loopback: a "gateway" and two "anchors"
are TCP listeners on 127.0.0.1 that the agent probes. The script lets the agent
settle, then cuts the line (the router's internet LED goes dark and the anchors stop
answering), restores it, and prints what the collector recorded next to the truth.
Nothing leaves loopback.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from wanwitness import store as s
from wanwitness.collector import timeline
from wanwitness.collector.agents import add_agent, board_config, reset_password, write_board_config
from wanwitness.errors import UserError
from wanwitness.loopback import free_port

LED_PIN = 34
LED_ACTIVE = {"pattern": "flicker", "on": 52000, "off": 3000, "pulse_ms": 50, "rate_hz": 5,
              "noise": 300}
LED_DARK = {"level": 2500, "noise": 300}
AGENT = "demo"


class LoopbackHost:
    """A TCP listener on 127.0.0.1 standing in for an internet host; down = refused."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self._sock: socket.socket | None = None
        self.up()

    def up(self) -> None:
        if self._sock:
            return
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self._sock = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
                conn.close()
            except OSError:
                return

    def down(self) -> None:
        if self._sock:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
            self._sock = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class Truth:
    start_ms: int
    end_ms: int | None = None


class Demo:
    def __init__(self, workdir: Path, *, broker_port: int | None = None, interval_s: float = 2,
                 hb_s: int = 5, wdt_s: int = 20, external: tuple[str, str] | None = None,
                 extra_config: dict | None = None, log=None):
        # external: (user, password) of the collector at a broker already listening on
        # broker_port (a Mosquitto); else the collector runs its embedded broker there.
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db_url = f"sqlite:///{self.workdir / 'wanwitness.db'}"
        self.broker_port = broker_port or free_port()
        self.web_port = free_port()
        self.interval_s = interval_s
        self.hb_s = hb_s
        self.wdt_s = wdt_s
        self.external = external
        self.extra_config = extra_config or {}
        self.log = log or sys.stderr
        self.gateway = LoopbackHost()
        self.anchors = [LoopbackHost(), LoopbackHost()]
        self.control = self.workdir / "control.json"
        self.board_config = self.workdir / "demo.config.json"
        self.flash = self.workdir / "demo.flash"
        self.procs: list[subprocess.Popen] = []
        self.truths: list[Truth] = []

    def say(self, text: str) -> None:
        print(f"demo: {text}", file=self.log, flush=True)

    # -- set-up ------------------------------------------------------------------

    def setup(self) -> None:
        store = s.open_store(self.db_url)
        try:
            try:
                password = add_agent(store, AGENT, hb_s=self.hb_s)
            except UserError:
                password = reset_password(store, AGENT)
        finally:
            store.dispose()
        self.agent_password = password
        conf = board_config(AGENT, password, broker_host="127.0.0.1", broker_port=self.broker_port,
                            hb_s=self.hb_s, wifi_ssid="demo-wifi", wifi_password="demo")
        conf["probe"] = {"interval_s": self.interval_s, "timeout_ms": 1000,
                         "gateway": self.gateway.target,
                         "anchors": [a.target for a in self.anchors], "dns": None, "ntp": None}
        conf["leds"] = [{"pin": LED_PIN, "role": "internet"}]
        conf["wdt_s"] = self.wdt_s
        conf.update(self.extra_config)
        write_board_config(self.board_config, conf)
        self.set_control(LED_ACTIVE)

    def set_control(self, led: dict, wifi: str = "up") -> None:
        tmp = self.control.with_name(self.control.name + ".tmp")
        tmp.write_text(json.dumps({"wifi": wifi, "rssi": -58, "adc": {str(LED_PIN): led}}))
        os.replace(tmp, self.control)

    def _spawn(self, args: list[str], logname: str, env: dict | None = None) -> subprocess.Popen:
        out = open(self.workdir / logname, "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        env.pop("WANWITNESS_CONFIG", None)
        proc = subprocess.Popen([sys.executable, "-m", "wanwitness", *args], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        out.close()
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        if not getattr(self, "agent_password", None):
            self.setup()
        self.say(f"ledger {self.workdir / 'wanwitness.db'}; logs in {self.workdir}")
        self.start_collector()
        self.say(f"collector up; broker on 127.0.0.1:{self.broker_port}, "
                 f"web UI on http://127.0.0.1:{self.web_port}/")
        self.start_agent()
        self.say("agent started on the virtual board; waiting for its boot record")
        self.wait_records(lambda n_boot, n_state: n_boot >= 1, 60, "the agent's boot record")

    def start_collector(self) -> subprocess.Popen:
        logged = (self.workdir / "collector.log").read_text(errors="replace") \
            if (self.workdir / "collector.log").exists() else ""
        if self.external:
            self.collector_proc = self._spawn(
                ["collect", "--db", self.db_url, "--broker", f"mqtt://127.0.0.1:{self.broker_port}",
                 "--web", f"127.0.0.1:{self.web_port}"],
                "collector.log", env={"WANWITNESS_BROKER_USERNAME": self.external[0],
                                      "WANWITNESS_BROKER_PASSWORD": self.external[1]})
        else:
            self.collector_proc = self._spawn(["collect", "--db", self.db_url, "--listen",
                                               f"127.0.0.1:{self.broker_port}",
                                               "--web", f"127.0.0.1:{self.web_port}"],
                                              "collector.log")
        # Its log, not a probe of the port: a bare TCP connect would be logged by the
        # broker as a client that went away before CONNECT.
        self._wait_log("collector.log", "connected to", 30, after=len(logged))
        return self.collector_proc

    def start_agent(self) -> subprocess.Popen:
        self.agent_proc = self._spawn(["agent", "run", "--virtual", "--config",
                                       str(self.board_config), "--flash", str(self.flash),
                                       "--control", str(self.control)], "agent.log")
        return self.agent_proc

    def stop_collector(self) -> None:
        self._end(self.collector_proc)

    def stop_agent(self) -> None:
        """Like pulling the board's power (the runner kills MicroPython): its flash keeps
        what was written."""
        self._end(self.agent_proc)

    def _end(self, proc: subprocess.Popen) -> None:
        proc.terminate()
        proc.wait(20)
        self.procs.remove(proc)

    def last_state(self) -> tuple[int, str | None]:
        """(seq, s) of the agent's newest stored state record."""
        store = s.open_store(self.db_url, migrate_schema=False)
        try:
            with store.engine.connect() as conn:
                row = conn.execute(sa.select(s.records.c.seq, s.records.c.body)
                                   .where(s.records.c.agent == AGENT, s.records.c.k == "state")
                                   .order_by(s.records.c.seq.desc()).limit(1)).first()
        finally:
            store.dispose()
        return (row.seq, json.loads(row.body)["s"]) if row else (0, None)

    def _wait_log(self, name: str, text: str, timeout: float, after: int = 0) -> None:
        deadline = time.monotonic() + timeout
        path = self.workdir / name
        while time.monotonic() < deadline:
            if path.exists() and text in path.read_text(errors="replace")[after:]:
                return
            if any(p.poll() is not None for p in self.procs):
                raise UserError(f"demo: a process exited early; see {self.workdir}/*.log")
            time.sleep(0.1)
        raise UserError(f"demo: {name} never said {text!r}; see {path}")

    def counts(self) -> tuple[int, int]:
        store = s.open_store(self.db_url, migrate_schema=False)
        try:
            with store.engine.connect() as conn:
                rows: dict[str, int] = dict(conn.execute(sa.select(s.records.c.k, sa.func.count())
                                         .where(s.records.c.agent == AGENT)
                                         .group_by(s.records.c.k)).all())
        finally:
            store.dispose()
        return rows.get("boot", 0), rows.get("state", 0)

    def wait_records(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready(*self.counts()):
                return
            for p in self.procs:
                if p.poll() is not None:
                    raise UserError(f"demo: a process exited early; see {self.workdir}/*.log")
            time.sleep(0.25)
        raise UserError(f"demo: no {what} after {timeout:.0f} s; see {self.workdir}/agent.log")

    # -- the script ---------------------------------------------------------------

    def outage(self, seconds: float) -> Truth:
        """Cut the line for `seconds`: LED dark and anchors refusing, then back."""
        seq_before, _ = self.last_state()
        truth = Truth(start_ms=s.now_ms())
        self.set_control(LED_DARK)
        for a in self.anchors:
            a.down()
        self.say(f"line cut at {timeline.iso(truth.start_ms)}")
        time.sleep(seconds)
        truth.end_ms = s.now_ms()
        for a in self.anchors:
            a.up()
        self.set_control(LED_ACTIVE)
        self.say(f"line back at {timeline.iso(truth.end_ms)}")
        self.truths.append(truth)
        # Wait for the closing state record (the agent needs `up` rounds to clear).
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            seq, state = self.last_state()
            if seq > seq_before and state == "up":
                return truth
            time.sleep(0.25)
        raise UserError(f"demo: the agent never reported the end of the outage; "
                        f"see {self.workdir}/agent.log")

    def outages(self, since_ms: int | None = None) -> list[timeline.Outage]:
        store = s.open_store(self.db_url, migrate_schema=False)
        try:
            return timeline.query(store, agent=AGENT, since_ms=since_ms)
        finally:
            store.dispose()

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        for h in [self.gateway, *self.anchors]:
            h.down()


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_demo(workdir: Path, *, outage_s: float = 20, settle_s: float = 12, once: bool = False,
             broker_port: int | None = None, as_json: bool = False) -> int:
    demo = Demo(workdir, broker_port=broker_port)
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (systemd, kill, a CI runner) stops the demo like Ctrl-C: its collector,
        # agent and micropython processes go with it.
        signal.signal(signal.SIGTERM, _terminated)
    try:
        demo.start()
        demo.say(f"agent online; letting it settle for {settle_s:.0f} s")
        time.sleep(settle_s)
        # What this run shows starts here: an earlier run's outages (and the agent's
        # silence between runs) stay in the ledger but not beside this run's truth.
        watched_from = s.now_ms()
        truth = demo.outage(outage_s)
        assert truth.end_ms is not None
        rows = demo.outages(since_ms=watched_from)
        if as_json:
            print(json.dumps({"truth": {"start": timeline.iso(truth.start_ms),
                                        "end": timeline.iso(truth.end_ms)},
                              "truth_ms": [truth.start_ms, truth.end_ms],
                              "outages": json.loads(timeline.to_json(rows))}, indent=2))
        else:
            print(timeline.to_table(rows))
            print(f"truth: isp_down {timeline.iso(truth.start_ms)} .. {timeline.iso(truth.end_ms)}")
        if once:
            return 0
        demo.say("still running: collector on 127.0.0.1:%d (web UI http://127.0.0.1:%d/), "
                 "agent on the virtual board. Edit %s to play with the LED and Wi-Fi; "
                 "Ctrl-C stops." % (demo.broker_port, demo.web_port, demo.control))
        while all(p.poll() is None for p in demo.procs):
            time.sleep(1)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        demo.stop()
