# `machine` for the virtual board: the ESP32 API subset the agent uses, on the
# MicroPython unix port. On MICROPYPATH this file shadows the built-in `machine`.
# Light levels and digital inputs come from the control file, reset cause and RTC
# from the board state file (board.py; the interface is in README.md).
import sys
import time

import _thread
import gc
import os
import micropython
from micropython import const
from time import ticks_diff, ticks_ms

import board

# The built-in unix `machine` (mem8, Signal, idle, ...): import it with our own
# directory off the path, then re-export what it has.
_path = sys.path[:]
sys.path.clear()
try:
    import machine as _builtin
except ImportError:
    _builtin = None
finally:
    sys.path.extend(_path)
    del _path
for _n in ("mem8", "mem16", "mem32", "Signal", "time_pulse_us"):
    if _builtin is not None and hasattr(_builtin, _n):
        globals()[_n] = getattr(_builtin, _n)

PWRON_RESET = const(1)
HARD_RESET = const(2)
WDT_RESET = const(3)
DEEPSLEEP_RESET = const(4)
SOFT_RESET = const(5)

_freq = 160000000


def reset_cause():
    return board.cause


def reset():
    """Like esp_restart(): the next boot reports HARD_RESET (as the esp32 port does)."""
    board.next_reset(HARD_RESET)
    sys.exit(board.EXIT_HARD_RESET)


def soft_reset():
    board.next_reset(SOFT_RESET)
    sys.exit(board.EXIT_SOFT_RESET)


def deepsleep(ms=0):
    """The chip is off while it sleeps (the watchdog too); it wakes with a reset."""
    _wdt[2] = 0
    board.next_reset(DEEPSLEEP_RESET)
    if ms:
        time.sleep_ms(ms)
    else:
        while True:  # no wake source on the virtual board: sleep until power-off
            time.sleep(3600)
    sys.exit(board.EXIT_DEEPSLEEP)


def lightsleep(ms=0):
    time.sleep_ms(ms)


sleep = lightsleep


def idle():
    time.sleep_ms(0)


def unique_id():
    return bytes.fromhex(board.state["unique_id"])


def freq(hz=None):
    global _freq
    if hz is None:
        return _freq
    if hz not in (20000000, 40000000, 80000000, 160000000, 240000000):
        raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")
    _freq = hz


def disable_irq():
    return 0


def enable_irq(state=0):
    pass


class Pin:
    IN = const(1)
    OUT = const(3)
    OPEN_DRAIN = const(7)
    PULL_UP = const(2)
    PULL_DOWN = const(1)
    PULL_HOLD = const(4)
    IRQ_RISING = const(1)
    IRQ_FALLING = const(2)
    WAKE_LOW = const(4)
    WAKE_HIGH = const(5)

    def __init__(self, id, mode=-1, pull=-1, value=None, **kw):
        if not isinstance(id, int) or id < 0 or id > 48:
            raise ValueError("invalid pin")
        self._id = id
        self._mode = self.IN
        self._pull = None
        self._out = 0
        self.init(mode, pull, value)

    def init(self, mode=-1, pull=-1, value=None, **kw):
        if mode != -1 and mode is not None:
            self._mode = mode
        if pull != -1:
            self._pull = pull
        if value is not None:
            self._out = 1 if value else 0

    def value(self, x=None):
        if x is not None:
            self._out = 1 if x else 0
            return None
        if self._mode == self.OUT:
            return self._out
        board.poll()
        v = board.pins.get(self._id)
        if v is not None:
            return v
        return 1 if self._pull == self.PULL_UP else 0

    def __call__(self, x=None):
        return self.value(x)

    def on(self):
        self._out = 1

    def off(self):
        self._out = 0

    def irq(self, handler=None, trigger=3, **kw):
        self._irq = handler  # kept, never called: the virtual board has no edges

    def __repr__(self):
        return "Pin(%d)" % self._id


