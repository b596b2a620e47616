# The virtual board's shared state (MicroPython, unix port only).
#
# Two files connect the virtual board to the world (README.md in this folder):
# - the control file (env WANWITNESS_VBOARD_CONTROL), written by a test, the lab or a
#   person: the light on each ADC pin, digital inputs, the Wi-Fi link. It is re-read
#   when its inode/size/mtime change, checked at most every CHECK_MS.
# - the board state file (env WANWITNESS_VBOARD_STATE): what a real ESP32 keeps outside
#   the CPU across resets: the reset cause of the next boot, RTC memory and RTC time
#   (both lost on a power cut), and the board's MAC / unique id.
# machine.py and network.py read everything through this module.
import json
import os
import random
import time
from micropython import const
from time import ticks_diff, ticks_ms

CHECK_MS = 50  # a module variable, not const(): tests raise it to measure allocations

# Reset causes, numbered as the esp32 port numbers them (ports/esp32/modmachine.h).
PWRON_RESET = const(1)
HARD_RESET = const(2)
WDT_RESET = const(3)
DEEPSLEEP_RESET = const(4)
SOFT_RESET = const(5)
CAUSES = {"PWRON_RESET": 1, "HARD_RESET": 2, "WDT_RESET": 3, "DEEPSLEEP_RESET": 4,
          "SOFT_RESET": 5}
CAUSE_NAMES = ("", "PWRON_RESET", "HARD_RESET", "WDT_RESET", "DEEPSLEEP_RESET", "SOFT_RESET")

# Exit statuses of the micropython process; wanwitness/virtual.py reads them.
# A watchdog reset is not a status: the process dies of SIGUSR1 (see machine.WDT).
EXIT_HALT = const(0)          # main.py returned, no watchdog running: idle at the REPL
EXIT_CRASH = const(1)         # uncaught exception (MicroPython's own status)
EXIT_HARD_RESET = const(90)   # machine.reset()
EXIT_SOFT_RESET = const(91)   # machine.soft_reset()
EXIT_DEEPSLEEP = const(92)    # machine.deepsleep() ended
EXIT_FLASH_ERROR = const(93)  # the flash image could not be mounted

RTC_EPOCH_US = 946684800000000  # 2000-01-01T00:00:00Z: an ESP32 RTC after power-on

# Pattern kinds in a parsed ADC spec: (kind, on, off, a, b, noise)
#   LEVEL:   on = the level
#   BLINK:   a = period_ms, b = ms lit per period
#   FLICKER: a = ms per pulse slot (1000 / rate_hz), b = pulse_ms
K_LEVEL = const(0)
K_BLINK = const(1)
K_FLICKER = const(2)
K_HANG = const(3)
DARK = (0, 0, 0, 1, 0, 0)

# ADC1 / ADC2 GPIOs per chip (esp32 quickref; ESP-IDF adc_channel.h). ADC2 shares the
# radio: reading it while Wi-Fi is active fails on a real board, and here too.
ADC_PINS = {
    "esp32": ((32, 33, 34, 35, 36, 37, 38, 39), (0, 2, 4, 12, 13, 14, 15, 25, 26, 27)),
    "esp32c3": ((0, 1, 2, 3, 4), (5,)),
    "esp32s2": (tuple(range(1, 11)), tuple(range(11, 21))),
    "esp32s3": (tuple(range(1, 11)), tuple(range(11, 21))),
}

control_path = None
state_path = None
chip = "esp32"
control = {}     # the parsed control file ({} when there is none)
gen = 0          # +1 on every control change; ADC objects re-fetch their spec on a change
adc = {}         # pin -> parsed spec tuple
pins = {}        # pin -> 0/1 for digital inputs
wifi_active = False   # set by network.WLAN(STA_IF).active(); ADC2 is unusable then
wifi_changed = 0      # ticks when the control's "wifi" last changed (network.py's beacon timeout)
cause = PWRON_RESET   # this boot's reset cause
state = {}            # the board state file's content
_checked = 0
_sig_ino = -1
_sig_size = -1
_sig_mtime = -1


def _abspath(p):
    # run.py chdirs into the mounted flash: resolve relative paths first
    if p and not p.startswith("/"):
        cwd = os.getcwd()
        p = (cwd if cwd.endswith("/") else cwd + "/") + p
    return p


def warn(msg):
    print("virtual board:", msg)


# --- the board state file ------------------------------------------------------------

