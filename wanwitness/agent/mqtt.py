# MQTT 3.1.1 for the agent: a packet codec and a small asyncio client.
#
# Spec: "MQTT Version 3.1.1", OASIS Standard, 29 October 2014. Section numbers (2.2.3)
# and normative statement ids ([MQTT-3.1.2-22]) below refer to it.
#
# Codec: plain functions that build packets into one exact-size bytearray (or into a
# buffer the caller owns) and parse packets out of the client's receive buffer.
# Client: one TCP connection at a time; a reader task, a supervisor loop (keepalive,
# retransmit) and reconnect with backoff + jitter, all on the caller's asyncio loop.
# Nothing here blocks the loop: the broker's name is resolved by `resolver` (the app's
# non-blocking DNS client) and the last good address is kept; a blocking
# socket.getaddrinfo runs only for a name without a resolver, and only until one
# address is known.
import asyncio
import socket
import sys
from errno import ECONNREFUSED, EINPROGRESS, ENOTCONN
from micropython import const
from random import getrandbits
from time import ticks_diff, ticks_ms

_MAX_RL = const(268435455)  # 0xFF 0xFF 0xFF 0x7F, the largest remaining length (2.2.3)
_CONNECT = const(0x10)
_CONNACK = const(0x20)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBSCRIBE = const(0x82)  # flags 0010 are reserved and required [MQTT-3.8.1-1]
_SUBACK = const(0x90)
_PINGRESP = const(0xD0)
_DUP = const(0x08)
_SUB_FAIL = const(0x80)  # SUBACK return code "Failure" (3.9.3)

# Two-byte packets with a fixed content (3.12, 3.13, 3.14).
PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"

# CONNACK return codes 1..5 (3.2.2.3, table 3.1) with what to do about each.
_REFUSED = (
    None,
    "unacceptable protocol version: the broker does not speak MQTT 3.1.1",
    "identifier rejected: the broker does not accept this client id",
    "server unavailable: the MQTT service is not ready; retrying",
    "bad user name or password: check the agent's MQTT credentials",
    "not authorized: the broker does not allow this client to connect",
)


class MQTTError(Exception):
    # A protocol-level refusal or violation; `code` is the CONNACK/SUBACK code or None.

    def __init__(self, msg, code=None):
        super().__init__(msg)
        self.code = code


# ---------------------------------------------------------------------------- codec


def _b(s):
    # MQTT strings are UTF-8 (1.5.3); binary fields (will message, password) pass as is.
    return s.encode() if isinstance(s, str) else s


def _rl_size(n):
    return 1 if n < 128 else 2 if n < 16384 else 3 if n < 2097152 else 4


def put_remaining_length(buf, i, n):
    # Writes n at buf[i] as 2.2.3 variable-length bytes; returns the index after it.
    if n < 0 or n > _MAX_RL:
        raise ValueError("remaining length %d is outside 0..268435455 (MQTT 2.2.3)" % n)
    while True:
        d = n & 0x7F
        n >>= 7
        buf[i] = d | 0x80 if n else d  # continuation bit: more bytes follow
        i += 1
        if not n:
            return i


def encode_remaining_length(n):
    b = bytearray(_rl_size(n) if 0 <= n <= _MAX_RL else 4)
    put_remaining_length(b, 0, n)
    return bytes(b)


def decode_remaining_length(buf, offset=0):
    # (n, bytes used) from buf[offset:]; None if buf ends before the last length byte.
    #
    # ValueError when the fourth byte still has its continuation bit set: the field
    # is at most four bytes long (2.2.3), so such a packet is malformed.
    n = 0
    shift = 0
    i = offset
    while i < len(buf):
        d = buf[i]
        i += 1
        n |= (d & 0x7F) << shift
        if not d & 0x80:
            return n, i - offset
        shift += 7
        if shift == 28:
            raise ValueError("malformed remaining length: more than 4 bytes (MQTT 2.2.3)")
    return None


def _put_str(buf, i, s):
    # A length-prefixed string or binary field: 2-byte big-endian length (1.5.3).
    n = len(s)
    if n > 65535:
        raise ValueError("an MQTT string is at most 65535 bytes (1.5.3)")
    buf[i] = n >> 8
    buf[i + 1] = n & 0xFF
    buf[i + 2:i + 2 + n] = s
    return i + 2 + n


def _packet(first, n):
    # A bytearray for a whole packet: fixed header (2.2) and room for n more bytes.
    pkt = bytearray(1 + _rl_size(n) + n)
    pkt[0] = first
    return pkt, put_remaining_length(pkt, 1, n)


