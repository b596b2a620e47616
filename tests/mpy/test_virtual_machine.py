# The virtual board's machine/network modules, run by MicroPython itself:
# ADC levels and waveforms from the control file, control changes, Wi-Fi up/down,
# reset cause and RTC memory through the board state file.
import gc
import json
import os
import time

import board
import machine
import mpyunit
import network
from mpyunit import eq, raises

TMP = "/tmp/wanwitness-vm-%s" % os.urandom(4).hex()
CONTROL = TMP + "-control.json"
STATE = TMP + "-state.json"


def put_json(path, data):
    # atomic, like every writer of the control file must be
    with open(path + ".tmp", "w") as f:
        json.dump(data, f)
    os.rename(path + ".tmp", path)


def fresh(control=None, state=None):
    """A power-on of a board on our temp files."""
    for p in (CONTROL, STATE):
        try:
            os.remove(p)
        except OSError:
            pass
    if control is not None:
        put_json(CONTROL, control)
    if state is not None:
        put_json(STATE, state)
    board.setup(CONTROL, STATE)


def read_state():
    with open(STATE) as f:
        return json.load(f)


def changed(control):
    put_json(CONTROL, control)
    time.sleep_ms(board.CHECK_MS + 10)


def spec(entry):
    return board.parse_adc(entry)


# --- ADC ----------------------------------------------------------------------------

def test_level_from_control():
    fresh({"adc": {"34": {"level": 40000}, "35": 1234}})
    eq(machine.ADC(machine.Pin(34)).read_u16(), 40000)
    eq(machine.ADC(35).read_u16(), 1234)
    eq(machine.ADC(machine.Pin(36)).read_u16(), 0)  # no entry: dark


def test_top_level_pin_keys_accepted():
    fresh({"33": {"level": 777}})
    eq(machine.ADC(machine.Pin(33)).read_u16(), 777)


def test_read_width_and_uv():
    fresh({"adc": {"34": {"level": 65535}}})
    a = machine.ADC(machine.Pin(34), atten=machine.ADC.ATTN_11DB)
    eq(a.read(), 4095)
    eq(a.read_uv(), 2450000)
    a.width(machine.ADC.WIDTH_9BIT)
    eq(a.read(), 511)
    a.atten(machine.ADC.ATTN_0DB)
    eq(a.read_uv(), 950000)


def test_adc_api_is_the_esp32_ports():
    # WIDTH_* are bit counts; atten()/width() have no getter (TypeError, as on the
    # port); out-of-range values are ValueErrors; default attenuation by firmware.
    fresh({"adc": {"34": {"level": 65535}}})
    eq((machine.ADC.WIDTH_9BIT, machine.ADC.WIDTH_12BIT), (9, 12))
    a = machine.ADC(34)
    raises(TypeError, a.atten)
    raises(TypeError, a.width)
    raises(TypeError, a.atten, "11db")
    raises(ValueError, a.atten, 4)
    raises(ValueError, a.width, 13)
    raises(ValueError, machine.ADC, "34")
    eq(a.read_uv(), 2450000)       # 1.28: 11 dB by default
    fresh({"adc": {"34": {"level": 65535}}, "firmware": "1.25"})
    eq(machine.ADC(34).read_uv(), 950000)   # 1.24-1.25: 0 dB


def test_only_adc_pins():
    fresh({})
    raises(ValueError, machine.ADC, machine.Pin(5))
    raises(ValueError, machine.ADC, machine.Pin(23))
    machine.ADC(machine.Pin(39))


def test_adc2_unusable_while_wifi_active():
    # 1.24-1.25 (and master) raise OSError; 1.26-1.28 read 0 without a word.
    for fw, fails in (("1.25", True), ("1.28", False)):
        fresh({"adc": {"25": {"level": 100}}, "firmware": fw})
        a = machine.ADC(machine.Pin(25))
        eq(a.read_u16(), 100)
        w = network.WLAN(network.STA_IF)
        w.active(True)
        try:
            if fails:
                raises(OSError, a.read_u16)
            else:
                eq(a.read_u16(), 0)
        finally:
            w.active(False)
        eq(a.read_u16(), 100)


