# Synthetic light sensors for LedChannel tests (run on MicroPython).
#
# A Sensor is what LedChannel takes as its ADC: read_u16() returns the light at the
# sensor's current time `t` (set by the driver before each sample). What the LED does
# over time is a pattern object with lit(t) -> 0 or 1. Everything is ints, and reading
# allocates nothing, so the same sources serve the allocation test.


class Rand:
    """A seeded linear congruential generator, s = (s * 1103515245 + 12345) mod 2^31
    (ints only, no allocation). The 31-bit state is kept in two halves, s = hi * 2^15 + lo,
    so that no intermediate leaves the small ints of a 32-bit port (up to 2^30 - 1): the
    same numbers on the 64-bit wheel and on the 32-bit build, allocation-free on both."""

    def __init__(self, seed):
        s = (seed * 2654435761 + 1) & 0x7FFFFFFF
        self.hi = s >> 15
        self.lo = s & 0x7FFF

    def next(self):
        # 1103515245 = 33676 * 2^15 + 20077 and 33676 = 2^15 + 908; every product < 2^30.
        hi, lo = self.hi, self.lo
        p = lo * 20077 + 12345
        self.hi = ((p >> 15) + ((hi & 0x7FFF) * 20077 & 0xFFFF) + ((hi >> 15) << 15)
                   + (lo * 908 & 0xFFFF) + ((lo & 1) << 15)) & 0xFFFF
        self.lo = p & 0x7FFF
        return (self.hi << 7) | (self.lo >> 8)  # s >> 8: 23 good bits

    def below(self, n):
        return self.next() % n


class Steady:
    def __init__(self, lit):
        self.v = 1 if lit else 0

    def lit(self, t):
        return self.v


class Steps:
    """lit(t) = the value of the last (time, value) change at or before t."""

    def __init__(self, first, changes=()):
        self.first = first
        self.changes = list(changes)

    def lit(self, t):
        v = self.first
        for at, val in self.changes:
            if at <= t:
                v = val
            else:
                break
        return v


class Blink:
    """Software blink: on for on_ms, off for off_ms, from `start` until `stop`."""

    def __init__(self, on_ms=500, off_ms=500, start=0, stop=None, before=0, after=0):
        self.on_ms = on_ms
        self.period = on_ms + off_ms
        self.start = start
        self.stop = stop
        self.before = before
        self.after = after

    def lit(self, t):
        if t < self.start:
            return self.before
        if self.stop is not None and t >= self.stop:
            return self.after
        return 1 if (t - self.start) % self.period < self.on_ms else 0


class Activity:
    """netdev activity: the LED sits at `idle` and flips for pulse_ms at random moments.

    Gaps between pulses are uniform in [min_gap_ms, max_gap_ms]. Active from `start`
    until `stop`; lit(t) must be asked with non-decreasing t (it walks forward). The
    times of the first and the last pulse are kept (first_pulse, last_pulse_end).
    """

    def __init__(self, seed, pulse_ms=50, min_gap_ms=60, max_gap_ms=400, start=0,
                 stop=None, idle=1):
        self.r = Rand(seed)
        self.pulse_ms = pulse_ms
        self.min_gap = min_gap_ms
        self.max_gap = max_gap_ms
        self.start = start
        self.stop = stop
        self.idle = idle
        self.next_on = start + self._gap()
        self.first_pulse = self.next_on
        self.last_pulse_end = None

    def _gap(self):
        return self.min_gap + self.r.below(self.max_gap - self.min_gap + 1)

    def lit(self, t):
        while t >= self.next_on + self.pulse_ms:
            if self.stop is not None and self.next_on + self.pulse_ms > self.stop:
                break
            self.last_pulse_end = self.next_on + self.pulse_ms
            self.next_on = self.next_on + self.pulse_ms + self._gap()
        if self.stop is not None and self.next_on + self.pulse_ms > self.stop:
            return self.idle
        if self.next_on <= t < self.next_on + self.pulse_ms:
            return 1 - self.idle
        return self.idle


class Sensor:
    """Light on the sensor: dark + lit x (bright - dark) + drift + noise, clamped.

    drift_per_min: how much the ambient (both levels) rises per minute.
    noise: the reading gets a triangular-distributed error in [-noise, +noise], or
    with gauss=True a near-Gaussian one with standard deviation `noise`.
    spike_every: every Nth reading is a full-scale glitch (ADC spikes).
    blind: (from_ms, to_ms) during which the sensor reads 65535 (sunlight).
    """

    def __init__(self, pattern, dark=3000, bright=40000, drift_per_min=0, noise=0, seed=1,
                 spike_every=0, blind=None, clip=65535, gauss=False):
        self.pattern = pattern
        self.dark = dark
        self.bright = bright
        self.drift = drift_per_min
        self.noise = noise
        self.r = Rand(seed)
        self.spike_every = spike_every
        self.blind = blind
        self.clip = clip
        self.gauss = gauss
        self.reads = 0
        self.t = 0

    def read_u16(self):
        t = self.t
        self.reads += 1
        if self.blind is not None and self.blind[0] <= t < self.blind[1]:
            return 65535
        if self.spike_every and self.reads % self.spike_every == 0:
            return 65535
        v = self.bright if self.pattern.lit(t) else self.dark
        if self.drift:
            v += self.drift * t // 60000
        if self.noise:
            n = self.noise
            if self.gauss:
                # ~Gaussian: the sum of 6 uniforms, sigma = noise
                k = 0
                s = 0
                while k < 6:
                    s += self.r.below(2 * n + 1) - n
                    k += 1
                v += s * 1000 // 1414
            else:
                v += self.r.below(n + 1) + self.r.below(n + 1) - n
        if v < 0:
            v = 0
        elif v > self.clip:
            v = self.clip
        return v


def run(ch, sensor, t_from, t_to, period=20, out=None):
    """Sample `ch` every `period` ms over [t_from, t_to); collect transitions in `out`."""
    if out is None:
        out = []
    t = t_from
    while t < t_to:
        sensor.t = t
        ch.sample(t)
        tr = ch.transition()
        while tr is not None:
            out.append(tr)
            tr = ch.transition()
        t += period
    return out
