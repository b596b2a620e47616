# clock.py - the agent's time (MicroPython only).
#
# Clock.now(): milliseconds since the Clock was made (at boot), monotonic and
# never wrapping: ticks_ms() wraps (every 2**30 ms on the esp32 port, ~12.4
# days), so each call adds ticks_diff() since the previous call. now() must be
# called at least once per half wrap period (~6 days on esp32); the app's tasks
# call it every few seconds. The count is kept as a base (a multiple of 2**28,
# moved once every ~3 days) plus a small int below 2**28, so the update is
# small-int arithmetic; only the returned sum is a long int on a 32-bit port
# after 2**30 ms (its small ints are 31-bit signed), one allocation per call.
# Hot paths stay on ticks_ms() (always a small int) and convert the rare
# values they keep with at(ticks): the LED sampler does so (app.py).
#
# sntp(): one SNTP exchange (RFC 4330, timestamps and offset formula from
# RFC 5905 8) with millisecond precision, unlike ntptime (whole seconds, no
# round-trip compensation).
import asyncio
import socket
import time
from micropython import const
from errno import EAGAIN as _EAGAIN
from os import urandom

# utc the collector accepts (docs/protocol.md "Bounds"): 2020-01-01 .. 2100-01-01 UTC
UTC_MIN = 1577836800000
UTC_MAX = 4102444800000
_NTP_LEN = const(48)
_NTP_PORT = const(123)
_NTP_RX = const(68)                  # 48 + room for a key id and MAC we ignore
_UNIX_FROM_NTP = 2208988800         # seconds from 1900-01-01 to 1970-01-01 (> 31 bits)
_ERA = 1 << 32
_SPAN = const(1 << 28)       # now()'s small-int part stays below this


class Clock:
    # Monotonic 64-bit ms since boot plus, once synced, a t -> UTC offset.
    #
    # ticks_ms / ticks_diff are injectable so wrap-around can be tested.

    def __init__(self, ticks_ms=None, ticks_diff=None, start_ms=0):
        self._ticks = ticks_ms or time.ticks_ms
        self._diff = ticks_diff or time.ticks_diff
        self._last = self._ticks()
        self._hi = start_ms     # a multiple of _SPAN plus start_ms: changes every ~3 days
        self._lo = 0            # < _SPAN: a small int on every port
        self._off = None        # utc_ms - t, once synced
        self.synced_at = None   # t of the last set_utc()
        self.rtt = None         # round trip of the last SNTP sample, ms
        self.last_error = None  # why the last sntp() failed (a short string)

    def now(self):
        t = self._ticks()
        d = self._diff(t, self._last)
        if d > 0:  # d < 0 only if ticks went backwards: never let `now` do so
            lo = self._lo + d
            while lo >= _SPAN:  # d < 2**29: lo stays below 2**30
                self._hi += _SPAN
                lo -= _SPAN
            self._lo = lo
            self._last = t
        return self._hi + self._lo

    def at(self, ticks):
        # Our ms at a ticks_ms() value of the last half ticks period (a stored stamp).
        n = self.now()
        return n - self._diff(self._last, ticks)

    def set_utc(self, utc_ms, at_t):
        # UTC was utc_ms at monotonic time at_t (from SNTP).
        self._off = utc_ms - at_t
        self.synced_at = at_t

    def synced(self):
        return self._off is not None

    def utc_ms(self, t=None):
        # UTC ms at monotonic t (default: now), or None until synced.
        if self._off is None:
            return None
        if t is None:
            t = self.now()
        return t + self._off


# ---------------------------------------------------------------- SNTP packets

def _u32(b, o):
    return (b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]


def ntp_to_ms(buf, off):
    # 64-bit NTP timestamp at buf[off:off+8] -> Unix ms (fraction rounded).
    # Seconds with the top bit clear are taken as era 1 (after 2036-02-07).
    sec = _u32(buf, off)
    frac = _u32(buf, off + 4)
    if not sec & 0x80000000:
        sec += _ERA
    return (sec - _UNIX_FROM_NTP) * 1000 + ((frac * 1000 + (1 << 31)) >> 32)


def ms_to_ntp(ms, buf, off):
    # Unix ms -> 64-bit NTP timestamp written at buf[off:off+8].
    sec = ms // 1000 + _UNIX_FROM_NTP
    frac = ((ms % 1000) << 32) // 1000
    sec &= 0xFFFFFFFF
    for i in range(4):
        buf[off + i] = (sec >> (24 - 8 * i)) & 0xFF
        buf[off + 4 + i] = (frac >> (24 - 8 * i)) & 0xFF


def sntp_request_into(buf, xmt):
    # A client request: LI 0, VN 4, Mode 3; everything zero but the transmit
    # timestamp, which the server echoes as the originate timestamp (RFC 4330 5).
    # xmt: 8 bytes (our clock with random low bits: a nonce that pairs the reply).
    for i in range(_NTP_LEN):
        buf[i] = 0
    buf[0] = 0x23  # LI=0 VN=4 Mode=3
    for i in range(8):
        buf[40 + i] = xmt[i]
    return _NTP_LEN


