"""agent/mqtt.py's Client, running under MicroPython, against real and scripted brokers.

Each test starts tests/mpy/mqtt_client_probe.py in the `micropython` binary (agent/mqtt.py
compiled with mpy-cross, as it would be deployed; a 64 KiB heap like an ESP32's) and
reads its event lines. Brokers: a private Mosquitto (tests/brokers.py) for the real
protocol, and small scripted brokers here for what Mosquitto never does (ignore a
PINGREQ, withhold a PUBACK, refuse a login). Loopback only.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from testing.brokers import MqttClient
from testing.mpy import micropython, mpy_cross_exe

ROOT = Path(__file__).resolve().parent.parent
PROBE = ROOT / "tests" / "mpy" / "mqtt_client_probe.py"
HOST = "127.0.0.1"
HEAP = "64K"  # the ESP32's initial GC heap is 56-64 KiB (MicroPython ports/esp32/mpconfigport.h)


@pytest.fixture(scope="module")
def mpy_dir(tmp_path_factory) -> Path:
    """agent/mqtt.py compiled by mpy-cross: also the check that it compiles at all."""
    out = tmp_path_factory.mktemp("mpy")
    proc = subprocess.run([mpy_cross_exe(), str(ROOT / "wanwitness" / "agent" / "mqtt.py"), "-o",
                           str(out / "mqtt.mpy")], capture_output=True, text=True)
    assert proc.returncode == 0, f"mpy-cross failed on agent/mqtt.py:\n{proc.stderr}"
    return out




class Probe:
    """The MicroPython probe as a subprocess; its "EV name k=v ..." lines as events."""

    def __init__(self, mpy_dir: Path, **args):
        env = dict(os.environ, MICROPYPATH=f"{mpy_dir}:{PROBE.parent}:.frozen")
        argv = [f"{k}={v}" for k, v in args.items()]
        self.proc = subprocess.Popen(
            [micropython(), "-X", f"heapsize={HEAP}", str(PROBE), *argv],
            env=env, cwd=PROBE.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1)
        self.lines: list[str] = []
        self.seen: list[tuple[str, dict]] = []  # every event taken by expect(), in order
        self.events: queue.Queue[tuple[str, dict]] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "EV":
                fields = dict(p.split("=", 1) for p in parts[2:] if "=" in p)
                fields["_at"] = time.monotonic()
                self.events.put((parts[1], fields))
        self.events.put(("<exit>", {}))

    def expect(self, name: str, timeout: float = 10) -> dict:
        """The next event called `name` (earlier other events are kept in .seen)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                got, fields = self.events.get(timeout=max(0.0, left))
            except queue.Empty:
                raise AssertionError(f"no {name!r} from the probe within {timeout} s:\n"
                                     + self.output()) from None
            if got == "<exit>":
                raise AssertionError(f"the probe exited before {name!r}:\n" + self.output())
            self.seen.append((got, fields))
            if got == name:
                return fields

    def output(self) -> str:
        return "\n".join(self.lines[-60:])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc) -> None:
        self.kill()


# -- scripted brokers -----------------------------------------------------------------

def read_packet(sock: socket.socket) -> tuple[int, bytes] | None:
    """One MQTT packet (first byte, body), or None when the peer closed."""
    def exactly(n: int) -> bytes | None:
        b = b""
        while len(b) < n:
            try:
                chunk = sock.recv(n - len(b))
            except OSError:
                return None
            if not chunk:
                return None
            b += chunk
        return b

    first = exactly(1)
    if first is None:
        return None
    n, shift = 0, 0
    while True:
        d = exactly(1)
        if d is None:
            return None
        n |= (d[0] & 0x7F) << shift
        shift += 7
        if not d[0] & 0x80:
            break
    body = exactly(n) if n else b""
    return (first[0], body) if body is not None else None


def publish_pid(first: int, body: bytes) -> int:
    tl = struct.unpack("!H", body[:2])[0]
    return struct.unpack("!H", body[2 + tl:4 + tl])[0] if first & 0x06 else 0


CONNACK_OK = b"\x20\x02\x00\x00"
PINGRESP = b"\xd0\x00"


