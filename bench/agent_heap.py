"""Agent heap: the heap high-water mark of the real agent over a run with outages, and
the smallest MicroPython heap (`-X heapsize`) under which that run finishes cleanly.

One collector (embedded broker, SQLite, 127.0.0.1) and one virtual board per heap
size, all at once. Each board is its own registered agent (`heap64k`, `heap192k`, …)
and runs the same compiled agent. All of them probe the same loopback "internet" (a
gateway and two anchors, TCP listeners on 127.0.0.1) and watch the same router LED
(pin 34) through one shared control file. So one run puts every heap size through
the same scripted events. Every 2 minutes, starting 20 s in:

    +0 s   a cut of 20-45 s: the LED goes dark and the anchors refuse connections
    +60 s  a 6 s LED-only blip (the probes still succeed, so the agent must retract)
    +80 s  the board's Wi-Fi drops for 20 s ("wifi": "down" in the control file)

    .venv/bin/python -m bench.agent_heap [--minutes 10] [--heaps 48K,56K,64K,...]
        [--json OUT] [--workdir DIR] [--no-live] [--mp32 | --mp32-mpy]

--mp32 runs every board on the 32-bit build of `./dev mp32` (testing/mp32.py) with the
agent and the virtual board frozen in, as a board's firmware would hold them; --mp32-mpy
on the same build with them as .mpy files in RAM (the stock-firmware case). Without
either, the 64-bit wheel's `micropython` with the agent as .mpy files.

For each heap it reports:
- whether the agent ran the whole time without a MemoryError, a crash or a reboot
  (from the supervisor's boot lines and the console);
- its heap peak: the largest `peak=` the agent printed with its heartbeats. That is
  the `gc.mem_alloc()` high-water, which the app's watchdog loop samples once a second;
- how many records the collector stored;
- whether its outages match the script and the other boards.

Each board starts through a small stand-in `main.py`. It imports the agent's modules
one at a time, runs `gc.collect()` after each, and prints what each one left on the
heap. Then it imports the agent's own `main.py` unchanged. This separates code (what
the imports leave) from working data (everything above that).

`gc.mem_alloc()` counts garbage until the next collection, and MicroPython collects
only when an allocation fails. So the sampled peak climbs towards whatever heap the
board has. One extra board, `heaplive`, therefore runs on a large heap with
`gc.threshold(2048)` (a collection after every 2 KiB allocated): its peak is close to
the live data, a lower bound on what the agent needs. The smallest clean heap is the
upper bound, since it includes fragmentation.

Keep two facts in mind when reading the figures (without --mp32):
- the wheel's unix port is 64-bit, so pointers, object headers and the words of every object
  are twice an ESP32's: the same objects take up to about 2x the bytes;
- the agent runs as .mpy files loaded into RAM, so its bytecode, constants and
  interned names live on the heap. Modules frozen into a board's firmware stay in
  flash and cost almost no heap. The virtual board's own `board`, `machine`,
  `network` and `flash` modules are C modules on an ESP32 and cost it no heap.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import sqlalchemy as sa

from bench.cleanup import Cleanup
from testing.collector import CollectorProcess
from wanwitness import store as s
from wanwitness.boards.build import agent_build_dir, compile_agent, compile_virtual_board, vboard_build_dir
from wanwitness.collector import timeline
from wanwitness.collector.agents import add_agent, board_config, write_board_config
from wanwitness.demo import LED_ACTIVE, LED_DARK, LED_PIN, LoopbackHost
from wanwitness.loopback import free_port
from wanwitness.resources import agent_dir
from wanwitness.virtual import supervisor as virtual
from wanwitness.virtual.supervisor import VirtualBoard

HOST = "127.0.0.1"
DEFAULT_HEAPS = "48K,56K,64K,80K,96K,128K,192K"
HB_S = 5              # heartbeat (and the console's heap line) every 5 s: the minimum
INTERVAL_S = 2        # probe rounds, as in the demo
WDT_S = 20
SETTLE_S = 20         # before the first event
CYCLE_S = 120
CUTS_S = [20, 30, 45, 25, 40]
BLIP_AT, BLIP_S = 60, 6
WIFI_AT, WIFI_S = 80, 20
MAX_RESTARTS = 5      # a board that keeps failing is powered off after this many restarts
DRAIN_MAX_S = 60      # after the script: wait for the last records to be stored
MATCH_TOL_MS = 3 * INTERVAL_S * 1000 + 2000  # a cut's outage start/end vs the truth
LIVE_HEAP = "256K"    # the live board gets this heap (or the largest asked for) ...
LIVE_THRESHOLD = 2048  # ... and gc.threshold(2048)

# The stand-in main.py: what each import leaves on the heap, then the real main.py.
MAIN_WRAPPER = '''\
# bench/agent_heap.py: heap per import, then the agent's own main.py (agent_main).
import gc
import micropython
{threshold}gc.collect()
_a = gc.mem_alloc()
micropython.qstr_info()  # "qstr pool: ..., n_total_bytes=N": the interned names
print("bench heap: start alloc=%d free=%d" % (_a, gc.mem_free()))
for _m in {modules!r}:
    __import__(_m)
    gc.collect()
    _b = gc.mem_alloc()
    micropython.qstr_info()
    print("bench heap: import %s %d" % (_m, _b - _a))
    _a = _b
print("bench heap: imported alloc=%d free=%d" % (_a, gc.mem_free()))
_a = _b = _m = None
import agent_main  # noqa: E402,F401  (runs the agent)
'''
# Leaves first, so that each figure is (mostly) the module itself. `network` belongs to
# the virtual board (a C module on an ESP32). run.py loads board, machine and flash
# before main.py, so they are in the start figure.
IMPORTS = ("network", "asyncio", "clock", "config", "outbox", "mqtt", "net", "probe",
           "detector", "led", "app")
# The virtual board's stand-ins for what an ESP32 has in C (no heap there): each is
# counted in its residue (vticks: asyncio on 10 ms FreeRTOS ticks; lwipsocket: `socket`
# as lwIP gives it; run.py installs both). A name the virtual board's source lacks is
# skipped; what run.py loads beyond these is counted as the boot script's.
VBOARD_MODULES = ("board", "machine", "vticks", "network", "lwipsocket", "flash")

# What the virtual board puts on the heap that an ESP32 would not (vboard_breakdown).
# Run two ways, the same code both times: as a plain script (the empty runtime, then
# each module and the mounted image, step by step), and as main.py of a real boot
# (after run.py, which the frozen build runs frozen, loaded what it loads).
VBOARD_SCRIPT = '''\
import gc
import sys
gc.collect()
a = gc.mem_alloc()
print("vboard start %d" % a)
for m in {modules!r}:
    if m in sys.modules:  # run.py imported it
        print("vboard had_%s 0" % m)
        continue
    __import__(m)
    gc.collect()
    b = gc.mem_alloc()
    print("vboard import_%s %d" % (m, b - a))
    a = b
if __name__ == "__main__":  # the plain run: mount the image as run.py does
    import flash
    flash.mount({image!r})
    gc.collect()
    print("vboard mount %d" % (gc.mem_alloc() - a))
print("vboard done %d" % gc.mem_alloc())
'''

RE_HEAP = re.compile(r"heap alloc=(\d+) peak=(\d+) free=(\d+)")
RE_SURVIVED = re.compile(r"memerr=(\d+)")
RE_START = re.compile(r"bench heap: start alloc=(\d+) free=(\d+)")
RE_IMPORT = re.compile(r"bench heap: import (\S+) (-?\d+)")
RE_IMPORTED = re.compile(r"bench heap: imported alloc=(\d+) free=(\d+)")
RE_QSTR = re.compile(r"qstr pool: .*n_total_bytes=(\d+)")
RE_STAMP = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) ")
RE_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')
RE_EXC = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*(Error|Exception|Interrupt)):? ?(.*)$")


# --- cleanup -----------------------------------------------------------------------

CLEANUP = Cleanup()


def _interrupt(_sig, _frame) -> None:
    raise KeyboardInterrupt


# --- pieces --------------------------------------------------------------------------

def heap_bytes(label: str) -> int:
    m = re.fullmatch(r"([1-9][0-9]*)([kKmM]?)", label)
    if not m:
        raise ValueError(f"heap size {label!r} is not like 64K")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]


def set_control(path: Path, led: dict, wifi: str = "up") -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"wifi": wifi, "rssi": -58, "ssid": "bench-wifi",
                               "adc": {str(LED_PIN): led}}))
    os.replace(tmp, path)


def wrapper(threshold: int | None = None) -> str:
    line = f"gc.threshold({threshold})  # the live board: collect often\n" if threshold else ""
    return MAIN_WRAPPER.format(modules=IMPORTS, threshold=line)


def snapshot_agent(dest: Path, vboard_dest: Path) -> dict[str, str]:
    """Copy the compiled agent into dest (first on MICROPYPATH) with the stand-in
    main.py, and the compiled virtual board with run.py into vboard_dest. Then point
    wanwitness.virtual.supervisor at these copies instead of compiling before every boot.

    Two reasons. Every board, and every reboot, runs the same code even if agent/
    changes during the run. And boots are safe from each other: before every boot
    VirtualBoard rewrites build/vboard-mpy/run.py in place (shutil.copyfile, truncate
    then write). With several boards boot-looping at once, a board sometimes started
    on an empty run.py, exited 0 with no output, and its supervisor took that for
    "main.py returned" and stopped it.

    Returns the sha256 (first 16 hex digits) of each file, for the record."""
    compile_agent()
    run_py = compile_virtual_board()
    sums = {}
    for src_dir, out in ((agent_build_dir(), dest), (vboard_build_dir(), vboard_dest)):
        out.mkdir(parents=True, exist_ok=True)
        for src in sorted(src_dir.glob("*.mpy")):
            data = src.read_bytes()
            (out / src.name).write_bytes(data)
            sums[f"{src_dir.name}/{src.name}"] = hashlib.sha256(data).hexdigest()[:16]
    shutil.copyfile(run_py, vboard_dest / "run.py")
    shutil.copyfile(agent_dir() / "main.py", dest / "agent_main.py")
    (dest / "main.py").write_text(wrapper())
    frozen_run = vboard_dest / "run.py"
    virtual.compile_virtual_board = lambda out_dir=None: frozen_run  # type: ignore[assignment]
    virtual.compile_agent = lambda out_dir=None, march=None: []  # type: ignore[assignment]
    return sums


def _vboard_lines(stdout: str) -> dict[str, int]:
    out = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "vboard" and parts[2].lstrip("-").isdigit():
            out[parts[1]] = int(parts[2])
    return out


def vboard_breakdown(work: Path, micropython: str, vboard_dir: Path,
                     frozen: bool = False) -> dict[str, int]:
    """Heap (bytes) the virtual board itself takes, in order: `runtime` (the empty heap,
    which a board has too), `import_<m>` for each module of VBOARD_MODULES this build
    has, `mount` (the flash image mounted) and `boot_script` (what run.py itself leaves:
    its globals, and its bytecode when it runs from source). All but `runtime` are the
    residue: C code on an ESP32, no heap there.

    Two short runs of VBOARD_SCRIPT, the same code both times: as a plain script (MICROPYPATH
    `.frozen` alone when frozen, else vboard_dir, the compiled virtual board), then as
    main.py of a real boot: the frozen run.py (`-m run`) or vboard_dir/run.py. Their
    difference at the start is what the boot left; the modules run.py imported and the
    mount are taken out of it. On failure a warning and what was measured."""
    box = work / "vboard_heap"
    shutil.rmtree(box, ignore_errors=True)
    box.mkdir(parents=True)
    image = box / "plain.flash"
    # The modules this source tree's virtual board has (the frozen build holds them all)
    modules = tuple(m for m in VBOARD_MODULES if (virtual.vboard_sources() / f"{m}.py").is_file())
    script = VBOARD_SCRIPT.format(modules=modules, image=str(image))
    (box / "vboard_heap.py").write_text(script)
    (box / "boot").mkdir()
    (box / "boot" / "main.py").write_text(script)
    control, state = box / "control.json", box / "state.json"
    set_control(control, LED_ACTIVE)  # the bench's LED: the board keeps what it parsed
    state.write_text(json.dumps({"next_reset": "PWRON_RESET"}))
    env = dict(os.environ, WANWITNESS_VBOARD_CONTROL=str(control),
               WANWITNESS_VBOARD_STATE=str(state))
    # Frozen: only what the firmware holds (not a stale .mpy a shared build dir may keep)
    plain_path = ".frozen" if frozen else f"{vboard_dir}:.frozen"
    runs = [("plain", [str(box / "vboard_heap.py")], dict(env, MICROPYPATH=plain_path))]
    boot = ["-m", "run"] if frozen else [str(vboard_dir / "run.py")]
    boot_path = f".frozen:{box / 'boot'}" if frozen else f"{box / 'boot'}:.frozen"
    runs.append(("boot", boot, dict(env, MICROPYPATH=boot_path,
                                    WANWITNESS_VBOARD_FLASH=str(box / "boot.flash"))))
    got: dict[str, dict[str, int]] = {}
    problems = []
    for name, args, run_env in runs:
        proc = subprocess.run([micropython, "-X", "heapsize=256K", *args], cwd=str(box),
                              env=run_env, capture_output=True, text=True, timeout=120)
        got[name] = _vboard_lines(proc.stdout)
        if proc.returncode != 0 or "done" not in got[name]:
            problems.append(f"{name} run (status {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    shutil.rmtree(box, ignore_errors=True)
    plain, booted = got["plain"], got["boot"]
    out = {"runtime": plain.get("start", 0)}
    out.update((k, v) for k, v in plain.items() if k.startswith("import_") or k == "mount")
    if not problems and "start" in plain and "start" in booted:
        # booted["start"] - plain["start"]: run.py, the modules it imported, the mount
        by_run = [k for k in out if k.startswith("import_")
                  and "had_" + k.removeprefix("import_") in booted]
        out["boot_script"] = (booted["start"] - plain["start"] - out.get("mount", 0)
                              - sum(out[k] for k in by_run))
    if problems:
        print("warning: the virtual board breakdown failed:\n" + "\n".join(problems),
              file=sys.stderr)
    return out


@dataclass
class Board:
    label: str
    agent: str
    log_path: Path
    board: VirtualBoard
    threshold: int | None = None    # gc.threshold() of the live board
    thread: threading.Thread | None = None
    rc: int | None = None
    error: str | None = None


@dataclass
class Event:
    kind: str            # cut | blip | wifi
    start_ms: int
    end_ms: int


@dataclass
class Result:
    heap: str
    agent: str
    gc_threshold: int | None
    clean: bool
    boots: int
    memory_errors: int
    tracebacks: int
    failures: list[str]             # "mm:ss after power-on: what", first few
    peak: int | None                # max `peak=` over the run (bytes)
    alloc_max: int | None           # max `alloc=` at heartbeats
    free_min: int | None            # min `free=` at heartbeats
    heartbeats: int
    records: int
    safe_mode_boots: int            # boots the agent ran in safe mode (after a crash loop)
    kinds: dict = field(default_factory=dict)
    seq_holes: int = 0
    cuts_found: str = ""
    start_err_s: float | None = None   # max |outage start - cut start| over the cuts
    end_err_s: float | None = None
    extra_outages: int = 0          # outages (not unknown) that match no cut
    unknown_spans: int = 0
    vs_others_s: float | None = None  # max deviation of its cut starts/ends from the median
    import_start: int | None = None   # heap in use when main.py starts (run.py, board, ...)
    imports: dict = field(default_factory=dict)  # module -> bytes it left on the heap
    qstr_growth: dict = field(default_factory=dict)  # module -> growth of the qstr pool
    imported: int | None = None       # heap in use after all imports


# --- the run -------------------------------------------------------------------------

def schedule(minutes: float) -> list[tuple[float, str, float]]:
    """(seconds from the start, kind, duration) of every scripted event."""
    total = minutes * 60
    cycles = max(1, int((total - SETTLE_S - (WIFI_AT + WIFI_S)) // CYCLE_S) + 1)
    ev: list[tuple[float, str, float]] = []
    for i in range(cycles):
        c = SETTLE_S + i * CYCLE_S
        ev.append((c, "cut", CUTS_S[i % len(CUTS_S)]))
        ev.append((c + BLIP_AT, "blip", BLIP_S))
        ev.append((c + WIFI_AT, "wifi", WIFI_S))
    return ev


class Lab:
    def __init__(self, work: Path, heaps: list[str], minutes: float, live: bool = True,
                 log=sys.stdout, micropython: str | None = None, frozen: bool = False):
        self.work = work
        self.micropython = micropython  # the 32-bit build (--mp32), else the wheel's
        self.frozen = frozen  # run the agent frozen in it, not as .mpy files
        self.heaps = heaps
        self.minutes = minutes
        self.live = live
        self.say_to = log
        self.db_url = f"sqlite:///{work / 'wanwitness.db'}"
        self.control = work / "control.json"
        self.gateway = LoopbackHost()
        self.anchors = [LoopbackHost(), LoopbackHost()]
        CLEANUP.push("loopback hosts", self._hosts_down)
        self.collector = CollectorProcess(work, self.db_url, listen=(HOST, free_port(HOST)),
                                          new_session=True)
        self.boards: list[Board] = []
        self.events: list[Event] = []
        self.stop_event = threading.Event()
        self.t0 = time.monotonic()
        self.power_on_wall = time.time()
        self.snapshot: dict[str, str] = {}
        self.mpy_sizes: dict[str, int] = {}
        self.vboard: dict[str, int] = {}

    def _hosts_down(self) -> None:
        for h in [self.gateway, *self.anchors]:
            h.down()

    def say(self, text: str) -> None:
        el = time.monotonic() - self.t0
        print(f"[{int(el // 60):02d}:{el % 60:04.1f}] {text}", file=self.say_to, flush=True)

    def setup(self) -> None:
        self.snapshot = snapshot_agent(self.work / "agent", self.work / "vboard")
        self.mpy_sizes = {f.stem: f.stat().st_size for d in ("agent", "vboard")
                          for f in (self.work / d).glob("*.mpy")}
        plan: list[tuple[str, str, int | None]] = [
            (label, f"heap{label.lower()}", None) for label in self.heaps]
        if self.live:
            live = max([LIVE_HEAP, *self.heaps], key=heap_bytes)
            plan.append((live, "heaplive", LIVE_THRESHOLD))
            (self.work / "live").mkdir()
            (self.work / "live" / "main.py").write_text(wrapper(LIVE_THRESHOLD))
        store = s.open_store(self.db_url)
        try:
            creds = {agent: add_agent(store, agent, hb_s=HB_S) for _, agent, _ in plan}
        finally:
            store.dispose()
        set_control(self.control, LED_ACTIVE)
        for label, agent, threshold in plan:
            conf = board_config(agent, creds[agent], broker_host=HOST,
                                broker_port=self.collector.port, hb_s=HB_S,
                                wifi_ssid="bench-wifi", wifi_password="bench")
            conf["probe"] = {"interval_s": INTERVAL_S, "timeout_ms": 1000,
                             "gateway": self.gateway.target,
                             "anchors": [a.target for a in self.anchors], "dns": None,
                             "ntp": None}
            conf["leds"] = [{"pin": LED_PIN, "role": "internet"}]
            conf["wdt_s"] = WDT_S
            cpath = self.work / f"{agent}.json"
            write_board_config(cpath, conf)
            log_path = self.work / f"{agent}.log"
            log = open(log_path, "a", encoding="utf-8", buffering=1)
            CLEANUP.push(f"close {log_path.name}", log.close)
            path: list[str | os.PathLike] = [self.work / "agent"]
            if threshold:
                path.insert(0, self.work / "live")  # its main.py comes first
            vb = VirtualBoard(cpath, self.work / f"{agent}.flash", self.control,
                              self.work / f"{agent}.state.json", heap=label, log=log,
                              extra_path=path, micropython=self.micropython,
                              frozen=self.frozen)
            self.boards.append(Board(label, agent, log_path, vb, threshold))
        self.vboard = vboard_breakdown(self.work, self.boards[0].board.micropython,
                                       self.work / "vboard", frozen=self.frozen)

    def start(self) -> None:
        self.collector.start()
        CLEANUP.push("stop the collector", self.collector.stop)
        self.say(f"collector up, broker on {HOST}:{self.collector.port}; files in {self.work}")
        CLEANUP.push("stop the boards", self.stop_boards)
        self.power_on_wall = time.time()
        for b in self.boards:
            b.thread = threading.Thread(target=self._run_board, args=(b,), daemon=True,
                                        name=f"vboard-{b.agent}")
            b.thread.start()
        self.say(f"{len(self.boards)} virtual boards powered on: " + ", ".join(
            f"{b.agent} (-X heapsize={b.label}"
            + (f", gc.threshold({b.threshold}))" if b.threshold else ")") for b in self.boards))

    def _run_board(self, b: Board) -> None:
        try:
            b.rc = b.board.run(max_restarts=MAX_RESTARTS, stop_event=self.stop_event)
        except Exception as e:  # noqa: BLE001  (reported in the table)
            b.error = f"{type(e).__name__}: {e}"

    def stop_boards(self) -> None:
        self.stop_event.set()
        for b in self.boards:
            b.board.stop()
        for b in self.boards:
            if b.thread is not None:
                b.thread.join(15)
        for b in self.boards:  # belt and braces: no orphan micropython
            p = b.board.proc
            if p is not None and p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
                p.wait(5)

    def counts(self) -> dict[str, int]:
        store = s.open_store(self.db_url, migrate_schema=False)
        try:
            with store.engine.connect() as conn:
                return dict(conn.execute(sa.select(s.records.c.agent, sa.func.count())
                                         .group_by(s.records.c.agent)).all())
        finally:
            store.dispose()

    def wait_boot_records(self, timeout: float) -> None:
        """Until every board that still runs has a record stored (its boot record)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.counts()
            if not [b for b in self.boards
                    if not got.get(b.agent) and b.thread and b.thread.is_alive()]:
                return
            time.sleep(0.5)
        got = self.counts()
        self.say("no records yet from: " + ", ".join(b.agent for b in self.boards
                                                       if not got.get(b.agent)))

    def sleep_until(self, at: float) -> None:
        while True:
            left = at - (time.monotonic() - self.t0)
            if left <= 0:
                return
            if self.collector.proc and self.collector.proc.poll() is not None:
                raise RuntimeError(f"the collector exited:\n{self.collector.log_tail()}")
            time.sleep(min(left, 0.5))

    def script(self) -> None:
        self.t0 = time.monotonic()
        total = self.minutes * 60
        plan = schedule(self.minutes)
        self.say(f"script starts: {total:.0f} s, " + ", ".join(
            f"{kind} {dur:g} s at {at:g} s" for at, kind, dur in plan))
        for at, kind, dur in plan:
            self.sleep_until(at)
            start = s.now_ms()
            if kind == "cut":
                set_control(self.control, LED_DARK)
                for a in self.anchors:
                    a.down()
                self.say(f"cut: LED dark, anchors refusing, for {dur} s")
            elif kind == "blip":
                set_control(self.control, LED_DARK)
                self.say(f"blip: LED dark for {dur} s, the line stays up")
            else:
                set_control(self.control, LED_ACTIVE, wifi="down")
                self.say(f"wifi: the access point is gone for {dur} s")
            self.sleep_until(at + dur)
            end = s.now_ms()
            if kind == "cut":
                for a in self.anchors:
                    a.up()
            set_control(self.control, LED_ACTIVE)
            self.say(f"{kind} over")
            self.events.append(Event(kind, start, end))
        self.sleep_until(total)
        self.say("script over; waiting for the last records")
        deadline = time.monotonic() + DRAIN_MAX_S
        last, stable_since = None, time.monotonic()
        while time.monotonic() < deadline:
            now = self.counts()
            if now != last:
                last, stable_since = now, time.monotonic()
            elif time.monotonic() - stable_since >= 3 * HB_S:
                break
            time.sleep(1)
        self.say("stopping")

    # -- analysis -------------------------------------------------------------------

    def _elapsed(self, line: str) -> float | None:
        """Seconds from power-on to a board log line (stamped local HH:MM:SS.mmm)."""
        m = RE_STAMP.match(line)
        if not m:
            return None
        h, mi, sec, ms = (int(x) for x in m.groups())
        lt = time.localtime(self.power_on_wall)
        t0 = lt.tm_hour * 3600 + lt.tm_min * 60 + lt.tm_sec + self.power_on_wall % 1
        d = (h * 3600 + mi * 60 + sec + ms / 1000 - t0) % 86400
        return d - 86400 if d > 43200 else d

    def analyse(self) -> list[Result]:
        store = s.open_store(self.db_url, migrate_schema=False)
        try:
            outages = {b.agent: timeline.query(store, agent=b.agent) for b in self.boards}
            with store.engine.connect() as conn:
                rows = conn.execute(sa.select(s.records.c.agent, s.records.c.seq, s.records.c.k)
                                    .order_by(s.records.c.agent, s.records.c.seq)).all()
                boots = conn.execute(sa.select(s.records.c.agent, s.records.c.body)
                                     .where(s.records.c.k == "boot")).all()
        finally:
            store.dispose()
        seqs: dict[str, list[int]] = {}
        kinds: dict[str, dict[str, int]] = {}
        for r in rows:
            seqs.setdefault(r.agent, []).append(r.seq)
            k = kinds.setdefault(r.agent, {})
            k[r.k] = k.get(r.k, 0) + 1
        safe: dict[str, int] = {}
        for agent, body in boots:
            if json.loads(body).get("safe") is True:
                safe[agent] = safe.get(agent, 0) + 1
        cuts = [e for e in self.events if e.kind == "cut"]
        results = []
        matched: dict[str, list[tuple[int, int] | None]] = {}
        for b in self.boards:
            res = self._board_result(b, seqs.get(b.agent, []), kinds.get(b.agent, {}))
            res.safe_mode_boots = safe.get(b.agent, 0)
            mine = outages[b.agent]
            found: list[tuple[int, int] | None] = []
            used: set[int] = set()
            for c in cuts:
                hit = None
                for i, o in enumerate(mine):
                    if (i not in used and o.cls == "isp_down" and o.end_ms is not None
                            and abs(o.start_ms - c.start_ms) <= MATCH_TOL_MS
                            and abs(o.end_ms - c.end_ms) <= MATCH_TOL_MS):
                        hit = i
                        break
                end_ms = mine[hit].end_ms if hit is not None else None
                if hit is None or end_ms is None:
                    found.append(None)
                else:
                    used.add(hit)
                    found.append((mine[hit].start_ms, end_ms))
            matched[b.agent] = found
            ok = [(f, c) for f, c in zip(found, cuts) if f]
            res.cuts_found = f"{len(ok)}/{len(cuts)}"
            if ok:
                res.start_err_s = round(max(abs(f[0] - c.start_ms) for f, c in ok) / 1000, 1)
                res.end_err_s = round(max(abs(f[1] - c.end_ms) for f, c in ok) / 1000, 1)
            res.extra_outages = sum(1 for i, o in enumerate(mine)
                                    if i not in used and o.cls != timeline.UNKNOWN)
            res.unknown_spans = sum(1 for o in mine if o.cls == timeline.UNKNOWN)
            results.append(res)
        # Against the other boards: per cut, the median start/end over the boards that saw it.
        for res in results:
            devs = []
            for i in range(len(cuts)):
                seen = [x for m in matched.values() if (x := m[i]) is not None]
                mine_i = matched[res.agent][i]
                if mine_i is not None and len(seen) >= 2:
                    devs.append(abs(mine_i[0] - statistics.median(x[0] for x in seen)))
                    devs.append(abs(mine_i[1] - statistics.median(x[1] for x in seen)))
            res.vs_others_s = round(max(devs) / 1000, 1) if devs else None
        return results

    def _when(self, line: str) -> str:
        el = self._elapsed(line)
        return "??:??" if el is None else f"{int(el // 60):02d}:{int(el % 60):02d}"

    def _board_result(self, b: Board, seqs: list[int], kinds: dict[str, int]) -> Result:
        lines = b.log_path.read_text(errors="replace").splitlines()
        peaks, allocs, frees = [], [], []
        imports: dict[str, int] = {}
        qstr: dict[str, int] = {}
        pool = None         # the qstr pool's size at the last qstr_info() line
        pool_before = None  # ... at the previous import
        start = imported = None
        mem_err = tb = survived = 0
        failures: list[str] = []
        frame = None        # innermost frame of the traceback being read
        task = None         # the asyncio task it came from
        last_import = None  # the last "bench heap: import X" of this boot
        for ln in lines:
            body = ln.split(" ", 1)[1] if RE_STAMP.match(ln) else ln
            m = RE_HEAP.search(body)
            if m:
                allocs.append(int(m.group(1)))
                peaks.append(int(m.group(2)))
                frees.append(int(m.group(3)))
                m = RE_SURVIVED.search(body)
                if m:  # MemoryErrors the agent's tasks survived (a round skipped, ...)
                    survived = max(survived, int(m.group(1)))
                continue
            m = RE_QSTR.search(body)
            if m:
                pool = int(m.group(1))
                continue
            m = RE_IMPORT.search(body)
            if m:
                last_import = m.group(1)
                imports.setdefault(m.group(1), int(m.group(2)))
                if pool is not None and pool_before is not None:
                    qstr.setdefault(m.group(1), pool - pool_before)
                pool_before = pool
                continue
            m = RE_START.search(body)
            if m:
                pool_before = pool
                last_import = None
                start = int(m.group(1)) if start is None else start
                continue
            m = RE_IMPORTED.search(body)
            if m:
                last_import = "done"
                imported = int(m.group(1)) if imported is None else imported
                continue
            if body.startswith("Traceback"):
                tb += 1
                frame = None
                continue
            m = re.search(r"coro= <generator object '(\w+)'", body)
            if m:
                task = m.group(1)
                continue
            m = RE_FRAME.search(body)
            if m:
                frame = f"{os.path.basename(m.group(1))}:{m.group(2)} {m.group(3)}"
                continue
            m = RE_EXC.match(body.strip())
            if m and frame is not None:
                if m.group(1) == "MemoryError":
                    mem_err += 1
                what = f"{m.group(1)} {m.group(3)}".strip().replace(
                    "memory allocation failed, ", "")
                where = f" in {frame}" + (f" (task {task})" if task else "")
                if last_import != "done" and not task:
                    nxt = (IMPORTS[IMPORTS.index(last_import) + 1:][:1] if last_import
                           else IMPORTS[:1])
                    if frame.startswith("main.py:"):  # the stand-in itself: loading a .mpy
                        where = ""
                    where += f" while importing {nxt[0] if nxt else '?'}"
                failures.append(f"{self._when(ln)} {what}{where}")
                frame = task = None
                continue
            m = re.search(r"\[vboard\] boot \d+ ended: (.*?)(?: \(status -?\d+\))?$", body)
            if m:
                failures.append(f"{self._when(ln)} reset: {m.group(1)}")
        boots = len(b.board.boots)
        holes = (seqs[-1] - len(seqs)) if seqs else 0
        if b.error:
            failures.append(b.error)
        if survived:
            # Not clean either: each one lost something (a probe round, a batch for now).
            failures.append(f"{survived} MemoryError(s) survived (the heap line's memerr)")
        mem_err += survived
        clean = boots == 1 and not failures and not tb and bool(peaks)
        return Result(
            heap=b.label, agent=b.agent, gc_threshold=b.threshold, clean=clean, boots=boots,
            memory_errors=mem_err, tracebacks=tb, failures=failures[:40],
            peak=max(peaks) if peaks else None, alloc_max=max(allocs) if allocs else None,
            free_min=min(frees) if frees else None, heartbeats=len(peaks), records=len(seqs),
            safe_mode_boots=0,
            kinds=kinds, seq_holes=holes, import_start=start, imports=imports,
            qstr_growth=qstr,
            imported=imported)


