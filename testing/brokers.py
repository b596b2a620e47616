"""Test helpers for real MQTT brokers and clients.

- `free_port()`: a currently free TCP port on 127.0.0.1.
- `Mosquitto`: a private /usr/sbin/mosquitto on 127.0.0.1 in a directory of its own
  (config, log, persistence file), which can be killed, stopped and started again on the
  same port with the same persistence.
- `MqttClient`: a paho-mqtt 2.x client with blocking helpers (connect, subscribe,
  publish-and-wait-for-PUBACK, next message with a timeout, manual acks, abrupt drop).
- `raw_connect()`: a bare socket that has sent CONNECT and then stays silent, for
  keep-alive and last-will tests.
- fixture `mosquitto`: a started anonymous Mosquitto, stopped after the test.

Import what you need explicitly: `from testing.brokers import Mosquitto, MqttClient, mosquitto`.
"""

from __future__ import annotations

import os
import pwd
import queue
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as paho
import pytest

from wanwitness.loopback import free_port, wait_for_port  # noqa: F401 (re-exported for tests)

MOSQUITTO_BIN = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
HOST = "127.0.0.1"


class Mosquitto:
    """A private Mosquitto broker for one test, bound to 127.0.0.1 only."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        password_file: Path | None = None,
        acl_file: Path | None = None,
        allow_anonymous: bool | None = None,
        extra_conf: str = "",
        listener: bool = True,
    ):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.port = port or free_port()
        self.password_file = password_file
        self.acl_file = acl_file
        # With a password file, anonymous access is off unless asked for.
        self.allow_anonymous = (password_file is None) if allow_anonymous is None else allow_anonymous
        self.extra_conf = extra_conf
        # False: the listener comes from extra_conf (e.g. our generated wanwitness.conf).
        self.listener = listener
        self.conf_path = self.directory / "mosquitto.conf"
        self.log_path = self.directory / "mosquitto.log"
        self.persistence_path = self.directory / "mosquitto.db"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def config_text(self) -> str:
        lines = [f"listener {self.port} {self.host}"] if self.listener else []
        lines += [
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
            "persistence true",
            f"persistence_location {self.directory}/",
            f"persistence_file {self.persistence_path.name}",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            # As root, Mosquitto drops to user "mosquitto", which cannot read a pytest tmp dir.
            lines.append(f"user {pwd.getpwuid(os.geteuid()).pw_name}")
        if self.password_file is not None:
            lines.append(f"password_file {self.password_file}")
        if self.acl_file is not None:
            lines.append(f"acl_file {self.acl_file}")
        if self.extra_conf:
            lines.append(self.extra_conf)
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10, *, probe: bool = True) -> Mosquitto:
        """probe=False: wait for its log to say it runs instead of connecting once (Mosquitto
        2.0.11 miscounts a connection closed before CONNECT against max_connections)."""
        if self.running:
            raise RuntimeError("mosquitto is already running")
        if not Path(MOSQUITTO_BIN).exists():
            raise RuntimeError(f"{MOSQUITTO_BIN} is not installed")
        self.conf_path.write_text(self.config_text())
        with open(self.directory / "stderr.log", "ab") as err:
            self.proc = subprocess.Popen(
                [MOSQUITTO_BIN, "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err,
            )
        try:
            if probe:
                wait_for_port(self.host, self.port, timeout, alive=lambda: self.running)
            else:
                self._wait_log(" running", timeout)
        except (RuntimeError, TimeoutError) as exc:
            self.kill()
            raise RuntimeError(f"mosquitto did not start: {exc}\n{self.log_tail()}") from None
        return self

    def _wait_log(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError("the process exited")
            if self.log_path.exists() and text in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.05)
        raise TimeoutError(f"no {text.strip()!r} in its log within {timeout} s")

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM: Mosquitto writes its persistence file and exits."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL: a crash; only what was already saved survives."""
        self._signal(signal.SIGKILL, 10)

    def close(self) -> None:
        if self.running:
            try:
                self.stop(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def _signal(self, sig: int, timeout: float) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout)
        self.proc = None

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for p in (self.log_path, self.directory / "stderr.log"):
            if p.exists():
                text += "".join(p.read_text(errors="replace").splitlines(keepends=True)[-lines:])
        return text

    def __enter__(self) -> Mosquitto:
        return self.start() if not self.running else self

    def __exit__(self, *exc) -> None:
        self.close()


@pytest.fixture
def mosquitto(tmp_path):
    """A running anonymous Mosquitto on 127.0.0.1 with persistence in tmp_path."""
    if not Path(MOSQUITTO_BIN).exists():
        pytest.skip(f"{MOSQUITTO_BIN} is not installed")
    broker = Mosquitto(tmp_path / "mosquitto").start()
    yield broker
    broker.close()


class ConnectRefused(Exception):
    """The broker answered CONNECT with a refusal (reason in the message)."""


