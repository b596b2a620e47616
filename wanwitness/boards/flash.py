"""`wanwitness flash`: erase a board and write MicroPython onto it with esptool.

Nothing is erased before every check has passed: the port exists and no other program
has it open, the image is an ESP image for this chip that fits, the chip that answers
is the profile's chip and its flash is big enough. Then esptool runs as a child process
(`python -m esptool`) with its progress on the user's terminal, each command printed
before it runs, so that a user can run the same command by hand.

For tests only: WANWITNESS_ESPTOOL / WANWITNESS_MPFLASH name a Python script that is run
(with this interpreter) instead of esptool / mpflash; tests/test_flash.py plays a chip or
a download that way without hardware or internet.
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from wanwitness.boards.profiles import CHIPS, BoardProfile, WrongBoard, all_profiles
from wanwitness.errors import UserError
from wanwitness.resources import cache_dir

Echo = Callable[[str], None]

ESP_IMAGE_MAGIC = 0xE9          # first byte of every ESP image (esptool ESPLoader.ESP_IMAGE_MAGIC)
APP_DESC_MAGIC = 0xABCD5432     # esp_app_desc_t.magic_word: only an app image has it at byte 32
DETECT_TIMEOUT_S = 90           # esptool's 7 connect attempts take ~6 s; a slow USB hub more
DOWNLOAD_TIMEOUT_S = 300        # mpflash's requests have no timeout of their own


# --- the commands ---------------------------------------------------------------------

def _tool(env: str, default: list[str]) -> list[str]:
    script = os.environ.get(env)
    return [sys.executable, script] if script else default


def esptool_prefix() -> list[str]:
    return _tool("WANWITNESS_ESPTOOL", [sys.executable, "-m", "esptool"])


def _spelling(command: str) -> str:
    """esptool 5 spells commands and choices with dashes; 4.x knows only underscores."""
    try:
        major = int(version("esptool").split(".")[0])
    except (PackageNotFoundError, ValueError):
        major = 5
    return command if major >= 5 else command.replace("-", "_")


def esptool_commands(profile: BoardProfile, port: str, firmware: Path | str,
                     baud: int) -> list[list[str]]:
    """Erase the whole flash, then write the image at the chip's bootloader offset
    (MicroPython's esp32 deploy instructions: erase_flash, then write_flash)."""
    base = esptool_prefix() + ["--chip", profile.chip, "--port", port, "--baud", str(baud)]
    return [base + [_spelling("erase-flash")],
            base + [_spelling("write-flash"), f"{profile.flash_offset:#x}", str(firmware)]]


def detect_command(port: str) -> list[str]:
    # flash-id reads the chip and its flash size and writes nothing. No reset after it:
    # a board put into its bootloader by hand (BOOT button) stays there for the erase.
    return esptool_prefix() + ["--port", port, "--after", _spelling("no-reset"),
                               _spelling("flash-id")]


def _mpflash() -> list[str]:
    beside = Path(sys.executable).parent / "mpflash"
    return [str(beside) if beside.exists() else "mpflash"]


def download_command(profile: BoardProfile, cache: Path) -> list[str]:
    return _tool("WANWITNESS_MPFLASH", _mpflash()) + [
        "-x", "-d", str(cache), "download", "--board", profile.micropython_board,
        "--version", "stable"]


def _download_shown(cmd: list[str], cache: Path) -> str:
    # mpflash opens its database in MPFLASH_FIRMWARE (else ~/Downloads/firmware) before it
    # reads -d: the variable keeps everything it writes in our cache.
    return f"$ MPFLASH_FIRMWARE={shlex.quote(str(cache))} {shlex.join(cmd)}"


def firmware_cache() -> Path:
    return cache_dir() / "firmware"


def _shown(cmd: list[str]) -> str:
    return "$ " + shlex.join(cmd)


def _mb(n: int) -> str:
    return f"{n >> 20} MB" if n % (1 << 20) == 0 else f"{n >> 10} KB"


# --- the serial port ------------------------------------------------------------------

def check_port(port: str) -> None:
    """The port exists and no other program has it open (else one clear UserError)."""
    if "://" in port:  # rfc2217:// or socket://: a remote port that esptool opens itself
        return
    if not _port_exists(port):
        raise UserError(f"no such port {port}; {_ports_found()}")
    import serial
    s = serial.Serial()
    s.port = port
    s.dtr = s.rts = False  # both released: the auto-reset circuit leaves the chip alone
    s.exclusive = True     # POSIX: flock(LOCK_EX | LOCK_NB), as esptool takes it too
    busy = f"{port} is in use by another program"
    advice = "close the serial monitor / mpremote / `wanwitness console` and try again"
    try:
        s.open()
    except serial.SerialException as e:
        code = getattr(e, "errno", None)
        if code in (errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK) or "Access is denied" in str(e):
            raise UserError(f"{busy} ({advice})") from None
        if code == errno.EACCES:
            raise UserError(f"no permission to open {port}: add yourself to the dialout group "
                            "(uucp on Arch): sudo usermod -aG dialout $USER, then log out and in") from None
        raise UserError(f"cannot open {port}: {e}") from None
    finally:
        s.close()
    holders = _holders(port)
    if holders:  # a program that opened the port without a lock (screen, minicom, mpremote)
        raise UserError(f"{busy} ({', '.join(holders)}): {advice}")


def _port_exists(port: str) -> bool:
    if sys.platform == "win32":
        from serial.tools.list_ports import comports
        return port.upper() in {p.device.upper() for p in comports()}
    return os.path.exists(port)


def _ports_found() -> str:
    from serial.tools.list_ports import comports
    ports = [p.device + (f" ({p.description})" if p.description and p.description != "n/a" else "")
             for p in sorted(comports(), key=lambda p: p.device)]
    if not ports:
        return "no serial ports found: is the board plugged in, with a data cable (some only charge)?"
    return "ports found: " + ", ".join(ports)


def _holders(port: str) -> list[str]:
    """Linux: the processes (of this user) that have the port open. For a pty, not the
    program that made it (it holds the master: socat, the virtual board)."""
    proc = Path("/proc")
    if not sys.platform.startswith("linux") or not proc.is_dir():
        return []
    target = os.path.realpath(port)
    pty_index = target[len("/dev/pts/"):] if target.startswith("/dev/pts/") else None
    found = []
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
            continue
        try:
            fds = list((pid_dir / "fd").iterdir())
        except OSError:
            continue  # another user's process, or gone
        holds = maker = False
        for fd in fds:
            try:
                link = os.readlink(fd)
                if link == target:
                    holds = True
                elif pty_index is not None and link in ("/dev/ptmx", "/dev/pts/ptmx"):
                    info = (pid_dir / "fdinfo" / fd.name).read_text()
                    maker = maker or f"tty-index:\t{pty_index}\n" in info
            except OSError:
                continue
        if holds and not maker:
            try:
                name = (pid_dir / "comm").read_text().strip()
            except OSError:
                continue  # ended meanwhile
            found.append(f"PID {pid_dir.name} {name}")
    return found


# --- the image ------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageInfo:
    size: int
    chip: str | None          # CHIPS key the image is built for, None for another chip
    chip_id: int
    flash_bytes: int | None   # flash size its bootloader header was built for


def check_image(path: Path, profile: BoardProfile) -> ImageInfo:
    """An ESP image (bootloader first) for this profile's chip that fits its flash."""
    where = f"https://micropython.org/download/{profile.micropython_board}/"
    try:
        with open(path, "rb") as f:
            head = f.read(40)
        size = path.stat().st_size
    except FileNotFoundError:
        raise UserError(f"firmware {path}: no such file") from None
    except OSError as e:
        raise UserError(f"firmware {path}: cannot read it: {e.strerror or e}") from None
    if len(head) < 40 or head[0] != ESP_IMAGE_MAGIC:
        raise UserError(f"firmware {path} is not an ESP32 firmware image (its first byte is not "
                        f"0xE9); use the .bin from {where}")
    # Image layout (ESP-IDF app_image_format): 8-byte header, 16-byte extended header with
    # the chip id at bytes 12-13, then the first segment: 8-byte header, then its data,
    # which in an application image starts with esp_app_desc_t.
    if int.from_bytes(head[32:36], "little") == APP_DESC_MAGIC:
        raise UserError(f"firmware {path} is an application image without bootloader and "
                        f"partition table (an .app-bin); use the .bin from {where}")
    chip_id = int.from_bytes(head[12:14], "little")
    chip = next((name for name, c in CHIPS.items() if c.image_chip_id == chip_id), None)
    if chip != profile.chip:
        built_for = f"the {CHIPS[chip].title}" if chip else f"another chip (image chip id {chip_id})"
        raise WrongBoard(f"firmware {path} is built for {built_for}, but {WrongBoard.BOARD} "
                         f"has an {profile.chip_title}; {WrongBoard.ADVICE}", profile.name,
                         otherwise=f"use the {profile.micropython_board} image from {where}")
    size_code = head[3] >> 4  # esptool FLASH_SIZES: 0x00 = 1MB ... 0x70 = 128MB
    flash_bytes = (1 << 20) << size_code if size_code <= 7 else None
    if profile.flash_offset + size > profile.min_flash_bytes:
        raise UserError(f"firmware {path} is too big: {size} bytes from {profile.flash_offset:#x} "
                        f"do not fit the {_mb(profile.min_flash_bytes)} of flash of a {profile.title}")
    return ImageInfo(size, chip, chip_id, flash_bytes)


def newest_image(cache: Path, board: str) -> Path | None:
    """The newest stable image mpflash downloaded for `board` (ESP32_GENERIC-v1.26.1.bin)."""
    pattern = re.compile(re.escape(board) + r"-v(\d+)\.(\d+)(?:\.(\d+))?\.bin")
    found = []
    for p in cache.rglob(f"{board}-v*.bin"):
        m = pattern.fullmatch(p.name)
        if m:
            found.append((tuple(int(x or 0) for x in m.groups()), p))
    return max(found)[1] if found else None


def fetch_firmware(profile: BoardProfile, echo: Echo) -> Path:
    """The latest stable MicroPython for the profile, downloaded with mpflash."""
    board = profile.micropython_board
    hint = f"download the .bin from https://micropython.org/download/{board}/ and pass --firmware FILE"
    cache = firmware_cache()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {cache}: {e.strerror or e}; or {hint}") from None
    cmd = download_command(profile, cache)
    echo(f"downloading MicroPython for {board} with mpflash:")
    echo(_download_shown(cmd, cache))
    env = {**os.environ, "MPFLASH_FIRMWARE": str(cache)}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                              timeout=DOWNLOAD_TIMEOUT_S)
        ok = proc.returncode == 0
    except FileNotFoundError:
        raise UserError(f"mpflash is missing (pip install mpflash); or {hint}") from None
    except subprocess.TimeoutExpired:
        ok = False
    image = newest_image(cache, board)
    if image is None:
        raise UserError(f"could not download MicroPython for {board} (no internet?): {hint}")
    if not ok:
        echo("mpflash could not download (no internet?); using the image downloaded earlier")
    echo(f"image: {image}")
    return image


