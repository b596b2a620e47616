"""The embedded (amqtt) broker: logins, topic ACL, reliable QoS 1 delivery, retained, wills."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from testing.brokers import ConnectRefused, MqttClient, free_port, raw_connect
from wanwitness.broker import embedded
from wanwitness.broker.embedded import BrokerPortInUse, EmbeddedBroker
from wanwitness.broker.passwords import check_password, hash_password, new_secret

PASSWORDS = {"collector": new_secret(), "a": new_secret(), "b": new_secret()}
HASHES = {user: hash_password(pw) for user, pw in PASSWORDS.items()}


def authenticate(username: str, password: str) -> str | None:
    hashed = HASHES.get(username)
    if hashed is None or not check_password(password, hashed):
        return None
    return "collector" if username == "collector" else "agent"


def start_broker(**kw) -> EmbeddedBroker:
    broker = EmbeddedBroker("127.0.0.1", 0, authenticate, **kw)
    broker.start()
    return broker


@pytest.fixture
def broker():
    b = start_broker()
    yield b
    b.stop()


def client(broker, user, client_id=None, **kw) -> MqttClient:
    return MqttClient(broker.url, client_id or f"{user}-{new_secret()[:6]}", username=user,
                      password=PASSWORDS[user], **kw).connect()


def collector(broker, **kw) -> MqttClient:
    """The collector as the real one runs: persistent session, manual acks."""
    return client(broker, "collector", "collector", clean_session=False, manual_ack=True, **kw)


# --- logins and ACL ----------------------------------------------------------------


def test_wrong_password_unknown_user_and_anonymous_are_refused(broker):
    for user, password in (("a", "wrong"), ("nobody", PASSWORDS["a"]), (None, None)):
        with pytest.raises(ConnectRefused, match="[Nn]ot authori[sz]ed"):
            MqttClient(broker.url, "x", username=user, password=password).connect()
    client(broker, "a").close()


def test_broken_credential_store_refuses_instead_of_crashing():
    def failing(_user, _password):
        raise RuntimeError("database is locked")

    b = EmbeddedBroker("127.0.0.1", 0, failing)
    b.start()
    try:
        with pytest.raises(ConnectRefused):
            MqttClient(b.url, "x", username="a", password="a").connect()
    finally:
        b.stop()


def test_agent_publishes_its_records_and_the_collector_receives_them(broker):
    with client(broker, "collector") as col, client(broker, "a") as a:
        assert col.subscribe("wanwitness/#", 1) == 1
        a.publish("wanwitness/a/rec", b'{"seq": 1}', qos=1)
        msg = col.get()
        assert (msg.topic, msg.payload, msg.qos, msg.retain) == ("wanwitness/a/rec", b'{"seq": 1}', 1, False)


def test_agent_cannot_publish_as_another_agent(broker):
    with client(broker, "collector") as col, client(broker, "a") as a:
        col.subscribe("wanwitness/#", 1)
        a.publish("wanwitness/b/rec", b"forged")
        a.publish("wanwitness/b/status", b"offline", retain=True)
        a.publish("wanwitness/a", b"not below a/")
        a.publish("elsewhere/x", b"outside the prefix")
        a.publish("wanwitness/a/rec", b"barrier")  # same client, so it arrives after the others would
        got = col.get_until("wanwitness/a/rec")
        assert [(m.topic, m.payload) for m in got] == [("wanwitness/a/rec", b"barrier")]
    # The refused retained publish was not stored either.
    with client(broker, "collector") as col2:
        col2.subscribe("wanwitness/b/status", 1)
        col2.subscribe("wanwitness/a/rec", 1)
        with client(broker, "a") as a:
            a.publish("wanwitness/a/rec", b"barrier")
        assert [m.topic for m in col2.get_until("wanwitness/a/rec")] == ["wanwitness/a/rec"]


def test_agent_reads_only_its_own_ack(broker):
    with client(broker, "collector") as col, client(broker, "a") as a:
        assert a.subscribe("wanwitness/b/ack", 1) == 0x80
        assert a.subscribe("wanwitness/+/ack", 1) == 0x80
        assert a.subscribe("wanwitness/#", 1) == 0x80
        assert a.subscribe("wanwitness/a/ack", 1) == 1
        col.publish("wanwitness/b/ack", b'{"seq": 7}', retain=True)
        col.publish("wanwitness/a/ack", b'{"seq": 3}', retain=True)
        got = a.get_until("wanwitness/a/ack")
        assert [(m.topic, m.payload) for m in got] == [("wanwitness/a/ack", b'{"seq": 3}')]


def test_retained_ack_reaches_a_later_subscriber_and_nothing_else_does(broker):
    with client(broker, "collector") as col:
        col.subscribe("wanwitness/#", 1)  # amqtt would replay retained messages matching this to everybody
        col.publish("wanwitness/b/ack", b'{"seq": 9}', retain=True)
        col.publish("wanwitness/a/ack", b'{"seq": 4}', retain=True)
        with client(broker, "a", "A-persistent", clean_session=False) as a:
            assert a.subscribe("wanwitness/a/ack", 1) == 1
            msg = a.get()
            assert (msg.topic, msg.payload, msg.retain) == ("wanwitness/a/ack", b'{"seq": 4}', True)
            # A live ack is delivered as such.
            col.publish("wanwitness/a/ack", b'{"seq": 5}', retain=True)
            msg = a.get()
            assert (msg.topic, msg.payload, msg.retain) == ("wanwitness/a/ack", b'{"seq": 5}', False)
            assert a.drain() == []
        # Reconnecting to the persistent session does not replay retained messages.
        with client(broker, "a", "A-persistent", clean_session=False) as a2:
            assert a2.session_present
            col.publish("wanwitness/a/ack", b'{"seq": 6}', retain=True)
            assert [(m.topic, m.payload) for m in a2.get_until("wanwitness/a/ack")] == [
                ("wanwitness/a/ack", b'{"seq": 6}')]


def test_will_is_published_when_an_agent_vanishes(broker):
    with client(broker, "collector") as col:
        col.subscribe("wanwitness/+/status", 1)
        a = client(broker, "a", will=("wanwitness/a/status", b"offline", 1, True))
        a.publish("wanwitness/a/status", b"online", retain=True)
        assert col.get().payload == b"online"
        a.drop()
        msg = col.get()
        assert (msg.topic, msg.payload) == ("wanwitness/a/status", b"offline")
    with client(broker, "collector") as later:
        later.subscribe("wanwitness/a/status", 1)
        msg = later.get()
        assert (msg.payload, msg.retain) == (b"offline", True)


def test_silent_agent_is_dropped_after_its_keepalive_and_its_will_published(broker):
    with client(broker, "collector") as col:
        col.subscribe("wanwitness/+/status", 1)
        sock, rc = raw_connect(broker.url, "A-silent", username="a", password=PASSWORDS["a"], keepalive=1,
                               will=("wanwitness/a/status", b"offline", 1, True))
        try:
            assert rc == 0
            started = time.monotonic()
            msg = col.get(timeout=5)  # 1.5 x keep-alive, plus slack
            assert (msg.topic, msg.payload) == ("wanwitness/a/status", b"offline")
            assert time.monotonic() - started >= 1.0
        finally:
            sock.close()


def test_agent_cannot_leave_a_will_on_another_agents_topic(broker):
    with pytest.raises(ConnectRefused):
        client(broker, "a", will=("wanwitness/b/status", b"offline", 1, True))


# --- persistent sessions and reliable QoS 1 ----------------------------------------------


def test_unacked_messages_are_redelivered_after_the_collector_reconnects(broker):
    col = collector(broker)
    col.subscribe("wanwitness/#", 1)
    with client(broker, "a") as a:
        for i in range(5):
            a.publish("wanwitness/a/rec", f"r{i}")
        first = [col.get() for _ in range(5)]
        assert [m.payload for m in first] == [f"r{i}".encode() for i in range(5)]
        col.ack(first[0])
        col.ack(first[1])
        col.drop()  # crashed before committing r2..r4
        for i in range(5, 8):
            a.publish("wanwitness/a/rec", f"r{i}")  # queued while the collector is away

    col = collector(broker)  # no new SUBSCRIBE: the session remembers it
    assert col.session_present
    got = [col.get() for _ in range(6)]
    assert [m.payload for m in got] == [f"r{i}".encode() for i in range(2, 8)]
    assert [m.dup for m in got[:3]] == [True] * 3  # resent
    assert not any(m.retain for m in got)  # a queued message is not a retained one
    for m in got:
        col.ack(m)
    col.disconnect()

    # Once acked, nothing comes back.
    col = collector(broker)
    with client(broker, "a") as a:
        a.publish("wanwitness/a/rec", b"next")
    assert [m.payload for m in col.get_until("wanwitness/a/rec")] == [b"next"]
    col.close()


def test_a_burst_from_an_agent_that_leaves_at_once_is_delivered_in_full(broker):
    # amqtt PUBACKs on receipt and dropped what it had not routed yet when the publisher left.
    col = collector(broker)
    col.subscribe("wanwitness/#", 1)
    count = 300
    sock, rc = raw_connect(broker.url, "A-burst", username="a", password=PASSWORDS["a"])
    assert rc == 0
    topic = b"wanwitness/a/rec"
    packets = b""
    for i in range(1, count + 1):
        body = struct.pack("!H", len(topic)) + topic + struct.pack("!H", i) + b"r%d" % i
        packets += bytes([0x32, len(body)]) + body  # PUBLISH QoS 1; bodies are < 128 bytes
    sock.sendall(packets)
    pubacks = b""
    while len(pubacks) < 4 * count:
        pubacks += sock.recv(65536)
    sock.sendall(b"\xe0\x00")  # DISCONNECT
    sock.close()
    payloads = []
    for _ in range(count):
        msg = col.get()
        payloads.append(msg.payload)
        col.ack(msg)
    assert sorted(payloads) == sorted(b"r%d" % i for i in range(1, count + 1))
    col.close()


def test_a_slow_ack_does_not_lose_the_message(broker):
    # amqtt alone forgets a QoS 1 message not acknowledged within 5 s.
    col = collector(broker)
    col.subscribe("wanwitness/#", 1)
    with client(broker, "a") as a:
        a.publish("wanwitness/a/rec", b"slow")
    assert col.get().payload == b"slow"
    time.sleep(6)  # the collector is still committing...
    col.drop()
    col = collector(broker)
    msg = col.get()
    assert (msg.payload, msg.dup) == (b"slow", True)
    col.ack(msg)
    col.close()


def test_in_flight_window_is_limited():
    b = start_broker(max_inflight=3)
    try:
        col = collector(b)
        col.subscribe("wanwitness/#", 1)
        with client(b, "a") as a:
            for i in range(6):
                a.publish("wanwitness/a/rec", f"r{i}")
            window = [col.get() for _ in range(3)]
            a.publish("wanwitness/a/rec", b"barrier")
            with pytest.raises(AssertionError):
                col.get(timeout=0.5)  # the broker waits for acks before sending more
            col.ack(window[0])
            r3 = col.get()
            assert r3.payload == b"r3"
            for m in (*window[1:], r3):
                col.ack(m)
            assert [col.get().payload for _ in range(3)] == [b"r4", b"r5", b"barrier"]
        col.close()
    finally:
        b.stop()


def test_another_user_cannot_take_the_collectors_client_id(broker):
    col = collector(broker)
    col.subscribe("wanwitness/#", 1)
    col.disconnect()
    with client(broker, "a") as a:
        a.publish("wanwitness/a/rec", b"queued")
    for clean in (True, False):  # neither wipe (clean) nor take over (persistent) the session
        with pytest.raises(ConnectRefused):
            client(broker, "a", "collector", clean_session=clean)
    col = collector(broker)
    assert col.get().payload == b"queued"
    col.close()


def test_reconnect_while_the_old_connection_still_looks_alive(broker):
    # A collector restarted after a network cut: the broker has not noticed the old socket died.
    old = collector(broker)
    old.subscribe("wanwitness/#", 1)
    old.client.loop_stop()  # stops reading and acking, socket left open
    with client(broker, "a") as a:
        a.publish("wanwitness/a/rec", b"m1")
        new = collector(broker)
        a.publish("wanwitness/a/rec", b"m2")
        got = new.get_until("wanwitness/a/rec")
        got += new.get_until("wanwitness/a/rec") if got[-1].payload == b"m1" else []
        assert [m.payload for m in got] == [b"m1", b"m2"]
    new.close()
    old.drop()


# --- starting and stopping ---------------------------------------------------------------------


def test_port_in_use_is_a_clear_error(capfd):
    port = free_port()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(BrokerPortInUse) as err:
            EmbeddedBroker("127.0.0.1", port, authenticate).start()
    text = str(err.value)
    assert f"127.0.0.1:{port} is already in use" in text
    assert "--" not in text          # the library says what is wrong; `collect` names options
    assert err.value.free_alternative == "127.0.0.1:11883"
    assert err.value.connect_url == f"mqtt://127.0.0.1:{port}"
    assert "Traceback" not in capfd.readouterr().err


def test_port_taken_after_the_early_check_is_still_a_clear_error(monkeypatch, capfd):
    monkeypatch.setattr(embedded, "_check_can_listen", lambda host, port: None)
    port = free_port()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(BrokerPortInUse, match="already in use"):
            EmbeddedBroker("127.0.0.1", port, authenticate).start()
    assert "Traceback" not in capfd.readouterr().err


def test_stop_frees_the_port_and_url_is_usable():
    port = free_port()
    for _ in range(2):
        b = EmbeddedBroker("127.0.0.1", port, authenticate)
        b.start()
        assert b.url == f"mqtt://127.0.0.1:{port}"
        client(b, "a").close()
        b.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


# --- throughput --------------------------------------------------------------------------------


@pytest.mark.slow
def test_throughput_five_publishers_to_a_manual_ack_collector(broker, capsys):
    publishers, per_publisher = 5, 2000
    payload = b"x" * 300
    agents = {f"t{i}": new_secret() for i in range(publishers)}
    HASHES.update({user: hash_password(pw) for user, pw in agents.items()})
    PASSWORDS.update(agents)
    col = collector(broker)
    col.subscribe("wanwitness/#", 1)
    received: dict[str, int] = {}
    done = threading.Event()
    total = publishers * per_publisher

    def on_message(_c, _u, msg):
        received[msg.topic] = received.get(msg.topic, 0) + 1
        col.client.ack(msg.mid, msg.qos)  # acked as soon as "committed"
        if sum(received.values()) >= total:
            done.set()

    col.client.on_message = on_message
    clients = [client(broker, user) for user in agents]
    started = time.monotonic()

    def publish_all(c, user):
        infos = [c.client.publish(f"wanwitness/{user}/rec", payload, 1) for _ in range(per_publisher)]
        for info in infos:
            info.wait_for_publish(60)

    threads = [threading.Thread(target=publish_all, args=(c, user)) for c, user in zip(clients, agents)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert done.wait(120), f"only {sum(received.values())} of {total} messages arrived"
    elapsed = time.monotonic() - started
    assert received == {f"wanwitness/{user}/rec": per_publisher for user in agents}
    with capsys.disabled():
        print(f"\nembedded broker: {total} QoS 1 messages of {len(payload)} B from {publishers} publishers "
              f"to 1 manual-ack subscriber in {elapsed:.2f} s = {total / elapsed:.0f} msg/s")
    for c in clients:
        c.close()
    col.close()