class MqttClient:
    """A paho-mqtt client with blocking helpers; its network loop runs in a thread."""

    def __init__(
        self,
        url: str,
        client_id: str = "",
        *,
        username: str | None = None,
        password: str | None = None,
        clean_session: bool = True,
        manual_ack: bool = False,
        will: tuple[str, bytes | str, int, bool] | None = None,
        keepalive: int = 60,
    ):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or HOST, parts.port or 1883
        self.keepalive = keepalive
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self._connected = threading.Event()
        self._connect_rc: paho.ReasonCode | None = None
        self.session_present = False  # from CONNACK: the broker kept our session
        self._subacks: dict[int, list[int]] = {}
        self._suback_event = threading.Condition()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=paho.MQTTv311,
            manual_ack=manual_ack,
        )
        # Tests reconnect by building a new client; paho must not do it behind their back.
        self.client.reconnect_delay_set(60, 120)
        if username is not None:
            self.client.username_pw_set(username, password)
        if will is not None:
            topic, payload, qos, retain = will
            self.client.will_set(topic, payload, qos, retain)
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.on_subscribe = self._on_subscribe

    # -- callbacks (paho thread) ---------------------------------------------------
    def _on_connect(self, _client, _userdata, flags, reason_code, _props) -> None:
        self._connect_rc = reason_code
        self.session_present = bool(flags.session_present)
        self._connected.set()

    def _on_subscribe(self, _client, _userdata, mid, reason_codes, _props) -> None:
        with self._suback_event:
            self._subacks[mid] = [rc.value for rc in reason_codes]
            self._suback_event.notify_all()

    # -- blocking API ----------------------------------------------------------------
    def connect(self, timeout: float = 5) -> MqttClient:
        """Connect and wait for CONNACK; raise ConnectRefused if the broker says no."""
        self.client.connect(self.host, self.port, self.keepalive)
        self.client.loop_start()
        if not self._connected.wait(timeout):
            self.close()
            raise TimeoutError(f"no CONNACK from {self.host}:{self.port} within {timeout} s")
        rc = self._connect_rc
        if rc is not None and rc.is_failure:
            self.close()
            raise ConnectRefused(str(rc))
        return self

    def subscribe(self, topic: str, qos: int = 1, timeout: float = 5) -> int:
        """Subscribe and return the granted QoS (0x80 when the broker refused)."""
        rc, mid = self.client.subscribe(topic, qos)
        assert rc == paho.MQTT_ERR_SUCCESS, rc
        with self._suback_event:
            if not self._suback_event.wait_for(lambda: mid in self._subacks, timeout):
                raise TimeoutError(f"no SUBACK for {topic!r} within {timeout} s")
            return self._subacks.pop(mid)[0]

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False,
                timeout: float = 5) -> None:
        """Publish and, for QoS > 0, wait for the broker's acknowledgement."""
        info = self.client.publish(topic, payload, qos, retain)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise TimeoutError(f"publish to {topic!r} not acknowledged within {timeout} s")

    def get(self, timeout: float = 5) -> paho.MQTTMessage:
        """The next message; AssertionError if none arrives in time."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message arrived within {timeout} s") from None

    def get_until(self, topic: str, timeout: float = 5) -> list[paho.MQTTMessage]:
        """All messages up to and including the first one on `topic` (a barrier)."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            msg = self.get(max(0.0, deadline - time.monotonic()))
            got.append(msg)
            if msg.topic == topic:
                return got

    def drain(self) -> list[paho.MQTTMessage]:
        """Messages already received and not yet taken."""
        got = []
        while True:
            try:
                got.append(self.messages.get_nowait())
            except queue.Empty:
                return got

    def ack(self, msg: paho.MQTTMessage) -> None:
        self.client.ack(msg.mid, msg.qos)

    def disconnect(self) -> None:
        """A clean DISCONNECT: the broker does not publish the will."""
        self.client.disconnect()
        self.client.loop_stop()

    def drop(self) -> None:
        """Vanish without DISCONNECT, like a crash: the broker publishes the will."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        try:
            self.client.disconnect()
        except Exception:
            pass
        self.client.loop_stop()

    def __enter__(self) -> MqttClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _mqtt_str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def raw_connect(url: str, client_id: str, *, username: str | None = None, password: str | None = None,
                keepalive: int = 60, will: tuple[str, bytes, int, bool] | None = None,
                timeout: float = 5, source: str | None = None) -> tuple[socket.socket, int]:
    """Send a bare MQTT 3.1.1 CONNECT; return the socket and the CONNACK return code.

    `source`: the local address to connect from (any of 127.0.0.0/8 on loopback), to
    look like another machine on the LAN.

    The socket then stays silent (no PINGREQ), which is what a client that lost power
    looks like to the broker until its keep-alive expires.
    """
    parts = urlsplit(url)
    flags = 0x02  # clean session
    payload = _mqtt_str(client_id)
    if will is not None:
        topic, message, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += _mqtt_str(topic) + _mqtt_str(message)
    if username is not None:
        flags |= 0x80
        payload += _mqtt_str(username)
    if password is not None:
        flags |= 0x40
        payload += _mqtt_str(password)
    variable = _mqtt_str("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    body = variable + payload
    length = b""
    n = len(body)
    while True:
        byte, n = n % 128, n // 128
        length += bytes([byte | (0x80 if n else 0)])
        if not n:
            break
    sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout,
                                    source_address=(source, 0) if source else None)
    sock.sendall(b"\x10" + length + body)
    connack = b""
    while len(connack) < 4:
        chunk = sock.recv(4 - len(connack))
        if not chunk:
            break
        connack += chunk
    if len(connack) < 4 or connack[0] != 0x20:
        sock.close()
        raise ConnectRefused(f"no CONNACK (got {connack!r})")
    return sock, connack[3]