# --- the chip -------------------------------------------------------------------------

@dataclass(frozen=True)
class ChipInfo:
    chip: str                 # esptool's --chip name, e.g. "esp32c3"
    title: str                # as esptool prints it, e.g. "ESP32-C3"
    flash_bytes: int | None   # None when esptool could not tell


# esptool 5: "Connected to ESP32-C3 on /dev/ttyACM0:"; 4.x: "Detecting chip type... ESP32-C3"
_CONNECTED = re.compile(r"Connected to (ESP[\w-]+) on |Detecting chip type\.*\s*(ESP[\w-]+)")
_FLASH_SIZE = re.compile(r"Detected flash size:\s*(\d+)\s*(KB|MB)")
_FATAL = re.compile(r"A fatal error occurred:\s*(.+)")


def parse_chip_info(output: str) -> ChipInfo | None:
    m = _CONNECTED.search(output)
    if not m:
        return None
    title = m.group(1) or m.group(2)
    f = _FLASH_SIZE.search(output)
    flash = int(f.group(1)) << (20 if f.group(2) == "MB" else 10) if f else None
    return ChipInfo(title.lower().replace("-", ""), title, flash)


def detect_chip(port: str) -> ChipInfo:
    cmd = detect_command(port)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=DETECT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise UserError(f"no answer on {port} within {DETECT_TIMEOUT_S} s (esptool flash-id)") from None
    output = proc.stdout + "\n" + proc.stderr
    info = parse_chip_info(output) if proc.returncode == 0 else None
    if info:
        return info
    fatal = _FATAL.search(output)
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    reason = fatal.group(1) if fatal else (lines[-1] if lines else f"exit {proc.returncode}")
    reason = reason.strip().rstrip(".")
    if "Failed to connect" in reason or "No serial data" in reason:
        raise UserError(f"nothing answered on {port}: no ESP32 in its bootloader there ({reason}). "
                        "Hold BOOT, press and release RESET (EN), release BOOT, and run this again; "
                        "a charge-only USB cable looks the same")
    raise UserError(f"esptool could not read the board on {port}: {reason}")


