"""The virtual board's power supply and reset line: runs the agent on the MicroPython
unix port and restarts it the way an ESP32 restarts.

One boot is one `micropython firmware/boards/virtual/run.py` process (the MicroPython
side is documented in firmware/boards/virtual/README.md). How it ended decides the
reset cause the next boot reports, written into the board state file before the
restart:

| the process ended with                | meaning                  | next boot       |
|---------------------------------------|--------------------------|-----------------|
| status 0                              | main.py returned, no WDT | (not restarted) |
| killed by SIGUSR1                     | watchdog timeout         | WDT_RESET       |
| status 90                             | machine.reset()          | HARD_RESET      |
| status 91                             | machine.soft_reset()     | SOFT_RESET      |
| status 92                             | machine.deepsleep() over | DEEPSLEEP_RESET |
| status 93                             | flash image unusable     | (UserError)     |
| killed by SIGKILL/SIGTERM/SIGINT/HUP  | power cut                | PWRON_RESET     |
| any other status or signal            | crash (a panic)          | HARD_RESET      |

HARD_RESET for machine.reset() and for a panic is what the esp32 port reports
(ESP_RST_SW and ESP_RST_PANIC both map to HARD_RESET in ports/esp32/modmachine.c).
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import IO

from wanwitness.boards import board_config
from wanwitness.boards.build import agent_build_dir, compile_agent, compile_virtual_board
from wanwitness.errors import UserError
from wanwitness.resources import find_tool, firmware_dir

# Exit statuses of one boot (mirrors firmware/boards/virtual/board.py)
EXIT_HALT = 0
EXIT_CRASH = 1
EXIT_HARD_RESET = 90
EXIT_SOFT_RESET = 91
EXIT_DEEPSLEEP = 92
EXIT_FLASH_ERROR = 93
# The watchdog thread kills its own process with SIGUSR1. Windows has neither it nor
# SIGKILL/SIGHUP: importing this module there must still work (the rest of the CLI
# does); running the virtual board needs a POSIX host.
WDT_SIGNAL = getattr(signal, "SIGUSR1", 10)
POWER_CUT_SIGNALS = tuple(getattr(signal, name) for name in ("SIGKILL", "SIGTERM", "SIGINT", "SIGHUP")
                          if hasattr(signal, name))

DEFAULT_CONTROL = {"wifi": "up", "rssi": -60, "adc": {}}
RESTART_DELAY_S = 0.2  # an ESP32 takes longer to boot; enough to keep a crash loop sane
STOP_GRACE_S = 2.0


def reset_cause_after(returncode: int) -> tuple[str | None, str]:
    """(reset cause of the next boot or None for "stays off", what happened)."""
    if returncode == EXIT_HALT:
        return None, "main.py returned: the board idles at the REPL"
    if returncode == -WDT_SIGNAL:
        return "WDT_RESET", "watchdog timeout"
    if returncode == EXIT_HARD_RESET:
        return "HARD_RESET", "machine.reset()"
    if returncode == EXIT_SOFT_RESET:
        return "SOFT_RESET", "machine.soft_reset()"
    if returncode == EXIT_DEEPSLEEP:
        return "DEEPSLEEP_RESET", "woke from deep sleep"
    if returncode < 0 and -returncode in [int(s) for s in POWER_CUT_SIGNALS]:
        return "PWRON_RESET", f"power cut (killed by {signal.Signals(-returncode).name})"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return "HARD_RESET", f"crash (killed by {name})"
    return "HARD_RESET", f"crash (exit status {returncode})"


def find_micropython(explicit: str | os.PathLike[str] | None = None) -> str:
    return find_tool("micropython", explicit)


def vboard_sources() -> Path:
    """The virtual board's MicroPython side (machine, network, flash, run.py)."""
    return firmware_dir() / "boards" / "virtual"


def check_flash_image(path: Path) -> None:
    if path.exists():
        if not path.is_file():
            raise UserError(f"flash image {path} is not a file")
        try:
            with open(path, "r+b") as f:
                f.read(1)
        except OSError as e:
            raise UserError(f"flash image {path} cannot be read and written: "
                            f"{e.strerror or e}") from None
    elif not path.parent.is_dir():
        raise UserError(f"flash image {path}: directory {path.parent} does not exist")


