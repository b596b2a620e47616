# probe.py - rounds of concurrent reachability probes (MicroPython only).
#
# ICMP echo over a raw socket (RFC 792), TCP connect, and a DNS A query built by
# hand over UDP (RFC 1035). Every socket is non-blocking and parks its task on
# the asyncio IO queue, and every wait has a timeout, so a round never blocks
# the LED sampler sharing the event loop. Addresses are IPv4 literals only:
# getaddrinfo() on a name blocks, so names are looked up with resolve().
# (Comments, not docstrings: a docstring costs RAM whenever this is compiled.)
import asyncio
import errno
import socket
import sys
from array import array
from os import urandom
from time import ticks_add, ticks_diff, ticks_ms, ticks_us
from micropython import const

# Tunables; a round's targets dict may override the ports.
FALLBACK_PORT = 443      # TCP port for an ICMP target when raw sockets are refused
GATEWAY_PORT = 80        # ... for the gateway (its web UI)
DNS_NAME = "example.com"

# Failure reasons (one string object each, no allocation on the common path).
TIMEOUT = "timeout"
REFUSED = "refused"
UNREACH = "unreach"
NOADDR = "no-address"
# Not a result: a reply found no free block in the heap (recv allocates its size). The
# round that had one is given up as a whole (MemoryError from probe_round(), as for
# one of its own allocations), never scored as a loss: a target is not down because
# the agent was short of memory.
NOMEM = "no-memory"

# errno values as this port raises them (esp32 uses newlib's numbers); the two
# the errno module lacks are picked per platform.
_LINUX = sys.platform == "linux"
_EISCONN = 106 if _LINUX else 127
# lwIP (esp32) reads a refused connect back as ENOTCONN: the RST freed the netconn's pcb.
_REFUSED_ERRS = (errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ENOTCONN)
_UNREACH_ERRS = (errno.EHOSTUNREACH, 101 if _LINUX else 114)  # + ENETUNREACH
_BUSY_ERRS = (errno.EINPROGRESS, errno.EALREADY)

_ECHO_LEN = const(16)    # ICMP header 8 + payload 8
_ICMP_RX = const(128)    # IPv4 20..60 + our 16; errors quote 28..68 more
_DNS_QMAX = const(271)   # header 12 + name 255 + type/class 4
_DNS_RX = const(512)     # RFC 1035 4.2.1: UDP messages are at most 512 bytes
# A stub resolver retransmits a lost UDP query (RFC 1035 4.2.1; glibc every few
# seconds): one lost datagram on a lossy line is not a DNS outage. We resend the same
# query (same id) every _DNS_RETRY_MS, at most _DNS_TRIES times, within the round: an
# answered query sends no more, a silent resolver gets five queries in the first
# second, and each unanswered one is a failed probe the detector counts (STREAKS).
_DNS_TRIES = const(5)
_DNS_RETRY_MS = const(250)
_KEEP = const(32)       # answer times per target kept for the heartbeat's median
_PAYLOAD = b"wanwitns"
_RCODES = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED")

_tx = bytearray(_ECHO_LEN)   # the echo request, rebuilt in place for every target
_dq = bytearray(_DNS_QMAX)   # the DNS query: built and sent before any await, so shared
# DNS replies are read into this, kept for good, and parsed before any await (so shared):
# recv(512) needs a free run of 512 bytes for every reply, which a fragmented heap can
# lack for minutes (the 2-hour soak at 56K: every round given up from a DNS outage's
# onset to the next event, the largest free block 496 bytes).
_drx = bytearray(_DNS_RX)
raw_ok = None                # None: untried; True; False: EPERM seen (not retried)


def _rand16():
    b = urandom(2)
    return (b[0] << 8) | b[1]


_ident = _rand16()
_seq = _rand16()


def _errno(e):
    return e.args[0] if e.args else 0


def _errname(e):
    n = _errno(e)
    if n in _REFUSED_ERRS:
        return REFUSED
    if n in _UNREACH_ERRS:
        return UNREACH
    return errno.errorcode.get(n) or "errno %d" % n