def _load_state():
    if not state_path:
        return {}
    try:
        with open(state_path) as f:
            st = json.load(f)
        return st if isinstance(st, dict) else {}
    except OSError:
        return {}
    except ValueError:
        warn("state file %s is not JSON: starting as after a power cut" % state_path)
        return {}


def save_state(suffix=".tmp"):
    # Written whole and renamed into place, so a reset mid-write leaves the old file.
    # The watchdog thread passes its own suffix: the two never share a temp file.
    if not state_path:
        return
    tmp = state_path + suffix
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.rename(tmp, state_path)


def next_reset(c, suffix=".tmp"):
    """Record the reset cause the next boot reports (what the ESP32 keeps in RTC)."""
    state["next_reset"] = CAUSE_NAMES[c]
    save_state(suffix)


def boot():
    """Start of a boot: read the state file; a power-on clears RTC memory and time."""
    global cause, state
    state = _load_state()
    cause = CAUSES.get(state.get("next_reset"), PWRON_RESET)
    now_us = time.time_ns() // 1000
    if cause == PWRON_RESET:
        state["rtc_memory"] = ""
        state["rtc_offset_us"] = RTC_EPOCH_US - now_us
    elif not isinstance(state.get("rtc_offset_us"), int):
        state["rtc_offset_us"] = RTC_EPOCH_US - now_us
    if not isinstance(state.get("unique_id"), str) or len(state["unique_id"]) != 12:
        b = bytearray(os.urandom(6))
        b[0] = (b[0] & 0xFC) | 0x02  # a locally administered unicast MAC
        state["unique_id"] = bytes(b).hex()
    state["boots"] = state.get("boots", 0) + 1 if isinstance(state.get("boots"), int) else 1
    state["last_reset"] = CAUSE_NAMES[cause]
    # Until something else is recorded, the board ending means the power went away.
    state["next_reset"] = "PWRON_RESET"
    save_state()


# --- the control file ----------------------------------------------------------------

def _int(d, key, default, lo, hi, where):
    v = d.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or v < lo or v > hi:
        raise ValueError("%s: %s must be an integer %d..%d" % (where, key, lo, hi))
    return v