def check_frozen_agent(micropython: str) -> None:
    """A one-line UserError unless `micropython` has the agent frozen in (./dev mp32)."""
    try:
        p = subprocess.run([micropython, "-c", "import app, clock, outbox"], capture_output=True,
                           text=True, timeout=30, env=dict(os.environ, MICROPYPATH=".frozen"))
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UserError(f"{micropython} does not run: {e}") from None
    if p.returncode != 0:
        raise UserError(f"{micropython} has no agent frozen in (build one with `./dev mp32`)")


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


TICKS_PERIOD = 1 << 30   # time.ticks_ms() wraps here on a 32-bit port (the ESP32)


def clock_offset_s(ticks_start: int) -> int:
    """Seconds to add to CLOCK_MONOTONIC (a time namespace, `unshare --time`) so that a
    board started now reads time.ticks_ms() ~ ticks_start (mod 2**30, within a second):
    e.g. just below 2**30, where a 32-bit port's ticks wrap and its small ints end,
    which a board reaches after 12.4 days up. Root only; UserError where it cannot be."""
    if not 0 <= ticks_start < TICKS_PERIOD:
        raise UserError(f"ticks start {ticks_start} is not in 0..{TICKS_PERIOD - 1} (ms)")
    if shutil.which("unshare") is None:
        raise UserError("starting the board's clock elsewhere needs `unshare` (util-linux)")
    try:
        subprocess.run(["unshare", "--time", "--monotonic", "1", "true"], check=True,
                       capture_output=True, timeout=10)
    except (subprocess.CalledProcessError, OSError, subprocess.TimeoutExpired) as e:
        raise UserError("starting the board's clock elsewhere needs a time namespace "
                        f"(root, Linux 5.6 or later): unshare --time failed ({e})") from None
    now_ms = int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1000)
    return ((ticks_start - now_ms) % TICKS_PERIOD) // 1000