# --- report ----------------------------------------------------------------------------

def _kb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024:.1f}"


def _md(header: list[tuple[str, str]], rows: list[list[str]]) -> str:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, (h, _) in enumerate(header)]

    def fmt(cells: list[str]) -> str:
        return "| " + " | ".join(f"{c:{a}{w}}" for c, (_, a), w in zip(cells, header, widths)) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if a == ">" else ("-" * (w + 2))
                         for (_, a), w in zip(header, widths)) + "|"
    return "\n".join([fmt([h for h, _ in header]), sep, *map(fmt, rows)])


COLUMNS = [("heap", "<"), ("ran clean", "<"), ("boots (safe mode)", ">"), ("MemoryErrors", ">"),
           ("peak KB", ">"), ("records", ">"), ("cuts found", ">"), ("start/end err s", ">"),
           ("other outages", ">"), ("vs others s", ">"), ("first failure (mm:ss after power-on)", "<")]


def table(results: list[Result]) -> str:
    rows = []
    for r in results:
        heap = r.heap + (f" + gc.threshold({r.gc_threshold})" if r.gc_threshold else "")
        err = "-" if r.start_err_s is None else f"{r.start_err_s} / {r.end_err_s}"
        boots = f"{r.boots} ({r.safe_mode_boots})" if r.safe_mode_boots else str(r.boots)
        rows.append([heap, "yes" if r.clean else "NO", boots, str(r.memory_errors),
                     _kb(r.peak), str(r.records), r.cuts_found, err, str(r.extra_outages),
                     "-" if r.vs_others_s is None else str(r.vs_others_s),
                     r.failures[0] if r.failures else "-"])
    return _md(COLUMNS, rows)