def check_chip(profile: BoardProfile, port: str, info: ChipInfo, firmware: Path,
               image: ImageInfo) -> None:
    if info.chip != profile.chip:
        matching = [p.name for p in all_profiles() if p.chip == info.chip]
        raise WrongBoard(f"{port} has an {info.title} but {WrongBoard.BOARD} is for an "
                         f"{profile.chip_title}; {WrongBoard.ADVICE}", profile.name, matching,
                         f"no board profile here is for an {info.title} (`wanwitness boards` "
                         "lists them)")
    if info.flash_bytes is None:
        return  # an unusual flash chip esptool cannot size: the checks above are all we have
    if info.flash_bytes < profile.min_flash_bytes:
        raise UserError(f"not enough flash: the {info.title} on {port} has {_mb(info.flash_bytes)}, "
                        f"MicroPython for the {profile.title} needs {_mb(profile.min_flash_bytes)}")
    if image.flash_bytes and image.flash_bytes > info.flash_bytes:
        raise UserError(f"not enough flash: {firmware} is built for {_mb(image.flash_bytes)} of "
                        f"flash, the {info.title} on {port} has {_mb(info.flash_bytes)}; use an "
                        f"image built for {_mb(info.flash_bytes)} or less")


# --- all of it ------------------------------------------------------------------------

