"""The collector's MQTT client reads the socket in gulps (loop.BufferedClient): every
packet still arrives whole, in order, once; whatever is buffered is handled without
waiting for more bytes; a packet split across reads or larger than a gulp is put
together; bytes left of a closed connection never reach the next one."""

from __future__ import annotations

import socket
import struct

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from wanwitness.collector.loop import BufferedClient


def publish_packet(topic: str, payload: bytes, mid: int = 0) -> bytes:
    """An MQTT 3.1.1 PUBLISH (QoS 1 with a mid, else QoS 0)."""
    body = struct.pack("!H", len(topic)) + topic.encode() + (struct.pack("!H", mid) if mid else b"") + payload
    n, length = len(body), b""
    while True:
        byte, n = n % 128, n // 128
        length += bytes([byte | (128 if n else 0)])
        if not n:
            break
    return bytes([0x32 if mid else 0x30]) + length + body


@pytest.fixture
def wired():
    """A client whose socket is one end of a socket pair: the test writes the broker's side."""
    client = BufferedClient(CallbackAPIVersion.VERSION2, client_id="t", manual_ack=True)
    got: list[tuple[str, bytes, int]] = []
    client.on_message = lambda _c, _u, m: got.append((m.topic, bytes(m.payload), m.mid))
    pairs = []

    def connect():
        ours, broker = socket.socketpair()
        ours.setblocking(False)
        client._sock = ours
        pairs.append((ours, broker))
        return broker

    yield client, got, connect
    for ours, broker in pairs:
        ours.close()
        broker.close()


def drain(client) -> None:
    """What paho's loop does when select() says the socket is readable, until it is not."""
    for _ in range(1000):
        rc = client.loop_read()
        assert rc == MQTTErrorCode.MQTT_ERR_SUCCESS
        if not client._buffered():
            return


def test_many_packets_in_one_read_all_arrive_in_order_without_more_reads(wired):
    client, got, connect = wired
    broker = connect()
    sent = [(f"wanwitness/a{i % 5}/rec", b'{"n":%d}' % i * (1 + i % 7), i + 1) for i in range(500)]
    broker.sendall(b"".join(publish_packet(*m) for m in sent))
    reads: list[int] = []
    client._sock = _Counting(client._sock, reads)
    client.loop_read()  # one readable event: everything already here is handled
    assert got == sent
    assert len(reads) <= 3  # not 4 per packet


def test_a_packet_split_across_reads_and_one_larger_than_a_gulp_arrive_whole(wired):
    client, got, connect = wired
    broker = connect()
    big = bytes(range(256)) * 300  # 76,800 bytes: more than one gulp of 64 KiB
    stream = publish_packet("wanwitness/a1/rec", b"first", 1) + publish_packet("wanwitness/a1/rec", big, 2) \
        + publish_packet("wanwitness/a1/hb", b"last")
    sent = 0
    for cut in (3, 1000, 70_000, len(stream)):  # the bytes come in pieces
        broker.sendall(stream[sent:cut])
        sent = cut
        drain(client)
    assert [(t, p) for t, p, _ in got] == [("wanwitness/a1/rec", b"first"), ("wanwitness/a1/rec", big),
                                           ("wanwitness/a1/hb", b"last")]


def test_bytes_left_of_a_lost_connection_do_not_reach_the_next_one(wired):
    client, got, connect = wired
    old = connect()
    old.sendall(publish_packet("wanwitness/a1/rec", b"one", 1) + publish_packet("wanwitness/a1/rec", b"two", 2))
    mqtt.Client.loop_read(client)  # paho's own: one packet, the second left in the buffer
    assert [p for _, p, _ in got] == [b"one"] and client._buffered()
    new = connect()  # the connection was lost; paho made a new socket
    assert not client._buffered()
    new.sendall(publish_packet("wanwitness/a1/rec", b"three", 1))
    drain(client)
    assert [p for _, p, _ in got] == [b"one", b"three"]


class _Counting:
    """A socket that counts its recv calls."""

    def __init__(self, sock, calls):
        self._s, self._calls = sock, calls

    def recv(self, n):
        self._calls.append(n)
        return self._s.recv(n)

    def __getattr__(self, name):
        return getattr(self._s, name)