class ADC:
    # The esp32 port's API (README.md, control key `firmware`)
    ATTN_0DB = const(0)
    ATTN_2_5DB = const(1)
    ATTN_6DB = const(2)
    ATTN_11DB = const(3)
    WIDTH_9BIT = const(9)
    WIDTH_10BIT = const(10)
    WIDTH_11BIT = const(11)
    WIDTH_12BIT = const(12)
    _FULL_MV = (950, 1250, 1750, 2450)  # esp32 quickref: top of each attenuation's range

    def __init__(self, pin, atten=None):
        n = pin._id if isinstance(pin, Pin) else pin
        if not isinstance(n, int) or isinstance(n, bool):
            raise ValueError("invalid pin")
        kind = board.adc_pin_kind(n)
        if kind == 0:
            raise ValueError("invalid pin")
        self._pin = n
        self._adc2 = kind == 2
        self._atten = (self.ATTN_11DB if board.firmware() >= 126 else self.ATTN_0DB)
        if atten is not None:
            self.atten(atten)
        self._width = self.WIDTH_12BIT
        self._gen = -1
        self._spec = board.DARK

    def atten(self, a):
        if not isinstance(a, int):
            raise TypeError("can't convert %s to int" % type(a).__name__)
        if a not in (0, 1, 2, 3):
            raise ValueError("invalid attenuation")
        self._atten = a

    def width(self, w):
        if not isinstance(w, int):
            raise TypeError("can't convert %s to int" % type(w).__name__)
        if not 9 <= w <= 12:
            raise ValueError("invalid bit-width")
        self._width = w

    def init(self, atten=None, **kw):
        if atten is not None:
            self.atten(atten)

    def read_u16(self):
        # Allocation-free except for the control file check every board.CHECK_MS.
        board.poll()
        if self._gen != board.gen:
            self._spec = board.adc_spec(self._pin)
            self._gen = board.gen
        if self._adc2 and board.wifi_active:
            if 126 <= board.firmware() <= 128:
                return 0            # 1.26-1.28: the read fails silently
            raise OSError("ADC2 is in use by Wi-Fi")
        if self._spec[0] == board.K_HANG:
            print("virtual board: ADC pin %d hangs (control file)" % self._pin)
            while True:  # only the watchdog ends this, as on a board
                time.sleep_ms(100)
        return board.level(self._spec, ticks_ms())

    def read(self):
        return self.read_u16() >> (16 - self._width)

    def read_uv(self):
        # The control level is the reading; scaled linearly to the attenuation's range
        return self.read_u16() * self._FULL_MV[self._atten] * 1000 // 65535

    def __repr__(self):
        return "ADC(Pin(%d))" % self._pin


class RTC:
    MEM_MAX = const(2048)  # MICROPY_HW_RTC_USER_MEM_MAX on the esp32 port

    def __init__(self, id=0):
        pass

    def init(self, datetime):
        self.datetime(datetime)

    def datetime(self, dt=None):
        """(year, month, day, weekday, hours, minutes, seconds, subseconds[us])"""
        if dt is None:
            us = time.time_ns() // 1000 + board.state["rtc_offset_us"]
            t = time.gmtime(us // 1000000)
            return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], us % 1000000)
        s = time.mktime((dt[0], dt[1], dt[2], dt[4], dt[5], dt[6], 0, 0))
        us = s * 1000000 + (dt[7] if len(dt) > 7 else 0)
        board.state["rtc_offset_us"] = us - time.time_ns() // 1000
        board.save_state()

    def memory(self, data=None):
        """Survives soft and watchdog resets, not a power cut (kept in the state file)."""
        if data is None:
            return bytes.fromhex(board.state.get("rtc_memory", ""))
        if len(data) > self.MEM_MAX:
            raise ValueError("buffer too long")
        board.state["rtc_memory"] = bytes(data).hex()
        board.save_state()


# --- the watchdog ----------------------------------------------------------------------
# The IDF task watchdog: once started it cannot be stopped. A thread watches the last
# feed() and, when the timeout passes, records WDT_RESET for the next boot and kills
# the process with SIGUSR1 (status -10 to a parent, 138 in a shell). A thread, not the
# main loop, so a main thread stuck in `while True: pass` is reset too: the unix port
# has no GIL. `kill` is a builtin of sh, and sh's $PPID is this process.
_wdt = [0, 0, 0]  # last feed (ticks_ms), timeout ms, 1 while running; slot writes are atomic
_WATCH_MS = const(10)


def _watch():
    while _wdt[2]:
        time.sleep_ms(_WATCH_MS)
        if _wdt[2] and ticks_diff(ticks_ms(), _wdt[0]) > _wdt[1]:
            _fire()


def _fire():
    late = ticks_diff(ticks_ms(), _wdt[0])
    print("virtual board: watchdog: not fed for %d ms (timeout %d ms): WDT reset"
          % (late, _wdt[1]))
    try:
        board.next_reset(WDT_RESET, ".wdt.tmp")
    except Exception as e:  # the reset must happen even if the state file cannot be written
        print("virtual board: watchdog: could not write the state file:", e)
    while True:
        os.system("kill -USR1 $PPID")
        time.sleep_ms(500)


_MEMINFO_MS = int(os.getenv("WANWITNESS_VBOARD_MEMINFO_S") or 0) * 1000
_MEMINFO_MAP = 1 if os.getenv("WANWITNESS_VBOARD_MEMINFO_MAP") else 0  # and the block map
_meminfo = [None]  # ticks of the last report (None: none yet)


class WDT:
    def __init__(self, id=0, timeout=5000):
        if not isinstance(timeout, int) or timeout <= 0:
            raise ValueError("WDT timeout too short")
        _wdt[0] = ticks_ms()
        _wdt[1] = timeout  # a second WDT() reconfigures the timeout, as on the esp32 port
        if not _wdt[2]:
            _wdt[2] = 1
            _thread.start_new_thread(_watch, ())

    def feed(self):
        now = ticks_ms()
        _wdt[0] = now
        # Instrumentation for bench/soak.py (no ESP32 counterpart): the heap's layout,
        # its largest free block included, on the console every WANWITNESS_VBOARD_MEMINFO_S
        if _MEMINFO_MS and (_meminfo[0] is None or ticks_diff(now, _meminfo[0]) >= _MEMINFO_MS):
            _meminfo[0] = now
            gc.collect()  # what is live, and the largest block an allocation can get
            micropython.mem_info(_MEMINFO_MAP)


def wdt_running():
    return _wdt[2] == 1