def parse_adc(d, where="adc"):
    """A control entry for one pin -> (kind, on, off, a, b, noise); raises ValueError."""
    if isinstance(d, int) and not isinstance(d, bool):
        d = {"level": d}
    if not isinstance(d, dict):
        raise ValueError(where + ": must be an object")
    noise = _int(d, "noise", 0, 0, 32767, where)
    pat = d.get("pattern", "level" if "level" in d else None)
    if pat == "hang":
        # A sensor or bus that never answers: read_u16() blocks for good (a hung task).
        return (K_HANG, 0, 0, 1, 0, 0)
    if pat == "level":
        v = _int(d, "level", 0, 0, 65535, where)
        return (K_LEVEL, v, v, 1, 0, noise)
    on = _int(d, "on", 52000, 0, 65535, where)
    off = _int(d, "off", 3000, 0, 65535, where)
    if pat == "blink":
        period = _int(d, "period_ms", 1000, 2, 3600000, where)
        duty = _int(d, "duty_pct", 50, 0, 100, where)
        return (K_BLINK, on, off, period, period * duty // 100, noise)
    if pat == "flicker":
        pulse = _int(d, "pulse_ms", 50, 1, 60000, where)
        rate = d.get("rate_hz", 5)
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or rate < 0 or rate > 500:
            raise ValueError(where + ": rate_hz must be a number 0..500")
        if rate == 0:
            return (K_LEVEL, on, on, 1, 0, noise)
        slot = int(1000 / rate)
        if pulse >= slot:
            raise ValueError(where + ": pulse_ms must be shorter than 1000 / rate_hz")
        return (K_FLICKER, on, off, slot, pulse, noise)
    raise ValueError(where + ": needs \"level\" or \"pattern\": \"blink\" | \"flicker\" | \"hang\"")


def _apply(c):
    global control, adc, pins, gen, wifi_changed
    new_adc = {}
    new_pins = {}
    src = c.get("adc")
    if not isinstance(src, dict):
        src = {}
    entries = list(src.items())
    for k, v in c.items():  # pin numbers at the top level are accepted too
        if isinstance(k, str) and k.isdigit():
            entries.append((k, v))
    for k, v in entries:
        try:
            new_adc[int(k)] = parse_adc(v, "control adc pin " + str(k))
        except ValueError as e:
            warn("%s (pin ignored)" % e)
    src = c.get("pins")
    if isinstance(src, dict):
        for k, v in src.items():
            if isinstance(k, str) and k.isdigit() and v in (0, 1):
                new_pins[int(k)] = int(v)
    if c.get("wifi", "up") != control.get("wifi", "up"):
        wifi_changed = ticks_ms()
    control = c
    adc = new_adc
    pins = new_pins
    gen += 1


def reload():
    """Re-read the control file if it changed (new inode, size or mtime)."""
    global _sig_ino, _sig_size, _sig_mtime
    if not control_path:
        return
    try:
        s = os.stat(control_path)
    except OSError:
        if _sig_ino != -2:
            _sig_ino = -2
            _apply({})
        return
    if s[1] == _sig_ino and s[6] == _sig_size and s[8] == _sig_mtime:
        return
    _sig_ino = s[1]
    _sig_size = s[6]
    _sig_mtime = s[8]
    try:
        with open(control_path) as f:
            c = json.load(f)
        if not isinstance(c, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        # A half-written file: keep the last good control; a rename brings a new inode
        warn("control file %s unreadable (%s): keeping the previous one" % (control_path, e))
        return
    _apply(c)


def poll():
    """Cheap enough for every ADC read: a ticks compare, a stat every CHECK_MS."""
    global _checked
    now = ticks_ms()
    if ticks_diff(now, _checked) >= CHECK_MS:
        _checked = now
        try:
            reload()
        except MemoryError:  # heap locked by the caller: keep the cached control
            pass


def level(spec, now):
    """The ADC reading (0..65535) of a parsed spec at ticks `now`. Allocation-free."""
    k = spec[0]
    if k == K_BLINK:
        v = spec[1] if now % spec[3] < spec[4] else spec[2]
    elif k == K_FLICKER:
        # One pulse per slot at a pseudo-random offset: `rate_hz` pulses a second with
        # the jitter of real traffic, the same value for the same ms (no state).
        slot = now // spec[3]
        # h = bits 12..30 of (slot mod 2^20) * 1103515245 + 12345, worked out in 15-bit
        # halves (x = hi * 2^15 + lo; 1103515245 = 33676 * 2^15 + 20077, 33676 = 2^15 +
        # 908) so that every product stays a small int on a 32-bit port (< 2^30).
        lo = slot & 0x7FFF
        hi = (slot >> 15) & 0x1F
        p = lo * 20077 + 12345
        hi = ((p >> 15) + hi * 20077 + (lo * 908 & 0xFFFF)
              + ((lo & 1) << 15)) & 0xFFFF
        h = ((hi << 3) | ((p & 0x7FFF) >> 12)) & 0x7FFFF
        pos = now - slot * spec[3] - h % (spec[3] - spec[4] + 1)
        v = spec[2] if 0 <= pos < spec[4] else spec[1]
    else:
        v = spec[1]
    n = spec[5]
    if n:
        v += random.getrandbits(16) % (2 * n + 1) - n
        if v < 0:
            v = 0
        elif v > 65535:
            v = 65535
    return v


def adc_spec(pin):
    return adc.get(pin, DARK)


def firmware():
    """`firmware` in the control file as 100 * major + minor (default 1.28: 128)."""
    v = str(control.get("firmware", "1.28")).split(".")
    try:
        return int(v[0]) * 100 + int(v[1])
    except (ValueError, IndexError):
        return 128


def adc_pin_kind(pin):
    """1 for an ADC1 pin, 2 for ADC2, 0 for a pin with no ADC on this chip."""
    a1, a2 = ADC_PINS.get(chip, ADC_PINS["esp32"])
    return 1 if pin in a1 else 2 if pin in a2 else 0


def setup(control_file=None, state_file=None, chip_name=None):
    """(Re)start the board on these files: what a boot does. Tests call it directly."""
    global control_path, state_path, chip, _checked, _sig_ino, _sig_size, _sig_mtime
    control_path = _abspath(control_file)
    state_path = _abspath(state_file)
    chip = chip_name or "esp32"
    if chip not in ADC_PINS:
        warn("unknown chip %r, using esp32" % chip)
        chip = "esp32"
    _sig_ino = _sig_size = _sig_mtime = -1
    _apply({})
    reload()
    _checked = ticks_ms()
    boot()


setup(os.getenv("WANWITNESS_VBOARD_CONTROL"), os.getenv("WANWITNESS_VBOARD_STATE"),
      os.getenv("WANWITNESS_VBOARD_CHIP"))
