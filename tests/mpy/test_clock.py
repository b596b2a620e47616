# agent/clock.py on MicroPython: the monotonic 64-bit ms counter across ticks_ms
# wrap-around (injected ticks with the esp32 period, 2**30 ms), UTC mapping, and
# SNTP packets (RFC 4330 / RFC 5905) byte-exact with ms precision.
import sys
if ".frozen" not in sys.path:
    sys.path.append(".frozen")  # asyncio is frozen into the unix port

import asyncio

import mpyunit
from mpyunit import eq, raises
import clock

PERIOD = 1 << 30   # ticks_ms period on the esp32 port
HALF = PERIOD // 2


class FakeTicks:
    """ticks_ms / ticks_diff with the esp32 period; `v` is the unwrapped truth."""

    def __init__(self, v):
        self.v = v

    def ms(self):
        return self.v % PERIOD

    @staticmethod
    def diff(a, b):
        return ((a - b + HALF) % PERIOD) - HALF


def test_fake_ticks_behave_like_the_port():
    eq(FakeTicks.diff(0, PERIOD - 1), 1)
    eq(FakeTicks.diff(PERIOD - 1, 0), -1)
    eq(FakeTicks.diff(5, 3), 2)


def test_start_just_before_the_wrap_stays_monotonic():
    # Acceptance: a clock started 5 s before ticks_ms wraps counts straight through.
    ft = FakeTicks(PERIOD - 5000)
    c = clock.Clock(ft.ms, ft.diff)
    eq(c.now(), 0)
    prev = 0
    for _ in range(1500):          # 10.5 s in 7 ms steps, across the wrap
        ft.v += 7
        t = c.now()
        assert t > prev, (t, prev)
        prev = t
    eq(prev, 1500 * 7)
    eq(ft.ms() < 10000, True)      # the raw ticks did wrap


def test_several_wraps_and_64_bit_values():
    ft = FakeTicks(PERIOD - 1)
    c = clock.Clock(ft.ms, ft.diff)
    step = (1 << 28) + 12345       # < half a period: each call sees the true step
    prev = c.now()
    for i in range(1, 41):         # ~10 wraps, ~1.07e10 ms
        ft.v += step
        t = c.now()
        eq(t, i * step)
        assert t > prev
        prev = t
    assert prev > (1 << 33), prev
    eq(prev, ft.v - (PERIOD - 1))


def test_now_does_not_go_backwards():
    ft = FakeTicks(1000)
    c = clock.Clock(ft.ms, ft.diff)
    ft.v += 100
    eq(c.now(), 100)
    ft.v -= 50                     # a ticks source that steps back
    eq(c.now(), 100)
    ft.v += 80                     # 30 ms past the last seen tick
    eq(c.now(), 130)
    eq(c.now(), 130)


def test_start_offset_keeps_big_values():
    ft = FakeTicks(0)
    c = clock.Clock(ft.ms, ft.diff, start_ms=(1 << 40))
    ft.v += 1
    eq(c.now(), (1 << 40) + 1)


def test_real_ticks_default():
    import time
    c = clock.Clock()
    a = c.now()
    time.sleep_ms(15)
    b = c.now()
    assert 10 <= b - a < 200, (a, b)


def test_utc_mapping():
    ft = FakeTicks(PERIOD - 10)
    c = clock.Clock(ft.ms, ft.diff)
    eq(c.utc_ms(), None)
    eq(c.synced(), False)
    c.set_utc(1700000000000, 0)
    eq(c.synced(), True)
    eq(c.utc_ms(0), 1700000000000)
    eq(c.utc_ms(2500), 1700000002500)
    ft.v += 40                     # across the wrap
    eq(c.utc_ms(), 1700000000040)


# ---------------------------------------------------------------- SNTP

def ntp_ts(ms):
    b = bytearray(8)
    clock.ms_to_ntp(ms, b, 0)
    return bytes(b)


XMT = b"\x00\x00\x00\x00\x9a\x51\x7c\x03"


def reply(t2, t3, xmt=XMT, li=0, vn=4, mode=4, stratum=2, refid=b"GPS\x00"):
    p = bytearray(48)
    p[0] = (li << 6) | (vn << 3) | mode
    p[1] = stratum
    p[2] = 6
    p[3] = 0xEC
    p[12:16] = refid
    p[16:24] = ntp_ts(t2 - 1000)   # reference timestamp: not used
    p[24:32] = xmt                 # originate = our transmit
    p[32:40] = ntp_ts(t2)
    p[40:48] = ntp_ts(t3)
    return p


def test_request_is_byte_exact():
    buf = bytearray(48)
    eq(clock.sntp_request_into(buf, XMT), 48)
    eq(bytes(buf), b"\x23" + b"\x00" * 39 + XMT)


