# Byte-exact tests of agent/mqtt.py, run by MicroPython itself (tests/test_agent_mpy.py).
# Expected bytes are derived by hand from MQTT 3.1.1 (section numbers in the comments),
# not produced by the code under test. Edges first: the 1/2/3/4-byte boundaries of the
# remaining length (2.2.3).
import gc
import sys

# MICROPYPATH replaces the default path, which loses the frozen asyncio package.
if ".frozen" not in sys.path:
    sys.path.append(".frozen")

import asyncio  # noqa: E402

# Compiling mqtt.py from source is the peak of this file: ~108 KB of a 64-bit heap
# on its own (on the board it is frozen or a .mpy, and never compiled there). Free
# what compiling this file left behind first.
gc.collect()
import mqtt  # noqa: E402
from fakesock import FakeSock, Joined, Pattern, hexs  # noqa: E402
from mpyunit import eq, main, raises  # noqa: E402

# A 16 KB packet is never held whole here: on a 128 KB MicroPython heap that already
# holds this file and mqtt.py compiled, no 16 KB block is left (fragmentation). Large
# packets are streamed from a Pattern, and the encoder is checked up to the payload.


def run(coro):
    return asyncio.run(coro)


def h(s):
    # "10 0e 00" -> b"\x10\x0e\x00"
    return bytes(int(x, 16) for x in s.split())


# -- remaining length (2.2.3) -------------------------------------------------------

RL_CASES = (
    (0, "00"),
    (127, "7f"),
    (128, "80 01"),
    (16383, "ff 7f"),
    (16384, "80 80 01"),
    (2097151, "ff ff 7f"),
    (2097152, "80 80 80 01"),
    (268435455, "ff ff ff 7f"),
)


def test_remaining_length_encode_edges():
    for n, enc in RL_CASES:
        eq(mqtt.encode_remaining_length(n), h(enc), "n=%d" % n)


def test_remaining_length_decode_edges():
    for n, enc in RL_CASES:
        b = h(enc)
        eq(mqtt.decode_remaining_length(b), (n, len(b)), "n=%d" % n)
        # at an offset, with trailing bytes that are not part of the field
        eq(mqtt.decode_remaining_length(b"\x30" + b + b"\x99", 1), (n, len(b)))


def test_remaining_length_errors():
    raises(ValueError, mqtt.encode_remaining_length, 268435456)  # out of range
    raises(ValueError, mqtt.encode_remaining_length, -1)
    # 4 bytes with the continuation bit on the 4th would need a 5th: malformed.
    raises(ValueError, mqtt.decode_remaining_length, h("ff ff ff ff 7f"))
    raises(ValueError, mqtt.decode_remaining_length, h("80 80 80 80 01"))
    # incomplete: the caller must read more
    eq(mqtt.decode_remaining_length(h("80")), None)
    eq(mqtt.decode_remaining_length(h("ff ff ff")), None)
    eq(mqtt.decode_remaining_length(b""), None)


# -- CONNECT (3.1) ---------------------------------------------------------------------


def test_connect_minimal():
    # 10 | rl 14 | 00 04 "MQTT" | level 4 | flags 02 (clean) | keepalive 60 | 00 02 "ab"
    want = h("10 0e 00 04 4d 51 54 54 04 02 00 3c 00 02 61 62")
    eq(mqtt.connect_packet("ab", keepalive=60), want)
    # not clean, keepalive 0
    want = h("10 0e 00 04 4d 51 54 54 04 00 00 00 00 02 61 62")
    eq(mqtt.connect_packet("ab", clean=False), want)
    # a long client id: rl = 10 + 2 + 120 = 132 -> 84 01
    p = mqtt.connect_packet("i" * 120)
    eq((bytes(p[0:3]), len(p)), (h("10 84 01"), 3 + 132))


def test_connect_with_will_and_credentials():
    # flags: user 80 | password 40 | will retain 20 | will QoS 1 08 | will 04 | clean 02 = ee
    # payload: id "c1", will topic "w/s", will msg "offline", user "u", password "pw"
    # rl = 10 + (2+2) + (2+3) + (2+7) + (2+1) + (2+2) = 35 = 0x23
    want = h("10 23 00 04 4d 51 54 54 04 ee 00 1e"
             " 00 02 63 31"
             " 00 03 77 2f 73"
             " 00 07 6f 66 66 6c 69 6e 65"
             " 00 01 75"
             " 00 02 70 77")
    got = mqtt.connect_packet("c1", "u", "pw", 30, "w/s", "offline", True, 1, True)
    eq(got, want, hexs(got))


