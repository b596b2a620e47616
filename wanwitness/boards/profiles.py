"""Board profiles (firmware/boards/*.json): which chip, which pins, how to flash it.

A profile names the GPIOs a board breaks out to its pin headers. The chip tables below
say what the silicon can do; a profile is checked against them when it is loaded, so a
hand-written profile with an ADC2 sensor pin or the wrong flash offset is refused
before anything touches a board.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wanwitness.errors import UserError
from wanwitness.resources import firmware_dir


class WrongBoard(UserError):
    """A board or a firmware image that does not fit the chosen profile. The message
    says "the profile NAME"; `for_option("--board")` says how the user chose it."""

    BOARD, ADVICE = "\x00board\x00", "\x00advice\x00"

    def __init__(self, template: str, profile: str, suggest: list[str] | None = None,
                 otherwise: str = ""):
        # template: the message with BOARD (where the profile is named) and ADVICE
        self.template, self.profile = template, profile
        self.suggest, self.otherwise = list(suggest or []), otherwise
        super().__init__(self._render("the profile "))

    def _render(self, naming: str) -> str:
        advice = ("use " + " or ".join(naming + name for name in self.suggest)
                  if self.suggest else self.otherwise)
        return (self.template.replace(self.BOARD, naming + self.profile)
                .replace(self.ADVICE, advice))

    def for_option(self, option: str) -> str:
        return self._render(option + " ")

def boards_dir() -> Path:
    """The shipped board profiles (package data: wanwitness/firmware/boards/*.json)."""
    return firmware_dir() / "boards"

MAX_LEDS = 4  # the agent samples every sensor every ~20 ms; four fit the budget (docs/agent.md)


@dataclass(frozen=True)
class Chip:
    title: str                  # as esptool names it ("Connected to ESP32-C3 on ...")
    adc1: tuple[int, ...]       # GPIOs on ADC1: usable while Wi-Fi is on
    adc2: tuple[int, ...]       # GPIOs on ADC2: shared with the radio, fails while Wi-Fi is on
    mpy_arch: str               # mpy-cross -march
    image_chip_id: int          # chip id in an ESP image's extended header (esptool IMAGE_CHIP_ID)
    flash_offset: int           # where the bootloader, and so MicroPython's firmware.bin, starts


# ADC GPIOs: MicroPython esp32 quickref and ESP-IDF adc_channel.h (the same tables as the
# virtual board's firmware/boards/virtual/board.py). Chip ids and bootloader offsets:
# esptool targets/*.py (IMAGE_CHIP_ID, BOOTLOADER_FLASH_OFFSET).
CHIPS: dict[str, Chip] = {
    "esp32": Chip("ESP32", tuple(range(32, 40)), (0, 2, 4, 12, 13, 14, 15, 25, 26, 27),
                  "xtensawin", 0, 0x1000),
    "esp32s2": Chip("ESP32-S2", tuple(range(1, 11)), tuple(range(11, 21)), "xtensawin", 2, 0x1000),
    "esp32c3": Chip("ESP32-C3", (0, 1, 2, 3, 4), (5,), "rv32imc", 5, 0x0),
    "esp32s3": Chip("ESP32-S3", tuple(range(1, 11)), tuple(range(11, 21)), "xtensawin", 9, 0x0),
}

# machine.ADC attenuations (MicroPython esp32 quickref: 0 dB 100-950 mV ... 11 dB 150-2450 mV).
ATTENUATIONS = ("ATTN_0DB", "ATTN_2_5DB", "ATTN_6DB", "ATTN_11DB")
STATUS_LED_KINDS = ("gpio", "ws2812")  # a plain LED on a pin, or an addressable RGB LED


@dataclass(frozen=True)
class StatusLed:
    pin: int
    active_low: bool
    kind: str = "gpio"


@dataclass(frozen=True)
class BoardProfile:
    name: str
    title: str
    chip: str
    mpy_arch: str
    micropython_board: str
    flash_offset: int
    min_flash_bytes: int
    adc1_pins: tuple[int, ...]
    adc2_pins: tuple[int, ...]
    sensor_pins: tuple[int, ...]
    attenuation: str
    attenuation_why: str
    status_led: StatusLed | None
    baud: int
    notes: tuple[str, ...]
    path: Path

    @property
    def chip_title(self) -> str:
        return CHIPS[self.chip].title


def profile_names() -> list[str]:
    return sorted(p.stem for p in boards_dir().glob("*.json"))


def all_profiles() -> list[BoardProfile]:
    return [load_profile(name) for name in profile_names()]


def load_profile(name_or_path: str | Path) -> BoardProfile:
    """A profile by name (`esp32-devkitc`) or by the path of a profile .json file."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith(".json") or "/" in text or "\\" in text):
        path = boards_dir() / f"{text}.json"
    if not path.is_file():
        known = ", ".join(profile_names())
        raise UserError(f"unknown board profile {text!r}; known profiles: {known} "
                        "(or give the path of a profile .json)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"board profile {path}: cannot read it: {e}") from None
    except ValueError as e:
        raise UserError(f"board profile {path}: not valid JSON: {e}") from None
    return _parse(raw, path)


_FIELDS = ("name", "title", "chip", "mpy_arch", "micropython_board", "flash_offset",
           "min_flash_bytes", "adc1_pins", "adc2_pins", "sensor_pins", "attenuation",
           "attenuation_why", "status_led", "baud", "notes")


def _parse(raw: object, path: Path) -> BoardProfile:
    def bad(field: str, message: str) -> UserError:
        return UserError(f"board profile {path}: field {field!r}: {message}")

    if not isinstance(raw, dict):
        raise UserError(f"board profile {path}: expected a JSON object")
    for key in raw:
        if key not in _FIELDS:
            raise bad(key, "unknown field")
    for key in _FIELDS:
        if key not in raw:
            raise bad(key, "missing")

    def text(field: str) -> str:
        v = raw[field]
        if not isinstance(v, str) or not v.strip():
            raise bad(field, "expected a non-empty string")
        return v

    def integer(field: str, v: object, lo: int, hi: int) -> int:
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise bad(field, f"expected an integer {lo}..{hi}, got {v!r}")
        return v

    def pins(field: str, allowed: tuple[int, ...], what: str) -> tuple[int, ...]:
        v = raw[field]
        if not isinstance(v, list):
            raise bad(field, "expected a list of GPIO numbers")
        out = tuple(integer(field, p, 0, 48) for p in v)
        wrong = [p for p in out if p not in allowed]
        if wrong:
            raise bad(field, f"GPIO {wrong[0]} is not {what} on the {chip.title}")
        if len(set(out)) != len(out):
            raise bad(field, "a GPIO is listed twice")
        return out

    chip_name = text("chip")
    if chip_name not in CHIPS:
        raise bad("chip", f"expected one of {', '.join(CHIPS)}, got {chip_name!r}")
    chip = CHIPS[chip_name]
    if raw["mpy_arch"] != chip.mpy_arch:
        raise bad("mpy_arch", f"the {chip.title} needs {chip.mpy_arch!r}")
    offset_text = text("flash_offset")
    try:
        offset = int(offset_text, 16)
    except ValueError:
        raise bad("flash_offset", f"expected a hex address like \"0x1000\", got {offset_text!r}") from None
    if offset != chip.flash_offset:
        raise bad("flash_offset", f"the {chip.title}'s firmware starts at {chip.flash_offset:#x}")
    adc1 = pins("adc1_pins", chip.adc1, "an ADC1 pin")
    adc2 = pins("adc2_pins", chip.adc2, "an ADC2 pin")
    sensors = pins("sensor_pins", adc1, "in this profile's adc1_pins")
    if not 1 <= len(sensors) <= MAX_LEDS:
        raise bad("sensor_pins", f"expected 1..{MAX_LEDS} pins")
    attenuation = text("attenuation")
    if attenuation not in ATTENUATIONS:
        raise bad("attenuation", f"expected one of {', '.join(ATTENUATIONS)}")
    status_led = _status_led(raw["status_led"], bad)
    if status_led and status_led.pin in sensors:
        raise bad("sensor_pins", f"GPIO {status_led.pin} is the status LED")
    notes = raw["notes"]
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise bad("notes", "expected a list of strings")
    return BoardProfile(
        name=text("name"), title=text("title"), chip=chip_name, mpy_arch=chip.mpy_arch,
        micropython_board=text("micropython_board"), flash_offset=offset,
        min_flash_bytes=integer("min_flash_bytes", raw["min_flash_bytes"], 1 << 20, 1 << 30),
        adc1_pins=adc1, adc2_pins=adc2, sensor_pins=sensors, attenuation=attenuation,
        attenuation_why=text("attenuation_why"), status_led=status_led,
        baud=integer("baud", raw["baud"], 9600, 5_000_000), notes=tuple(notes), path=path)


def _status_led(v: object, bad: Callable[[str, str], UserError]) -> StatusLed | None:
    if v is None:
        return None
    if not isinstance(v, dict) or set(v) - {"pin", "active_low", "kind"}:
        raise bad("status_led", 'expected null or {"pin": N, "active_low": true|false, "kind": "gpio"|"ws2812"}')
    pin, low, kind = v.get("pin"), v.get("active_low"), v.get("kind", "gpio")
    if not isinstance(pin, int) or isinstance(pin, bool) or not 0 <= pin <= 48:
        raise bad("status_led", "pin: expected a GPIO number")
    if not isinstance(low, bool):
        raise bad("status_led", "active_low: expected true or false")
    if kind not in STATUS_LED_KINDS:
        raise bad("status_led", f"kind: expected one of {', '.join(STATUS_LED_KINDS)}")
    return StatusLed(pin, low, kind)


def check_agent_config(profile: BoardProfile, config: dict) -> list[str]:
    """What is wrong with config.json's `leds` on this board: one line per problem.

    `wanwitness deploy` refuses a config with a problem: on the board a wrong pin
    would only show up as a sensor that never sees the LED.
    """
    chip = CHIPS[profile.chip]
    leds = config.get("leds", [])
    if not isinstance(leds, list):
        return ["leds: expected a list of {\"pin\": N, \"role\": ...} objects"]
    problems: list[str] = []
    use = f"use one of {', '.join(map(str, profile.sensor_pins))}"
    if len(leds) > MAX_LEDS:
        problems.append(f"leds: {len(leds)} LED sensors, the agent reads at most {MAX_LEDS}")
    seen: dict[int, int] = {}
    for i, led in enumerate(leds):
        key = f"leds[{i}].pin"
        pin = led.get("pin") if isinstance(led, dict) else None
        if not isinstance(pin, int) or isinstance(pin, bool):
            problems.append(f"{key}: expected a GPIO number")
            continue
        where = f"{key} {pin}: GPIO {pin}"
        if pin in seen:
            problems.append(f"{where} is already used by leds[{seen[pin]}]")
            continue
        seen[pin] = i
        if profile.status_led and pin == profile.status_led.pin:
            problems.append(f"{where} drives the {profile.title}'s status LED; {use}")
        elif pin in chip.adc2:
            problems.append(f"{where} is on ADC2, which stops working while Wi-Fi is on; "
                            f"{use} (ADC1)")
        elif pin in chip.adc1 and pin not in profile.adc1_pins:
            problems.append(f"{where} is on ADC1 but not on the {profile.title}'s pin headers; {use}")
        elif pin not in chip.adc1:
            problems.append(f"{where} has no ADC on the {chip.title}; {use}")
    return problems
