# One light sensor on one router LED: 'off' / 'on' / 'blink', with the ms of each change.
#
# sample(now_ms) is called every 20 ms by the app (next_due() keeps that period on the
# ESP32's 10 ms FreeRTOS ticks) and allocates nothing: it works on
# small ints only and keeps the caller's now_ms objects by reference (never does
# arithmetic on them, so it stays allocation-free even where t is a long int: on an
# ESP32 small ints end at 2**30 ms = 12.4 days of uptime).
#
# Pipeline, per sample:
#   1. median of the last 3 raw readings: a single-sample ADC spike (the ESP32's ADC
#      has them) makes no edge. The median stands for the previous sample, so every
#      time below is that sample's now_ms: a step is still timed to the exact sample.
#   2. calibration: two levels, dark `lo` and bright `hi` (x16 fixed point). A reading
#      beyond a level moves it at once; the level of the class the LED is in follows
#      the readings (time constant 64 samples, ~1.3 s); the other level leaks toward
#      the reading over 4096 samples (~80 s). So slow ambient drift is followed, and a
#      steady LED slowly loses its contrast instead of keeping stale levels forever.
#   3. contrast: hi - lo must reach max(MIN_SPAN, NOISE_K x noise), the noise being
#      the mean raw sample-to-sample change (1.13 sigma for Gaussian noise, so 8x is
#      ~9 sigma; the median-filtered readings that the levels see span less than ~7
#      sigma even over hours). Without contrast nothing is classified and the last
#      level is kept: a steady LED whose levels have merged stays what it was, and
#      noise alone never makes an edge. A real change restores contrast at its first
#      sample (the reading jumps outside [lo, hi]). The first window of samples after
#      start only estimates the noise (warm-up): nothing is classified yet.
#   4. level with hysteresis: dark -> bright above 60 % of the span, bright -> dark
#      below 40 %. Each level change is an edge.
#   5. window (~1.5 s, counted in samples: window_ms // period_ms): >= 2 edges in the
#      window -> 'blink' (netdev activity is 50 ms pulses, a software blink 500/500
#      ms: both give >= 2 edges per 1.5 s); no edge for a whole window -> 'on'/'off' by
#      level; exactly one edge -> keep the state (wait). Transition times: -> blink at
#      the first edge of the window; on <-> off and blink -> on/off at the last edge,
#      which is the first sample of the new level. The state is thus reported up to a
#      window late, but timed to the sample.
#
# Calibration: until the first contrast is seen the state is the placeholder 'off'
# and `calibrated` is False (a steady LED since boot cannot be told from a dark
# sensor unless the board profile gives `levels=(dark, bright)`). The first state
# after calibration is always reported by transition(), even when it is 'off'.
#
# Attributes for the app: state, calibrated, saturated, contrast (levels far enough
# apart right now), dropped (transitions lost because transition() was not polled:
# up to 4 wait), calibration() -> (dark, bright, noise) in read_u16() counts.
#
# Saturation: a reading at the top rail (>= 65024) for a whole window sets
# `saturated`: the sensor is blinded (sunlight) or overdriven (gain too high) and can
# no longer see the LED change. The state is then held at the last good value (no
# level change is reported while saturated); fix the sensor's gain or shade. A sensor
# at 0 is not flagged: a phototransistor over a dark LED reads 0 (the ESP32 ADC reads 0
# below ~100 mV), so a channel stuck at 0 since boot just stays uncalibrated.
from micropython import const
from time import ticks_add, ticks_diff

OFF = "off"
ON = "on"
BLINK = "blink"

_FP = const(4)             # levels and noise are kept x16 so that slow EMAs move at all
_TRACK = const(6)          # own-class level: EMA over 2**6 samples
_LEAK = const(12)          # other level leaks toward the reading over 2**12 samples
_NOISE_EMA = const(5)      # noise: EMA over 2**5 samples (2**3 while warming up)
_TOP = const(65024)        # top rail of read_u16()
_QUEUE = const(4)          # pending transitions kept when transition() is not polled