class VirtualBoard:
    """One virtual ESP32: its flash image, control file and state file, and the process
    that is its CPU. `run()` powers it on and keeps restarting it like the real board."""

    def __init__(self, config_path: str | os.PathLike | None, flash_image: str | os.PathLike | None,
                 control_path: str | os.PathLike | None = None,
                 state_path: str | os.PathLike | None = None, *, heap: str = "256K",
                 log: IO[str] | None = None, micropython: str | os.PathLike | None = None,
                 extra_path: list[str | os.PathLike] | tuple = (), chip: str | None = None,
                 restart_delay: float = RESTART_DELAY_S, env: dict | None = None,
                 frozen: bool = False, ticks_start: int | None = None):
        # No config: the board holds its own (deployed onto the flash, wanwitness/vserial.py)
        self.config_path = Path(config_path).resolve() if config_path is not None else None
        if self.config_path is not None:
            board_config.read(self.config_path)
        if flash_image is None:
            if self.config_path is None:
                raise UserError("a virtual board needs a flash image or a config file")
            flash_image = self.config_path.with_name(self.config_path.stem + ".flash")
        self.flash_image = Path(flash_image).resolve()
        check_flash_image(self.flash_image)
        if not re.fullmatch(r"[1-9][0-9]*[kKmM]?", str(heap)):
            raise UserError(f"heap size {heap!r} is not like 64K, 128K or 2M")
        self.heap = str(heap)
        self.micropython = find_micropython(micropython)
        vboard_sources()  # fails now, in one line, if the package was installed without it
        board_dir = Path(str(self.flash_image) + ".vboard")
        self.control_path = Path(control_path).resolve() if control_path else board_dir / "control.json"
        self.state_path = Path(state_path).resolve() if state_path else board_dir / "state.json"
        self.log = log if log is not None else sys.stdout
        self.extra_path = [str(Path(p).resolve()) for p in extra_path]
        self.chip = chip
        self.restart_delay = restart_delay
        self.env = env or {}
        # A micropython with the agent and the virtual board frozen in (testing/mp32.py):
        # `.frozen` first (of the compiled agent only main.py is used) and run.py started
        # frozen, as on a board running frozen firmware.
        self.frozen = frozen
        if frozen:
            check_frozen_agent(self.micropython)
        self.clock_offset_s = clock_offset_s(ticks_start) if ticks_start is not None else None
        self.proc: subprocess.Popen | None = None
        self.boots: list[str] = []      # reset cause of each boot, in order
        self.exits: list[int] = []      # return code of each ended boot
        self.last_lines: collections.deque[str] = collections.deque(maxlen=20)
        self._log_lock = threading.Lock()
        self._stop = threading.Event()

    # -- what a user or a test can do to the running board ------------------------------

    @property
    def pid(self) -> int | None:
        p = self.proc
        return p.pid if p is not None and p.poll() is None else None

    def power_cut(self) -> None:
        """Pull the plug: SIGKILL the running boot; the next boot reports PWRON_RESET."""
        p = self.proc
        if p is not None and p.poll() is None:
            p.kill()

    def stop(self) -> None:
        self._stop.set()

    # -- the supervisor ----------------------------------------------------------------

    def emit(self, text: str) -> None:
        stamp = datetime.now().strftime("%H:%M:%S.%f")[:-3]
        with self._log_lock:
            self.log.write(f"{stamp} {text}\n")
            try:
                self.log.flush()
            except (AttributeError, ValueError):
                pass

    def _prepare(self) -> None:
        for p in (self.control_path, self.state_path):
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise UserError(f"cannot create {p.parent}: {e.strerror or e}") from None
        if not self.control_path.exists():
            _write_json_atomic(self.control_path, DEFAULT_CONTROL)

    def _set_next_reset(self, cause: str) -> None:
        state: dict = {}
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
            if not isinstance(state, dict):
                state = {}
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            self.emit(f"[vboard] state file {self.state_path} unreadable ({e}): starting afresh")
        state["next_reset"] = cause
        _write_json_atomic(self.state_path, state)

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        # The agent runs compiled (mpy-cross), as on a board; `.frozen` holds asyncio.
        # Frozen: the firmware's modules first; only main.py (a file on a real board too,
        # firmware/manifest.py) comes from the compiled agent.
        compile_agent()
        if self.frozen:
            env["MICROPYPATH"] = ":".join([".frozen", *self.extra_path, str(agent_build_dir())])
        else:
            env["MICROPYPATH"] = ":".join(self.extra_path + [str(agent_build_dir()), ".frozen"])
        env["WANWITNESS_VBOARD_CONTROL"] = str(self.control_path)
        env["WANWITNESS_VBOARD_STATE"] = str(self.state_path)
        env["WANWITNESS_VBOARD_FLASH"] = str(self.flash_image)
        if self.config_path is not None:
            env["WANWITNESS_VBOARD_CONFIG"] = str(self.config_path)
        if self.chip:
            env["WANWITNESS_VBOARD_CHIP"] = self.chip
        return env

    def _forward(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            self.last_lines.append(line)
            self.emit(line)

    def _kill(self, proc: subprocess.Popen) -> None:
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: sh from os.system too
        except OSError:
            proc.terminate()
        try:
            proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                proc.kill()
            proc.wait()

    def _flash_error(self) -> str:
        prefix = "virtual board: "
        detail = next((ln[len(prefix):] for ln in reversed(self.last_lines)
                       if ln.startswith(prefix)), "")
        if str(self.flash_image) not in detail:
            detail = f"flash image {self.flash_image} is unusable" + (f": {detail}" if detail else "")
        return (f"{detail}; move it aside to start with a fresh image, "
                "or give another flash image")

    def boot_args(self) -> list[str]:
        """What micropython runs: the boot script run.py. Frozen (testing/mp32.py freezes
        it, as an ESP32's firmware freezes _boot.py) it is started as a module, so nothing
        puts its directory first on sys.path; as a file its directory comes first, and the
        compiled virtual board beside it is imported from there."""
        if self.frozen:
            return ["-m", "run"]
        return [str(compile_virtual_board())]

    def _spawn(self) -> tuple[subprocess.Popen, threading.Thread]:
        """Start one boot: the micropython process and the thread reading its console."""
        # In a time namespace of its own when the board's clock starts elsewhere: one
        # offset for every boot, so its ticks run on across resets.
        shift = ([] if self.clock_offset_s is None
                 else ["unshare", "--time", "--monotonic", str(self.clock_offset_s)])
        proc = subprocess.Popen(
            [*shift, self.micropython, "-X", f"heapsize={self.heap}", *self.boot_args()],
            cwd=str(self.flash_image.parent), env=self.child_env(),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True)
        reader = threading.Thread(target=self._forward, args=(proc,), daemon=True,
                                  name="vboard-output")
        reader.start()
        return proc, reader

    def _after(self, returncode: int) -> tuple[str | None, str]:
        return reset_cause_after(returncode)

    def _stopped(self, stop_event: threading.Event | None) -> bool:
        return self._stop.is_set() or (stop_event is not None and stop_event.is_set())

    def run(self, max_restarts: int | None = None,
            stop_event: threading.Event | None = None) -> int:
        """Power on and run until the board halts (0), is stopped (0) or has been
        restarted `max_restarts` times and ends again (1)."""
        self._prepare()
        cause = "PWRON_RESET"
        restarts = 0
        self.emit(f"[vboard] flash {self.flash_image}, control file {self.control_path}, "
                  f"state {self.state_path}")
        while True:
            self._set_next_reset(cause)
            self.last_lines.clear()
            proc, reader = self._spawn()
            self.proc = proc
            self.boots.append(cause)
            self.emit(f"[vboard] boot {len(self.boots)}: {cause}, pid {proc.pid}")
            try:
                while True:
                    try:
                        rc = proc.wait(0.05)
                        break
                    except subprocess.TimeoutExpired:
                        if self._stopped(stop_event):
                            self._kill(proc)
                            reader.join(2)
                            self.emit("[vboard] stopped: power off")
                            return 0
            finally:
                if proc.poll() is None:  # an exception in the supervisor: no orphan board
                    self._kill(proc)
            reader.join(5)
            self.exits.append(rc)
            next_cause, what = self._after(rc)
            self.emit(f"[vboard] boot {len(self.boots)} ended: {what} (status {rc})")
            if rc == EXIT_FLASH_ERROR:
                raise UserError(self._flash_error())
            if next_cause is None:
                return 0
            cause = next_cause
            if max_restarts is not None and restarts >= max_restarts:
                self.emit(f"[vboard] restart limit ({max_restarts}) reached: power off")
                self._set_next_reset(cause)
                return 1
            restarts += 1
            deadline = time.monotonic() + self.restart_delay
            while time.monotonic() < deadline:
                if self._stopped(stop_event):
                    self.emit("[vboard] stopped: power off")
                    return 0
                time.sleep(0.02)


def run_virtual(config_path: str | os.PathLike | None, flash_image: str | os.PathLike | None,
                control_path: str | os.PathLike | None = None,
                state_path: str | os.PathLike | None = None, heap: str = "256K",
                log: IO[str] | None = None, max_restarts: int | None = None,
                stop_event: threading.Event | None = None, **kw) -> int:
    """Run the agent on a virtual board until it halts or SIGINT/SIGTERM/stop_event.

    Returns 0 when stopped or when main.py returned, 1 when `max_restarts` ran out.
    Raises UserError (one line) for a missing/invalid config, a missing micropython
    binary or an unusable flash image. Extra keywords go to VirtualBoard.
    """
    board_class = kw.pop("board_class", None)
    if board_class is not None:  # e.g. vserial.SerialBoard(link, flash_image, ...)
        board = board_class(kw.pop("link"), flash_image, control_path=control_path,
                            state_path=state_path, heap=heap, log=log, **kw)
    else:
        board = VirtualBoard(config_path, flash_image, control_path, state_path, heap=heap,
                             log=log, **kw)
    old = {}
    if threading.current_thread() is threading.main_thread():
        def on_signal(signum, frame):
            board.stop()
        for s in (signal.SIGINT, signal.SIGTERM):
            old[s] = signal.signal(s, on_signal)
    try:
        status: int = board.run(max_restarts=max_restarts, stop_event=stop_event)
        return status
    finally:
        for s, h in old.items():
            signal.signal(s, h)
