"""`wanwitness calibrate`: live light readings per LED sensor, and the levels to use.

The board samples every sensor each 20 ms (as the agent does) and prints, every
250 ms, the lowest, highest and mean reading of each channel in that window. The
user watches the bars while the router's LEDs go through their states (unplug the
WAN cable for a moment: the internet LED goes dark). The suggestion per channel:
dark = the 10th percentile of the window minimums, bright = the 90th percentile of
the window maximums (percentiles, so a reflection or one ADC spike does not set a
level). Written into the agent's config as `leds[i].levels = [dark, bright]`, the
agent starts classifying from the first sample instead of waiting to see a change
(agent/led.py, "Calibration"); the agent keeps adapting the levels afterwards.
"""

from __future__ import annotations

import ast
import time
from collections.abc import Callable
from dataclasses import dataclass, field

WINDOW_MS = 250
PERIOD_MS = 20
MIN_SPAN = 2048   # agent/led.py LedChannel.MIN_SPAN: less than this is no contrast

_SAMPLER = """
import machine, time
_a = []
for _p in %(pins)r:
    _c = machine.ADC(machine.Pin(_p))
    try:
        _c.atten(machine.ADC.ATTN_11DB)
    except AttributeError:
        pass
    _a.append(_c)
_n = len(_a)
_end = time.ticks_add(time.ticks_ms(), %(ms)d)
while time.ticks_diff(_end, time.ticks_ms()) > 0:
    _lo = [65535] * _n
    _hi = [0] * _n
    _sum = [0] * _n
    _k = 0
    _w = time.ticks_add(time.ticks_ms(), %(window)d)
    while time.ticks_diff(_w, time.ticks_ms()) > 0:
        for _i in range(_n):
            _v = _a[_i].read_u16()
            if _v < _lo[_i]:
                _lo[_i] = _v
            if _v > _hi[_i]:
                _hi[_i] = _v
            _sum[_i] += _v
        _k += 1
        time.sleep_ms(%(period)d)
    print('W', [(_lo[_i], _hi[_i], _sum[_i] // _k) for _i in range(_n)])
"""


def sampler_code(pins: list[int], seconds: float) -> str:
    return _SAMPLER % {"pins": pins, "ms": int(seconds * 1000), "window": WINDOW_MS,
                       "period": PERIOD_MS}


@dataclass
class Channel:
    pin: int
    role: str
    mins: list[int] = field(default_factory=list)
    maxs: list[int] = field(default_factory=list)
    last: tuple[int, int, int] | None = None

    def add(self, lo: int, hi: int, mean: int) -> None:
        self.mins.append(lo)
        self.maxs.append(hi)
        self.last = (lo, hi, mean)

    def suggestion(self) -> tuple[int, int] | None:
        """(dark, bright), or None when the channel never showed contrast."""
        if not self.mins:
            return None
        dark = _percentile(self.mins, 10)
        bright = _percentile(self.maxs, 90)
        if bright - dark < MIN_SPAN:
            return None
        return dark, bright


def _percentile(values: list[int], pct: int) -> int:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(pct / 100 * (len(s) - 1))))]


def parse_line(line: str, n: int) -> list[tuple[int, int, int]] | None:
    """One 'W [(lo, hi, mean), ...]' line from the board, or None for anything else."""
    line = line.strip()
    if not line.startswith("W "):
        return None
    try:
        data = ast.literal_eval(line[2:])
    except (ValueError, SyntaxError):
        return None
    if (not isinstance(data, list) or len(data) != n
            or not all(isinstance(t, tuple) and len(t) == 3 for t in data)):
        return None
    return data


def bar(value: int, width: int = 32) -> str:
    filled = round(value / 65535 * width)
    return "#" * filled + "." * (width - filled)


def render(channels: list[Channel]) -> str:
    parts = []
    for ch in channels:
        if ch.last is None:
            continue
        lo, hi, mean = ch.last
        parts.append(f"GPIO{ch.pin:<2} {ch.role:<8} {bar(mean)} {mean:5d} ({lo}-{hi})")
    return "\n".join(parts)


def run_sampling(link, channels: list[Channel], seconds: float,
                 show: Callable[[str], None]) -> None:
    """Sample on the board for `seconds`, feeding `channels` and calling `show` live."""
    from mpremote.transport import TransportError
    buf = bytearray()

    def consume(data: bytes) -> None:
        buf.extend(data)
        while b"\n" in buf:
            i = buf.index(b"\n")
            line = bytes(buf[:i]).decode("utf-8", "replace")
            del buf[:i + 1]
            stats = parse_line(line, len(channels))
            if stats is None:
                continue
            for ch, (lo, hi, mean) in zip(channels, stats):
                ch.add(lo, hi, mean)
            show(render(channels))

    link.t.exec_raw_no_follow(sampler_code([c.pin for c in channels], seconds))
    started = time.monotonic()
    try:
        _out, err = link.t.follow(timeout=max(10.0, seconds + 10), data_consumer=consume)
    except TransportError as e:
        from wanwitness.errors import UserError
        raise UserError(f"{link.port}: the board stopped answering after "
                        f"{time.monotonic() - started:.0f} s: {e}") from None
    if err:
        from wanwitness.errors import UserError
        raise UserError(f"{link.port}: sampling failed on the board: "
                        f"{err.decode('utf-8', 'replace').strip().splitlines()[-1]}")