def imports_table(results: list[Result], vboard: dict[str, int] | None = None,
                  mpy_sizes: dict[str, int] | None = None, frozen: bool = False) -> str:
    """Heap per import, from the first board that got through them all; `vboard`:
    the virtual board's start-up, step by step (vboard_breakdown); `mpy_sizes`: the
    size of each module's .mpy file."""
    sizes = mpy_sizes or {}
    full = next((r for r in results if r.imported is not None), None)
    if full is None:
        full = max(results, key=lambda r: len(r.imports), default=None)
        if full is None or not full.imports:
            return "(no board got through its imports)"
    rows = []
    names = {"runtime": "MicroPython runtime (empty heap)",
             "mount": "  flash image mounted (FileFlash, littlefs)",
             "boot_script": "  run.py itself (" + ("frozen" if frozen else "from source") + ")"}
    whats = {"runtime": "runtime", "mount": "virtual board: a 4 KiB erase buffer + littlefs",
             "boot_script": "virtual board: its boot script (_boot.py, frozen, on an ESP32)"}
    for key, n in (vboard or {}).items():
        mod = key.removeprefix("import_") if key.startswith("import_") else None
        mpy = sizes.get(mod) if mod else None
        rows.append([names.get(key, f"  import {mod}" if mod else key), f"{n:,}", "",
                     f"{mpy:,}" if mpy else "",
                     whats.get(key, "virtual board (C on an ESP32)")])
    if vboard:
        rows.append(["virtual board residue (all but the runtime)",
                     f"{sum(n for k, n in vboard.items() if k != 'runtime'):,}", "", "",
                     "on top of the agent's heap"])
    rows.append(["main.py starts (run.py, board, machine, flash, the stand-in main.py)",
                 f"{full.import_start or 0:,}", "", "", "in use when main.py starts"])
    for name, n in full.imports.items():
        where = ("virtual board (C on an ESP32)" if name in VBOARD_MODULES
                 else "frozen in the unix port" if name == "asyncio"
                 else "agent, frozen" if frozen else "agent, .mpy in RAM")
        mpy = sizes.get(name)
        q = full.qstr_growth.get(name)
        rows.append([f"import {name}", f"{n:,}", "" if q is None else f"{q:,}",
                     f"{mpy:,}" if mpy else "", where])
    agent = sum(n for k, n in full.imports.items() if k not in VBOARD_MODULES)
    agent_q = sum(n for k, n in full.qstr_growth.items() if k not in VBOARD_MODULES)
    rows.append(["agent imports (incl. asyncio), total", f"{agent:,}",
                 f"{agent_q:,}" if full.qstr_growth else "", "", ""])
    if full.imported is not None:
        rows.append(["heap in use after the imports", f"{full.imported:,}", "", "", ""])
    return (f"heap left by each import (bytes, after gc.collect(); board {full.agent}). "
            "qstr pool: how much the pool of interned names grew with it (part of the "
            "bytes; the pool grows in ever larger chunks, so one import can be charged "
            "a chunk that later ones fill):\n"
            + _md([("step", "<"), ("bytes", ">"), ("qstr pool", ">"), (".mpy bytes", ">"),
                   ("what", "<")], rows))