def test_connect_will_qos0_no_retain_user_only():
    # flags: user 80 | will 04 | clean 02 = 86; rl = 10 + 3 + 3 + 3 + 3 = 22 = 0x16
    want = h("10 16 00 04 4d 51 54 54 04 86 00 0a 00 01 78 00 01 74 00 01 6d 00 01 75")
    eq(mqtt.connect_packet("x", "u", None, 10, "t", b"m"), want)


def test_connect_refuses_invalid_combinations():
    raises(ValueError, mqtt.connect_packet, "x", None, "pw")  # [MQTT-3.1.2-22]
    raises(ValueError, mqtt.connect_packet, "x", will_qos=1)  # [MQTT-3.1.2-11]
    raises(ValueError, mqtt.connect_packet, "x", will_topic="t", will_qos=3)
    raises(ValueError, mqtt.connect_packet, "", clean=False)  # [MQTT-3.1.3-7]
    raises(ValueError, mqtt.connect_packet, "x", keepalive=65536)


# -- CONNACK (3.2) ---------------------------------------------------------------------


def test_connack_accepted_session_present_malformed():
    eq(mqtt.parse_connack(h("00 00")), False)
    eq(mqtt.parse_connack(h("01 00")), True)
    raises(mqtt.MQTTError, mqtt.parse_connack, h("02 00"))  # reserved bits [MQTT-3.2.2-1]
    raises(mqtt.MQTTError, mqtt.parse_connack, h("00 00 00"), 3)


def test_connack_refusal_codes_have_clear_text():
    words = {1: "protocol version", 2: "identifier rejected", 3: "server unavailable",
             4: "bad user name or password", 5: "not authorized"}
    for rc in range(1, 6):
        e = raises(mqtt.MQTTError, mqtt.parse_connack, bytes((0, rc)))
        eq(e.code, rc)
        msg = str(e)
        assert words[rc] in msg, msg
        assert "CONNACK code %d" % rc in msg, msg
    e = raises(mqtt.MQTTError, mqtt.parse_connack, h("00 06"))
    assert "unknown" in str(e), str(e)


# -- PUBLISH (3.3), PUBACK (3.4) --------------------------------------------------------


def test_publish():
    # QoS 0: 30 | rl 7 | 00 03 "a/b" | "hi"
    eq(mqtt.publish_packet("a/b", b"hi"), h("30 07 00 03 61 2f 62 68 69"))
    eq(mqtt.publish_packet("a/b", "hi", 0, True), h("31 07 00 03 61 2f 62 68 69"))  # retain
    # QoS 1: 32 | rl 9 | topic | pid 00 0a | payload
    eq(mqtt.publish_packet("a/b", b"hi", 1, False, 10), h("32 09 00 03 61 2f 62 00 0a 68 69"))
    # 30 | DUP 08 | QoS1 02 | retain 01 = 3b
    eq(mqtt.publish_packet("a/b", b"hi", 1, True, 10, True),
       h("3b 09 00 03 61 2f 62 00 0a 68 69"))
    eq(mqtt.publish_packet("t", b"", 1, True, 65535), h("33 05 00 01 74 ff ff"))  # empty
    buf = bytearray(32)  # into a preallocated buffer
    n = mqtt.publish_into(buf, b"a/b", b"hi")
    eq(bytes(buf[0:n]), h("30 07 00 03 61 2f 62 68 69"))


def test_publish_refuses_invalid():
    raises(ValueError, mqtt.publish_packet, "a/+", b"x")  # [MQTT-3.3.2-2]
    raises(ValueError, mqtt.publish_packet, "a/#", b"x")
    raises(ValueError, mqtt.publish_packet, "", b"x")  # [MQTT-4.7.3-1]
    raises(ValueError, mqtt.publish_packet, "t", b"x", 1, False, 0)  # [MQTT-2.3.1-1]
    raises(ValueError, mqtt.publish_packet, "t", b"x", 0, False, 0, True)  # [MQTT-3.3.1-2]
    raises(ValueError, mqtt.publish_packet, "t", b"x", 3, False, 1)


def big_publish(rl, qos=0, pid=0, topic=b"t", tail=b""):
    # A PUBLISH with remaining length rl and a letter-pattern payload, as a stream that
    # is never held whole in memory; returns (stream data, payload length).
    plen = rl - 2 - len(topic) - (2 if qos else 0)
    head = bytearray(16 + len(topic))
    k = mqtt.publish_header(head, topic, plen, qos, False, pid)
    return Joined(bytes(head[0:k]), Pattern(plen), tail), plen


