# LedChannel on synthetic light sensors (tests/mpy/waveforms.py), run by MicroPython.
import gc

import mpyunit
from mpyunit import eq
import waveforms as W
from led import LedChannel

P = 20  # sample period, ms


def chan(sensor, **kw):
    return LedChannel("internet", sensor, **kw)


def run(pattern, t_to, t_from=0, ch_kw=None, **sensor_kw):
    s = W.Sensor(pattern, **sensor_kw)
    ch = chan(s, **(ch_kw or {}))
    out = W.run(ch, s, t_from, t_to)
    return ch, out


def first_sample_at_or_after(t):
    return (t + P - 1) // P * P


def near(got, want, tol=P):
    """Same states, each time within `tol` ms after the wanted one."""
    eq([st for st, _ in got], [st for st, _ in want], got)
    for (_, a), (_, b) in zip(got, want):
        eq(0 <= a - b <= tol, True, "%r vs %r" % (got, want))


# --- steady ------------------------------------------------------------------------

def test_steady_on_since_boot_is_not_calibrated():
    ch, out = run(W.Steady(1), 120000, noise=500)
    eq(out, [])
    eq(ch.calibrated, False)
    eq(ch.state, "off")          # the documented placeholder
    eq(ch.saturated, False)


def test_steady_off_since_boot_is_not_calibrated():
    ch, out = run(W.Steady(0), 120000, noise=500)
    eq(out, [])
    eq(ch.calibrated, False)


def test_profile_levels_calibrate_a_steady_led():
    for lit, want in ((1, "on"), (0, "off")):
        ch, out = run(W.Steady(lit), 60000, ch_kw={"levels": (3000, 40000)}, noise=800)
        eq(len(out), 1, out)
        eq(out[0][0], want)
        eq(ch.state, want)
        eq(ch.calibrated, True)


def test_steady_on_for_an_hour_after_calibration_does_not_flap():
    # Off at boot, on at 5 s, then on for an hour with noise: the dark level leaks
    # away (the levels merge) but nothing is reported.
    ch, out = run(W.Steps(0, [(5000, 1)]), 3600000, noise=1500)
    eq(out, [("on", 5000)])
    eq(ch.state, "on")
    eq(ch.contrast, False)       # contrast has leaked away: state held


def test_steady_off_for_an_hour_then_on_is_exact():
    ch, out = run(W.Steps(1, [(5000, 0), (3605010, 1)]), 3620000, noise=1500)
    eq(out, [("off", 5000), ("on", 3605020)])


# --- steps ---------------------------------------------------------------------------

def test_step_on_to_off_is_timed_to_the_sample():
    # The LED goes dark at 20 010 ms; the first dark sample is at 20 020.
    ch, out = run(W.Steps(0, [(4000, 1), (20010, 0)]), 30000)
    eq(out, [("on", 4000), ("off", 20020)])
    # On a sample boundary: that very sample.
    ch, out = run(W.Steps(0, [(4000, 1), (20000, 0)]), 30000)
    eq(out[-1], ("off", 20000))


def test_step_reported_within_a_window_and_a_bit():
    s = W.Sensor(W.Steps(0, [(4000, 1), (20000, 0)]))
    ch = chan(s)
    W.run(ch, s, 0, 20000)
    seen = None
    t = 20000
    while seen is None and t < 30000:
        s.t = t
        ch.sample(t)
        if ch.transition() is not None:
            seen = t
        t += P
    # The window is 75 samples; the median filter adds one.
    eq(seen - 20000 <= 1500 + 2 * P, True, seen)


def test_step_times_with_noise_and_many_toggles():
    changes = []
    v = 1
    for i in range(1, 40):
        changes.append((i * 7013, v))
        v = 1 - v
    ch, out = run(W.Steps(0, changes), 40 * 7013, noise=3000, seed=7)
    want = [("on" if val else "off", first_sample_at_or_after(at)) for at, val in changes]
    eq(out, want)


def test_time_objects_are_kept_not_computed_on():
    # sample() never does arithmetic on now_ms (on an ESP32 a t past 2**30 ms is a
    # heap-allocated long int): any object works and comes back as the same object.
    s = W.Sensor(W.Steps(0, [(3000, 1), (9000, 0)]))
    ch = chan(s)
    out = []
    kept = {}
    for i in range(700):
        s.t = i * P
        tok = (i * P,)
        if i * P in (3000, 9000):
            kept[i * P] = tok
        ch.sample(tok)
        tr = ch.transition()
        if tr:
            out.append(tr)
    eq([(st, tok[0]) for st, tok in out], [("on", 3000), ("off", 9000)])
    eq(out[0][1] is kept[3000] and out[1][1] is kept[9000], True)


