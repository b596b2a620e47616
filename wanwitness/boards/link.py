"""A MicroPython board on a serial port, as deploy, calibrate and the hwtests use it.

Opening checks what a user can get wrong, each as one line (UserError, exit 2): the
port does not exist (the ports that do are listed), another program holds it, or no
MicroPython answers on it. The raw REPL is mpremote's (`SerialTransport`); `resume`
semantics: the board is never soft-reset behind the user's back.

A board running the agent has its watchdog on, and a watchdog cannot be stopped on an
ESP32: at the REPL it would reset the board within `wdt_s`. `maintenance()` therefore
leaves a `.maintenance` file and resets the board; agent/main.py sees it and, for that
one boot, does not start the agent. `reset()` starts it again.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import serial

from wanwitness.errors import UserError

RAW_REPL_TIMEOUT_S = 6.0
REBOOT_TIMEOUT_S = 20.0
MAINTENANCE_FILE = ".maintenance"

# sys.implementation._mpy: bits 0-7 the .mpy version, 8-9 the sub-version, 10-15 the
# native architecture (py/persistentcode.h MPY_FEATURE_ENCODE_ARCH); names as mpy-cross -march
MPY_ARCHS = {0: None, 1: "x86", 2: "x64", 3: "armv6", 4: "armv6m", 5: "armv7m", 6: "armv7em",
             7: "armv7emsp", 8: "armv7emdp", 9: "xtensa", 10: "xtensawin", 11: "rv32imc",
             12: "rv64imc"}


def check_port(port: str) -> None:
    """The port exists, is a character device and nobody else holds it."""
    if os.path.exists(port) and not stat.S_ISCHR(os.stat(port).st_mode):
        raise UserError(f"{port} is not a serial port (not a character device)")
    from wanwitness.boards.flash import check_port as check_serial
    check_serial(port)


@dataclass
class BoardInfo:
    platform: str        # esp32 | linux (the virtual board)
    chip: str            # esp32 | esp32c3 | esp32s3 ...
    virtual: bool
    version: str         # MicroPython version
    mpy_version: int
    mpy_sub: int
    arch: str | None     # mpy-cross -march
    fs_free: int         # bytes free on the flash filesystem
    fs_total: int
    mem_free: int


_INFO = """
import os, sys, gc
try:
    import board as _b
    _chip = _b.chip if hasattr(_b, 'ADC_PINS') else None
except ImportError:
    _chip = None
_v = _chip is not None
if not _v:
    _m = os.uname().machine
    _chip = _m.rsplit(' with ', 1)[-1] if ' with ' in _m else _m
_s = os.statvfs('.')
gc.collect()
print(repr((sys.platform, _chip.lower(), _v, '.'.join(str(x) for x in sys.implementation.version[:3]),
  getattr(sys.implementation, '_mpy', 0), _s[0] * _s[3], _s[0] * _s[2], gc.mem_free())))
"""


class BoardLink:
    """The raw REPL of a board on `port`; use as a context manager."""

    def __init__(self, port: str, baud: int = 115200):
        check_port(port)
        self.port = port
        self.baud = baud
        self.t: Any = None  # mpremote's SerialTransport (mpremote has no type hints)
        self._open()

    def _open(self) -> None:
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport
        try:
            self.t = SerialTransport(self.port, baudrate=self.baud)
        except TransportError as e:
            raise UserError(f"{self.port}: {e}") from None
        # mpremote reads a /dev/pts device with a blocking read(1) (for QEMU), which
        # never times out when nothing answers; FIONREAD polling works on any pty
        self.t.is_pty = False

    def close(self) -> None:
        if self.t is not None:
            try:
                if self.t.in_raw_repl:
                    self.t.exit_raw_repl()
                self.t.close()
            except Exception:
                pass
            self.t = None

    def __enter__(self) -> BoardLink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the raw REPL --------------------------------------------------------------------

    def enter(self, timeout: float = RAW_REPL_TIMEOUT_S) -> None:
        """Interrupt what runs (Ctrl-C) and enter the raw REPL, without a soft reset."""
        from mpremote.transport import TransportError
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            try:
                with contextlib.redirect_stdout(io.StringIO()):  # mpremote prints on failure
                    self.t.enter_raw_repl(soft_reset=False, timeout_overall=2)
                return
            except TransportError as e:
                last = str(e)
            except (OSError, serial.SerialException) as e:  # the port went away (USB reset)
                last = str(e)
                self._reopen(deadline)
            if time.monotonic() > deadline:
                raise UserError(
                    f"no MicroPython answers on {self.port} ({last}): if the board is new, "
                    f"flash MicroPython first: wanwitness flash --port {self.port} --board PROFILE")

    def _reopen(self, deadline: float) -> None:
        self.close()
        while time.monotonic() < deadline:
            try:
                self._open()
                return
            except UserError:
                time.sleep(0.3)

    def exec(self, code: str, timeout: float = 30) -> str:
        from mpremote.transport import TransportError, TransportExecError
        try:
            self.t.exec_raw_no_follow(code)
            out, err = self.t.follow(timeout)
        except TransportError as e:
            raise UserError(f"{self.port}: the board stopped answering: {e}") from None
        if err:
            raise TransportExecError(1, err.decode("utf-8", "replace"))
        return str(out.decode("utf-8", "replace"))

    def eval(self, expr: str):
        import ast
        return ast.literal_eval(self.exec(f"print(repr({expr}))").strip())

    def info(self) -> BoardInfo:
        import ast
        plat, chip, virtual, version, mpy, free, total, mem = ast.literal_eval(
            self.exec(_INFO).strip().splitlines()[-1])
        return BoardInfo(plat, chip, virtual, version, mpy & 0xFF, (mpy >> 8) & 3,
                         MPY_ARCHS.get(mpy >> 10), free, total, mem)

    def agent_running(self) -> bool:
        return bool(self.eval("'app' in __import__('sys').modules"))

    # -- resets --------------------------------------------------------------------------

    def reset(self) -> None:
        """machine.reset(): the board reboots (boot.py, main.py); the port stays open."""
        from mpremote.transport import TransportError
        try:
            self.t.exec_raw_no_follow("import machine\nmachine.reset()")
        except (TransportError, OSError, serial.SerialException):
            pass  # the reset may cut the answer short
        self.t.in_raw_repl = False

    def watch(self, seconds: float, line: Callable[[str], None]) -> None:
        """Pass on what the board prints for `seconds` (e.g. right after a reset)."""
        end = time.monotonic() + seconds
        buf = b""
        while time.monotonic() < end:
            try:
                n = self.t.serial.in_waiting
                chunk = self.t.serial.read(n) if n else b""
            except (OSError, serial.SerialException):  # USB re-enumerating after the reset
                self._reopen(end)
                continue
            if not chunk:
                time.sleep(0.05)
                continue
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                text = raw.decode("utf-8", "replace").strip("\r")
                if text:
                    line(text)

    def maintenance(self, why: str) -> None:
        """Reboot into a boot that does not start the agent (nor its watchdog)."""
        self.exec(f"f = open({MAINTENANCE_FILE!r}, 'w'); f.write({why!r}); f.close()")
        self.reset()
        time.sleep(0.5)
        self.enter(timeout=REBOOT_TIMEOUT_S)
        # A boot interrupted before main.py read the file leaves it: remove it ourselves
        self.exec(f"import os\ntry:\n os.remove({MAINTENANCE_FILE!r})\nexcept OSError:\n pass")