def ip4(s):
    # 'a.b.c.d' -> 4 bytes; ValueError for anything else (no name lookups here).
    parts = s.split(".")
    if len(parts) != 4:
        raise ValueError("not an IPv4 address: %r" % s)
    for p in parts:
        if not p or len(p) > 3 or not p.isdigit() or int(p) > 255:
            raise ValueError("not an IPv4 address: %r" % s)
    return bytes(int(p) for p in parts)


def split_target(t, default_port=None):
    # 'ip' -> (ip, default_port); 'ip:port' -> (ip, port); the ip is checked.
    host, sep, port = t.rpartition(":")
    if not sep:
        host, port = t, default_port
    elif port.isdigit() and 0 < int(port) < 65536:
        port = int(port)
    else:
        raise ValueError("bad port in target %r" % t)
    ip4(host)
    return host, port


_addrs = {}  # ip -> (4 bytes, {port: sockaddr}): parsed once, not every round


def _addr(ip, port):
    # -> (ip as 4 bytes, sockaddr for port). getaddrinfo() on a numeric address
    # parses it without any lookup, on every port.
    c = _addrs.get(ip)
    if c is None:
        if len(_addrs) >= 16:
            _addrs.clear()
        c = _addrs[ip] = (ip4(ip), {})
    sa = c[1].get(port)
    if sa is None:
        sa = c[1][port] = socket.getaddrinfo(ip, port)[0][-1]
    return c[0], sa


def _entry(role, kind, ip):
    # A target's result, filled in place; "timeout" until something answers.
    return {"role": role, "ok": False, "rtt": None, "err": TIMEOUT, "kind": kind, "ip": ip}


def _recv(s, size):
    # One datagram, or None when none is queued. Not readinto(): on a socket it
    # is a stream read that concatenates datagrams until the buffer is full (and
    # MicroPython sockets have no recv_into).
    try:
        return s.recv(size)
    except OSError as er:
        if _errno(er) == errno.EAGAIN:
            return None
        raise


def _recv_into(s, buf):
    # The datagrams queued, read into buf -> bytes read (0: none queued). A socket's
    # readinto() is a stream read: datagrams queued back to back come concatenated
    # (_dns_end() finds where each DNS message ends).
    try:
        n = s.readinto(buf)
    except OSError as er:
        if _errno(er) == errno.EAGAIN:
            return 0
        raise
    return n or 0


def _dns_end(pkt, n):
    # The length of the DNS message at the start of pkt[:n] (its sections walked), or
    # n when it cannot be measured.
    try:
        if n < 12:
            return n
        off = 12
        for _ in range((pkt[4] << 8) | pkt[5]):
            off = _read_name(pkt, off, n, None) + 4
        for _ in range(((pkt[6] << 8) | pkt[7]) + ((pkt[8] << 8) | pkt[9]) + ((pkt[10] << 8) | pkt[11])):
            off = _read_name(pkt, off, n, None)
            if off + 10 > n:
                return n
            off += 10 + ((pkt[off + 8] << 8) | pkt[off + 9])
        return min(off, n)
    except ValueError:
        return n


def _wait_read(s):
    # Park the task on the asyncio poller until s is readable (or in error),
    # as asyncio/stream.py does; cancellation removes it from the poller.
    yield asyncio.core._io_queue.queue_read(s)  # type: ignore[attr-defined]  # asyncio.core (the poller) is not in the stubs


def _wait_write(s):
    yield asyncio.core._io_queue.queue_write(s)  # type: ignore[attr-defined]  # asyncio.core (the poller) is not in the stubs


def _ms(t0):
    return (ticks_diff(ticks_us(), t0) + 500) // 1000


# ---------------------------------------------------------------- ICMP (RFC 792)