def test_publish_remaining_length_128_and_16384():
    # topic "t" takes 3 bytes, so payloads of 125 / 16381 give rl 128 / 16384 exactly.
    p = mqtt.publish_packet("t", b"x" * 125)
    eq(bytes(p[0:6]), h("30 80 01 00 01 74"))
    eq(len(p), 3 + 128)
    eq(bytes(mqtt.publish_packet("t", b"x" * 124)[0:2]), h("30 7f"))  # 1 byte less
    buf = bytearray(16)
    n = mqtt.publish_header(buf, b"t", 16381)
    eq(bytes(buf[0:n]), h("30 80 80 01 00 01 74"))
    n = mqtt.publish_header(buf, b"t", 16380)
    eq(bytes(buf[0:n]), h("30 ff 7f 00 01 74"))
    n = mqtt.publish_header(buf, b"t", 16379, 1, True, 0x0102, True)
    eq(bytes(buf[0:n]), h("3b 80 80 01 00 01 74 01 02"))
    eq(mqtt.publish_size(b"t", Pattern(16381), 0), 4 + 16384)
    eq(mqtt.publish_size(b"t", Pattern(125), 0), 3 + 128)


# -- SUBSCRIBE (3.8), SUBACK (3.9), fixed packets ---------------------------------------


def test_subscribe():
    # 82 (reserved flags 0010) | rl 8 | pid 00 01 | 00 03 "x/#" | QoS 01
    eq(mqtt.subscribe_packet(1, "x/#", 1), h("82 08 00 01 00 03 78 2f 23 01"))
    eq(mqtt.subscribe_packet(0x0102, "wanwitness/a1/ack", 0),
       h("82 16 01 02 00 11") + b"wanwitness/a1/ack" + h("00"))
    raises(ValueError, mqtt.subscribe_packet, 0, "x", 1)
    raises(ValueError, mqtt.subscribe_packet, 1, "x", 3)


def test_suback():
    eq(mqtt.parse_suback(h("00 05 01"), 3), (5, 1))
    eq(mqtt.parse_suback(h("00 05 00"), 3), (5, 0))
    eq(mqtt.parse_suback(h("ab cd 80"), 3), (0xABCD, 0x80))
    raises(mqtt.MQTTError, mqtt.parse_suback, h("00 05 03"), 3)
    raises(mqtt.MQTTError, mqtt.parse_suback, h("00 05"), 2)


def test_fixed_packets():
    eq(mqtt.puback_packet(0x1234), h("40 02 12 34"))
    eq(mqtt.PINGREQ, h("c0 00"))
    eq(mqtt.DISCONNECT, h("e0 00"))


# -- reading packets from a stream --------------------------------------------------------


def test_publish_split_across_reads():
    pkt = bytes(mqtt.publish_packet("a/b", b"hello", 1, True, 7, True))
    for chunks in ([1], [1, 1, 1, 2], [2, 3], [3, 1, 100]):
        s = FakeSock(pkt + h("d0 00"), chunks)
        buf = memoryview(bytearray(64))
        hdr, n = run(mqtt.read_packet(s, buf))
        eq((hdr, n), (0x3B, 12), str(chunks))
        topic, msg, qos, pid = mqtt.parse_publish(hdr, buf, n)
        eq((bytes(topic), bytes(msg), qos, pid), (b"a/b", b"hello", 1, 7))
        eq(run(mqtt.read_packet(s, buf)), (0xD0, 0))  # the next packet is intact
        assert s.reads >= 1


def check_pattern(msg, n):
    pat = Pattern(n)
    for i in range(len(msg)):
        if msg[i] != pat.at(i):
            raise AssertionError("payload differs at byte %d" % i)


def test_read_publish_rl_128_exact_buffer():
    data, plen = big_publish(128, tail=h("d0 00"))  # a PINGRESP right behind it
    s = FakeSock(data, [1, 1, 1, 1, 50])
    buf = memoryview(bytearray(128))  # exactly big enough
    hdr, n = run(mqtt.read_packet(s, buf))
    eq((hdr, n), (0x30, 128))
    topic, msg, qos, pid = mqtt.parse_publish(hdr, buf, n)
    eq((bytes(topic), qos, pid, len(msg)), (b"t", 0, 0, 125))
    check_pattern(msg, plen)
    eq(run(mqtt.read_packet(s, buf)), (0xD0, 0))
    # one byte more than the buffer: half of it kept, the stream still in step
    data, plen = big_publish(129, tail=h("d0 00"))
    s = FakeSock(data, [2, 60])
    eq(run(mqtt.read_packet(s, buf)), (0x30, 129))
    topic, msg, _, _ = mqtt.parse_publish(0x30, buf, 64)
    eq((bytes(topic), len(msg)), (b"t", 61))
    check_pattern(msg, plen)
    eq(run(mqtt.read_packet(s, buf)), (0xD0, 0))