def test_blink_waveform_exact():
    s = spec({"pattern": "blink", "on": 52000, "off": 3000, "period_ms": 1000, "duty_pct": 30})
    eq(board.level(s, 0), 52000)
    eq(board.level(s, 299), 52000)
    eq(board.level(s, 300), 3000)
    eq(board.level(s, 999), 3000)
    eq(board.level(s, 1000), 52000)
    lit = sum(1 for t in range(10000) if board.level(s, t) == 52000)
    eq(lit, 3000)


def sample(adc, ms, every_ms):
    """[(t, reading)] for reads whose ticks did not move during the read."""
    out = []
    t_end = time.ticks_add(time.ticks_ms(), ms)
    while time.ticks_diff(t_end, time.ticks_ms()) > 0:
        t0 = time.ticks_ms()
        v = adc.read_u16()
        if time.ticks_ms() == t0:
            out.append((t0, v))
        time.sleep_ms(every_ms)
    return out


def test_blink_period_visible_in_samples():
    fresh({"adc": {"35": {"pattern": "blink", "on": 52000, "off": 3000, "period_ms": 200}}})
    got = sample(machine.ADC(machine.Pin(35)), 1000, 2)
    assert len(got) > 50, len(got)
    for t, v in got:  # each reading is the waveform at the moment it was taken
        eq(v, 52000 if t % 200 < 100 else 3000, "at %d" % t)
    rises = [got[i][0] for i in range(1, len(got))
             if got[i][1] == 52000 and got[i - 1][1] == 3000]
    assert 3 <= len(rises) <= 6, rises
    for i in range(len(rises) - 1):  # edges one period apart, give or take a late sample
        g = time.ticks_diff(rises[i + 1], rises[i])
        assert g % 200 < 40 or g % 200 > 160, rises
    lit = sum(1 for t, v in got if v == 52000)
    assert 0.3 < lit / len(got) < 0.7, (lit, len(got))


def test_flicker_pulses():
    s = spec({"pattern": "flicker", "on": 50000, "off": 2000, "pulse_ms": 50, "rate_hz": 5})
    runs = []  # lengths of the dark runs over 20 s of virtual time
    n = 0
    for t in range(1000000, 1020000):
        if board.level(s, t) == 2000:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    # 5 a second, each 50 ms; two pulses may touch across a slot border and merge
    assert 90 <= len(runs) <= 100, len(runs)
    for r in runs:
        assert r in (50, 100), runs
    eq(sum(runs), 100 * 50)
    starts = set(t % 200 for t in range(1000000, 1020000)
                 if board.level(s, t) == 2000 and board.level(s, t - 1) != 2000)
    assert len(starts) > 10, starts  # jittered, not a fixed phase


def test_flicker_seen_by_sampling():
    entry = {"pattern": "flicker", "on": 50000, "off": 2000, "pulse_ms": 50, "rate_hz": 5}
    fresh({"adc": {"36": entry}})
    got = sample(machine.ADC(machine.Pin(36)), 1000, 5)
    s = spec(entry)
    for t, v in got:
        eq(v, board.level(s, t), "at %d" % t)
    drops = sum(1 for i in range(1, len(got)) if got[i][1] == 2000 and got[i - 1][1] == 50000)
    assert 2 <= drops <= 8, drops
    assert any(v == 50000 for t, v in got)


def test_noise_bounds():
    s = spec({"level": 30000, "noise": 500})
    seen = set()
    for t in range(2000):
        v = board.level(s, t)
        assert 29500 <= v <= 30500, v
        seen.add(v)
    assert len(seen) > 100, len(seen)
    eq(board.level(spec({"level": 65500, "noise": 500}), 0) <= 65535, True)


def test_bad_entries_rejected():
    raises(ValueError, spec, {"level": 70000})
    raises(ValueError, spec, {"pattern": "strobe"})
    raises(ValueError, spec, {"pattern": "flicker", "pulse_ms": 300, "rate_hz": 5})
    raises(ValueError, spec, {"pattern": "blink", "period_ms": 0})
    fresh({"adc": {"34": {"level": "bright"}, "35": {"level": 9}}})
    eq(machine.ADC(machine.Pin(34)).read_u16(), 0)
    eq(machine.ADC(machine.Pin(35)).read_u16(), 9)