class LedChannel:
    MIN_SPAN = 2048        # u16 counts: less contrast than this is no contrast
    NOISE_K = 8            # contrast must also exceed 8x the mean sample-to-sample noise

    def __init__(self, name, adc, window_ms=1500, period_ms=20, levels=None):
        self.name = name
        self._adc = adc
        w = window_ms // period_ms
        self._w = w if w >= 4 else 4
        self._ring = bytearray(self._w)   # 1 where a sample made an edge
        self._pos = 0
        self._edges = 0                   # edges in the window
        self._warm = self._w              # samples before calibration may start (noise estimate)
        self.state = OFF
        self.calibrated = False
        self.saturated = False
        self.contrast = False
        self.dropped = 0                  # transitions lost because nobody polled
        self._announce = False
        self._x1 = -1                     # previous two raw readings
        self._x2 = -1
        self._t1 = None                   # now_ms of the previous sample
        self._fresh = True                # no filtered reading yet
        self._lo = 0
        self._hi = 0
        self._seeded = False
        if levels is not None:
            self._lo = levels[0] << _FP
            self._hi = levels[1] << _FP
            self._seeded = True
        self._noise = 0
        self._lvl = 0                     # 0 dark, 1 bright
        self._rail = 0
        self._first_t = None              # first edge in the window
        self._last_t = None               # last edge
        self._qs = [None] * _QUEUE
        self._qt = [None] * _QUEUE
        self._qh = 0
        self._qn = 0

    def sample(self, now_ms):
        raw = self._adc.read_u16()
        x1 = self._x1
        x2 = self._x2
        self._x2 = x1
        self._x1 = raw
        t = self._t1
        self._t1 = now_ms
        if x2 < 0:
            return                        # the median needs 3 readings
        # Median of 3, by comparisons only.
        if raw > x1:
            hi3 = raw
            lo3 = x1
        else:
            hi3 = x1
            lo3 = raw
        if x2 >= hi3:
            m = hi3
        elif x2 <= lo3:
            m = lo3
        else:
            m = x2
        x = m << _FP

        w = self._w
        if m >= _TOP:
            if self._rail < w:
                self._rail += 1
            self.saturated = self._rail >= w
        else:
            self._rail = 0
            self.saturated = False

        lo = self._lo
        hi = self._hi
        if self._fresh:
            self._fresh = False
            if not self._seeded:
                lo = x
                hi = x
        if x < lo:
            lo = x
        elif x > hi:
            hi = x
        # Noise: mean |raw - previous raw| (raw readings are independent; the
        # median-filtered ones are not and would understate it). Each step counts at
        # most 2x the estimate + 256 counts, so the rare large steps of real LED edges
        # and ADC spikes move it little (even heavy 50 ms flicker only ~doubles it).
        if self._rail == 0:
            d = (raw - x1) << _FP
            if d < 0:
                d = -d
            nz = self._noise
            c = (nz << 1) + (256 << _FP)
            if d > c:
                d = c
            self._noise = nz + ((d - nz) >> (3 if self._warm else _NOISE_EMA))
        span = hi - lo
        need = self._noise * self.NOISE_K
        if need < (self.MIN_SPAN << _FP):
            need = self.MIN_SPAN << _FP
        edge = False
        if self._warm:
            self._warm -= 1
            self.contrast = False
        elif span >= need:
            self.contrast = True
            if not self.calibrated:
                # First contrast: the level is whatever this sample is.
                self.calibrated = True
                self._announce = True
                self._lvl = 1 if x - lo >= span >> 1 else 0
                edge = True
            elif self._lvl:
                if x < lo + (span << 1) // 5:
                    self._lvl = 0
                    edge = True
            elif x > lo + (span * 3) // 5:
                self._lvl = 1
                edge = True
        else:
            self.contrast = False
        # Levels follow the readings: own class at _TRACK, the other at _LEAK.
        if self._lvl:
            hi += (x - hi) >> _TRACK
            lo += (x - lo) >> _LEAK
        else:
            lo += (x - lo) >> _TRACK
            hi += (x - hi) >> _LEAK
        self._lo = lo
        self._hi = hi

        pos = self._pos
        n = self._edges - self._ring[pos]
        if edge:
            self._ring[pos] = 1
            if n == 0:
                self._first_t = t
            n += 1
            self._last_t = t
        else:
            self._ring[pos] = 0
        pos += 1
        self._pos = pos if pos < w else 0
        self._edges = n

        if n >= 2:
            if self.state != BLINK or self._announce:
                self._emit(BLINK, self._first_t)
        elif n == 0 and self.calibrated and not self.saturated:
            st = ON if self._lvl else OFF
            if self.state != st or self._announce:
                self._emit(st, self._last_t)

    def _emit(self, state, at):
        self.state = state
        self._announce = False
        i = self._qh + self._qn
        if i >= _QUEUE:
            i -= _QUEUE
        if self._qn == _QUEUE:
            self._qh = self._qh + 1 if self._qh + 1 < _QUEUE else 0
            self.dropped += 1
        else:
            self._qn += 1
        self._qs[i] = state
        self._qt[i] = at

    def transition(self):
        """(state, at_ms) once per change, oldest first; None when nothing changed."""
        if not self._qn:
            return None
        i = self._qh
        r = (self._qs[i], self._qt[i])  # made first: a MemoryError here takes nothing
        self._qh = i + 1 if i + 1 < _QUEUE else 0
        self._qn -= 1
        self._qt[i] = None
        return r

    def calibration(self):
        """(dark, bright, noise) in read_u16() counts: for diagnostics and the profile."""
        return (self._lo >> _FP, self._hi >> _FP, self._noise >> _FP)

    def deinit(self):
        self._adc = None