def checksum(buf, start=0, end=None):
    # Internet checksum (RFC 1071): one's complement of the one's complement sum.
    if end is None:
        end = len(buf)
    s = 0
    for i in range(start, end - 1, 2):
        s += (buf[i] << 8) | buf[i + 1]
    if (end - start) & 1:
        s += buf[end - 1] << 8
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def echo_request_into(buf, ident, seq):
    # An echo request (type 8 code 0, RFC 792) in buf[0:16]; returns 16.
    buf[0] = 8
    buf[1] = buf[2] = buf[3] = 0
    buf[4] = ident >> 8
    buf[5] = ident & 0xFF
    buf[6] = (seq >> 8) & 0xFF
    buf[7] = seq & 0xFF
    for i in range(8):
        buf[8 + i] = _PAYLOAD[i]
    c = checksum(buf, 0, _ECHO_LEN)
    buf[2] = c >> 8
    buf[3] = c & 0xFF
    return _ECHO_LEN


def echo_request(ident, seq):
    b = bytearray(_ECHO_LEN)
    echo_request_into(b, ident, seq)
    return bytes(b)


def _icmp_at(pkt, n):
    # (offset, end) of the ICMP message in an IPv4 packet as a raw socket
    # returns it, or (-1, 0). IHL counts 32-bit words (RFC 791); the total
    # length drops any link-layer padding.
    if n < 28 or pkt[0] >> 4 != 4 or pkt[9] != 1:
        return -1, 0
    ihl = (pkt[0] & 0x0F) * 4
    if ihl < 20 or n < ihl + 8:
        return -1, 0
    tot = (pkt[2] << 8) | pkt[3]
    return ihl, tot if ihl + 8 <= tot <= n else n


def _is(pkt, off, want):
    # pkt[off:off + len(want)] == want, without slicing (the caller checked n)
    for i in range(len(want)):
        if pkt[off + i] != want[i]:
            return False
    return True


def _id_seq(pkt, off, ident, seq):
    return ((pkt[off + 4] << 8) | pkt[off + 5]) == ident and ((pkt[off + 6] << 8) | pkt[off + 7]) == seq


def match_echo_reply(pkt, n, ident, seq, src4):
    # True if pkt[:n] (IPv4 header included) is the echo reply to our
    # (ident, seq) from src4. A raw socket sees every ICMP packet on the host -
    # other pings, our own request looped back, errors: all False.
    off, end = _icmp_at(pkt, n)
    return (off > 0 and _is(pkt, 12, src4) and pkt[off] == 0 and pkt[off + 1] == 0
            and _id_seq(pkt, off, ident, seq) and checksum(pkt, off, end) == 0)


def match_echo_error(pkt, n, ident, seq, dst4):
    # UNREACH or "ttl" if pkt is a destination-unreachable / time-exceeded
    # quoting our echo request (ident, seq) to dst4 (RFC 792: an error carries
    # the original IP header + 8 bytes); else None.
    off, end = _icmp_at(pkt, n)
    if off < 0 or (pkt[off] != 3 and pkt[off] != 11):
        return None
    q = off + 8
    if end < q + 28 or pkt[q] >> 4 != 4 or pkt[q + 9] != 1:
        return None
    qi = q + (pkt[q] & 0x0F) * 4
    if end < qi + 8 or not _is(pkt, q + 16, dst4) or pkt[qi] != 8 or not _id_seq(pkt, qi, ident, seq):
        return None
    return UNREACH if pkt[off] == 3 else "ttl"


def _raw_socket():
    return socket.socket(socket.AF_INET, socket.SOCK_RAW, 1)


def open_raw():
    # A non-blocking raw ICMP socket, or None. Not permitted (EPERM / EACCES:
    # not root on unix) or not built in is remembered in raw_ok and not retried;
    # any other error (out of sockets) only sends this round over TCP.
    global raw_ok
    if raw_ok is False:
        return None
    try:
        s = _raw_socket()
    except (OSError, AttributeError) as e:
        if not isinstance(e, OSError) or _errno(e) in (errno.EPERM, errno.EACCES):
            raw_ok = False
        return None
    raw_ok = True
    s.setblocking(False)
    return s