def test_control_change_picked_up():
    fresh({"adc": {"34": {"level": 1000}}})
    a = machine.ADC(machine.Pin(34))
    eq(a.read_u16(), 1000)
    changed({"adc": {"34": {"level": 60000}}})
    eq(a.read_u16(), 60000)
    changed({"adc": {"34": {"pattern": "blink", "on": 9, "off": 8, "period_ms": 100000,
                            "duty_pct": 100}}})
    eq(a.read_u16(), 9)


def test_unparsable_control_keeps_previous():
    fresh({"adc": {"34": {"level": 1000}}})
    a = machine.ADC(machine.Pin(34))
    eq(a.read_u16(), 1000)
    with open(CONTROL + ".tmp", "w") as f:
        f.write('{"adc": {"34": ')
    os.rename(CONTROL + ".tmp", CONTROL)
    time.sleep_ms(board.CHECK_MS + 10)
    eq(a.read_u16(), 1000)
    changed({"adc": {"34": {"level": 5}}})
    eq(a.read_u16(), 5)


def test_control_removed_means_dark():
    fresh({"adc": {"34": {"level": 1000}}})
    a = machine.ADC(machine.Pin(34))
    eq(a.read_u16(), 1000)
    os.remove(CONTROL)
    time.sleep_ms(board.CHECK_MS + 10)
    eq(a.read_u16(), 0)


def test_read_u16_allocation_free():
    fresh({"adc": {"34": {"pattern": "flicker", "on": 50000, "off": 2000, "noise": 100},
                   "35": {"pattern": "blink", "noise": 10}, "36": {"level": 7}}})
    adcs = [machine.ADC(machine.Pin(n)) for n in (34, 35, 36)]
    for a in adcs:
        a.read_u16()
    saved = board.CHECK_MS
    board.CHECK_MS = 1000000  # no control file check inside the measurement
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        for i in range(500):
            for a in adcs:
                a.read_u16()
        used = gc.mem_alloc() - before
    finally:
        gc.enable()
        board.CHECK_MS = saved
    eq(used, 0, "bytes allocated by 1500 reads")


# --- Pin ----------------------------------------------------------------------------

def test_pins():
    fresh({"pins": {"0": 0}})
    eq(machine.Pin(0, machine.Pin.IN, machine.Pin.PULL_UP).value(), 0)
    eq(machine.Pin(4, machine.Pin.IN, machine.Pin.PULL_UP).value(), 1)
    p = machine.Pin(2, machine.Pin.OUT)
    p.on()
    eq(p.value(), 1)
    p(0)
    eq(p(), 0)
    raises(ValueError, machine.Pin, 99)


# --- Wi-Fi --------------------------------------------------------------------------

def wait_until(fn, ms):
    t_end = time.ticks_add(time.ticks_ms(), ms)
    while time.ticks_diff(t_end, time.ticks_ms()) > 0:
        if fn():
            return True
        time.sleep_ms(5)
    return fn()


def test_wifi_up_down():
    # beacon timeout 0 and reconnects as fast as connects: this test is about the states
    # (test_lwip_net.py checks the esp32's delays)
    fresh({"wifi": "up", "ssid": "home", "rssi": -61, "connect_ms": 150,
           "beacon_timeout_ms": 0, "reconnect_ms": 150,
           "ifconfig": ["192.0.2.10", "255.255.255.0", "192.0.2.1", "192.0.2.53"]})
    w = network.WLAN(network.STA_IF)
    eq(w is network.WLAN(network.STA_IF), True)
    raises(OSError, w.connect, "home", "pw")  # not active yet, as on the esp32 port
    w.active(True)
    try:
        w.connect("home", "pw")
        eq(w.isconnected(), False)
        eq(w.status(), network.STAT_CONNECTING)
        assert wait_until(w.isconnected, 2000)
        eq(w.status(), network.STAT_GOT_IP)
        eq(w.status("rssi"), -61)
        eq(w.ifconfig()[2], "192.0.2.1")
        eq(w.config("essid"), "home")
        eq(w.config("mac"), machine.unique_id())
        changed({"wifi": "down", "ssid": "home", "connect_ms": 150, "beacon_timeout_ms": 0,
                 "reconnect_ms": 150})
        eq(w.isconnected(), False)
        eq(w.status(), network.STAT_BEACON_TIMEOUT)
        raises(OSError, w.status, "rssi")
        time.sleep_ms(200)
        eq(w.status(), network.STAT_NO_AP_FOUND)
        changed({"wifi": "up", "ssid": "home", "rssi": -70, "connect_ms": 150,
                 "beacon_timeout_ms": 0, "reconnect_ms": 150})
        assert wait_until(w.isconnected, 2000)  # reconnects by itself
        eq(w.status("rssi"), -70)
        w.disconnect()
        eq(w.isconnected(), False)
        eq(w.status(), network.STAT_IDLE)
    finally:
        w.active(False)