def test_read_publish_rl_16384_split():
    # Into a 1 KB buffer: the first 512 bytes are kept, the rest read and discarded.
    data, plen = big_publish(16384, tail=h("d0 00"))
    eq(len(data), 4 + 16384 + 2)
    s = FakeSock(data, [1, 1, 1, 1, 100, 1000, 333])
    buf = memoryview(bytearray(1024))
    hdr, n = run(mqtt.read_packet(s, buf))
    eq((hdr, n), (0x30, 16384))
    topic, msg, qos, pid = mqtt.parse_publish(hdr, buf, 512)
    eq((bytes(topic), qos, pid, len(msg)), (b"t", 0, 0, 509))
    check_pattern(msg, plen)
    eq(run(mqtt.read_packet(s, buf)), (0xD0, 0))  # exactly 16384 bytes were consumed


def test_read_oversized_publish_keeps_stream_in_step():
    data, _ = big_publish(16384, 1, 0x0203, b"big/t", h("40 02 00 09"))  # then a PUBACK
    s = FakeSock(data, [7, 300])
    buf = memoryview(bytearray(64))
    hdr, n = run(mqtt.read_packet(s, buf))
    eq((hdr, n), (0x32, 16384))
    topic, _, qos, pid = mqtt.parse_publish(hdr, buf, len(buf) // 2)
    eq((bytes(topic), qos, pid), (b"big/t", 1, 0x0203))
    eq(run(mqtt.read_packet(s, buf)), (0x40, 2))
    eq(bytes(buf[0:2]), h("00 09"))


def test_read_and_parse_malformed():
    s = FakeSock(h("30 ff ff ff ff 01"))
    raises(ValueError, run, mqtt.read_packet(s, memoryview(bytearray(16))))
    s = FakeSock(h("32 0a 00 03 61"))  # the peer closes mid-packet
    raises(OSError, run, mqtt.read_packet(s, memoryview(bytearray(16))))
    buf = bytearray(h("00 09 61"))
    raises(ValueError, mqtt.parse_publish, 0x30, buf, 3)  # topic longer than packet
    raises(ValueError, mqtt.parse_publish, 0x36, h("00 01 61 00 01"), 5)  # QoS 3


# -- the client's protocol handling, on a fake socket -------------------------------------


def live_client(sock, **kw):
    c = mqtt.Client("127.0.0.1", 1883, "t", keepalive_s=0, **kw)
    c._sock = sock
    c._stream = sock
    c._gen = 1
    c._live = True
    return c


def test_client_incoming_qos1_is_delivered_then_acked():
    got = []
    p1 = bytes(mqtt.publish_packet("w/a1/ack", b'{"seq": 5}', 1, True, 0x0102))
    p0 = bytes(mqtt.publish_packet("w/a1/x", b"q0"))
    s = FakeSock(p1 + p0, [3, 1, 5])
    c = live_client(s)
    c.on_message = lambda t, m: got.append((t, m, bytes(s.out)))
    run(c._read_loop())  # reads to the end of the fake stream, then drops
    eq(got[0], ("w/a1/ack", b'{"seq": 5}', b""))  # the handler ran before the PUBACK
    eq(got[1][0:2], ("w/a1/x", b"q0"))
    eq(bytes(s.out), h("40 02 01 02"))  # one PUBACK, none for QoS 0
    eq((c.connected, s.closed), (False, True))
    assert "closed" in c.last_error, c.last_error


def test_client_oversized_incoming_is_acked_and_counted():
    got = []
    big = bytes(mqtt.publish_packet("t", b"z" * 2000, 1, False, 0x0a0b))
    s = FakeSock(big + bytes(mqtt.publish_packet("t", b"ok")), [500])
    c = live_client(s)
    c.on_message = lambda t, m: got.append(m)
    run(c._read_loop())
    eq(got, [b"ok"])
    eq(c.dropped, 1)
    eq(bytes(s.out), h("40 02 0a 0b"))


def test_client_handler_exception_does_not_drop_the_ack():
    s = FakeSock(bytes(mqtt.publish_packet("t", b"x", 1, False, 3)))
    c = live_client(s)

    def bad(t, m):
        raise RuntimeError("app bug (expected in this test)")

    c.on_message = bad
    run(c._read_loop())
    eq(bytes(s.out), h("40 02 00 03"))


def test_client_publish_resolves_on_puback_and_resends_with_dup():
    async def scenario():
        s = FakeSock()
        c = live_client(s)
        t = asyncio.create_task(c.publish("a/b", b"hi", 1, True))
        await asyncio.sleep_ms(5)
        first = h("33 09 00 03 61 2f 62 00 01 68 69")
        eq(bytes(s.out), first)
        eq(c.inflight(), 1)
        # not yet old enough for a retransmit
        await c._resend(True)
        eq(len(s.out), len(first))
        # after retry_ms on the same connection: again, DUP=1
        c.retry_ms = 0
        await c._resend(True)
        dup = h("3b 09 00 03 61 2f 62 00 01 68 69")
        eq(bytes(s.out), first + dup)
        # a new connection (gen 2): resent once, DUP=1 [MQTT-4.4.0-1]
        c.retry_ms = 100000
        c._gen = 2
        await c._resend(False)
        await c._resend(False)
        eq(bytes(s.out), first + dup + dup)
        s.feed(h("40 02 00 01"))
        await c._read_loop()
        ok = await t
        return ok, c.inflight()

    eq(run(scenario()), (True, 0))


def test_client_publish_qos1_times_out_and_is_forgotten():
    async def scenario():
        c = live_client(FakeSock())
        ok = await c.publish("a/b", b"hi", 1, False, 30)
        return ok, c.inflight()

    eq(run(scenario()), (False, 0))


def test_client_publish_while_offline_waits_for_the_connection():
    async def scenario():
        s = FakeSock()
        c = mqtt.Client("127.0.0.1", 1883, "t", keepalive_s=0)
        ok0 = await c.publish("a/b", b"q0", 0)  # QoS 0 offline: dropped
        t = asyncio.create_task(c.publish("a/b", b"q1", 1))
        await asyncio.sleep_ms(5)
        eq(c.inflight(), 1)
        # "connect": what connect() does after CONNACK
        c._sock = s
        c._stream = s
        c._gen = 1
        c._live = True
        await c._resend(False)
        eq(bytes(s.out), h("32 09 00 03 61 2f 62 00 01 71 31"))  # first send: DUP=0
        s.feed(h("40 02 00 01"))
        await c._read_loop()
        return ok0, await t

    eq(run(scenario()), (False, True))


def test_client_partial_writes_are_completed_in_order():
    async def scenario():
        s = FakeSock(write_max=3)
        c = live_client(s)
        await c.publish("a/b", b"0123456789", 0)
        await c._send(mqtt.PINGREQ)
        return bytes(s.out)

    eq(run(scenario()), bytes(mqtt.publish_packet("a/b", b"0123456789")) + h("c0 00"))


def test_client_qos0_large_payload_and_long_topic():
    async def scenario():
        s = FakeSock(write_max=100)
        c = live_client(s)
        big = bytes(range(256)) * 3  # larger than tx_size: header, then the payload
        eq(await c.publish("a/b", big, 0), True)
        eq(bytes(s.out), bytes(mqtt.publish_packet("a/b", big)))
        s.out = bytearray()
        topic = "t/" + "x" * 300  # longer than tx_size: one allocated packet
        eq(await c.publish(topic, b"p", 0, True), True)
        eq(bytes(s.out), bytes(mqtt.publish_packet(topic, b"p", 0, True)))

    run(scenario())


def test_client_disconnect_sends_disconnect_and_closes():
    async def scenario():
        s = FakeSock()
        c = live_client(s)
        c.connected = True
        await c.disconnect()
        return bytes(s.out), s.closed, c.connected, c._live

    eq(run(scenario()), (h("e0 00"), True, False, False))


def test_client_packet_ids_skip_ids_in_use():
    c = mqtt.Client("h", 1883, "t")
    c._inflight.append([2, b"", 0, 0, None])
    eq([c._new_pid() for _ in range(3)], [1, 3, 4])
    c._pid = 65534
    eq([c._new_pid(), c._new_pid()], [65535, 1])  # never 0 [MQTT-2.3.1-1]


def test_backoff_bounds_and_jitter():
    c = mqtt.Client("h", 1883, "t")
    for fails in range(0, 40):
        d = min(30000, 500 << min(fails, 16))
        seen = set()
        for _ in range(20):
            b = c.backoff_ms(fails)
            assert 500 <= b <= 30000, b
            assert max(500, d // 2) <= b <= d, (fails, b)
            seen.add(b)
        if fails >= 2:
            assert len(seen) > 1, "no jitter at %d" % fails


def test_client_will_and_credentials_go_into_connect():
    c = mqtt.Client("h", 1883, "c1", "u", "pw", 30, ("w/s", "offline", True, 1))
    eq(c._cpkt, mqtt.connect_packet("c1", "u", "pw", 30, "w/s", "offline", True, 1, True))


main(globals())