async def _ping(s, entries):
    # One echo per entry on the one raw socket s, then collect replies until
    # all are in; the caller bounds the wait (cancelling leaves "timeout").
    global _seq
    while _recv(s, _ICMP_RX) is not None:  # drop anything queued before us
        pass
    base = _seq
    _seq = (base + len(entries)) & 0xFFFF
    pending = 0
    for i, e in enumerate(entries):
        e["a4"], sa = _addr(e["ip"], 0)
        echo_request_into(_tx, _ident, (base + i) & 0xFFFF)
        e["t0"] = ticks_us()
        try:
            s.sendto(_tx, sa)
            pending += 1
        except OSError as er:  # no route: fails at once
            e["err"] = _errname(er)
    try:
        while pending:
            await _wait_read(s)
            pending = _replies(s, entries, base, pending)
    except OSError as er:  # the raw socket itself failed
        for e in entries:
            if e["err"] is TIMEOUT:
                e["err"] = _errname(er)


def _replies(s, entries, base, pending):
    # Match every queued packet against the entries still waiting.
    while pending:
        rx = _recv(s, _ICMP_RX)
        if rx is None:
            break
        for i, e in enumerate(entries):
            if e["err"] is not TIMEOUT:
                continue
            seq = (base + i) & 0xFFFF
            a4 = e["a4"]
            if match_echo_reply(rx, len(rx), _ident, seq, a4):
                _done(e, _ms(e["t0"]), None)
            else:
                why = match_echo_error(rx, len(rx), _ident, seq, a4)
                if why is None:
                    continue
                e["err"] = why
            pending -= 1
            break
    return pending


def _done(e, rtt, why):
    e["ok"] = rtt is not None
    e["rtt"] = rtt
    e["err"] = why


# ---------------------------------------------------------------- TCP

async def _tcp(e, ip, port):
    # Connect to ip:port and fill e; a refused connection (RST) is a failure.
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setblocking(False)
        sa = _addr(ip, port)[1]
        t0 = ticks_us()
        try:
            s.connect(sa)
            why = None
        except OSError as er:
            if _errno(er) == errno.EINPROGRESS:
                why = await _connected(s, sa)
            else:
                why = _errname(er)
        _done(e, None if why else _ms(t0), why)
    finally:
        s.close()


def _connected(s, sa):
    # Wait until the connect has finished, then learn how. SO_ERROR would say,
    # but the unix and esp32 ports have no getsockopt(): a second connect()
    # reports the same pending error, or success / EISCONN.
    while True:
        yield from _wait_write(s)
        try:
            s.connect(sa)
            return None
        except OSError as er:
            n = _errno(er)
            if n == _EISCONN:
                return None
            if n not in _BUSY_ERRS:
                return _errname(er)


# ---------------------------------------------------------------- DNS (RFC 1035)

class DnsError(ValueError):
    # A well-formed response whose RCODE is not NOERROR (RFC 1035 4.1.1).

    def __init__(self, rcode):
        self.rcode = rcode
        super().__init__("rcode %d (%s)" % (rcode, _RCODES[rcode] if rcode < 6 else "?"))


def dns_query_into(buf, qid, name):
    # A standard query (RD=1, QTYPE A, QCLASS IN) in buf; returns its length.
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise ValueError("empty DNS name")
    for i, b in enumerate((qid >> 8, qid & 0xFF, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0)):
        buf[i] = b  # id; flags: RD only; QDCOUNT 1; AN/NS/AR 0
    off = 12
    for label in name.split("."):
        b = label.encode()
        ln = len(b)
        if not ln or ln > 63:
            raise ValueError("DNS label of %d bytes (1..63) in %r" % (ln, name))
        if off + ln + 2 > 12 + 255:
            raise ValueError("DNS name longer than 255 bytes: %r" % name)
        buf[off] = ln
        for i in range(ln):
            buf[off + 1 + i] = b[i]
        off += 1 + ln
    for i, b in enumerate((0, 0, 1, 0, 1)):  # root; QTYPE A; QCLASS IN
        buf[off + i] = b
    return off + 5


def dns_query(qid, name):
    buf = bytearray(_DNS_QMAX)
    return bytes(buf[:dns_query_into(buf, qid, name)])