def test_wifi_wrong_ssid_or_key():
    fresh({"wifi": "up", "ssid": "home", "key": "k", "connect_ms": 20})
    w = network.WLAN(network.STA_IF)
    w.active(True)
    try:
        w.connect("elsewhere", "k")
        time.sleep_ms(40)
        eq(w.isconnected(), False)
        eq(w.status(), network.STAT_NO_AP_FOUND)
        w.connect("home", "wrong")
        time.sleep_ms(40)
        eq(w.status(), network.STAT_WRONG_PASSWORD)
        w.connect("home", "k")
        assert wait_until(w.isconnected, 2000)
        eq(w.scan()[0][0], b"home")
    finally:
        w.active(False)


# --- reset cause, RTC ---------------------------------------------------------------

def test_no_state_file_is_power_on():
    fresh()
    eq(machine.reset_cause(), machine.PWRON_RESET)
    eq(read_state()["next_reset"], "PWRON_RESET")


def test_reset_cause_from_state_file():
    fresh(state={"next_reset": "SOFT_RESET", "rtc_memory": "6869"})
    eq(machine.reset_cause(), machine.SOFT_RESET)
    eq(machine.RTC().memory(), b"hi")
    board.setup(CONTROL, STATE)  # nothing recorded: the board "lost power"
    eq(machine.reset_cause(), machine.PWRON_RESET)
    eq(machine.RTC().memory(), b"")


def test_rtc_memory_survives_wdt_reset_not_power_cut():
    fresh()
    mac = machine.unique_id()
    eq(len(mac), 6)
    machine.RTC().memory(b"\x00state\xff")
    eq(read_state()["rtc_memory"], "007374617465ff")
    board.next_reset(machine.WDT_RESET)  # what the watchdog thread records
    board.setup(CONTROL, STATE)
    eq(machine.reset_cause(), machine.WDT_RESET)
    eq(machine.RTC().memory(), b"\x00state\xff")
    board.next_reset(machine.HARD_RESET)  # what machine.reset() records
    board.setup(CONTROL, STATE)
    eq(machine.reset_cause(), machine.HARD_RESET)
    eq(machine.RTC().memory(), b"\x00state\xff")
    board.setup(CONTROL, STATE)
    eq(machine.reset_cause(), machine.PWRON_RESET)
    eq(machine.RTC().memory(), b"")
    eq(machine.unique_id(), mac)  # the MAC is not RTC memory
    raises(ValueError, machine.RTC().memory, bytes(2049))


def test_rtc_datetime():
    fresh()
    dt = machine.RTC().datetime()
    eq(dt[:3], (2000, 1, 1))  # power-on
    machine.RTC().datetime((2024, 5, 6, 0, 12, 30, 15, 0))
    board.next_reset(machine.SOFT_RESET)
    board.setup(CONTROL, STATE)
    dt = machine.RTC().datetime()
    eq(dt[:3], (2024, 5, 6))
    eq(dt[3], 0)  # a Monday
    eq(dt[4:6], (12, 30))
    assert 15 <= dt[6] <= 16, dt


def test_misc():
    eq(machine.freq(), 160000000)
    machine.freq(240000000)
    eq(machine.freq(), 240000000)
    raises(ValueError, machine.freq, 123)
    machine.freq(160000000)
    eq(machine.wdt_running(), False)


def test_zz_cleanup():
    for p in (CONTROL, STATE, CONTROL + ".tmp"):
        try:
            os.remove(p)
        except OSError:
            pass


mpyunit.main(globals())