class ScriptedBroker:
    """A TCP listener on 127.0.0.1; `script(conn_index, sock, log)` runs per connection.

    `log` entries are (monotonic time, connection index, what, data)."""

    def __init__(self, script):
        self.script = script
        self.log: list[tuple[float, int, str, object]] = []
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((HOST, 0))
        self.lsock.listen(4)
        self.port = self.lsock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def note(self, idx: int, what: str, data: object = None) -> None:
        self.log.append((time.monotonic(), idx, what, data))

    def _accept(self) -> None:
        idx = 0
        while True:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            s.settimeout(30)
            self.conns.append(s)
            threading.Thread(target=self._run, args=(idx, s), daemon=True).start()
            idx += 1

    def _run(self, idx: int, s: socket.socket) -> None:
        pkt = read_packet(s)
        if pkt is None or pkt[0] != 0x10:
            s.close()
            return
        self.note(idx, "connect", pkt[1])
        try:
            self.script(idx, s, self)
        except OSError:
            pass
        finally:
            s.close()

    def events(self, what: str) -> list[tuple[float, int, str, object]]:
        return [e for e in self.log if e[2] == what]

    def wait_for(self, what: str, count: int = 1, timeout: float = 15) -> list:
        deadline = time.monotonic() + timeout
        while len(self.events(what)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"scripted broker: {count} x {what!r} not seen; log: "
                                     f"{self.log}")
            time.sleep(0.02)
        return self.events(what)

    def close(self) -> None:
        self.lsock.close()
        for s in self.conns:
            try:
                s.close()
            except OSError:
                pass

    def __enter__(self) -> ScriptedBroker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def serve_normally(idx: int, s: socket.socket, b: ScriptedBroker) -> None:
    """Answer PINGREQ and QoS 1 PUBLISH like a broker; log everything until EOF."""
    while (pkt := read_packet(s)) is not None:
        first, body = pkt
        if first == 0xC0:
            b.note(idx, "pingreq")
            s.sendall(PINGRESP)
        elif first & 0xF0 == 0x30:
            b.note(idx, "publish", (first, body))
            if first & 0x06:
                s.sendall(b"\x40\x02" + struct.pack("!H", publish_pid(first, body)))
        else:
            b.note(idx, "packet", (first, body))
    b.note(idx, "closed")


# -- against Mosquitto -------------------------------------------------------------------

def test_connect_subscribe_retained_publish_qos1(mosquitto, mpy_dir):
    setup = MqttClient(mosquitto.url).connect()
    setup.publish("ww/probe/ack", '{"seq": 7}', qos=1, retain=True)
    watcher = MqttClient(mosquitto.url).connect()
    watcher.subscribe("ww/probe/#", qos=1)
    watcher.get_until("ww/probe/ack")  # its own copy of the retained ack: a barrier
    with Probe(mpy_dir, mode="basic", port=mosquitto.port, id="probe") as p:
        assert p.expect("connected")["n"] == "1"
        assert p.expect("subscribed")["granted"] == "1"
        msg = p.expect("msg")
        assert (msg["topic"], bytes.fromhex(msg["hex"])) == ("ww/probe/ack", b'{"seq": 7}')
        for topic in ("status", "rec"):
            ack = p.expect("puback")
            assert (ack["topic"], ack["ok"]) == (topic, "True")
        assert p.expect("published")["ok"] == "True"
        heap = p.expect("heap")
        idle = p.expect("idle_alloc")
        sampler = p.expect("sampler")
        p.expect("ready")
        got = {m.topic: m for m in watcher.get_until("ww/probe/hb")}
        assert got["ww/probe/status"].payload == b"online"
        assert got["ww/probe/rec"].payload == b'{"v": 1, "recs": []}'
        assert got["ww/probe/rec"].qos == 1
        assert got["ww/probe/hb"].payload == b'{"up": 1}' and got["ww/probe/hb"].qos == 0
        late = MqttClient(mosquitto.url).connect()  # the status was published retained
        late.subscribe("ww/probe/status", qos=1)
        msg = late.get(5)
        late.close()
        assert (msg.payload, msg.retain) == (b"online", True)
    watcher.close()
    setup.close()
    print("\nheap (unix port, 64-bit):", {k: v for k, v in heap.items() if k != "_at"},
          "idle alloc:", idle["bytes"], "B/2 s", "sampler late max:", sampler["max_late_ms"], "ms")
    assert int(heap["steady"]) < 12 * 1024, heap
    assert int(idle["bytes"]) == 0, "an idle connection allocates on every supervisor tick"
    assert int(sampler["max_late_ms"]) < 200, sampler


def test_last_will_offline_when_the_process_is_killed(mosquitto, mpy_dir):
    watcher = MqttClient(mosquitto.url).connect()
    watcher.subscribe("ww/willy/status", qos=1)
    with Probe(mpy_dir, mode="basic", port=mosquitto.port, id="willy") as p:
        p.expect("ready")
        assert watcher.get(5).payload == b"online"
        p.kill()  # SIGKILL: no DISCONNECT, the kernel just closes the socket
        msg = watcher.get(10)
        assert msg.topic == "ww/willy/status"
        assert msg.payload == b"offline"
    watcher.close()
    # and it is retained: a newcomer sees the board as offline
    late = MqttClient(mosquitto.url).connect()
    late.subscribe("ww/willy/status", qos=1)
    msg = late.get(5)
    assert (msg.payload, msg.retain) == (b"offline", True)
    late.close()