# --- blink and activity ----------------------------------------------------------------

def test_one_hz_blink():
    # Steady on, then a 500/500 software blink from 10 s to 130 s, then off.
    pat = W.Blink(500, 500, start=10000, stop=130000, before=1, after=0)
    ch, out = run(pat, 150000, noise=1000)
    # -> blink at the first edge (the LED goes dark at 10 500: the first contrast, so
    # also the calibration), -> off at the last edge (the last dark half starts at
    # 129 500 and stays dark after 130 000).
    eq(out, [("blink", 10500), ("off", 129500)])


def test_blink_no_flapping_for_ten_minutes():
    pat = W.Blink(500, 500, start=4000, before=0)
    ch, out = run(pat, 600000, noise=2000, seed=3)
    eq(out, [("blink", 4000)])
    eq(ch.state, "blink")


def test_activity_flicker_on_a_lit_led():
    # Dark until 4 s (calibrates on the step), then lit with traffic from 10 s to 40 s.
    act = W.Activity(11, pulse_ms=50, min_gap_ms=60, max_gap_ms=600, start=10000,
                     stop=40000, idle=1)
    pat = W.Steps(0, [(4000, 1)])
    s = W.Sensor(pat, noise=1000)
    ch = chan(s)
    out = W.run(ch, s, 0, 8000)
    eq(out, [("on", 4000)])
    s.pattern = act
    out = W.run(ch, s, 8000, 60000)
    eq(out, [("blink", first_sample_at_or_after(act.first_pulse)),
             ("on", first_sample_at_or_after(act.last_pulse_end))])


def test_activity_flicker_on_a_dark_led():
    act = W.Activity(5, pulse_ms=50, min_gap_ms=100, max_gap_ms=900, start=4000,
                     stop=62000, idle=0)
    ch, out = run(act, 80000, noise=800)
    eq(out, [("blink", first_sample_at_or_after(act.first_pulse)),
             ("off", first_sample_at_or_after(act.last_pulse_end))])


def test_heavy_activity_stays_blink():
    act = W.Activity(9, pulse_ms=50, min_gap_ms=50, max_gap_ms=150, start=4000,
                     idle=1)
    ch, out = run(act, 300000, noise=1500)
    eq(out, [("blink", first_sample_at_or_after(act.first_pulse))])


# --- ambient, noise, spikes, saturation ---------------------------------------------------

def test_slow_ambient_drift_is_followed():
    # Ambient light raises both levels by 6000 counts a minute for 5 minutes (the
    # dark level ends above where the bright one started) while the LED toggles.
    changes = [(5000, 0), (65000, 1), (125000, 0), (185010, 1), (240000, 0), (290000, 1)]
    ch, out = run(W.Steps(1, changes), 300000, dark=2000, bright=22000,
                  drift_per_min=6000, noise=500)
    eq(out, [("off", 5000), ("on", 65000), ("off", 125000), ("on", 185020),
             ("off", 240000), ("on", 290000)])


def test_drift_under_a_blinking_led():
    pat = W.Blink(500, 500, start=4000, before=0)
    ch, out = run(pat, 300000, dark=1000, bright=15000, drift_per_min=5000, noise=400)
    eq(out, [("blink", 4000)])
    lo, hi, nz = ch.calibration()
    eq(lo > 20000, True, ch.calibration())   # the dark level went up with the ambient


def test_noise_makes_no_edges():
    # Weak contrast (8000 counts) with +-1500 noise: the states come out, each within
    # one sample (noise can keep the first sample of a level short of the threshold).
    ch, out = run(W.Steps(0, [(4000, 1), (64000, 0), (124000, 1)]), 200000, dark=5000,
                  bright=13000, noise=1500, seed=5)
    near(out, [("on", 4000), ("off", 64000), ("on", 124000)])


