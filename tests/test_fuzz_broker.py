"""Fuzzing the embedded broker's packet handling over real TCP connections on loopback.

Each example opens a handful of connections at once; on each it sends one mutated input
from tests/fuzz_corpus/mqtt_broker (CONNECTs, PUBLISHes up to the 16384-byte remaining
length, SUBSCRIBE, PINGREQ, ...), either as the first bytes on the connection or after a
valid login, then closes its sending side, as a client that sent garbage and went away.
The broker must close every such connection (no socket left in CLOSE-WAIT), stay up, and
still serve a fresh client: a collector subscribes and receives an agent's publish.
"""

from __future__ import annotations

import itertools
import socket
import time

import pytest
from hypothesis import Phase, given
from hypothesis import strategies as st

from testing.brokers import MqttClient, raw_connect
from tests.fuzzlib import mqtt_length_fields, mutants, scaled, seeds
from wanwitness.broker.embedded import EmbeddedBroker, Limits

# The corpus's CONNECTs log in as "fuzz"; "a" and "collector" check the broker still serves.
PASSWORDS = {"fuzz": "fuzz-password", "a": "a-password", "collector": "collector-password"}
CLOSE_WAIT_S = 10  # how long a fuzzed connection may stay open after we sent our FIN


def authenticate(username: str, password: str) -> str | None:
    if PASSWORDS.get(username) != password:
        return None
    return "collector" if username == "collector" else "agent"


@pytest.fixture(scope="module")
def broker():
    # Mutated CONNECTs carry wrong passwords by the hundred: the failed-login back-off
    # (tested on its own in test_broker_hardening.py) would soon refuse this test's own
    # valid logins, so it is out of the way here.
    b = EmbeddedBroker("127.0.0.1", 0, authenticate, limits=Limits(free_failures=10**9))
    b.start()
    yield b
    b.stop()


def collector_watching(broker: EmbeddedBroker) -> MqttClient:
    col = MqttClient(broker.url, f"watch-{next(_ids)}", username="collector",
                     password=PASSWORDS["collector"]).connect()
    assert col.subscribe(WILL_TOPIC, 1) == 1
    return col


_ids = itertools.count()
WILL_TOPIC = "wanwitness/fuzz/status"


def open_connection(broker: EmbeddedBroker, logged_in: bool) -> tuple[socket.socket, bytes | None]:
    """A connection and, if it logged in, the will the broker must publish when it drops
    the connection (the agent's `offline`, which tells the collector it is gone)."""
    if not logged_in:
        return socket.create_connection(("127.0.0.1", broker.port), timeout=5), None
    n = next(_ids)
    will = f"gone {n}".encode()
    sock, rc = raw_connect(broker.url, f"fuzzed-{n}", username="fuzz", password=PASSWORDS["fuzz"],
                           will=(WILL_TOPIC, will, 1, False))
    assert rc == 0, f"the valid login was refused (CONNACK {rc})"
    return sock, will


def send_and_leave(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
    except OSError:  # the broker already closed it (reset, broken pipe): what we want
        pass


def closed_by_broker(sock: socket.socket, deadline: float) -> bool:
    """True once the broker has closed the connection (EOF or reset); False at the deadline."""
    try:
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            if not sock.recv(65536):
                return True
    except TimeoutError:
        return False
    except OSError:  # connection reset
        return True
    finally:
        sock.close()


def has_disconnect(data: bytes) -> bool:
    """Whether the packets in `data` include a DISCONNECT, after which the broker drops
    the will [MQTT-3.1.2-10]; read as the broker frames packets, up to the first bad one."""
    i = 0
    while i < len(data):
        if data[i] & 0xF0 == 0xE0:
            return True
        n, shift, j = 0, 0, i + 1
        while j < len(data) and j - i <= 4:
            n |= (data[j] & 0x7F) << shift
            shift += 7
            j += 1
            if not data[j - 1] & 0x80:
                break
        else:
            return False
        i = j + n
    return False


def fuzz(broker: EmbeddedBroker, batch: list[tuple[tuple[str, bytes, str], bool]]) -> list[str]:
    """Sends each input on its own connection, all at once, then leaves; returns what went
    wrong: a connection the broker left open, a dropped client whose will never came."""
    with collector_watching(broker) as col:
        opened = [open_connection(broker, logged_in) for _case, logged_in in batch]
        for (sock, _will), ((_seed, data, _how), _logged_in) in zip(opened, batch):
            send_and_leave(sock, data)
        deadline = time.monotonic() + CLOSE_WAIT_S
        problems = []
        wills = {}
        for (sock, will), ((seed, data, how), logged_in) in zip(opened, batch):
            what = f"{seed} ({how}){' after a valid CONNECT' if logged_in else ''}: {data.hex()}"
            if not closed_by_broker(sock, deadline):
                problems.append(f"left open after the client sent this and closed its side: {what}")
            elif will is not None and not has_disconnect(data):
                wills[will] = what
        while wills and time.monotonic() < deadline:
            try:
                wills.pop(bytes(col.get(max(0.01, deadline - time.monotonic())).payload), None)
            except AssertionError:  # nothing more arrived in time
                break
        problems += [f"closed without publishing the client's will (the collector would think it "
                     f"still online): {what}" for what in wills.values()]
    return problems


def assert_serves(broker: EmbeddedBroker) -> None:
    """A collector subscribes and receives what an agent publishes, both fresh clients."""
    mark = f"check {next(_ids)}".encode()
    with MqttClient(broker.url, f"check-col-{mark[6:].decode()}", username="collector",
                    password=PASSWORDS["collector"]).connect() as col:
        assert col.subscribe("wanwitness/a/rec", 1) == 1
        with MqttClient(broker.url, f"check-a-{mark[6:].decode()}", username="a",
                        password=PASSWORDS["a"]).connect() as a:
            a.publish("wanwitness/a/rec", mark, qos=1)
        assert col.get_until("wanwitness/a/rec")[-1].payload == mark


# No shrinking: each failing try waits out CLOSE_WAIT_S, and the message already names
# every input that went wrong, with its seed and edits.
@scaled(0.1, phases=(Phase.explicit, Phase.reuse, Phase.generate))
@given(st.lists(st.tuples(mutants("mqtt_broker", mqtt_length_fields), st.booleans()), min_size=1, max_size=8))
def test_broker_closes_fuzzed_connections_and_keeps_serving(broker, batch):
    problems = fuzz(broker, batch)
    assert not problems, "\n".join(problems)
    assert broker.running
    assert_serves(broker)


def test_every_seed_unchanged_then_the_broker_still_serves(broker):
    # The corpus as it is, each seed on its own connection, before and after a login.
    for logged_in in (False, True):
        problems = fuzz(broker, [((name, data, "unchanged"), logged_in) for name, data in seeds("mqtt_broker")])
        assert not problems, "\n".join(problems)
    assert_serves(broker)