def test_reconnects_after_broker_restart_and_delivers_what_was_published_meanwhile(
        mosquitto, mpy_dir):
    with Probe(mpy_dir, mode="reconnect", port=mosquitto.port, id="phoenix") as p:
        p.expect("ready")
        mosquitto.kill()  # a crash: connections reset, nothing saved
        down = p.expect("down", 10)
        pending = p.expect("published_while_down")
        assert pending["inflight"] == "1" and pending["connected"] == "0"
        time.sleep(max(0.0, 3.0 - (time.monotonic() - down["_at"])))
        mosquitto.start()
        watcher = MqttClient(mosquitto.url).connect()
        watcher.subscribe("ww/phoenix/echo", qos=1)
        back = p.expect("reconnected", 40)
        ack = p.expect("puback", 10)
        assert ack["ok"] == "True"
        # the probe resubscribed by itself and hears its own message
        echo = p.expect("msg", 10)
        assert (echo["topic"], bytes.fromhex(echo["hex"])) == ("ww/phoenix/echo", b"while-down")
        msg = watcher.get(10)  # live, or retained if it landed before we subscribed
        assert (msg.topic, msg.payload) == ("ww/phoenix/echo", b"while-down")
        watcher.close()
        sampler = p.expect("sampler")
        p.expect("done")
    backoffs = [int(f["ms"]) for name, f in p.seen if name == "backoff"]
    assert backoffs, "no backoff between reconnect attempts:\n" + p.output()
    assert all(500 <= ms <= 30000 for ms in backoffs), backoffs
    fails = [int(f["fails"]) for name, f in p.seen if name == "backoff"]
    for f, ms in zip(fails, backoffs):  # exponential with equal jitter: [d/2, d]
        d = min(30000, 500 << f)
        assert max(500, d // 2) <= ms <= d, (f, ms)
    assert int(back["connects"]) == 2
    assert int(sampler["max_late_ms"]) < 200, "the event loop was blocked: " + str(sampler)
    print(f"\nbroker down ~3 s; reconnected {int(back['after_ms'])} ms after the publish; "
          f"backoffs {backoffs} ms; sampler late max {sampler['max_late_ms']} ms")


def test_fails_over_to_the_next_broker_and_comes_back_round(tmp_path, mpy_dir):
    """Two brokers (docs/agent.md, broker.others): the client stays on the first while it
    answers; after `fail_over` (3) failed connects to it, the next; round again when that
    one goes too. The backoff keeps growing across the switch."""
    from testing.brokers import Mosquitto
    first = Mosquitto(tmp_path / "a").start()
    second = Mosquitto(tmp_path / "b").start()
    try:
        with Probe(mpy_dir, mode="idle", port=first.port, others=second.port, id="rover",
                   secs=90, bmax=4000) as p:
            assert int(p.expect("connected", 15)["port"]) == first.port
            first.kill()
            moved = p.expect("connected", 60)
            assert int(moved["port"]) == second.port and moved["n"] == "2"
            first.start()
            second.kill()
            back = p.expect("connected", 60)
            assert int(back["port"]) == first.port and back["n"] == "3"
            p.kill()
        out = p.output()
        assert out.count(f"mqtt: trying broker 127.0.0.1:{second.port}") == 1, out
        assert out.count(f"mqtt: trying broker 127.0.0.1:{first.port}") == 1, out
        # three failed connects to a broker before the next one is tried, and the backoff
        # is not reset by the switch (a fleet whose brokers are all away must not spin)
        lines = out.splitlines()
        for n, gone in ((2, first.port), (3, second.port)):
            upto = next(i for i, x in enumerate(lines) if x.startswith("EV connected") and f" n={n} " in x)
            assert sum(f"refused_by_127.0.0.1:{gone}" in x for x in lines[:upto]) == 3, out
        fails = [int(f["fails"]) for name, f in p.seen if name == "backoff"]
        assert fails == sorted(fails) and max(fails) >= 5, fails
    finally:
        first.close()
        second.close()


# -- against scripted brokers ---------------------------------------------------------------

def test_keepalive_ping_and_drop_when_the_broker_goes_silent(mpy_dir):
    def script(idx, s, b):
        s.sendall(CONNACK_OK)
        if idx == 0:  # a broker that stopped answering (but whose socket stays open)
            while (pkt := read_packet(s)) is not None:
                b.note(idx, "pingreq" if pkt[0] == 0xC0 else "packet", pkt)
            b.note(idx, "closed")
        else:
            serve_normally(idx, s, b)

    with ScriptedBroker(script) as b, Probe(mpy_dir, mode="idle", port=b.port, ka=2,
                                            secs=9) as p:
        b.wait_for("connect", 2, timeout=15)
        p.expect("connected")
        p.expect("connected", 5)
        p.expect("done", 15)
        t0 = b.events("connect")[0][0]
        pings0 = [t - t0 for t, idx, _, _ in b.events("pingreq") if idx == 0]
        closed0 = [t - t0 for t, idx, _, _ in b.events("closed") if idx == 0][0]
        reconnect = b.events("connect")[1][0] - t0
        pings1 = [t for t, idx, _, _ in b.events("pingreq") if idx == 1]
    # keepalive 2 s: PINGREQ after 1 s idle; no answer -> dropped after > 3 s (1.5 x)
    assert pings0 and 0.9 <= pings0[0] <= 1.6, pings0
    assert 3.0 <= closed0 <= 4.0, closed0
    assert 0.4 <= reconnect - closed0 <= 1.5, (closed0, reconnect)
    assert len(pings1) >= 3, "the second connection should be kept alive by pings"


# publish_at (the agent's batches): the same packet, built in the caller's buffer and
# resent from it; the bytes around the payload in that buffer are never sent.
AT = pytest.mark.parametrize("at", ["", "1"], ids=["publish", "publish_at"])


@AT
def test_qos1_publish_retransmitted_with_dup_until_acknowledged(mpy_dir, at):
    def script(idx, s, b):
        s.sendall(CONNACK_OK)
        n = 0
        while (pkt := read_packet(s)) is not None:
            first, body = pkt
            if first & 0xF0 == 0x30:
                b.note(idx, "publish", (first, body))
                n += 1
                if n == 2:  # swallow the first copy, acknowledge the second
                    s.sendall(b"\x40\x02" + struct.pack("!H", publish_pid(first, body)))
            elif first == 0xC0:
                s.sendall(PINGRESP)

    with ScriptedBroker(script) as b, Probe(mpy_dir, mode="pub1", port=b.port, ka=60,
                                            retry=1000, at=at) as p:
        ack = p.expect("puback", 15)
        pubs = b.events("publish")
    assert ack["ok"] == "True" and ack["connects"] == "1"
    (t1, _, _, (f1, body1)), (t2, _, _, (f2, body2)) = pubs[:2]
    assert f1 == 0x32 and f2 == 0x3A, (hex(f1), hex(f2))  # DUP=1 on the copy [MQTT-3.3.1-1]
    assert body1 == body2 and publish_pid(f1, body1) == publish_pid(f2, body2) != 0
    assert body1 == b"\x00\x03t/1" + body1[5:7] + b"m1", body1  # topic, packet id, payload
    assert 0.9 <= t2 - t1 <= 1.8, t2 - t1


@AT
def test_unacknowledged_publish_resent_with_dup_after_reconnect(mpy_dir, at):
    def script(idx, s, b):
        s.sendall(CONNACK_OK)
        if idx == 0:
            pkt = read_packet(s)
            while pkt is not None and pkt[0] & 0xF0 != 0x30:
                pkt = read_packet(s)
            b.note(idx, "publish", pkt)
            s.shutdown(socket.SHUT_RDWR)  # the connection dies before the PUBACK
            return
        serve_normally(idx, s, b)

    with ScriptedBroker(script) as b, Probe(mpy_dir, mode="pub1", port=b.port, ka=60,
                                            at=at) as p:
        ack = p.expect("puback", 15)
        pubs = b.events("publish")
    assert ack["ok"] == "True" and ack["connects"] == "2"
    (_, i1, _, (f1, body1)), (_, i2, _, (f2, body2)) = pubs[:2]
    assert (i1, i2) == (0, 1)
    assert f1 == 0x32 and f2 == 0x3A  # resent on the new connection with DUP=1 [MQTT-4.4.0-1]
    assert body1 == body2 == b"\x00\x03t/1" + body1[5:7] + b"m1", body1


def test_refused_login_is_reported_and_retried_with_backoff(mpy_dir):
    def script(idx, s, b):
        s.sendall(b"\x20\x02\x00\x04")  # return code 4: bad user name or password
        # the server closes after a refusal [MQTT-3.2.2-5]

    with ScriptedBroker(script) as b, Probe(mpy_dir, mode="idle", port=b.port, secs=4) as p:
        p.expect("done", 15)
        connects = [t for t, *_ in b.events("connect")]
    errs = [f["err"] for name, f in p.seen if name == "backoff"]
    assert errs and "bad_user_name_or_password" in errs[0], errs
    assert "CONNACK_code_4" in errs[0], errs
    gaps = [b_ - a for a, b_ in zip(connects, connects[1:])]
    assert 2 <= len(connects) <= 6, connects  # backing off, not hammering
    assert all(g >= 0.45 for g in gaps), gaps
    assert "connected" not in [name for name, _ in p.seen]