def _read_name(pkt, off, n, out):
    # Walk the (possibly compressed, RFC 1035 4.1.4) name at off; append it to
    # out (a bytearray, lower case, dot-separated) unless out is None; return
    # the offset past the name where it is stored. A pointer must point before
    # the segment holding it: targets strictly decrease, so no loop can form.
    resume = -1
    limit = off
    total = 1
    while True:
        if off >= n:
            raise ValueError("truncated name at offset %d" % off)
        ln = pkt[off]
        if ln == 0:
            return resume if resume >= 0 else off + 1
        if ln >= 0xC0:
            if off + 1 >= n:
                raise ValueError("truncated compression pointer at offset %d" % off)
            p = ((ln & 0x3F) << 8) | pkt[off + 1]
            if p >= n:
                raise ValueError("compression pointer out of range (%d >= %d)" % (p, n))
            if p >= limit:
                raise ValueError("compression pointer does not point backwards (%d at %d)" % (p, off))
            if p < 12:
                raise ValueError("compression pointer into the header (%d)" % p)
            if resume < 0:
                resume = off + 2
            limit = off = p
            continue
        if ln > 63:
            raise ValueError("label longer than 63 (length byte 0x%02x at %d)" % (ln, off))
        total += ln + 1
        if total > 255:
            raise ValueError("name longer than 255 bytes")
        if off + 1 + ln > n:
            raise ValueError("truncated label at offset %d" % off)
        if out is not None:
            if out:
                out.append(46)
            for c in pkt[off + 1:off + 1 + ln]:
                out.append(c + 32 if 65 <= c <= 90 else c)
        off += 1 + ln


def dns_parse(pkt, qid, name=None, n=None):
    # Parse a response to our A query -> ['a.b.c.d', ...] (empty: NODATA).
    #
    # A records count only for the question's name or a CNAME chain from it.
    # Raises DnsError (a ValueError) for RCODE != 0 and ValueError with the
    # reason for anything malformed or not ours; never IndexError, never loops.
    if n is None:
        n = len(pkt)
    if n < 12:
        raise ValueError("truncated header (%d bytes)" % n)
    if ((pkt[0] << 8) | pkt[1]) != qid:
        raise ValueError("id mismatch")
    if not pkt[2] & 0x80:
        raise ValueError("not a response (QR=0)")
    if pkt[2] & 0x78:
        raise ValueError("unexpected opcode %d" % ((pkt[2] >> 3) & 15))
    if pkt[2] & 0x02:
        raise ValueError("truncated response (TC set)")
    rcode = pkt[3] & 15
    qd = (pkt[4] << 8) | pkt[5]
    an = (pkt[6] << 8) | pkt[7]
    if qd == 0 and rcode:
        raise DnsError(rcode)  # some servers drop the question with REFUSED / FORMERR
    if qd != 1:
        raise ValueError("question count %d, expected 1" % qd)
    chain = [bytearray()]
    off = _read_name(pkt, 12, n, chain[0])
    if off + 4 > n:
        raise ValueError("truncated question")
    if not _is(pkt, off, b"\x00\x01\x00\x01"):
        raise ValueError("question is not type A class IN")
    if name is not None:
        want = bytearray(name.rstrip(".").encode())
        for i, c in enumerate(want):
            if 65 <= c <= 90:
                want[i] = c + 32
        if want != chain[0]:
            raise ValueError("question name mismatch")
    if rcode:
        raise DnsError(rcode)
    off += 4
    cnames = []
    addrs = []
    for i in range(an):
        if off >= n:
            raise ValueError("truncated answer %d of %d (ANCOUNT says more than the packet holds)"
                             % (i + 1, an))
        owner = bytearray()
        off = _read_name(pkt, off, n, owner)
        if off + 10 > n:
            raise ValueError("truncated answer %d of %d" % (i + 1, an))
        typ = (pkt[off] << 8) | pkt[off + 1]
        inet = pkt[off + 2] == 0 and pkt[off + 3] == 1
        rdlen = (pkt[off + 8] << 8) | pkt[off + 9]
        off += 10
        if off + rdlen > n:
            raise ValueError("truncated rdata in answer %d of %d" % (i + 1, an))
        if inet and typ == 1:
            if rdlen != 4:
                raise ValueError("A record with rdlength %d" % rdlen)
            addrs.append((owner, "%d.%d.%d.%d" % tuple(pkt[off:off + 4])))
        elif inet and typ == 5:
            target = bytearray()
            if _read_name(pkt, off, off + rdlen, target) != off + rdlen:
                raise ValueError("CNAME rdata length mismatch in answer %d" % (i + 1))
            cnames.append((owner, target))
        off += rdlen
    for _ in range(8):  # follow CNAMEs from the question's name, 8 hops at most
        grew = False
        for o, t in cnames:
            if o in chain and t not in chain:
                chain.append(t)
                grew = True
        if not grew:
            break
    return [a for o, a in addrs if o in chain]