def _grouped(failures: list[str]) -> list[str]:
    """The same failure again and again (a boot loop) once, with a count."""
    seen: dict[str, list[str]] = {}
    for f in failures:
        when, _, what = f.partition(" ")
        seen.setdefault(what, []).append(when)
    return [f"{whens[0]} {what}" + (f" (x{len(whens)}, last {whens[-1]})" if len(whens) > 1 else "")
            for what, whens in seen.items()]


def summary(results: list[Result]) -> list[str]:
    out = []
    sized = [r for r in results if not r.gc_threshold]
    clean = [r for r in sized if r.clean]
    if clean:
        smallest = min(clean, key=lambda r: heap_bytes(r.heap))
        above = [r.heap for r in sized if not r.clean
                 and heap_bytes(r.heap) > heap_bytes(smallest.heap)]
        out.append(f"smallest heap that ran the whole time cleanly: {smallest.heap}"
                   + (f" (but {', '.join(above)} did not)" if above else ""))
    else:
        out.append("no heap size ran the whole time cleanly")
    live = next((r for r in results if r.gc_threshold), None)
    if live and live.peak and live.imported:
        out.append(f"live board ({live.heap}, gc.threshold({live.gc_threshold})): peak "
                   f"{live.peak:,} B = {live.imported:,} B in use after the imports + "
                   f"{live.peak - live.imported:,} B working data (sampled once a second: "
                   f"a lower bound)" + ("" if live.clean else "; it did NOT run cleanly"))
    out.append("peak = the largest gc.mem_alloc() the agent sampled (once a second) and "
               "printed with its heartbeats. It includes garbage not yet collected, so on a "
               "heap without gc.threshold it climbs towards the heap size.")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.agent_heap",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10, help="scripted run length (default 10)")
    ap.add_argument("--heaps", default=DEFAULT_HEAPS,
                    help=f"comma list of -X heapsize values, one board each "
                         f"(default {DEFAULT_HEAPS})")
    ap.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON")
    ap.add_argument("--workdir", type=Path,
                    help="keep the database, board logs and flash images here "
                         "(default: a temp dir, removed afterwards)")
    ap.add_argument("--mp32", action="store_true",
                    help="run on the 32-bit build with the agent and the virtual board frozen "
                         "in (./dev mp32; built when needed) instead of the 64-bit wheel's "
                         "micropython with the agent as .mpy files")
    ap.add_argument("--mp32-mpy", action="store_true",
                    help="run on the 32-bit build, but with the agent and the virtual board "
                         "as .mpy files loaded into RAM (first on the path, shadowing the "
                         "frozen ones): the stock-firmware case")
    ap.add_argument("--no-live", dest="live", action="store_false",
                    help=f"no extra board with gc.threshold({LIVE_THRESHOLD})")
    args = ap.parse_args(argv)
    try:
        heaps = sorted({h.strip().upper() for h in args.heaps.split(",") if h.strip()},
                       key=heap_bytes)
    except ValueError as e:
        ap.error(str(e))
    if not heaps:
        ap.error("--heaps: at least one size")
    if args.minutes < 2:
        ap.error("--minutes: at least 2 (one 2-minute cycle of events)")
    if args.workdir:
        work = args.workdir.resolve()
        if work.exists() and any(work.iterdir()):
            ap.error(f"--workdir {work} is not empty")
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="ww-agent-heap-"))
        CLEANUP.push(f"remove {work}", lambda: shutil.rmtree(work, ignore_errors=True))

    # SIGTERM unwinds through the finally blocks like Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    atexit.register(CLEANUP.run)
    try:
        exe = None
        if args.mp32 or args.mp32_mpy:
            from testing import mp32
            try:
                exe = str(mp32.build())
            except mp32.BuildError as e:
                print(f"mp32: {e}", file=sys.stderr)
                return 2
        lab = Lab(work, heaps, args.minutes, live=args.live, micropython=exe,
                  frozen=args.mp32)
        lab.setup()
        lab.start()
        lab.wait_boot_records(60)
        lab.script()
        lab.stop_boards()
        lab.collector.stop()
        results = lab.analyse()
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        CLEANUP.run()

    print()
    print(f"agent heap over {args.minutes:g} minutes ("
          + ", ".join(f"{e.kind} {(e.end_ms - e.start_ms) / 1000:.0f} s" for e in lab.events)
          + ("); MicroPython unix port, 32-bit frozen build (agent and virtual board frozen)"
             if args.mp32 else "); MicroPython unix port, 32-bit build; agent as .mpy in RAM"
             if exe else "); MicroPython unix port, 64-bit; agent as .mpy in RAM"))
    print(table(results))
    print()
    print(imports_table(results, lab.vboard, frozen=lab.frozen, mpy_sizes=lab.mpy_sizes))
    print()
    for line in summary(results):
        print(line)
    failed = [r for r in results if len(r.failures) > 1]
    if failed:
        print()
        print("failures (mm:ss after power-on):")
        for r in failed:
            print(f"  {r.agent}: " + "; ".join(_grouped(r.failures)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        sized = [r for r in results if not r.gc_threshold and r.clean]
        args.json.write_text(json.dumps({
            "minutes": args.minutes, "heaps": heaps,
            "smallest_clean_heap": min(sized, key=lambda r: heap_bytes(r.heap)).heap
            if sized else None,
            "events": [asdict(e) for e in lab.events], "agent_mpy_sha256_16": lab.snapshot,
            "vboard_startup": lab.vboard, "mpy_bytes": lab.mpy_sizes,
            "results": [asdict(r) for r in results]}, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