def sntp_parse(pkt, n, xmt, t1, t4):
    # Check a server reply and compute the clock.
    #
    # t1: our (monotonic ms) send time, t4: receive time. Returns
    # (utc_ms_at_t4, delay_ms, offset_ms) where offset = utc - t (RFC 5905 8:
    # offset = ((T2 - t1) + (T3 - t4)) / 2, delay = (t4 - t1) - (T3 - T2)).
    # Raises ValueError with the reason for a reply that must not be used.
    if n < _NTP_LEN:
        raise ValueError("short reply (%d bytes)" % n)
    li = pkt[0] >> 6
    vn = (pkt[0] >> 3) & 7
    mode = pkt[0] & 7
    if mode != 4:
        raise ValueError("mode %d, expected 4 (server)" % mode)
    if vn != 4 and vn != 3:
        raise ValueError("version %d" % vn)
    for i in range(8):
        if pkt[24 + i] != xmt[i]:
            raise ValueError("originate timestamp mismatch")
    stratum = pkt[1]
    if stratum == 0:  # kiss-o'-death: the reference id is a 4-letter code
        code = "".join(chr(c) if 32 < c < 127 else "?" for c in pkt[12:16])
        raise ValueError("kiss-o'-death %s" % code)
    if stratum > 15:
        raise ValueError("stratum %d (unsynchronized)" % stratum)
    if li == 3:
        raise ValueError("leap indicator 3 (server clock not synchronized)")
    if not (_u32(pkt, 32) or _u32(pkt, 36)) or not (_u32(pkt, 40) or _u32(pkt, 44)):
        raise ValueError("zero receive/transmit timestamp")
    t2 = ntp_to_ms(pkt, 32)
    t3 = ntp_to_ms(pkt, 40)
    if t3 < t2:
        raise ValueError("transmit before receive")
    if t3 < UTC_MIN or t3 >= UTC_MAX:
        # A router serving 2000-01-01 after a power cut: records stamped with it would
        # be refused by the collector (docs/protocol.md "Bounds") and hold up the rest.
        raise ValueError("server time outside 2020..2100")
    offset = ((t2 - t1) + (t3 - t4)) // 2
    delay = (t4 - t1) - (t3 - t2)
    if delay < 0:  # ms rounding on a fast LAN
        delay = 0
    return t4 + offset, delay, offset


def _nonce(clock, buf):
    # Our UTC estimate when synced (as RFC 4330 suggests), else zero seconds;
    # the low 32 bits are random so a reply is paired with this request only.
    u = clock.utc_ms()
    if u is None:
        for i in range(4):
            buf[i] = 0
    else:
        ms_to_ntp(u, buf, 0)
    r = urandom(4)
    for i in range(4):
        buf[4 + i] = r[i]
    return buf


def _is_ip4(s):
    if not isinstance(s, str):
        return False
    parts = s.split(".")
    if len(parts) != 4:
        return False
    for p in parts:
        if not p or len(p) > 3 or not p.isdigit() or int(p) > 255:
            return False
    return True


def _wait_read(s):
    yield asyncio.core._io_queue.queue_read(s)  # type: ignore[attr-defined]  # asyncio.core (the poller) is not in the stubs


def _reply(s, xmt, t1, clock):
    # Wait for a usable reply; one with a foreign originate timestamp (late or
    # spoofed) is skipped, any other defect ends the exchange with its reason.
    # recv(), not readinto(): a socket's readinto() concatenates datagrams.
    while True:
        yield from _wait_read(s)
        while True:
            try:
                rx = s.recv(_NTP_RX)
            except OSError as e:
                if e.args and e.args[0] == _EAGAIN:
                    break
                raise
            t4 = clock.now()
            try:
                return sntp_parse(rx, len(rx), xmt, t1, t4) + (t4,)
            except ValueError as e:
                if e.args and e.args[0] == "originate timestamp mismatch":
                    continue
                raise


async def sntp(clock, server, timeout_ms=2000, port=_NTP_PORT):
    # One SNTP exchange with server (an IPv4 literal: never a name, getaddrinfo
    # blocks). On success sets the clock and returns (utc_ms, rtt_ms); on failure
    # returns None and leaves the reason in clock.last_error.
    if not _is_ip4(server):
        raise ValueError("SNTP server must be an IPv4 address (resolve names with "
                         "probe.resolve(), getaddrinfo blocks): %r" % (server,))
    buf = bytearray(_NTP_LEN)
    xmt = _nonce(clock, bytearray(8))
    sntp_request_into(buf, xmt)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setblocking(False)
        s.connect(socket.getaddrinfo(server, port)[0][-1])
        t1 = clock.now()
        s.send(buf)
        try:
            utc, delay, _, t4 = await asyncio.wait_for_ms(_reply(s, xmt, t1, clock), timeout_ms)
        except asyncio.TimeoutError:
            clock.last_error = "timeout"
            return None
        except ValueError as e:
            clock.last_error = e.args[0] if e.args else "bad reply"
            return None
    except OSError as e:
        clock.last_error = "socket error %d" % (e.args[0] if e.args else 0)
        return None
    finally:
        s.close()
    clock.set_utc(utc, t4)
    clock.rtt = delay
    clock.last_error = None
    return utc, delay