async def _dns(e, server, name, port, most, deadline):
    # One A query, sent up to `most` times until `deadline` (ticks_ms); fills e, with
    # e["addrs"] and e["tries"] (the queries sent). OK: NOERROR and >= 1 A record.
    # Every wait ends by the deadline on its own, not only by the caller's cancel: a
    # cancel that reaches this task while its retry timer's own wait_for is cancelling
    # the reply task is forwarded there and lost (asyncio's Task.cancel follows the
    # chain of awaited tasks), and the query then went on, its last try waiting for
    # good on a silent resolver (a socket and ~0.5 KB of heap per lost cancel).
    qid = _rand16()
    qn = dns_query_into(_dq, qid, name)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setblocking(False)
        t0 = ticks_us()
        # A connected UDP socket gets datagrams from the server only. lwIP ignores
        # ICMP port unreachable (no ECONNREFUSED on the esp32): a silent server times out.
        s.connect(_addr(server, port)[1])
        tries = 0
        while True:
            left = ticks_diff(deadline, ticks_ms())
            if left <= 0:
                return  # e stays "timeout"
            s.send(memoryview(_dq)[:qn])
            tries += 1
            e["tries"] = tries
            try:
                # the last try waits until the deadline
                wait = min(left, _DNS_RETRY_MS) if tries < most else left
                addrs = await asyncio.wait_for_ms(_dns_reply(s, qid, name), wait)
                break
            except asyncio.TimeoutError:
                if tries >= most:
                    return
                continue
            except ValueError as er:
                _done(e, None, er.args[0])
                return
        e["addrs"] = addrs
        if addrs:
            _done(e, _ms(t0), None)
        else:
            _done(e, None, NOADDR)
    finally:
        s.close()


def _dns_reply(s, qid, name):
    buf = _drx
    while True:
        yield from _wait_read(s)
        while True:
            try:
                n = _recv_into(s, buf)
            except OSError as er:
                if _errno(er) == errno.EBADF:
                    # Closed under us: the query was given up (its round ended) as this
                    # wait woke (a closed socket polls as POLLNVAL on the chip): end
                    # quietly, not as an exception nobody retrieves.
                    return None
                raise
            if not n:
                break
            pkt = memoryview(buf)
            while n:
                if n < 2 or ((pkt[0] << 8) | pkt[1]) == qid:
                    return dns_parse(pkt, qid, name, n)
                # a late answer to an earlier query: not ours; the next one read with it
                k = _dns_end(pkt, n)
                pkt = memoryview(pkt)[k:]
                n -= k


# ---------------------------------------------------------------- API

async def _job(e, aw):
    # Run one probe into e; never raises (but for cancellation): failing to
    # even open a socket (out of sockets, no route) is that target's failure;
    # a MemoryError marks it NOMEM (the caller gives the round up).
    try:
        await aw
    except OSError as er:
        _done(e, None, _errname(er))
    except MemoryError:
        if not e["ok"]:
            e["err"] = NOMEM


async def _jobs(es, aw):
    # _job() for the pings of a round, which share one raw socket: a MemoryError
    # marks them all; an OSError still ends the round (it raises as before).
    try:
        await aw
    except MemoryError:
        for e in es:
            if not e["ok"]:
                e["err"] = NOMEM


def _no_memory(es):
    for e in es:
        if e["err"] is NOMEM:
            raise MemoryError("a probe's reply found no block: not a result")


async def _one(e, aw, timeout_ms):
    try:
        await asyncio.wait_for_ms(_job(e, aw), timeout_ms)
    except asyncio.TimeoutError:
        pass
    _no_memory((e,))
    return e