def connect_packet(client_id, user=None, password=None, keepalive=0, will_topic=None,
                   will_msg=b"", will_retain=False, will_qos=0, clean=True):
    # A CONNECT packet (3.1) as a bytearray; built once per client, sent on every connect.
    cid = _b(client_id)
    if not cid and not clean:
        raise ValueError("an empty client id needs clean session [MQTT-3.1.3-7]")
    if not 0 <= keepalive <= 65535:
        raise ValueError("keepalive is 0..65535 seconds (3.1.2.10)")
    flags = 0x02 if clean else 0  # bit 0 is reserved and must stay 0 [MQTT-3.1.2-3]
    n = 10 + 2 + len(cid)  # variable header is 10 bytes (3.1.2); client id first [MQTT-3.1.3-3]
    if will_topic is not None:
        wt = _b(will_topic)
        wm = _b(will_msg)
        if will_qos not in (0, 1, 2):
            raise ValueError("will QoS must be 0, 1 or 2 [MQTT-3.1.2-14]")
        flags |= 0x04 | will_qos << 3 | (0x20 if will_retain else 0)  # 3.1.2.5-3.1.2.7
        n += 4 + len(wt) + len(wm)
    elif will_qos or will_retain:
        raise ValueError("will QoS/retain need a will topic [MQTT-3.1.2-11]")
    if user is not None:
        user = _b(user)
        flags |= 0x80
        n += 2 + len(user)
    if password is not None:
        if user is None:
            raise ValueError("a password needs a user name [MQTT-3.1.2-22]")
        password = _b(password)
        flags |= 0x40
        n += 2 + len(password)
    pkt, i = _packet(_CONNECT, n)
    pkt[i:i + 7] = b"\x00\x04MQTT\x04"  # protocol name [MQTT-3.1.2-1], level 4 [MQTT-3.1.2-2]
    pkt[i + 7] = flags
    pkt[i + 8] = keepalive >> 8
    pkt[i + 9] = keepalive & 0xFF
    i = _put_str(pkt, i + 10, cid)
    # Payload order is fixed: id, will topic, will message, user, password [MQTT-3.1.3-1].
    if will_topic is not None:
        i = _put_str(pkt, i, wt)
        i = _put_str(pkt, i, wm)
    if user is not None:
        i = _put_str(pkt, i, user)
    if password is not None:
        _put_str(pkt, i, password)
    return pkt


def _check_topic(t):
    if not t:
        raise ValueError("a topic name has at least one character [MQTT-4.7.3-1]")
    if b"+" in t or b"#" in t:
        raise ValueError("a topic name in PUBLISH has no wildcards [MQTT-3.3.2-2]")


def publish_size(topic, payload, qos):
    # The whole PUBLISH packet's size in bytes (topic and payload as bytes).
    n = 2 + len(topic) + (2 if qos else 0) + len(payload)
    return 1 + _rl_size(n) + n


def publish_header(buf, topic, plen, qos=0, retain=False, pid=0, dup=False):
    # Writes a PUBLISH's fixed header, topic and packet id (3.3.1, 3.3.2) at buf[0:]
    # and returns their length; the plen payload bytes follow them on the wire.
    _check_topic(topic)
    if qos:
        if qos > 2:
            raise ValueError("QoS is 0, 1 or 2 [MQTT-3.3.1-4]")
        if not 0 < pid < 65536:
            raise ValueError("QoS > 0 needs a packet id 1..65535 [MQTT-2.3.1-1]")
    elif dup:
        raise ValueError("DUP must be 0 for QoS 0 [MQTT-3.3.1-2]")
    n = 2 + len(topic) + (2 if qos else 0) + plen
    buf[0] = _PUBLISH | (_DUP if dup else 0) | qos << 1 | (1 if retain else 0)  # 3.3.1
    i = _put_str(buf, put_remaining_length(buf, 1, n), topic)
    if qos:  # the packet id only exists for QoS 1 and 2 (3.3.2.2)
        buf[i] = pid >> 8
        buf[i + 1] = pid & 0xFF
        i += 2
    return i


def publish_room(topic):
    # Bytes before a payload that room enough for any QoS 1 PUBLISH's header: fixed
    # header with the longest remaining length (2.2.3), topic, packet id (Client.publish_at).
    return 9 + len(_b(topic))


def publish_into(buf, topic, payload, qos=0, retain=False, pid=0, dup=False):
    # Builds a whole PUBLISH (3.3) at buf[0:]; returns its length. topic/payload: bytes.
    i = publish_header(buf, topic, len(payload), qos, retain, pid, dup)
    buf[i:i + len(payload)] = payload
    return i + len(payload)


def publish_packet(topic, payload, qos=0, retain=False, pid=0, dup=False):
    # A PUBLISH as an exact-size bytearray (the client keeps it for QoS 1 resends).
    topic = _b(topic)
    payload = _b(payload)
    pkt = bytearray(publish_size(topic, payload, qos))
    publish_into(pkt, topic, payload, qos, retain, pid, dup)
    return pkt


