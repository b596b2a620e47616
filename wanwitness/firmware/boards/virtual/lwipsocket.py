# `socket` for the virtual board: the unix port's sockets made to fail the way the
# esp32 port's lwIP sockets do (ports/esp32/modsocket.c over esp-lwip). run.py installs
# this module as sys.modules["socket"] before the agent is imported. What differs:
# - getaddrinfo(name) blocks the caller for the resolver's time: "dns_ms" (default 20)
#   when the upstream DNS answers, the chip's whole retry time "dns_fail_ms" (default
#   7000: lwIP's 1+1+2+3 s per server) when it does not ("dns": "down" or Wi-Fi down in
#   the control file), then OSError(-202) as the esp32 port raises. Names come from the
#   control file's "hosts" ({"name": "a.b.c.d"}) and "localhost": the host's own
#   resolver is never asked, so no lookup leaves this machine. A numeric address is
#   parsed at once, as lwIP does.
# - a refused TCP connect: a non-blocking connect() raises EINPROGRESS; once the RST
#   is in, connect()/send()/recv() raise ENOTCONN (the netconn has lost its pcb), never
#   ECONNREFUSED; a blocking connect() raises ECONNRESET (err_tcp's ERR_RST).
# - UDP never reports ECONNREFUSED: lwIP ignores ICMP port unreachable; the socket
#   simply gets no answer.
# - modem sleep: unless WLAN(STA_IF).config(pm=PM_NONE) was set, data arriving within
#   "pm_ms" (default 200) of a send is delivered only pm_ms after that send (the radio
#   wakes for the next DTIM beacon), and a non-blocking connect completes no sooner.
# Counters for tests and bench/dns_stall.py: lookups, blocking_lookups (>= 1 s), blocked_ms.
import errno
import sys
import time
from time import ticks_diff, ticks_ms

import board

_host = sys.modules.get("socket")
if _host is None or _host is sys.modules.get(__name__):
    import socket as _host  # type: ignore[no-redef]
if getattr(_host, "_LWIP", False):  # installed twice: wrap the host's module once
    _host = _host._host  # type: ignore[attr-defined]
_LWIP = True

AF_INET = _host.AF_INET
SOCK_STREAM = _host.SOCK_STREAM
SOCK_DGRAM = _host.SOCK_DGRAM
SOCK_RAW = _host.SOCK_RAW
SOL_SOCKET = _host.SOL_SOCKET
SO_REUSEADDR = _host.SO_REUSEADDR
IPPROTO_IP = getattr(_host, "IPPROTO_IP", 0)
IPPROTO_TCP = getattr(_host, "IPPROTO_TCP", 6)
IPPROTO_UDP = getattr(_host, "IPPROTO_UDP", 17)
inet_pton = getattr(_host, "inet_pton", None)
inet_ntop = getattr(_host, "inet_ntop", None)

DNS_MS = 20
DNS_FAIL_MS = 7000  # lwIP: DNS_MAX_RETRIES 4, timeouts 1+1+2+3 s (dns.c), one server
PM_MS = 200
EAI_FAIL = 202      # lwIP's netdb.h; the esp32 port raises OSError(-202)

lookups = 0
blocking_lookups = 0
blocked_ms = 0
_REFUSED = (errno.ECONNREFUSED,)  # the host's word for a refused connect


def _numeric(s):
    p = s.split(".")
    if len(p) != 4:
        return False
    for x in p:
        if not x.isdigit() or int(x) > 255:
            return False
    return True


def dns_down():
    # The upstream resolver does not answer: the control file says so, or the link is down.
    board.poll()
    c = board.control
    return c.get("dns", "up") != "up" or c.get("wifi", "up") != "up"


def pm_ms():
    # The reply delay modem sleep adds now (0 with pm=PM_NONE or no Wi-Fi module).
    n = sys.modules.get("network")
    if n is None or not hasattr(n, "_ifaces"):
        return 0
    w = n._ifaces.get(0)
    if w is None or not w._active or w._cfg.get("pm") == 0:
        return 0  # no station (no radio to sleep), or modem sleep off
    return board.control.get("pm_ms", PM_MS)


def getaddrinfo(host, port, af=0, type=0, proto=0, flags=0):
    global lookups, blocking_lookups, blocked_ms
    if isinstance(host, bytes):
        host = host.decode()
    if _numeric(host):
        return _host.getaddrinfo(host, port, af, type, proto, flags)
    lookups += 1
    down = dns_down()
    c = board.control
    ms = c.get("dns_fail_ms", DNS_FAIL_MS) if down else c.get("dns_ms", DNS_MS)
    t0 = ticks_ms()
    time.sleep_ms(ms)  # the only task waits: lwip_getaddrinfo blocks the caller
    took = ticks_diff(ticks_ms(), t0)
    blocked_ms += took
    if took >= 1000:
        blocking_lookups += 1
    hosts = c.get("hosts")
    ip = hosts.get(host) if isinstance(hosts, dict) else None
    if ip is None and host == "localhost":
        ip = "127.0.0.1"
    if down or not isinstance(ip, str) or not _numeric(ip):
        raise OSError(-EAI_FAIL)
    return _host.getaddrinfo(ip, port, af, type, proto, flags)