def test_gaussian_noise_no_flapping():
    # Contrast 30 000, Gaussian noise sigma 1500, toggling every minute for 10 minutes:
    # exactly one transition per toggle, each within one sample.
    changes = [(60000 * i + 7010, i % 2) for i in range(1, 11)]
    for seed in (1, 2, 3):
        ch, out = run(W.Steps(0, changes), 660000, dark=5000, bright=35000, noise=1500,
                      gauss=True, seed=seed)
        near(out, [("on" if v else "off", first_sample_at_or_after(at)) for at, v in changes])


def test_noise_larger_than_the_contrast_calibrates_nothing():
    ch, out = run(W.Blink(500, 500), 120000, dark=10000, bright=13000, noise=6000)
    eq(out, [])
    eq(ch.calibrated, False)


def test_adc_spikes_are_filtered():
    ch, out = run(W.Steps(1, [(5000, 0), (65010, 1)]), 120000, spike_every=37)
    eq(out, [("off", 5000), ("on", 65020)])


def test_sensor_saturated_since_boot():
    ch, out = run(W.Blink(500, 500), 60000, dark=65535, bright=65535)
    eq(out, [])
    eq(ch.saturated, True)
    eq(ch.calibrated, False)
    eq(ch.state, "off")


def test_sensor_stuck_at_zero():
    ch, out = run(W.Steady(0), 60000, dark=0, bright=0)
    eq(out, [])
    eq(ch.saturated, False)
    eq(ch.calibrated, False)


def test_overdriven_sensor_clipped_at_the_top():
    # Bright reads above full scale (clipped to 65535): the LED turning on looks like
    # saturation, so the channel holds its last good state and says so.
    ch, out = run(W.Steps(1, [(5000, 0), (30000, 1)]), 60000, dark=20000, bright=90000)
    eq(out, [("off", 5000)])
    eq(ch.saturated, True)
    eq(ch.state, "off")


def test_blinded_sensor_holds_the_last_good_state():
    # Calibrated, LED on; sunlight blinds the sensor from 30 s to 60 s, during which
    # the LED goes off (unseen). The state stays 'on' (flagged saturated) and 'off' is
    # reported when the sensor sees again, at its first dark sample.
    s = W.Sensor(W.Steps(0, [(5000, 1), (40000, 0)]), blind=(30000, 60000))
    ch = chan(s)
    out = W.run(ch, s, 0, 45000)
    eq(out, [("on", 5000)])
    eq(ch.saturated, True)
    eq(ch.state, "on")
    out = W.run(ch, s, 45000, 80000)
    eq(out, [("off", 60000)])
    eq(ch.saturated, False)


def test_blinded_while_off_reports_nothing():
    s = W.Sensor(W.Steps(1, [(5000, 0)]), blind=(30000, 60000))
    ch = chan(s)
    out = W.run(ch, s, 0, 80000)
    eq(out, [("off", 5000)])
    eq(ch.state, "off")


# --- transitions queue, memory ---------------------------------------------------------------

def test_unpolled_transitions_are_queued_oldest_first():
    s = W.Sensor(W.Steps(0, [(4000, 1), (10000, 0), (16000, 1), (22000, 0), (28000, 1),
                             (34000, 0)]))
    ch = chan(s)
    t = 0
    while t < 40000:
        s.t = t
        ch.sample(t)
        t += P
    got = []
    tr = ch.transition()
    while tr is not None:
        got.append(tr)
        tr = ch.transition()
    # 6 changes, room for 4: the two oldest are dropped and counted.
    eq(got, [("on", 16000), ("off", 22000), ("on", 28000), ("off", 34000)])
    eq(ch.dropped, 2)


def test_sample_allocates_nothing():
    s = W.Sensor(W.Blink(500, 500), noise=2000)
    ch = chan(s)
    # warm up (calibration, first transition) outside the measurement
    t = 0
    while t < 20000:
        s.t = t
        ch.sample(t)
        t += P
    ch.transition()
    n = 0
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        while n < 10000:
            s.t = t
            ch.sample(t)
            t += P
            n += 1
        after = gc.mem_alloc()
    finally:
        gc.enable()
    print("led: 10000 samples allocated %d bytes" % (after - before))
    eq(after - before, 0)


def test_channel_heap_size():
    gc.collect()
    before = gc.mem_alloc()
    ch = LedChannel("internet", W.Sensor(W.Steady(0)))
    gc.collect()
    used = gc.mem_alloc() - before
    print("led: one LedChannel uses %d bytes of heap" % used)
    eq(used < 2048, True, used)
    ch.deinit()


mpyunit.main(globals())