def subscribe_packet(pid, topic, qos=0):
    # SUBSCRIBE (3.8) for one topic filter.
    if not 0 < pid < 65536:
        raise ValueError("SUBSCRIBE needs a packet id 1..65535 [MQTT-2.3.1-1]")
    if qos not in (0, 1, 2):
        raise ValueError("requested QoS is 0, 1 or 2 [MQTT-3.8.3-4]")
    topic = _b(topic)
    if not topic:
        raise ValueError("a topic filter has at least one character [MQTT-4.7.3-1]")
    pkt, i = _packet(_SUBSCRIBE, 5 + len(topic))
    pkt[i] = pid >> 8
    pkt[i + 1] = pid & 0xFF
    i = _put_str(pkt, i + 2, topic)
    pkt[i] = qos
    return pkt


def puback_packet(pid):
    return bytes((_PUBACK, 2, pid >> 8, pid & 0xFF))  # 3.4


def parse_connack(body, n=2):
    # session_present from a CONNACK body (3.2.2); MQTTError if the broker refused.
    if n != 2:
        raise MQTTError("malformed CONNACK: remaining length %d, not 2 (3.2.1)" % n)
    if body[0] & 0xFE:
        raise MQTTError("malformed CONNACK: reserved flag bits set (3.2.2.1)")
    rc = body[1]
    if rc:
        why = _REFUSED[rc] if rc < len(_REFUSED) else "unknown return code"
        raise MQTTError("broker refused the connection: %s (CONNACK code %d, MQTT 3.2.2.3)"
                        % (why, rc), rc)
    return bool(body[0] & 1)


def parse_suback(body, n):
    # (packet id, return code) of a SUBACK for one topic filter (3.9).
    if n < 3:
        raise MQTTError("malformed SUBACK: remaining length %d (3.9.1)" % n)
    rc = body[2]
    if rc > 2 and rc != _SUB_FAIL:
        raise MQTTError("malformed SUBACK: return code 0x%02x (3.9.3)" % rc)
    return body[0] << 8 | body[1], rc


def parse_publish(hdr, body, n):
    # (topic, payload, qos, pid) of a received PUBLISH; topic and payload are memoryview
    # slices of body (copy them to keep them); pid is 0 for QoS 0.
    qos = (hdr >> 1) & 3
    if qos == 3:
        raise ValueError("malformed PUBLISH: QoS 3 [MQTT-3.3.1-4]")
    if n < 2:
        raise ValueError("malformed PUBLISH: too short (3.3.2)")
    tl = body[0] << 8 | body[1]
    i = 2 + tl
    pid = 0
    if qos:
        if n < i + 2:
            raise ValueError("malformed PUBLISH: too short for its packet id (3.3.2.2)")
        pid = body[i] << 8 | body[i + 1]
        i += 2
    if i > n:
        raise ValueError("malformed PUBLISH: topic longer than the packet (3.3.2.1)")
    mv = memoryview(body)
    return mv[2:2 + tl], mv[i:n], qos, pid


async def _fill(stream, mv):
    # Reads exactly len(mv) bytes; stream.readinto is an asyncio Stream's (or a fake's).
    i = 0
    n = len(mv)
    while i < n:
        r = await stream.readinto(mv[i:] if i else mv)
        if r is None:  # non-blocking socket with nothing after all
            continue
        if not r:
            raise OSError("connection closed by the broker")
        i += r


async def read_packet(stream, mv):
    # Reads one control packet; returns (first byte, remaining length n).
    #
    # The body lands in mv[0:n]. A body larger than mv keeps its first len(mv) // 2
    # bytes there and the rest is read and thrown away into the second half, so the
    # stream stays in step and the caller can still read a PUBLISH's topic and packet id.
    hb = mv[0:2]
    await _fill(stream, hb)  # every packet has a first byte and >= 1 length byte (2.2)
    hdr = mv[0]
    n = mv[1] & 0x7F
    shift = 7
    d = mv[1]
    while d & 0x80:
        if shift == 28:
            raise ValueError("malformed remaining length: more than 4 bytes (MQTT 2.2.3)")
        await _fill(stream, mv[0:1])
        d = mv[0]
        n |= (d & 0x7F) << shift
        shift += 7
    size = len(mv)
    if n <= size:
        if n:
            await _fill(stream, mv[0:n])
        return hdr, n
    keep = size // 2
    await _fill(stream, mv[0:keep])
    left = n - keep
    spill = mv[keep:]
    while left:
        k = left if left < len(spill) else len(spill)
        await _fill(stream, spill[0:k])
        left -= k
    return hdr, n


# ---------------------------------------------------------------------------- client

# An in-flight QoS 1 message: [pid, packet, ticks when sent, connection gen, Event].
_PID = const(0)
_PKT = const(1)
_T = const(2)
_GEN = const(3)
_EV = const(4)


def _why(e):
    return "%s: %s" % (type(e).__name__, e)


