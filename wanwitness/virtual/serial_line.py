"""The virtual board on a serial line: a pty that behaves like an ESP32's USB-UART port.

`wanwitness agent run --virtual --serial /tmp/wwboard --flash board.flash` makes
`/tmp/wwboard` a serial port with a MicroPython board behind it. The board holds its
own software on its flash image (boot.py, main.py, the agent's .mpy files and
config.json, put there by `wanwitness deploy` with mpremote), exactly as a flashed
ESP32 does; nothing is read from the host's agent/ folder. So `deploy`, `calibrate`,
`console` and the hardware tests (hwtests/) run unchanged against it or a real board.

How it is built:
- the port is one pty kept for the whole run (a USB-UART bridge stays on the bus when
  the ESP32 resets), its symlink is the path given;
- every boot is a fresh `micropython -i run.py` on its own pty: Ctrl-C from the port
  becomes SIGINT (KeyboardInterrupt in main.py) and then the REPL, the raw REPL works
  for mpremote; a reset (watchdog, machine.reset(), a soft reset, a power cut) ends
  the process and the supervisor boots the next one (see wanwitness/virtual.py);
- bytes are relayed both ways; board output that nobody reads is dropped once the
  port's buffer is full, as a UART with no listener drops it (a pty would otherwise
  block the board's print() and starve its watchdog).
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import subprocess
import termios
import threading
import tty
from pathlib import Path

from wanwitness.errors import UserError
from wanwitness.virtual.supervisor import EXIT_HALT, VirtualBoard, reset_cause_after

CHUNK = 4096


def _board_pty() -> tuple[int, int]:
    """A pty for one boot: no echo, no \\n -> \\r\\n (MicroPython writes \\r\\n itself),
    but ISIG on: a Ctrl-C byte interrupts the running script as on the board."""
    master, slave = os.openpty()
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.OPOST                                   # oflag
    attrs[3] &= ~(termios.ECHO | termios.ECHOE | termios.ECHOK | termios.ECHONL)  # lflag
    attrs[3] |= termios.ISIG
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    return master, slave


def _make_controlling_tty() -> None:  # in the child, after setsid
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class SerialBoard(VirtualBoard):
    """A virtual board whose console is the serial port at `link`."""

    def __init__(self, link: str | os.PathLike, flash_image: str | os.PathLike, **kw):
        super().__init__(None, flash_image, **kw)
        self.link = Path(link).absolute()
        self._port_master: int | None = None
        self._port_slave: int | None = None
        self._board_master: int | None = None
        self._board_lock = threading.Lock()
        self._relay: threading.Thread | None = None
        self._closing = threading.Event()

    # -- the port ----------------------------------------------------------------------

    def _open_port(self) -> None:
        if self.link.exists() or self.link.is_symlink():
            if not self.link.is_symlink():
                raise UserError(f"{self.link} exists and is not a symlink: choose another "
                                "path for the virtual board's serial port")
            self.link.unlink()
        if not self.link.parent.is_dir():
            raise UserError(f"cannot create the serial port {self.link}: directory "
                            f"{self.link.parent} does not exist")
        master, slave = os.openpty()
        tty.setraw(slave)  # like socat's `rawer`: no echo of what the board writes
        os.set_blocking(master, False)
        self._port_master, self._port_slave = master, slave
        os.symlink(os.ttyname(slave), self.link)
        self._relay = threading.Thread(target=self._relay_loop, daemon=True, name="vserial")
        self._relay.start()

    def _close_port(self) -> None:
        self._closing.set()
        if self._relay is not None:
            self._relay.join(2)
        try:
            if self.link.is_symlink():
                self.link.unlink()
        except OSError:
            pass
        with self._board_lock:
            board, self._board_master = self._board_master, None
        for fd in (self._port_master, self._port_slave, board):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._port_master = self._port_slave = None

    def _to_port(self, data: bytes) -> None:
        assert self._port_master is not None and self._port_slave is not None
        while data:
            try:
                n = os.write(self._port_master, data)
            except BlockingIOError:
                # Nobody reads the port: drop what waits there, keep the newest
                termios.tcflush(self._port_slave, termios.TCIFLUSH)
                try:
                    n = os.write(self._port_master, data)
                except BlockingIOError:
                    return
            data = data[n:]

    def _relay_loop(self) -> None:
        poller = select.poll()
        assert self._port_master is not None
        poller.register(self._port_master, select.POLLIN)
        registered: int | None = None
        while not self._closing.is_set():
            with self._board_lock:
                board = self._board_master
            if board != registered:
                if registered is not None:
                    try:
                        poller.unregister(registered)
                    except (KeyError, ValueError):
                        pass
                if board is not None:
                    poller.register(board, select.POLLIN)
                registered = board
            for fd, _ev in poller.poll(50):
                if fd == self._port_master:
                    try:
                        data = os.read(fd, CHUNK)
                    except (BlockingIOError, OSError):
                        continue
                    if board is not None:  # typed while the board resets: lost, as on a UART
                        try:
                            os.write(board, data)
                        except OSError:
                            pass
                elif fd == board:
                    try:
                        data = os.read(fd, CHUNK)
                    except OSError as e:  # EIO: the boot ended, its pty is gone
                        if e.errno not in (errno.EIO, errno.EBADF):
                            self.emit(f"[vboard] serial: {e}")
                        try:
                            poller.unregister(fd)
                        except (KeyError, ValueError):
                            pass
                        registered = None
                        with self._board_lock:
                            if self._board_master == fd:
                                self._board_master = None
                                os.close(fd)
                        continue
                    if data:
                        self.last_lines.append(data.decode("utf-8", "replace"))
                        self._to_port(data)

    # -- one boot ----------------------------------------------------------------------

    def child_env(self) -> dict[str, str]:
        env = super().child_env()
        # Only the board itself (machine, network: C modules on an ESP32) and the frozen
        # asyncio come from the host; the agent comes from the flash.
        env["MICROPYPATH"] = ":".join(p for p in env["MICROPYPATH"].split(":")
                                      if p == ".frozen" or p in self.extra_path)
        env["WANWITNESS_VBOARD_SERIAL"] = "1"
        return env

    def _spawn(self) -> tuple[subprocess.Popen, threading.Thread]:
        from wanwitness.boards.build import compile_virtual_board
        run_mpy = compile_virtual_board()
        env = self.child_env()  # run.mpy's own folder (the board's modules) is sys.path[0]
        master, slave = _board_pty()
        try:
            proc = subprocess.Popen(
                [self.micropython, "-X", f"heapsize={self.heap}", "-i", str(run_mpy)],
                cwd=str(self.flash_image.parent), env=env,
                stdin=slave, stdout=slave, stderr=slave,
                start_new_session=True, preexec_fn=_make_controlling_tty)
        finally:
            os.close(slave)
        with self._board_lock:
            old, self._board_master = self._board_master, master
        if old is not None:
            try:
                os.close(old)
            except OSError:
                pass
        # The relay thread reads the console; this one only waits for the boot's end.
        waiter = threading.Thread(target=proc.wait, daemon=True, name="vboard-wait")
        waiter.start()
        return proc, waiter

    def _after(self, returncode: int) -> tuple[str | None, str]:
        if returncode == EXIT_HALT:
            # Ctrl-D at the REPL: on a board a soft reset, the board runs on
            return "SOFT_RESET", "soft reset (Ctrl-D at the REPL)"
        return reset_cause_after(returncode)

    def run(self, max_restarts: int | None = None,
            stop_event: threading.Event | None = None) -> int:
        self._open_port()
        assert self._port_slave is not None
        self.emit(f"[vboard] serial port {self.link} -> {os.ttyname(self._port_slave)}")
        try:
            return super().run(max_restarts=max_restarts, stop_event=stop_event)
        finally:
            self._close_port()
