"""`wanwitness flash` without hardware: the exact esptool commands, and every way it can
refuse, each as one line and exit 2 before anything is erased.

A silent serial port is a pty with nobody on the other side (the real esptool then fails
to connect). A chip that answers is a fake esptool (WANWITNESS_ESPTOOL) printing what
esptool 5 prints, in the format of esptool/__init__.py (`Connected to {CHIP_NAME} on
{port}:`) and cmds.py (`Detected flash size: 4MB`). A download is a fake mpflash
(WANWITNESS_MPFLASH): no test talks to the internet.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from testing.cli import one_line_error
from wanwitness.boards.flash import esptool_commands, parse_chip_info
from wanwitness.boards.profiles import load_profile

FAKE_ESPTOOL = r'''
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(args) + "\n")
port = args[args.index("--port") + 1]
chip = os.environ.get("FAKE_CHIP", "ESP32")
print("esptool v5.6.0")
print("Connecting....")
print(f"Connected to {chip} on {port}:")
print(f"{'Chip type:':<20}{chip} (revision v1.0)")
print(f"{'Features:':<20}Wi-Fi, BT 5 (LE)")
print(f"{'Crystal frequency:':<20}40MHz")
print(f"{'MAC:':<20}24:0a:c4:00:01:02")
print()
if os.environ.get("FAKE_FAIL") in args:
    print("ERROR: A fatal error occurred: Packet content transfer stopped", file=sys.stderr)
    sys.exit(2)
if "flash-id" in args:
    print("Flash Memory Information:")
    print("=========================")
    print("Manufacturer: 20")
    print("Device: 4016")
    print("Detected flash size: " + os.environ.get("FAKE_FLASH", "4MB"))
elif "erase-flash" in args:
    print("Flash memory erased successfully in 2.9 seconds.")
elif "write-flash" in args:
    print("Wrote 1712128 bytes (1121434 compressed) at 0x00001000 in 25.4 seconds.")
    print("Hash of data verified.")
'''

FAKE_MPFLASH = r'''
import os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write("mpflash " + " ".join(args) + " MPFLASH_FIRMWARE=" + os.environ.get("MPFLASH_FIRMWARE", "") + "\n")
if os.environ.get("FAKE_OFFLINE"):
    print("requests.exceptions.ConnectionError: Max retries exceeded", file=sys.stderr)
    sys.exit(1)
folder = os.path.join(args[args.index("-d") + 1], "esp32")
board = args[args.index("--board") + 1]
os.makedirs(folder, exist_ok=True)
image = bytes.fromhex(os.environ["FAKE_IMAGE_HEX"])
for v in ("1.25.0", "1.26.1", "1.9.4"):
    with open(os.path.join(folder, f"{board}-v{v}.bin"), "wb") as f:
        f.write(image)
'''


def esp_image(chip_id: int = 0, flash_code: int = 0x20, size: int = 4096, app: bool = False) -> bytes:
    """An ESP image header as esptool writes it: magic 0xE9, flash size in byte 3's
    high nibble, chip id at bytes 12-13; an app image has esp_app_desc_t at byte 32."""
    data = bytearray(size)
    data[0] = 0xE9
    data[1] = 3
    data[3] = flash_code
    data[12:14] = chip_id.to_bytes(2, "little")
    if app:
        data[32:36] = (0xABCD5432).to_bytes(4, "little")
    return bytes(data)


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ)
    for key in ("WANWITNESS_ESPTOOL", "WANWITNESS_MPFLASH", "WANWITNESS_CONFIG", "FAKE_CHIP",
                "FAKE_FLASH", "FAKE_FAIL", "FAKE_OFFLINE", "MPFLASH_FIRMWARE"):
        e.pop(key, None)
    e["XDG_CACHE_HOME"] = str(tmp_path / "cache")  # the firmware cache: never the user's
    e["FAKE_LOG"] = str(tmp_path / "calls.log")
    return e


@pytest.fixture
def fake_esptool(tmp_path, env):
    script = tmp_path / "fake_esptool.py"
    script.write_text(FAKE_ESPTOOL)
    env["WANWITNESS_ESPTOOL"] = str(script)
    return env


@pytest.fixture
def pty_port():
    """A serial port that exists, is free, and where nothing answers."""
    master, slave = os.openpty()
    name = os.ttyname(slave)
    os.close(slave)  # only the master stays open: no process holds the port itself
    yield name
    os.close(master)


def ww(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wanwitness", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def calls(env: dict) -> list[list[str]]:
    log = Path(env["FAKE_LOG"])
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("[")]


def steps(env: dict) -> list[str]:
    """The esptool command of each call: flash-id, erase-flash, write-flash."""
    return [next(a for a in c if a in ("flash-id", "erase-flash", "write-flash")) for c in calls(env)]


def shown(cmd: list[str]) -> str:
    return "$ " + shlex.join(cmd)


# --- the commands -----------------------------------------------------------------------

@pytest.mark.parametrize("profile,chip,offset", [
    ("esp32-devkitc", "esp32", "0x1000"),
    ("esp32-c3-supermini", "esp32c3", "0x0"),
    ("esp32-s3-devkitc", "esp32s3", "0x0"),
])
def test_esptool_erases_then_writes_at_the_chips_offset(monkeypatch, profile, chip, offset):
    monkeypatch.delenv("WANWITNESS_ESPTOOL", raising=False)
    esptool = [sys.executable, "-m", "esptool"]
    erase, write = esptool_commands(load_profile(profile), "/dev/ttyUSB0", "fw.bin", 460800)
    assert erase == esptool + ["--chip", chip, "--port", "/dev/ttyUSB0", "--baud", "460800",
                               "erase-flash"]
    assert write == esptool + ["--chip", chip, "--port", "/dev/ttyUSB0", "--baud", "460800",
                               "write-flash", offset, "fw.bin"]
    erase, write = esptool_commands(load_profile(profile), "COM3", Path("a b/fw.bin"), 115200)
    assert erase[3:8] == ["--chip", chip, "--port", "COM3", "--baud"]
    assert write[-4:] == ["115200", "write-flash", offset, str(Path("a b/fw.bin"))]


def test_the_commands_esptool_accepts(tmp_path, monkeypatch):
    """The spellings we use exist in the installed esptool (its own --help says so)."""
    monkeypatch.delenv("WANWITNESS_ESPTOOL", raising=False)
    for sub in ("erase-flash", "write-flash", "flash-id"):
        proc = subprocess.run([sys.executable, "-m", "esptool", sub, "--help"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr


def test_dry_run_prints_every_command_and_runs_none(tmp_path, fake_esptool):
    fw = tmp_path / "fw.bin"
    fw.write_bytes(esp_image(chip_id=5))
    proc = ww("flash", "--port", "/dev/ttyACM7", "--board", "esp32-c3-supermini",
              "--firmware", str(fw), "--dry-run", env=fake_esptool)
    assert proc.returncode == 0, proc.stderr
    fake = [sys.executable, fake_esptool["WANWITNESS_ESPTOOL"]]
    base = fake + ["--chip", "esp32c3", "--port", "/dev/ttyACM7", "--baud", "460800"]
    assert proc.stdout.splitlines() == [
        shown(fake + ["--port", "/dev/ttyACM7", "--after", "no-reset", "flash-id"]),
        shown(base + ["erase-flash"]),
        shown(base + ["write-flash", "0x0", str(fw)]),
    ]
    assert calls(fake_esptool) == []


def test_dry_run_without_firmware_shows_the_mpflash_download(tmp_path, env):
    proc = ww("flash", "--port", "/dev/ttyUSB0", "--board", "esp32-s3-devkitc", "--dry-run", env=env)
    assert proc.returncode == 0, proc.stderr
    cache = tmp_path / "cache" / "wanwitness" / "firmware"
    first = proc.stdout.splitlines()[0]
    assert first.startswith(f"$ MPFLASH_FIRMWARE={cache} ")
    assert first.endswith(f"-x -d {cache} download --board ESP32_GENERIC_S3 --version stable")
    assert proc.stdout.splitlines()[-1].endswith(
        f"write-flash 0x0 {cache}/esp32/ESP32_GENERIC_S3-vVERSION.bin")
    assert not cache.exists()


# --- a full run against a fake chip ------------------------------------------------------

def test_flash_checks_the_chip_then_erases_and_writes(tmp_path, fake_esptool, pty_port):
    fw = tmp_path / "ESP32_GENERIC.bin"
    fw.write_bytes(esp_image(chip_id=0, flash_code=0x20, size=200_000))
    proc = ww("flash", "--port", pty_port, "--board", "esp32-devkitc", "--firmware", str(fw),
              env=fake_esptool)
    assert proc.returncode == 0, proc.stderr
    fake = [sys.executable, fake_esptool["WANWITNESS_ESPTOOL"]]
    base = ["--chip", "esp32", "--port", pty_port, "--baud", "460800"]
    assert calls(fake_esptool) == [
        ["--port", pty_port, "--after", "no-reset", "flash-id"],
        base + ["erase-flash"],
        base + ["write-flash", "0x1000", str(fw)],
    ]
    out = proc.stdout
    assert shown(fake + base + ["erase-flash"]) in out
    assert shown(fake + base + ["write-flash", "0x1000", str(fw)]) in out
    assert "found an ESP32 with 4 MB flash" in out
    # esptool's own progress reaches the user, after our line naming the command
    assert out.index("erase-flash") < out.index("Flash memory erased successfully")
    assert "Hash of data verified." in out
    assert f"wanwitness deploy --port {pty_port}" in out.splitlines()[-1]


def test_a_failed_write_says_the_board_is_erased(tmp_path, fake_esptool, pty_port):
    fw = tmp_path / "fw.bin"
    fw.write_bytes(esp_image(chip_id=9))
    fake_esptool["FAKE_CHIP"] = "ESP32-S3"
    fake_esptool["FAKE_FLASH"] = "8MB"
    fake_esptool["FAKE_FAIL"] = "write-flash"
    proc = ww("flash", "--port", pty_port, "--board", "esp32-s3-devkitc", "--firmware", str(fw),
              env=fake_esptool)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    last = proc.stderr.splitlines()[-1]
    assert last.startswith("wanwitness: esptool failed (exit 2")
    assert "erased but has no MicroPython" in last
    assert steps(fake_esptool) == ["flash-id", "erase-flash", "write-flash"]


# --- refusals before anything is erased ------------------------------------------------

def test_an_unknown_board_profile_lists_the_known_ones(env):
    line = one_line_error(ww("flash", "--port", "/dev/ttyUSB0", "--board", "esp32-devkit", env=env))
    assert "unknown board profile 'esp32-devkit'" in line
    for name in ("esp32-c3-supermini", "esp32-devkitc", "esp32-s3-devkitc"):
        assert name in line


def test_no_such_port(tmp_path, env):
    missing = str(tmp_path / "ttyUSB9")
    line = one_line_error(ww("flash", "--port", missing, "--board", "esp32-devkitc", env=env))
    assert line.startswith(f"wanwitness: no such port {missing}; ")
    assert "ports found" in line or "no serial ports found" in line


def test_a_port_locked_by_another_program_is_busy(fake_esptool, pty_port):
    holder = os.open(pty_port, os.O_RDWR | os.O_NOCTTY)
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what pyserial's exclusive=True does
    try:
        line = one_line_error(ww("flash", "--port", pty_port, "--board", "esp32-devkitc",
                                  env=fake_esptool))
    finally:
        os.close(holder)
    assert line == (f"wanwitness: {pty_port} is in use by another program (close the serial "
                    "monitor / mpremote / `wanwitness console` and try again)")
    assert calls(fake_esptool) == []


def test_a_port_held_open_without_a_lock_names_the_program(fake_esptool, pty_port):
    # A serial monitor like screen opens the port and takes no lock.
    monitor = subprocess.Popen(
        [sys.executable, "-c", "import os, sys, time; os.open(sys.argv[1], os.O_RDWR | os.O_NOCTTY); "
                               "print('open', flush=True); time.sleep(60)", pty_port],
        stdout=subprocess.PIPE, text=True)
    try:
        assert monitor.stdout.readline().strip() == "open"
        line = one_line_error(ww("flash", "--port", pty_port, "--board", "esp32-devkitc",
                                  env=fake_esptool))
    finally:
        monitor.kill()
        monitor.wait()
    assert line.startswith(f"wanwitness: {pty_port} is in use by another program (PID {monitor.pid} ")
    assert calls(fake_esptool) == []


def test_a_port_where_nothing_answers(tmp_path, env, pty_port):
    fw = tmp_path / "fw.bin"
    fw.write_bytes(esp_image(chip_id=0))
    proc = ww("flash", "--port", pty_port, "--board", "esp32-devkitc", "--firmware", str(fw), env=env)
    line = one_line_error(proc)  # the real esptool, which gets no answer: no traceback
    assert line.startswith(f"wanwitness: nothing answered on {pty_port}: ")
    assert "Hold BOOT" in line


@pytest.mark.parametrize("board,image,chip,flash,expected", [
    # another chip than the profile's: the line names the profile to use
    ("esp32-devkitc", esp_image(chip_id=0), "ESP32-C3", "4MB",
     "{port} has an ESP32-C3 but --board esp32-devkitc is for an ESP32; "
     "use --board esp32-c3-supermini"),
    ("esp32-c3-supermini", esp_image(chip_id=5), "ESP32-C6", "4MB",
     "{port} has an ESP32-C6 but --board esp32-c3-supermini is for an ESP32-C3; "
     "no board profile here is for an ESP32-C6 (`wanwitness boards` lists them)"),
    # less flash than MicroPython needs
    ("esp32-devkitc", esp_image(chip_id=0), "ESP32", "2MB",
     "not enough flash: the ESP32 on {port} has 2 MB, MicroPython for the ESP32-DevKitC "
     "needs 4 MB"),
    # an image whose bootloader header says 8MB (a pre-2025 generic S3 build) on 4 MB
    ("esp32-s3-devkitc", esp_image(chip_id=9, flash_code=0x30), "ESP32-S3", "4MB",
     "not enough flash: {fw} is built for 8 MB of flash, the ESP32-S3 on {port} has 4 MB; "
     "use an image built for 4 MB or less"),
])
def test_the_chip_that_answers_must_suit_profile_and_image(tmp_path, fake_esptool, pty_port,
                                                           board, image, chip, flash, expected):
    fw = tmp_path / "fw.bin"
    fw.write_bytes(image)
    fake_esptool.update(FAKE_CHIP=chip, FAKE_FLASH=flash)
    line = one_line_error(ww("flash", "--port", pty_port, "--board", board, "--firmware", str(fw),
                              env=fake_esptool))
    assert line == "wanwitness: " + expected.format(port=pty_port, fw=fw)
    assert steps(fake_esptool) == ["flash-id"]  # asked, and nothing erased


@pytest.mark.parametrize("content,expected", [
    (None, "no such file"),
    (b"\x7fELF" + bytes(100), "is not an ESP32 firmware image"),
    (b"\xe9", "is not an ESP32 firmware image"),
    (esp_image(chip_id=0, app=True), "is an application image without bootloader"),
    (esp_image(chip_id=5), "is built for the ESP32-C3, but --board esp32-devkitc has an ESP32; "
                           "use the ESP32_GENERIC image"),
    (esp_image(chip_id=13), "is built for another chip (image chip id 13)"),
    (esp_image(chip_id=0, size=4 * 1024 * 1024), "is too big: 4194304 bytes from 0x1000 do not fit"),
])
def test_a_bad_firmware_file_is_refused_before_the_port_is_touched(tmp_path, fake_esptool, content,
                                                                   expected):
    fw = tmp_path / "firmware.bin"
    if content is not None:
        fw.write_bytes(content)
    line = one_line_error(ww("flash", "--port", str(tmp_path / "no-port"), "--board", "esp32-devkitc",
                              "--firmware", str(fw), env=fake_esptool))
    assert line.startswith(f"wanwitness: firmware {fw}")
    assert expected in line
    assert calls(fake_esptool) == []


# --- no --firmware: the download --------------------------------------------------------

def fake_mpflash(tmp_path, env, image: bytes) -> dict:
    script = tmp_path / "fake_mpflash.py"
    script.write_text(FAKE_MPFLASH)
    env["WANWITNESS_MPFLASH"] = str(script)
    env["FAKE_IMAGE_HEX"] = image.hex()
    return env


def test_without_internet_and_no_image_it_says_where_to_download(tmp_path, fake_esptool, pty_port):
    env = fake_mpflash(tmp_path, fake_esptool, esp_image(chip_id=5))
    env["FAKE_OFFLINE"] = "1"
    line = one_line_error(ww("flash", "--port", pty_port, "--board", "esp32-c3-supermini", env=env))
    assert line == ("wanwitness: could not download MicroPython for ESP32_GENERIC_C3 (no internet?): "
                    "download the .bin from https://micropython.org/download/ESP32_GENERIC_C3/ "
                    "and pass --firmware FILE")
    assert calls(env) == []  # esptool never ran


def test_without_firmware_the_newest_download_is_written(tmp_path, fake_esptool, pty_port):
    env = fake_mpflash(tmp_path, fake_esptool, esp_image(chip_id=5))
    env["FAKE_CHIP"] = "ESP32-C3"
    proc = ww("flash", "--port", pty_port, "--board", "esp32-c3-supermini", env=env)
    assert proc.returncode == 0, proc.stderr
    cache = tmp_path / "cache" / "wanwitness" / "firmware"
    log = Path(env["FAKE_LOG"]).read_text().splitlines()
    assert log[0] == (f"mpflash -x -d {cache} download --board ESP32_GENERIC_C3 --version stable "
                      f"MPFLASH_FIRMWARE={cache}")
    newest = cache / "esp32" / "ESP32_GENERIC_C3-v1.26.1.bin"
    assert calls(env)[-1][-3:] == ["write-flash", "0x0", str(newest)]


def test_offline_with_an_earlier_download_uses_it(tmp_path, fake_esptool, pty_port):
    env = fake_mpflash(tmp_path, fake_esptool, esp_image(chip_id=9))
    env["FAKE_CHIP"] = "ESP32-S3"
    earlier = tmp_path / "cache" / "wanwitness" / "firmware" / "esp32" / "ESP32_GENERIC_S3-v1.24.1.bin"
    earlier.parent.mkdir(parents=True)
    earlier.write_bytes(esp_image(chip_id=9))
    env["FAKE_OFFLINE"] = "1"
    proc = ww("flash", "--port", pty_port, "--board", "esp32-s3-devkitc", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "using the image downloaded earlier" in proc.stdout
    assert calls(env)[-1][-1] == str(earlier)


# --- reading esptool's answer -------------------------------------------------------------

def test_chip_and_flash_size_from_esptool_4_and_5_output():
    v5 = ("esptool v5.6.0\nConnected to ESP32-S3 on /dev/ttyACM0:\n"
          "Chip type:          ESP32-S3 (QFN56) (revision v0.2)\n\nStub flasher running.\n\n"
          "Flash Memory Information:\n=========================\nManufacturer: c8\nDevice: 4017\n"
          "Detected flash size: 8MB\n")
    v4 = ("esptool.py v4.8.1\nSerial port /dev/ttyUSB0\nConnecting....\n"
          "Detecting chip type... ESP32\nChip is ESP32-D0WD-V3 (revision v3.1)\n"
          "Manufacturer: 20\nDevice: 4016\nDetected flash size: 4MB\n")
    s3, classic = parse_chip_info(v5), parse_chip_info(v4)
    assert (s3.chip, s3.title, s3.flash_bytes) == ("esp32s3", "ESP32-S3", 8 << 20)
    assert (classic.chip, classic.title, classic.flash_bytes) == ("esp32", "ESP32", 4 << 20)
    unknown = parse_chip_info("Connected to ESP32-C3 on COM4:\nDetected flash size: Unknown\n")
    assert (unknown.chip, unknown.flash_bytes) == ("esp32c3", None)
    assert parse_chip_info("A fatal error occurred: Failed to connect") is None