def tls_context(ca_der):
    # A TLS client context that trusts only the broker's CA (DER bytes: config.json's
    # broker.ca, parsed) and checks the broker's name; made once, used for every
    # connection. ssl is imported here only: a plain agent never loads it.
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # The default for a client context (modtls_mbedtls.c), said anyway: verifying is the point.
    ctx.verify_mode = ssl.CERT_REQUIRED  # type: ignore[attr-defined]  # missing from the ESP32 stubs
    ctx.load_verify_locations(cadata=ca_der)
    return ctx


def _numeric(h):
    # 'a.b.c.d'? (getaddrinfo parses it without a lookup)
    p = h.split(".")
    return len(p) == 4 and all(x.isdigit() for x in p)


def _wait_writable(s):
    # Parks the task on the asyncio poller until s is writable (a finished connect);
    # the same mechanism asyncio.open_connection uses, which resolves names itself.
    yield asyncio.core._io_queue.queue_write(s)  # type: ignore[attr-defined]  # asyncio.core (the poller) is not in the stubs


class Client:
    # An MQTT 3.1.1 client for one broker. Run `run_forever()` as a task; it connects,
    # stays connected and reconnects. `publish()` and `subscribe()` may be called at any
    # time, connected or not.

    # Tunables: override on the instance or in a subclass.
    connect_timeout_ms = 10000  # TCP connect + CONNECT/CONNACK
    ack_timeout_ms = 10000  # wait for a SUBACK before giving the connection up
    retry_ms = 10000  # resend an unacknowledged QoS 1 PUBLISH with DUP=1
    backoff_min_ms = 500
    backoff_max_ms = 30000
    max_inflight = 8  # QoS 1 messages awaiting PUBACK; publish() waits for a slot
    rx_size = 512  # receive buffer: larger incoming PUBLISHes are acked and dropped
    tx_size = 256  # QoS 0 PUBLISHes are built here (topic + 7 bytes must fit)
    addr_retries = 3  # failed connects to a cached address before resolving again
    fail_over = 3  # failed connects to one broker before the next of `brokers` is tried
    def __init__(self, host, port=1883, client_id="", user=None, password=None,
                 keepalive_s=30, will=None, clean=True, tls=None, others=()):
        # tls: None (plain MQTT), an ssl.SSLContext from tls_context(), or a string
        # saying why TLS is wanted but impossible: then no connection is ever opened.
        # others: more brokers ((host, port), ...) with the same credentials and CA, tried
        # in turn after `fail_over` failed connects to the current one (docs/agent.md).
        self.host = host
        self.port = port
        self.brokers = ((host, port),) + tuple(others)
        self._bi = 0  # index of the broker in use
        self._bfails = 0  # failed connects to it in a row
        self.tls = tls
        self._raw = None  # the TCP socket under the TLS one
        self.keepalive_s = keepalive_s
        if will:
            wt, wm, wr, wq = will  # (topic, message, retain, qos)
        else:
            wt, wm, wr, wq = None, b"", False, 0
        self._cpkt = connect_packet(client_id, user, password, keepalive_s, wt, wm, wr, wq,
                                    clean)
        self.on_message = None  # callable(topic: str, payload: bytes)
        # async resolver(name) -> 'a.b.c.d' or None, without blocking the loop (the app
        # sets probe.resolve on its DNS server). None: socket.getaddrinfo, only while no
        # address is known (on an ESP32 it blocks the only task up to 7 s per lookup).
        self.resolver = None
        self.on_connect = None  # callable(session_present: bool); may return a coroutine
        self.connected = False  # CONNACK received and subscriptions renewed
        self.last_error = None  # text of the last reason a connection failed or dropped
        self.connects = 0  # successful connections so far
        self.dropped = 0  # incoming messages too large for rx_size
        self._sock = None
        self._stream = None
        self._reader = None
        self._live = False  # the socket is usable (from CONNACK until the drop)
        self._gen = 0  # +1 per connection; stale writers compare it
        self._stop = False
        self._inflight = []
        self._subs = []  # [topic bytes, qos], renewed on every connection
        self._subwait = None  # [pid, return code, Event] of the SUBSCRIBE in flight
        self._pid = 0
        self._addr = None  # (family, sockaddr): the last good address, kept for good
        self._addr_fails = 0
        self._stale = False  # addr_retries connects failed: look the name up again
        self._rx = memoryview(bytearray(self.rx_size))
        self._tx = bytearray(self.tx_size)
        self._ack = bytearray(b"\x40\x02\x00\x00")  # PUBACK (3.4), pid filled in per use
        self._wlock = asyncio.Lock()  # one packet at a time on the socket
        self._slock = asyncio.Lock()  # one SUBSCRIBE at a time
        self._up = asyncio.Event()
        now = ticks_ms()
        self._last_rx = now
        self._last_tx = now
        self._last_ping = now

    # -- public API ---------------------------------------------------------------

    def inflight(self):
        # QoS 1 messages published and not yet acknowledged by the broker.
        return len(self._inflight)

    async def wait_connected(self):
        await self._up.wait()

    async def connect(self):
        # One connection attempt (resolve if needed, TCP, CONNECT/CONNACK, resend, renew
        # subscriptions). Raises OSError (network, timeout) or MQTTError (refused).
        if self._live:
            return
        try:
            try:
                sp = await asyncio.wait_for_ms(self._handshake(), self.connect_timeout_ms)
            except asyncio.TimeoutError:
                raise OSError("no CONNACK from %s:%d within %d ms"
                              % (self.host, self.port, self.connect_timeout_ms))
        except BaseException as e:
            self._close_sock()
            if not isinstance(e, MQTTError):
                self._addr_fails += 1
                if self._addr_fails >= self.addr_retries:
                    # Look the name up again before the next try, but keep this address:
                    # during a WAN outage the lookup fails too (and must not block).
                    self._stale = True
                    self._addr_fails = 0
            raise
        self._addr_fails = 0
        self._gen += 1
        self._live = True
        now = ticks_ms()
        self._last_rx = now
        self._last_tx = now
        self._last_ping = now
        self._reader = asyncio.create_task(self._read_loop())
        try:
            # Unacknowledged PUBLISHes go again, in their original order, with DUP=1
            # [MQTT-4.4.0-1] [MQTT-4.6.0-1]; ones never sent go with DUP=0.
            await self._resend(False)
            for s in self._subs:
                try:
                    await self._sub1(s[0], s[1])
                except MQTTError as e:  # refused (ACL): keep the connection, report it
                    self.last_error = str(e)
        except BaseException as e:
            self._drop(_why(e))
            raise
        self.connects += 1
        self.connected = True
        self._up.set()
        cb = self.on_connect
        if cb is not None:
            try:
                r = cb(sp)
                if r is not None and hasattr(r, "send"):
                    asyncio.create_task(r)
            except Exception as e:  # the app's bug must not take MQTT down
                sys.print_exception(e)

    async def run_forever(self):
        # Connects, supervises, reconnects with backoff until disconnect(); never raises
        # for network or broker trouble.
        self._stop = False
        fails = 0
        try:
            while not self._stop:
                if not self._live:
                    try:
                        await self.connect()
                        self._bfails = 0
                    except Exception as e:  # OSError, MQTTError, bad addresses
                        self.last_error = _why(e)
                        if not fails:  # the first failure of a run, not every retry
                            print("mqtt: cannot connect:", self.last_error)
                        self._drop(None)
                        self._bfails += 1
                        if self._bfails >= self.fail_over and len(self.brokers) > 1:
                            self._next_broker()
                        await asyncio.sleep_ms(self.backoff_ms(fails))
                        fails += 1
                        continue
                up = ticks_ms()
                await self._supervise()
                if not self._stop:  # a dropped connection: pause before the next attempt
                    # Only a connection that lasted resets the backoff: one the broker
                    # keeps closing at once (duplicate client id, ACL) must not spin.
                    if ticks_diff(ticks_ms(), up) > self.backoff_max_ms:
                        fails = 0
                    await asyncio.sleep_ms(self.backoff_ms(fails))
                    fails += 1
        finally:  # stopped or cancelled: leave no socket or reader task behind
            self._drop(None)

    def _next_broker(self):
        # The next broker of `brokers`, round and round; the backoff keeps growing, so a
        # fleet whose brokers are all away does not spin through them. What is unacked is
        # resent there after the CONNACK, as after any reconnect.
        self._bi = (self._bi + 1) % len(self.brokers)
        self.host, self.port = self.brokers[self._bi]
        self._addr = None  # the old broker's address means nothing for this one
        self._addr_fails = 0
        self._stale = False
        self._bfails = 0
        print("mqtt: trying broker %s:%d" % (self.host, self.port))

    def backoff_ms(self, fails):
        # Exponential, "equal jitter": uniform in [d/2, d], d = min * 2^fails capped at
        # max, never below min, so many agents do not return in lockstep.
        d = self.backoff_max_ms
        if fails < 16:
            d = min(d, self.backoff_min_ms << fails)
        h = d >> 1
        return max(self.backoff_min_ms, h + (getrandbits(16) * (d - h) >> 16))

    async def publish(self, topic, payload, qos=1, retain=False, timeout_ms=0):
        # QoS 0: sent now if connected (True) or dropped (False).
        # QoS 1: True once the broker's PUBACK arrives, across reconnects; False after
        # timeout_ms (0 = no limit), and the message is then forgotten.
        if qos == 0:
            if not self._live:
                return False
            tb = _b(topic)
            pb = _b(payload)
            gen = self._gen
            try:
                async with self._wlock:
                    tx = self._tx
                    if len(tb) + 7 > len(tx):  # a topic too long for the buffer: allocate
                        tx = publish_packet(tb, pb, 0, retain)
                        await self._write(tx, len(tx), gen)
                    else:
                        # Built in the preallocated buffer; a payload that does not fit
                        # follows the header straight from the caller's buffer.
                        k = publish_header(tx, tb, len(pb), 0, retain)
                        if k + len(pb) <= len(tx):
                            tx[k:k + len(pb)] = pb
                            await self._write(tx, k + len(pb), gen)
                        else:
                            await self._write(tx, k, gen)
                            await self._write(pb, len(pb), gen)
                return True
            except OSError:
                return False
        if qos != 1:
            raise ValueError("QoS 2 is not supported")
        while len(self._inflight) >= self.max_inflight:
            await asyncio.sleep_ms(20)
        pid = self._new_pid()
        return await self._publish1(
            [pid, publish_packet(topic, payload, 1, retain, pid), 0, 0, asyncio.Event()],
            timeout_ms)

    async def publish_at(self, buf, k, n, topic, retain=False, timeout_ms=0):
        # A QoS 1 PUBLISH with no copy of its payload, which the caller has put at
        # buf[k:k + n] (a bytearray) with k >= publish_room(topic): the header goes into
        # the room right before it, and the packet is sent and resent from buf. Leave buf
        # alone until this returns (no write from it is under way or due then). Returns
        # as publish() does.
        tb = _b(topic)
        rl = 4 + len(tb) + n  # topic (2 + len), packet id (2), payload (3.3.2, 3.3.3)
        start = k - 1 - _rl_size(rl) - 4 - len(tb)
        if start < 0:
            raise ValueError("publish_at: %d bytes before the payload, the header needs %d"
                             % (k, k - start))
        while len(self._inflight) >= self.max_inflight:
            await asyncio.sleep_ms(20)
        pid = self._new_pid()
        mv = memoryview(buf)
        publish_header(mv[start:k], tb, n, 1, retain, pid)
        e = [pid, mv[start:k + n], 0, 0, asyncio.Event()]
        try:
            return await self._publish1(e, timeout_ms)
        finally:
            # A write of e that began before it was forgotten holds the lock until it is
            # through; once we had the lock, _transmit skips e: buf is the caller's again.
            async with self._wlock:
                pass

    async def _publish1(self, e, timeout_ms):
        # Sends the in-flight entry e and waits for its PUBACK (see publish()).
        self._inflight.append(e)
        try:
            if self._live:
                try:
                    await self._transmit(e)
                except OSError:
                    pass  # the connection went; the message goes again after the reconnect
            if timeout_ms:
                await asyncio.wait_for_ms(e[_EV].wait(), timeout_ms)
            else:
                await e[_EV].wait()
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            self._forget(e)

    async def subscribe(self, topic, qos=1):
        # Subscribes now if connected and on every later connection. Returns the granted
        # QoS (None when not connected now); MQTTError if the broker refused (0x80).
        tb = _b(topic)
        for s in self._subs:
            if s[0] == tb:
                s[1] = qos
                break
        else:
            self._subs.append([tb, qos])
        if self._live:
            return await self._sub1(tb, qos)
        return None

    async def disconnect(self):
        # A clean DISCONNECT (the broker then drops the will [MQTT-3.1.2-10]); stops
        # run_forever.
        self._stop = True
        if self._live:
            try:
                await self._send(DISCONNECT)
            except OSError:
                pass
        self._drop(None)

    # -- connection ---------------------------------------------------------------

    async def _handshake(self):
        tls = self.tls
        if isinstance(tls, str):
            raise OSError(tls)
        if self._addr is None or self._stale:
            await self._resolve()
        s = socket.socket(self._addr[0], socket.SOCK_STREAM)
        self._sock = s
        s.setblocking(False)
        try:
            s.connect(self._addr[1])
        except OSError as e:
            if e.errno != EINPROGRESS:
                raise self._refused(e)
        await _wait_writable(s)
        if tls is not None:
            self._raw = s
            s = tls.wrap_socket(s, server_hostname=self.host, do_handshake_on_connect=False)
            self._sock = s
        self._stream = asyncio.StreamReader(s)
        # The first packet on the connection is CONNECT [MQTT-3.1.0-1]. Over TLS the
        # handshake runs inside this write: CONNECT (with the password) is encrypted and
        # sent only after the broker's certificate and name have been verified.
        try:
            await self._write(self._cpkt, len(self._cpkt), self._gen, True)
        except ValueError as e:  # mbedTLS: "\nThe certificate is not correctly signed ...\n"
            raise OSError("TLS: the broker's certificate is refused: " + " ".join(str(e).split()))
        except OSError as e:
            if tls is None or (e.args and isinstance(e.args[0], int) and e.args[0] >= 0):
                raise self._refused(e)  # not TLS's doing (refused, reset, unreachable)
            raise OSError("TLS handshake with %s:%d failed: %s" % (self.host, self.port, _why(e)))
        hdr, n = await read_packet(self._stream, self._rx)
        if hdr != _CONNACK:
            raise MQTTError("expected CONNACK, got packet type 0x%02x (3.2)" % hdr)
        return parse_connack(self._rx, n)

    def _refused(self, e):
        # lwIP (esp32) reads a refused connect back as ENOTCONN on the next call: say so.
        if e.args and e.args[0] in (ECONNREFUSED, ENOTCONN):
            return OSError(ECONNREFUSED, "connection refused by %s:%d" % (self.host, self.port))
        return e

    async def _resolve(self):
        # The broker's address, from its name. A numeric host is parsed at once; a name
        # goes to the resolver without blocking the loop; the last good address stays
        # in use when that fails. Raises OSError only while no address is known.
        h = self.host
        ip = h if _numeric(h) else None
        if ip is None and self.resolver is not None:
            try:
                addrs = await self.resolver(h)
            except Exception:  # a resolver's bug or error is a failed lookup
                addrs = None
            ip = addrs[0] if addrs else None
        if ip is None and (self.resolver is not None or self._addr is not None):
            if self._addr is None:
                raise OSError("cannot resolve the broker host %s" % h)
            return  # keep the last good address; look again after the next failures
        try:
            # Numeric: no lookup. A name (no resolver, no address yet) blocks while lwIP
            # resolves it (lwip_getaddrinfo, ports/esp32/modsocket.c).
            ai = socket.getaddrinfo(ip or h, self.port, 0, socket.SOCK_STREAM)[0]
        except (OSError, IndexError) as e:
            raise OSError("cannot resolve the broker host %s (%s)" % (h, e))
        self._addr = (ai[0], ai[-1])
        self._stale = False

    def _close_sock(self):
        s = self._sock
        r = self._raw  # a failed TLS handshake leaves it open under the TLS socket
        self._sock = None
        self._raw = None
        self._stream = None
        if s is not None:
            try:
                s.close()
            except OSError:
                pass
        if r is not None:
            try:
                r.close()
            except OSError:
                pass

    def _drop(self, why):
        # Ends the connection (idempotent). Waiters for a SUBACK are woken; QoS 1
        # messages stay in flight for the next connection.
        if why is not None and self._live:
            self.last_error = why
        self._live = False
        self.connected = False
        self._up.clear()
        r = self._reader
        self._reader = None
        if r is not None and r is not asyncio.current_task():
            r.cancel()  # also takes it off the poller, so closing the socket is safe
        self._close_sock()
        w = self._subwait
        if w is not None:
            w[2].set()

    async def _supervise(self):
        # Keepalive and retransmit until the connection drops or disconnect().
        ka = self.keepalive_s * 1000
        tick = 250 if not ka or ka >= 1000 else ka >> 2
        while self._live and not self._stop:
            await asyncio.sleep_ms(tick)
            if not self._live:
                break
            now = ticks_ms()
            try:
                if ka:
                    idle = ticks_diff(now, self._last_rx)
                    # Like the broker's 1.5 x keepalive rule [MQTT-3.1.2-24], from our side.
                    if idle > ka + (ka >> 1):
                        self._drop("no packet from the broker for 1.5 x keepalive (%d s)"
                                   % self.keepalive_s)
                        break
                    # A PINGREQ when idle for keepalive/2 keeps the gap between our
                    # packets under keepalive [MQTT-3.1.2-23] and proves the broker alive.
                    h = ka >> 1
                    if (idle >= h or ticks_diff(now, self._last_tx) >= h) and \
                            ticks_diff(now, self._last_ping) >= h:
                        self._last_ping = now
                        await self._send(PINGREQ)
                if self._due(0, True) >= 0:  # a coroutine only when there is work:
                    await self._resend(True)  # an idle tick allocates nothing
            except OSError:
                break

    def _due(self, i, by_age):
        # Index of the first in-flight message from i on that is to be sent: not yet
        # sent on this connection or, when by_age, sent more than retry_ms ago; else -1.
        f = self._inflight
        gen = self._gen
        while i < len(f):
            e = f[i]
            if e[_GEN] != gen or (by_age and ticks_diff(ticks_ms(), e[_T]) >= self.retry_ms):
                return i
            i += 1
        return -1

    async def _resend(self, by_age):
        # Sends what _due finds, in list (= original) order. PUBACKs may remove entries
        # while we write, so the walk goes on after the entry just sent.
        i = 0
        while True:
            i = self._due(i, by_age)
            if i < 0:
                return
            e = self._inflight[i]
            await self._transmit(e)
            # Go on after e, or from the start if e itself was acked meanwhile (each
            # restart needs an ack, so this ends).
            f = self._inflight
            j = 0
            while j < len(f) and f[j] is not e:
                j += 1
            i = j + 1 if j < len(f) else 0

    async def _transmit(self, e):
        pkt = e[_PKT]
        if e[_GEN]:
            pkt[0] |= _DUP  # a re-delivery attempt [MQTT-3.3.1-1]
        gen = e[_GEN] = self._gen
        e[_T] = ticks_ms()
        async with self._wlock:
            for x in self._inflight:
                if x is e:  # not acked or given up while we waited: its packet is there
                    await self._write(pkt, len(pkt), gen)
                    return

    def _forget(self, e):
        f = self._inflight
        for i in range(len(f)):
            if f[i] is e:
                f.pop(i)
                return

    def _new_pid(self):
        # Non-zero [MQTT-2.3.1-1] and not in use by another packet [MQTT-2.3.1-2].
        while True:
            p = self._pid % 65535 + 1
            self._pid = p
            w = self._subwait
            if w is not None and w[0] == p:
                continue
            for e in self._inflight:
                if e[_PID] == p:
                    break
            else:
                return p

    async def _send(self, buf):
        gen = self._gen
        async with self._wlock:
            await self._write(buf, len(buf), gen)

    async def _write(self, buf, n, gen, handshake=False):
        # Writes buf[0:n] whole; the caller holds _wlock (or owns the socket during the
        # handshake). A full socket buffer is waited out by polling, so a dead link
        # never leaves a task parked on a closed socket.
        i = 0
        mv = None
        while i < n:
            if self._gen != gen or not (self._live or handshake) or self._sock is None:
                raise OSError("not connected")
            try:
                if i == 0 and n == len(buf):
                    r = self._sock.write(buf)
                else:
                    if mv is None:
                        mv = memoryview(buf)
                    r = self._sock.write(mv[i:n])
            except OSError as e:
                if not handshake:
                    self._drop(_why(e))
                raise
            if r is None:
                await asyncio.sleep_ms(10)
                continue
            i += r
        self._last_tx = ticks_ms()

    async def _sub1(self, tb, qos):
        async with self._slock:
            pid = self._new_pid()
            w = [pid, None, asyncio.Event()]
            self._subwait = w
            try:
                await self._send(subscribe_packet(pid, tb, qos))
                await asyncio.wait_for_ms(w[2].wait(), self.ack_timeout_ms)
            except asyncio.TimeoutError:
                self._drop("no SUBACK within %d ms" % self.ack_timeout_ms)
                raise OSError("no SUBACK")
            finally:
                self._subwait = None
        rc = w[1]
        if rc is None:
            raise OSError("connection lost while subscribing")
        if rc == _SUB_FAIL:
            raise MQTTError("broker refused the subscription to %s (SUBACK 0x80, 3.9.3): "
                            "check the broker's ACL for this client" % str(tb, "utf-8"), rc)
        return rc  # may be lower than asked: the broker grants at most its maximum (3.9.3)

    # -- receiving ----------------------------------------------------------------

    async def _read_loop(self):
        try:
            while True:
                hdr, n = await read_packet(self._stream, self._rx)
                self._last_rx = ticks_ms()
                await self._dispatch(hdr, n)
        except Exception as e:  # OSError, malformed input: the connection is over
            self._drop(_why(e))

    async def _dispatch(self, hdr, n):
        body = self._rx
        t = hdr & 0xF0
        if t == _PUBLISH:
            big = n > len(body)
            try:
                topic, msg, qos, pid = parse_publish(hdr, body, len(body) >> 1 if big else n)
            except ValueError:
                if big:  # too large even to find its packet id: skip it unacked
                    self.dropped += 1
                    return
                raise
            if qos == 2:
                raise MQTTError("QoS 2 PUBLISH received; this client subscribes at QoS <= 1")
            if big:
                self.dropped += 1
            elif self.on_message is not None:
                try:
                    self.on_message(str(topic, "utf-8"), bytes(msg))
                except Exception as e:  # the app's bug must not take MQTT down
                    sys.print_exception(e)
            if qos == 1:
                # Acknowledge after the handler ran, so what it stored is committed
                # before the broker forgets the message [MQTT-3.3.4-1].
                a = self._ack
                a[2] = pid >> 8
                a[3] = pid & 0xFF
                await self._send(a)
        elif hdr == _PUBACK and n == 2:
            pid = body[0] << 8 | body[1]
            f = self._inflight
            for i in range(len(f)):
                if f[i][_PID] == pid:
                    f.pop(i)[_EV].set()
                    break
        elif hdr == _SUBACK:
            pid, rc = parse_suback(body, n)
            w = self._subwait
            if w is not None and w[0] == pid:
                w[1] = rc
                w[2].set()
        elif hdr == _PINGRESP:
            pass
        else:  # CONNACK twice, wrong flag bits, a type a client never receives
            raise MQTTError("unexpected packet 0x%02x from the broker [MQTT-2.2.2-2]" % hdr)