async def icmp(addr, timeout_ms):
    # Echo to addr -> rtt_ms or None. Raises OSError(EPERM) when no raw socket
    # can be had (probe_round() falls back to TCP instead).
    s = open_raw()
    if s is None:
        raise OSError(errno.EPERM)
    try:
        e = _entry("anchor", "icmp", addr)
        return (await _one(e, _ping(s, [e]), timeout_ms))["rtt"]
    finally:
        s.close()


async def tcp(addr, port, timeout_ms):
    # TCP connect -> rtt_ms or None (refused, unreachable or timed out).
    e = _entry("anchor", "tcp", addr)
    return (await _one(e, _tcp(e, addr, port), timeout_ms))["rtt"]


async def dns(server, name, timeout_ms, port=53):
    # A query for name at server -> rtt_ms or None.
    e = _entry("dns", "dns", server)
    end = ticks_add(ticks_ms(), timeout_ms)
    return (await _one(e, _dns(e, server, name, port, _DNS_TRIES, end), timeout_ms))["rtt"]


async def resolve(server, name, timeout_ms=2000, port=53):
    # Non-blocking lookup -> ['a.b.c.d', ...] or None. Use it, not
    # socket.getaddrinfo(), which blocks the event loop.
    e = _entry("dns", "dns", server)
    end = ticks_add(ticks_ms(), timeout_ms)
    return (await _one(e, _dns(e, server, name, port, _DNS_TRIES, end), timeout_ms)).get("addrs")


def check_targets(targets):
    # Problems with a probe_round() targets dict as readable strings ([] = fine).
    # Call it when the config is loaded: probe_round() raises ValueError instead.
    bad = []
    for t in [targets.get("gateway"), targets.get("dns")] + list(targets.get("anchors") or ()):
        if t is not None:
            try:
                split_target(t)
            except Exception:
                bad.append("target %r: expected an IPv4 address, optionally with :port" % (t,))
    name = targets.get("dns_name")
    if name is not None:
        try:
            dns_query(0, name)
        except Exception as e:
            bad.append("dns_name %r: %s" % (name, e))
    return bad