def flash_board(profile: BoardProfile, port: str, firmware: Path | None, *, baud: int | None = None,
                dry_run: bool = False, echo: Echo = print) -> None:
    baud = baud or profile.baud
    if firmware is not None:
        check_image(firmware, profile)  # a bad file is refused before the port is touched
    if dry_run:
        if firmware is None:
            cache = firmware_cache()
            echo(_download_shown(download_command(profile, cache), cache))
            firmware = cache / "esp32" / f"{profile.micropython_board}-vVERSION.bin"
        echo(_shown(detect_command(port)))
        for cmd in esptool_commands(profile, port, firmware, baud):
            echo(_shown(cmd))
        return
    check_port(port)
    if firmware is None:
        firmware = fetch_firmware(profile, echo)
    image = check_image(firmware, profile)
    echo(f"checking the board on {port}:")
    echo(_shown(detect_command(port)))
    info = detect_chip(port)
    size = _mb(info.flash_bytes) if info.flash_bytes else "an unknown amount of"
    echo(f"found an {info.title} with {size} flash")
    check_chip(profile, port, info, firmware, image)
    erase, write = esptool_commands(profile, port, firmware, baud)
    for cmd, failed in ((erase, "erasing (the old firmware may be partly gone): check the cable and "
                                "run this again"),
                        (write, "writing: the board is erased but has no MicroPython; "
                                "run this command again")):
        echo(_shown(cmd))
        sys.stdout.flush()  # our lines before esptool's, which go straight to the terminal
        rc = subprocess.run(cmd).returncode
        if rc != 0:
            raise UserError(f"esptool failed (exit {rc}, its messages are above) while {failed}")
    echo(f"done: MicroPython is on the {profile.title} at {port}. "
         f"Next: wanwitness deploy --port {port} --agent NAME")
