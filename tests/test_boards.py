"""Board profiles, the pin checks deploy relies on, and the freeze manifest.

The profiles are checked against sources other than wanwitness/boards.py itself: the
virtual board's ADC tables (firmware/boards/virtual/board.py) and esptool's own chip
definitions (bootloader offset, image chip id).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import esptool.targets
import pytest

from wanwitness.boards import profiles as boards
from wanwitness.boards.profiles import check_agent_config, load_profile, profile_names
from wanwitness.errors import UserError

ROOT = Path(__file__).resolve().parent.parent


def virtual_board_adc() -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """ADC_PINS from the virtual board's source (MicroPython code: read, not imported)."""
    tree = ast.parse((ROOT / "wanwitness/firmware/boards/virtual/board.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "ADC_PINS" for t in node.targets):
            return eval(compile(ast.Expression(node.value), "board.py", "eval"),
                        {"__builtins__": {}, "tuple": tuple, "range": range})
    raise AssertionError("ADC_PINS not found in the virtual board")


# --- the profiles ------------------------------------------------------------------------

def test_the_three_profiles_load():
    assert profile_names() == ["esp32-c3-supermini", "esp32-devkitc", "esp32-s3-devkitc"]
    chips = {p.name: (p.chip, p.micropython_board, p.mpy_arch) for p in boards.all_profiles()}
    assert chips == {
        "esp32-c3-supermini": ("esp32c3", "ESP32_GENERIC_C3", "rv32imc"),
        "esp32-devkitc": ("esp32", "ESP32_GENERIC", "xtensawin"),
        "esp32-s3-devkitc": ("esp32s3", "ESP32_GENERIC_S3", "xtensawin"),
    }
    for p in boards.all_profiles():
        assert p.name == p.path.stem
        assert p.attenuation == "ATTN_11DB"  # what agent/app.py sets on every sensor
        assert p.notes


@pytest.mark.parametrize("name", ["esp32-c3-supermini", "esp32-devkitc", "esp32-s3-devkitc"])
def test_every_sensor_pin_is_adc1_on_its_chip(name):
    profile = load_profile(name)
    adc1, adc2 = virtual_board_adc()[profile.chip]
    assert 1 <= len(profile.sensor_pins) <= 4
    assert set(profile.sensor_pins) <= set(profile.adc1_pins) <= set(adc1)
    assert set(profile.adc2_pins) <= set(adc2)
    assert not set(profile.sensor_pins) & set(adc2)
    if profile.status_led:
        assert profile.status_led.pin not in profile.sensor_pins


def test_chip_tables_agree_with_the_virtual_board_and_esptool():
    vboard = virtual_board_adc()
    for name, chip in boards.CHIPS.items():
        assert (chip.adc1, chip.adc2) == vboard[name]
        rom = esptool.targets.CHIP_DEFS[name]
        assert chip.flash_offset == rom.BOOTLOADER_FLASH_OFFSET
        assert chip.image_chip_id == rom.IMAGE_CHIP_ID
        assert chip.title == rom.CHIP_NAME
    for p in boards.all_profiles():
        assert p.flash_offset == esptool.targets.CHIP_DEFS[p.chip].BOOTLOADER_FLASH_OFFSET


def test_a_profile_by_path(tmp_path):
    raw = json.loads((boards.boards_dir() / "esp32-devkitc.json").read_text())
    raw["name"] = "my-devkit"
    raw["sensor_pins"] = [36, 39]
    path = tmp_path / "my-devkit.json"
    path.write_text(json.dumps(raw))
    profile = load_profile(str(path))
    assert (profile.name, profile.sensor_pins) == ("my-devkit", (36, 39))


def test_an_unknown_profile_lists_the_known_ones():
    with pytest.raises(UserError) as e:
        load_profile("esp8266")
    assert str(e.value) == ("unknown board profile 'esp8266'; known profiles: esp32-c3-supermini, "
                            "esp32-devkitc, esp32-s3-devkitc (or give the path of a profile .json)")


@pytest.mark.parametrize("change,field,message", [
    (lambda r: r.pop("chip"), "chip", "missing"),
    (lambda r: r.update(colour="blue"), "colour", "unknown field"),
    (lambda r: r.update(chip="esp8266"), "chip", "expected one of esp32, esp32s2, esp32c3, esp32s3"),
    (lambda r: r.update(flash_offset="0x0"), "flash_offset", "the ESP32's firmware starts at 0x1000"),
    (lambda r: r.update(flash_offset=4096), "flash_offset", "expected a non-empty string"),
    (lambda r: r.update(mpy_arch="rv32imc"), "mpy_arch", "the ESP32 needs 'xtensawin'"),
    (lambda r: r.update(sensor_pins=[32, 25]), "sensor_pins", "GPIO 25 is not in this profile's adc1_pins"),
    (lambda r: r.update(adc1_pins=[32, 33, 34, 35, 36, 39, 12]), "adc1_pins", "GPIO 12 is not an ADC1 pin"),
    (lambda r: r.update(sensor_pins=[32, 33, 34, 35, 36]), "sensor_pins", "expected 1..4 pins"),
    (lambda r: r.update(sensor_pins=[32, 32]), "sensor_pins", "a GPIO is listed twice"),
    (lambda r: r.update(status_led={"pin": 34, "active_low": True}), "sensor_pins",
     "GPIO 34 is the status LED"),
    (lambda r: r.update(status_led={"pin": 2}), "status_led", "active_low: expected true or false"),
    (lambda r: r.update(attenuation="11dB"), "attenuation", "expected one of ATTN_0DB"),
    (lambda r: r.update(baud="fast"), "baud", "expected an integer"),
    (lambda r: r.update(notes="see WIRING.md"), "notes", "expected a list of strings"),
])
def test_a_malformed_profile_names_the_file_and_the_field(tmp_path, change, field, message):
    raw = json.loads((boards.boards_dir() / "esp32-devkitc.json").read_text())
    change(raw)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(UserError) as e:
        load_profile(str(path))
    assert str(e.value).startswith(f"board profile {path}: field {field!r}: ")
    assert message in str(e.value)


def test_a_profile_that_is_not_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"name": "x",')
    with pytest.raises(UserError, match=f"board profile {path}: not valid JSON"):
        load_profile(str(path))


# --- config.json against the board --------------------------------------------------------

def leds(*pins: int) -> dict:
    return {"leds": [{"pin": p, "role": "internet"} for p in pins]}


def test_a_config_on_the_suggested_pins_has_no_problem():
    for p in boards.all_profiles():
        assert check_agent_config(p, leds(*p.sensor_pins)) == []
    assert check_agent_config(load_profile("esp32-devkitc"), {}) == []


@pytest.mark.parametrize("profile,config,problem", [
    ("esp32-devkitc", leds(34, 25),
     "leds[1].pin 25: GPIO 25 is on ADC2, which stops working while Wi-Fi is on; "
     "use one of 32, 33, 34, 35 (ADC1)"),
    ("esp32-devkitc", leds(21),
     "leds[0].pin 21: GPIO 21 has no ADC on the ESP32; use one of 32, 33, 34, 35"),
    ("esp32-devkitc", leds(37),
     "leds[0].pin 37: GPIO 37 is on ADC1 but not on the ESP32-DevKitC's pin headers; "
     "use one of 32, 33, 34, 35"),
    ("esp32-devkitc", leds(34, 35, 34),
     "leds[2].pin 34: GPIO 34 is already used by leds[0]"),
    ("esp32-devkitc", leds(32, 33, 34, 35, 36),
     "leds: 5 LED sensors, the agent reads at most 4"),
    ("esp32-c3-supermini", leds(0, 8),
     "leds[1].pin 8: GPIO 8 drives the ESP32-C3 SuperMini's status LED; use one of 0, 1, 3, 4"),
    ("esp32-c3-supermini", leds(5),
     "leds[0].pin 5: GPIO 5 is on ADC2, which stops working while Wi-Fi is on; "
     "use one of 0, 1, 3, 4 (ADC1)"),
    ("esp32-s3-devkitc", leds(4, 48),
     "leds[1].pin 48: GPIO 48 drives the ESP32-S3-DevKitC-1's status LED; use one of 4, 5, 6, 7"),
    ("esp32-s3-devkitc", leds(12),
     "leds[0].pin 12: GPIO 12 is on ADC2, which stops working while Wi-Fi is on; "
     "use one of 4, 5, 6, 7 (ADC1)"),
    ("esp32-s3-devkitc", {"leds": [{"pin": "4"}]}, "leds[0].pin: expected a GPIO number"),
    ("esp32-s3-devkitc", {"leds": {"pin": 4}}, 'leds: expected a list of {"pin": N, "role": ...} objects'),
])
def test_check_agent_config_names_each_problem(profile, config, problem):
    assert check_agent_config(load_profile(profile), config) == [problem]


def test_every_problem_is_reported_not_only_the_first():
    problems = check_agent_config(load_profile("esp32-devkitc"), leds(25, 25, 21, 34, 37))
    assert [p.split(":")[0] for p in problems] == [
        "leds", "leds[0].pin 25", "leds[1].pin 25", "leds[2].pin 21", "leds[4].pin 37"]


# --- `wanwitness boards` ------------------------------------------------------------------

def test_boards_command_lists_each_profile_with_its_sensor_pins():
    env = {k: v for k, v in os.environ.items() if k != "WANWITNESS_CONFIG"}
    proc = subprocess.run([sys.executable, "-m", "wanwitness", "boards"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()[1:] if line.strip()}
    for p in boards.all_profiles():
        assert p.title in rows[p.name]
        assert ", ".join(map(str, p.sensor_pins)) in rows[p.name]
    assert rows["esp32-devkitc"].rstrip().endswith("none")
    assert rows["esp32-c3-supermini"].rstrip().endswith("GPIO 8 (lit when low)")


def test_the_wiring_guide_pin_table_matches_the_profiles():
    rows = {}
    for line in (ROOT / "wanwitness" / "firmware" / "WIRING.md").read_text().splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0].strip("`")] = cells
    assert sorted(rows) == profile_names()
    for p in boards.all_profiles():
        assert rows[p.name][1] == p.title
        assert rows[p.name][2:6] == [f"GPIO {pin}" for pin in p.sensor_pins]
        led = rows[p.name][6]
        assert led.startswith(f"GPIO {p.status_led.pin}") if p.status_led else led.startswith("none")


# --- the freeze manifest ------------------------------------------------------------------

def run_manifest(manifest: Path) -> tuple[list[str], list[Path]]:
    """Execute a MicroPython manifest with stub functions, in its own directory as
    MicroPython's tools/manifestfile.py does; -> (includes, files frozen)."""
    includes: list[str] = []
    frozen: list[Path] = []

    def include(path, **kwargs):
        includes.append(path)

    def module(module_path, base_path=".", opt=None):
        frozen.append((manifest.parent / base_path / module_path).resolve())

    def package(package_path, files=None, base_path=".", opt=None):
        root = manifest.parent / base_path
        for f in files or [p.relative_to(root / package_path) for p in (root / package_path).rglob("*.py")]:
            frozen.append((root / package_path / f).resolve())

    def freeze(path, script=None, opt=None):
        scripts = [script] if isinstance(script, str) else script or []
        for s in scripts:
            frozen.append((manifest.parent / path / s).resolve())

    exec(compile(manifest.read_text(), str(manifest), "exec"),
         {"include": include, "module": module, "package": package, "freeze": freeze,
          "require": lambda *a, **k: None, "metadata": lambda **k: None,
          "options": None})
    return includes, frozen


def not_frozen(root: Path) -> list[str]:
    """Agent modules the manifest under root/firmware leaves out (main.py stays out)."""
    _, frozen = run_manifest(root / "firmware" / "manifest.py")
    agent = {p.resolve() for p in (root / "agent").glob("*.py") if p.name != "main.py"}
    return sorted(p.name for p in agent - set(frozen))


def test_the_manifest_freezes_every_agent_module_but_main():
    includes, frozen = run_manifest(ROOT / "wanwitness" / "firmware" / "manifest.py")
    assert includes[0] == "$(PORT_DIR)/boards/manifest.py"
    assert not_frozen(ROOT / "wanwitness") == []
    for path in frozen:
        assert path.is_file(), f"the manifest names {path}, which does not exist"
    assert (ROOT / "wanwitness" / "agent" / "main.py").resolve() not in frozen
    assert (ROOT / "wanwitness" / "firmware" / "boot.py").resolve() in frozen
    assert len(frozen) == len(set(frozen))


def test_a_new_agent_module_not_in_the_manifest_is_caught(tmp_path):
    shutil.copytree(ROOT / "wanwitness" / "agent", tmp_path / "agent")
    (tmp_path / "firmware").mkdir()
    shutil.copy(ROOT / "wanwitness" / "firmware" / "manifest.py", tmp_path / "firmware" / "manifest.py")
    shutil.copy(ROOT / "wanwitness" / "firmware" / "boot.py", tmp_path / "firmware" / "boot.py")
    assert not_frozen(tmp_path) == []
    (tmp_path / "agent" / "sensors2.py").write_text("# a new module\n")
    assert not_frozen(tmp_path) == ["sensors2.py"]


# --- the board's config.json, checked with the agent's own rules -----------------------

def test_deploy_refuses_what_the_agent_would_complain_about_before_touching_the_port(tmp_path):
    from wanwitness.boards.deploy import deploy
    from wanwitness.collector.agents import board_config, write_board_config
    conf = board_config("kitchen", "pw", broker_host="192.0.2.10", broker_port=1883, hb_s=30,
                        wifi_ssid="home", wifi_password="x")
    conf["hb_s"] = 2          # below the agent's minimum
    conf["led"] = []          # a typo for "leds"
    path = tmp_path / "kitchen.config.json"
    write_board_config(path, conf)
    with pytest.raises(UserError) as e:
        deploy(str(tmp_path / "no-such-port"), "kitchen", path, log=lambda _line: None)
    text = str(e.value)
    assert str(path) in text and "hb_s:" in text and "led: unknown key" in text
    assert "no-such-port" not in text   # refused before the port was opened


def test_a_config_agent_add_writes_has_no_problem():
    from wanwitness.boards.board_config import problems
    from wanwitness.collector.agents import board_config
    conf = board_config("kitchen", "pw", broker_host="192.0.2.10", broker_port=1883, hb_s=30,
                        wifi_ssid="", wifi_password="")
    assert problems(conf) == []
    assert problems({"id": "Kitchen!"}) == [
        ("id", "not a valid agent id (1-32 of a-z 0-9 - _)"),
        ("id", "missing: the agent cannot report without its id"),
        ("broker.host", "missing: the agent cannot report without a broker")]


def test_a_wrong_board_names_the_profile_and_the_cli_names_its_option(tmp_path):
    from wanwitness.boards.flash import check_image
    from wanwitness.boards.profiles import WrongBoard
    image = tmp_path / "c3.bin"
    head = bytearray(64)
    head[0], head[12] = 0xE9, 5               # an ESP32-C3 image (chip id 5)
    image.write_bytes(bytes(head) + bytes(4096))
    with pytest.raises(WrongBoard) as e:
        check_image(image, load_profile("esp32-devkitc"))
    assert "but the profile esp32-devkitc has an ESP32" in str(e.value) and "--" not in str(e.value)
    assert "but --board esp32-devkitc has an ESP32" in e.value.for_option("--board")


def test_agent_add_configs_are_found_in_the_data_dir_or_where_earlier_versions_wrote_them(
        tmp_path, monkeypatch):
    from wanwitness.collector.agents import board_config_path, find_board_config
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    new = board_config_path("kitchen")
    assert new == tmp_path / "data" / "wanwitness" / "agents" / "kitchen.config.json"
    assert find_board_config("kitchen") == new                 # neither exists: the new place
    (tmp_path / "kitchen.config.json").write_text("{}")
    assert find_board_config("kitchen").resolve() == tmp_path / "kitchen.config.json"
    new.parent.mkdir(parents=True)
    new.write_text("{}")
    assert find_board_config("kitchen") == new                 # the data dir wins