async def probe_round(targets, timeout_ms, dns_tries=_DNS_TRIES):
    # Probe every target concurrently, all within timeout_ms. targets (all optional):
    #     gateway: 'ip' (ICMP) or 'ip:port' (TCP);  anchors: ['ip' | 'ip:port', ...]
    #     dns: 'ip' or 'ip:port' of a resolver;  dns_name: the name to ask for
    #     fallback_port / gateway_port: TCP ports for ICMP targets without raw sockets
    # -> {'results': {tg: {'role', 'ok', 'rtt', 'kind', 'err'(, 'addrs')}}, 'gateway_ok',
    #     'anchors_ok', 'anchors_total', 'loss_pct', 'dns_ok', 'dns_tries', 'icmp'}
    # dns_tries: the most queries to send (a watch sends one); 'dns_tries' the number sent.
    # tg: 'gw:<gateway>', the anchor string, 'dns:<server>'. kind: icmp|tcp|dns.
    # icmp: True (raw socket used), False (fell back to TCP), None (no ICMP target).
    res = {}
    pings = []
    jobs = []
    anchors = []
    raw = None
    want_icmp = False
    todo = [("gateway", "gw:", targets.get("gateway"))]
    for a in targets.get("anchors") or ():
        todo.append(("anchor", "", a))
    for role, pre, t in todo:
        if not t:
            continue
        ip, port = split_target(t)
        e = res[pre + t] = _entry(role, "tcp", ip)
        if role == "anchor":
            anchors.append(e)
        if port is None:
            want_icmp = True
            if raw is None:
                raw = open_raw()
            if raw is not None:
                e["kind"] = "icmp"
                pings.append(e)
                continue
            port = targets.get("gateway_port", GATEWAY_PORT) if role == "gateway" \
                else targets.get("fallback_port", FALLBACK_PORT)
        jobs.append(_job(e, _tcp(e, ip, port)))
    dns_e = None
    srv = targets.get("dns")
    if srv:
        ip, port = split_target(srv, 53)
        dns_e = res["dns:" + srv] = _entry("dns", "dns", ip)
        jobs.append(_job(dns_e, _dns(dns_e, ip, targets.get("dns_name", DNS_NAME), port,
                                     dns_tries, ticks_add(ticks_ms(), timeout_ms))))
    if pings:
        jobs.append(_jobs(pings, _ping(raw, pings)))
    # One deadline for the round: when it passes, wait_for cancels the gather,
    # which cancels every probe still waiting (each closes its socket) and
    # leaves its entry at "timeout".
    try:
        await asyncio.wait_for_ms(asyncio.gather(*jobs), timeout_ms)
    except asyncio.TimeoutError:
        pass
    finally:
        if raw is not None:
            raw.close()
    _no_memory(res.values())
    for e in res.values():
        del e["ip"]
        e.pop("t0", None)
        e.pop("a4", None)
    ok = 0
    for e in anchors:
        ok += e["ok"]
    total = len(anchors)
    gw = res.get("gw:" + str(targets.get("gateway")))
    return {
        "results": res,
        "gateway_ok": gw["ok"] if gw else None,
        "anchors_ok": ok,
        "anchors_total": total,
        "loss_pct": (100 * (total - ok) + total // 2) // total if total else 0,
        "dns_ok": dns_e["ok"] if dns_e else None,
        "dns_tries": dns_e.pop("tries", 1) if dns_e else 0,
        "icmp": (raw is not None) if want_icmp else None,
    }


class Summary:
    # Per target since the last heartbeat: probes sent, lost, the fastest and slowest
    # answer, and the newest _KEEP answer times (a ring, for the median): the
    # heartbeat's "lat" (docs/protocol.md § Heartbeat), what the latency charts draw.
    # Rounds and watches both add; nothing is allocated per probe.
    def __init__(self, most=8):
        self.most = most     # targets kept (a round's: gateway, anchors, resolver)
        self.t = {}          # tg -> [sent, lost, answers, lo, hi, ring of _KEEP ms]

    def add(self, results, dns_tries=1):
        # One round's or watch's results. A query sent again counts once, and its
        # answer adds no time (its rtt runs from the first send).
        for tg, res in results.items():
            s = self.t.get(tg)
            if s is None:
                if len(self.t) >= self.most:
                    continue
                s = self.t[tg] = [0, 0, 0, 0, 0, array("H", bytes(2 * _KEEP))]
            s[0] += 1
            if not res["ok"]:
                s[1] += 1
                continue
            rtt = res.get("rtt")
            if rtt is None or (res["kind"] == "dns" and dns_tries > 1):
                continue
            rtt = min(max(rtt, 0), 65535)
            if not s[2] or rtt < s[3]:
                s[3] = rtt
            if not s[2] or rtt > s[4]:
                s[4] = rtt
            s[5][s[2] % _KEEP] = rtt
            s[2] += 1

    def take(self):
        # -> ',"lat":{"tg":[sent,lost,min,median,max],...}' ("" when nothing was
        # probed; null times when nothing answered), and the next window begins.
        return "".join(self.take_parts())

    def take_parts(self):
        # take()'s text as the small pieces it is joined from ([] when nothing was
        # probed): the heartbeat puts them into its buffer one by one, so no block of
        # the whole text's size is needed (a string grown by += is a new, larger block
        # per target, what a fragmented heap fails to find).
        out = [',"lat":{']
        for tg, s in self.t.items():
            if not s[0]:
                continue
            if len(out) > 1:
                out.append(",")
            k = min(s[2], _KEEP)
            if k:
                v = sorted(s[5][:k])
                med = v[k // 2] if k & 1 else (v[k // 2 - 1] + v[k // 2]) // 2
                out.append('"%s":[%d,%d,%d,%d,%d]' % (tg, s[0], s[1], s[3], med, s[4]))
            else:
                out.append('"%s":[%d,%d,null,null,null]' % (tg, s[0], s[1]))
            s[0] = s[1] = s[2] = 0
        if len(out) == 1:
            return []
        out.append("}")
        return out