class LedLog:
    """Which of one channel's transitions become `led` records: a busy LED must not
    wear the flash (each record is a flash write). A change to or from 'off' (it opens
    or closes an outage) is written at once. A change between 'on' and 'blink' (both:
    the line is up) within every_ms of this channel's last record is held; the held
    state is written once every_ms have passed since that record (due()), dated to the
    first change it sums up, or just before the next change to 'off'. When the LED goes
    back to the state last written the held change is dropped: there is nothing new.
    So an LED flipping on<->blink writes at most one record per every_ms.
    now: time.ticks_ms() values (ticks_diff arithmetic); at: the transition's own ms."""

    def __init__(self, every_ms=60000):
        self.every_ms = every_ms
        self.written = None   # the state of the last record (None: none yet)
        self.last = 0         # ticks of the last record
        self.held = None      # the newest on/blink state not yet written
        self.first = None     # at of the first change the held state sums up

    def offer(self, st, at, now):
        """A transition. True: write it now (after take(), a held change goes first);
        False: held (or dropped), nothing to write now."""
        w = self.written
        if w is None or st == OFF or w == OFF:
            return True
        if self._long(now) and self.held is None:
            return True
        if st == w:
            self.held = None
            self.first = None
        else:
            if self.held is None:
                self.first = at
            self.held = st
        return False

    def take(self):
        """The held change as (state, at), cleared; None when there is none."""
        if self.held is None:
            return None
        r = (self.held, self.first)
        self.held = None
        self.first = None
        return r

    def due(self, now):
        """The held change to write now (every_ms after the last record), else None."""
        if self.held is not None and self._long(now):
            return self.take()
        return None

    def _long(self, now):
        # every_ms or more since the last record. ticks_diff() is signed over half the
        # ticks period (2**29 ms, 6.2 days, on the ESP32): a record never lies ahead, so
        # a negative difference is a last record that long ago (a steady LED for a week).
        d = ticks_diff(now, self.last)
        return d < 0 or d >= self.every_ms

    def wrote(self, st, now):
        self.written = st
        self.last = now


def next_due(due, now, period_ms):
    """The next sample's deadline (ticks_ms): period_ms after the last one, not after
    the wake-up. asyncio on the ESP32 wakes on 10 ms FreeRTOS ticks, so sleep_ms(20)
    takes 20-30 ms: sleeping a fixed period would stretch the sample period (and the
    window, counted in samples) by up to half and leave a 50 ms activity pulse one
    sample, which the median of 3 drops. After a stall of a whole period the schedule
    restarts from now instead of catching up with back-to-back readings."""
    due = ticks_add(due, period_ms)
    if ticks_diff(due, now) <= 0:
        due = ticks_add(now, period_ms)
    return due