import io  # noqa: E402


class socket(io.IOBase):
    # The host's socket inside, not a subclass of it: select.poll and ssl drive a socket
    # through the C stream protocol, which on a Python subclass of the native type gets
    # the wrong object (a bad fd: POLLNVAL, EBADF). An io.IOBase calls ioctl(),
    # readinto() and write() below instead.
    def __init__(self, af=AF_INET, type=SOCK_STREAM, proto=0):
        self._s = _host.socket(af, type, proto)
        self._udp = type == SOCK_DGRAM
        self._nb = False
        self._refused = False
        self._tx = None  # ticks of the last send / connect (modem sleep)

    def ioctl(self, req, arg):
        if req == 10:  # MP_STREAM_GET_FILENO: select.poll then polls the fd itself
            return self._s.fileno()
        if req == 4:  # MP_STREAM_CLOSE
            self._s.close()
            return 0
        if req == 3:  # MP_STREAM_POLL (an ssl socket, or select.poll on a closed one)
            fd = self._s.fileno()
            if fd < 0:
                return 0x20  # MP_STREAM_POLL_NVAL, as ports/esp32/modsocket.c for fd < 0
            import select
            p = select.poll()
            p.register(fd, arg)
            r = p.poll(0)
            return r[0][1] & (arg | 0x18) if r else 0
        return -errno.EINVAL

    def fileno(self):
        return self._s.fileno()

    def close(self):
        self._s.close()

    def bind(self, addr):
        self._s.bind(addr)

    def listen(self, n=5):
        self._s.listen(n)

    def accept(self):
        return self._s.accept()

    def setsockopt(self, *a):
        self._s.setsockopt(*a)

    def setblocking(self, flag):
        self._nb = not flag
        self._s.setblocking(flag)

    def settimeout(self, t):
        self._nb = t == 0
        self._s.settimeout(t)

    def _err(self, e):
        # Turn the host's error into the one lwIP would give
        n = e.args[0] if e.args else 0
        if n in _REFUSED and not self._udp:
            self._refused = True
            return OSError(errno.ENOTCONN)
        return e

    def _held(self):
        if self._tx is None:
            return False
        d = pm_ms()
        return d > 0 and ticks_diff(ticks_ms(), self._tx) < d

    def connect(self, addr):
        if self._refused:
            raise OSError(errno.ENOTCONN)
        first = self._tx is None
        if first:
            self._tx = ticks_ms()
        try:
            self._s.connect(addr)
        except OSError as e:
            n = e.args[0] if e.args else 0
            if n in _REFUSED and not self._udp and not self._nb:
                raise OSError(errno.ECONNRESET)
            if not self._udp and not first and self._held() and n not in _REFUSED:
                raise OSError(errno.EALREADY)
            raise self._err(e)
        if not self._udp and not first and self._held():
            raise OSError(errno.EALREADY)  # modem sleep: the SYN-ACK is not in yet

    def send(self, data):
        if self._refused:
            raise OSError(errno.ENOTCONN)
        self._tx = ticks_ms()
        try:
            return self._s.send(data)
        except OSError as e:
            if self._udp and (e.args and e.args[0] == errno.ECONNREFUSED):
                return len(data)  # an earlier ICMP port unreachable: lwIP never saw it
            raise self._err(e)

    def sendto(self, data, addr):
        self._tx = ticks_ms()
        try:
            return self._s.sendto(data, addr)
        except OSError as e:
            if self._udp and (e.args and e.args[0] == errno.ECONNREFUSED):
                return len(data)
            raise self._err(e)

    def write(self, data, *a):
        if self._refused:
            raise OSError(errno.ENOTCONN)
        self._tx = ticks_ms()
        try:
            return self._s.write(data, *a)
        except OSError as e:
            raise self._err(e)

    def _rx(self, fn, *a):
        if self._refused:
            raise OSError(errno.ENOTCONN)
        if self._held():
            if self._nb:
                raise OSError(errno.EAGAIN)
            while self._held():
                time.sleep_ms(5)
        while True:
            try:
                return fn(*a)
            except OSError as e:
                if self._udp and e.args and e.args[0] == errno.ECONNREFUSED:
                    if self._nb:
                        raise OSError(errno.EAGAIN)
                    continue  # blocking: wait on for a real datagram
                raise self._err(e)

    def recv(self, n):
        return self._rx(self._s.recv, n)

    def recvfrom(self, n):
        return self._rx(self._s.recvfrom, n)

    def read(self, *a):
        try:
            return self._rx(self._s.read, *a)
        except OSError as e:
            if self._nb and e.args and e.args[0] == errno.EAGAIN:
                return None  # a stream read with nothing to give
            raise

    def readinto(self, buf, *a):
        try:
            return self._rx(self._s.readinto, buf, *a)
        except OSError as e:
            if self._nb and e.args and e.args[0] == errno.EAGAIN:
                return None
            raise


def install():
    # Become `socket` for everything imported after this call.
    sys.modules["socket"] = sys.modules[__name__]