def test_ntp_timestamps_in_ms():
    # 2023-11-14 22:13:20.123 UTC; 0.123 s = 528280977 / 2**32 (rounded down)
    b = ntp_ts(1700000000123)
    eq(b, bytes([0xE8, 0xFE, 0x6F, 0x80, 0x1F, 0x7C, 0xED, 0x91]))
    eq(clock.ntp_to_ms(b, 0), 1700000000123)
    for ms in (0, 1, 999, 1000, 1700000000000, 1700000000999, 2085978495999,
               2085978496000 + 5, 2208988800123):  # the last two are in NTP era 1
        eq(clock.ntp_to_ms(ntp_ts(ms), 0), ms)
    # a fraction of 0.9996 s rounds up into the next second
    b = bytearray(ntp_ts(1700000000000))
    b[4:8] = b"\xff\xe5\x60\x41"
    eq(clock.ntp_to_ms(b, 0), 1700000001000)


def test_offset_and_round_trip_compensation():
    # Truth: utc = t + theta; 19 ms each way; the server holds it 2 ms.
    theta = 1699999990104
    t1 = 10000
    t2 = t1 + theta + 19           # 1700000000123
    t3 = t2 + 2
    t4 = t3 - theta + 19           # 10040
    eq(t4, 10040)
    utc, delay, offset = clock.sntp_parse(reply(t2, t3), 48, XMT, t1, t4)
    eq(offset, theta)
    eq(delay, 38)
    eq(utc, t4 + theta)
    eq(utc, 1700000000144)
    # asymmetric paths: the error is half the asymmetry (RFC 5905 8)
    utc, delay, offset = clock.sntp_parse(reply(t1 + theta + 10, t1 + theta + 12), 48, XMT, t1, t1 + 42)
    eq(delay, 40)
    eq(offset, theta - 10)


def test_sntp_rejections():
    t2 = 1700000000123
    cases = [
        ("short reply", reply(t2, t2)[:47]),
        ("mode 3", reply(t2, t2, mode=3)),
        ("mode 5", reply(t2, t2, mode=5)),
        ("version 2", reply(t2, t2, vn=2)),
        ("originate timestamp mismatch", reply(t2, t2, xmt=b"\x00" * 8)),
        ("kiss-o'-death RATE", reply(t2, t2, stratum=0, refid=b"RATE")),
        ("kiss-o'-death DENY", reply(t2, t2, stratum=0, refid=b"DENY")),
        ("stratum 16", reply(t2, t2, stratum=16)),
        ("leap indicator 3", reply(t2, t2, li=3)),
        ("transmit before receive", reply(t2, t2 - 5)),
        # a router's clock after a power cut, and one far ahead: outside what the
        # collector accepts as utc
        ("server time outside 2020..2100", reply(946684800000, 946684800000)),
        ("server time outside 2020..2100", reply(4102444800000, 4102444800000)),
    ]
    zero = reply(t2, t2)
    zero[40:48] = b"\x00" * 8
    cases.append(("zero receive/transmit", zero))
    for want, pkt in cases:
        e = raises(ValueError, clock.sntp_parse, pkt, len(pkt), XMT, 0, 10)
        assert want in str(e), "%r not in %r" % (want, str(e))
    # version 3 servers are accepted, a 68-byte reply (with a MAC) too
    clock.sntp_parse(reply(t2, t2, vn=3), 48, XMT, 0, 10)
    clock.sntp_parse(reply(t2, t2) + bytes(20), 68, XMT, 0, 10)
    # the edges match the collector's bounds (wanwitness/collector/protocol.py)
    assert (clock.UTC_MIN, clock.UTC_MAX) == (1577836800000, 4102444800000)
    clock.sntp_parse(reply(1577836800000, 1577836800000), 48, XMT, 0, 10)


def test_nonce_uses_utc_when_synced():
    c = clock.Clock()
    b = clock._nonce(c, bytearray(8))
    eq(bytes(b[:4]), b"\x00\x00\x00\x00")
    c.set_utc(1700000000123, c.now())
    b = clock._nonce(c, bytearray(8))
    eq(bytes(b[:4]), bytes([0xE8, 0xFE, 0x6F, 0x80]))


def test_sntp_to_a_closed_port_fails_fast():
    c = clock.Clock()
    import time
    t0 = time.ticks_ms()
    r = asyncio.run(clock.sntp(c, "127.0.0.1", 1500, port=9))
    eq(r, None)
    assert time.ticks_diff(time.ticks_ms(), t0) < 1000
    assert c.last_error, c.last_error
    eq(c.synced(), False)


def test_sntp_refuses_a_name():
    # getaddrinfo on a name would block the event loop: names are the caller's job
    e = raises(ValueError, asyncio.run, clock.sntp(clock.Clock(), "pool.ntp.org", 100))
    assert "IPv4" in str(e), e


mpyunit.main(globals())
