"""The embedded MQTT broker: amqtt in a background thread, for installs without Mosquitto.

Access control is ours: a login callback decides who is the collector and who is an
agent, and an agent may only publish its `rec`, `hb` and `status` topics (policy.py) and
only read `<prefix>/<id>/ack`.

amqtt 0.12.1 alone is not fit for the collector's at-least-once delivery, so `_Broker`
and `_Handler` below replace the parts that lose or leak messages:

- an outgoing QoS 1 message not PUBACKed within 5 s, or in flight when the connection
  drops, is forgotten; ours stays in flight until PUBACKed and is resent (DUP) on reconnect;
- there is no in-flight limit (over 65535 unacked messages fail); ours paces each session
  through an outbox with at most `max_inflight` unacknowledged messages;
- the backlog queued for an offline persistent session is sent with retain=1 and the
  connection is blocked until every message is acked; ours goes through the outbox;
- on every connect amqtt sends the client every retained message matching anybody's
  subscriptions, without access checks; ours sends retained messages only on SUBSCRIBE,
  for that subscription, as Mosquitto does;
- credentials are checked after the claimed client id's stored session was already deleted
  or taken over; ours checks first, and a client id stays with the user who created it;
- the keep-alive is never enforced, so a vanished agent's will is never published; ours
  drops a client silent for 1.5 x its keep-alive;
- the will topic bypasses the ACL; ours refuses an agent whose will is outside its topics;
- a publish is PUBACKed when queued, and what is still queued when the publisher
  disconnects is dropped; ours routes it first;
- a reconnect while the old connection still looks alive leaves the session marked
  offline; ours closes the old connection first;
- subscriptions are granted QoS 1 at most;
- a message is routed over amqtt's live subscription table across an await, so a client
  subscribing meanwhile loses it for the others; ours routes over a snapshot;
- packets are parsed straight off the socket: a malformed one leaves the connection
  hanging out of step, a huge one is read into memory, and a client that leaves before
  or during its CONNECT keeps its socket open (CLOSE-WAIT); ours reads each packet whole,
  within a size and a time limit, and closes the connection on any breach;
- no limits: ours caps connections (in all and per address), retained messages per
  agent, and failed logins (back-off per address and user), and disconnects an agent
  whose credentials were revoked.

The broker keeps everything in memory: a restart forgets sessions, queues and retained messages.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from amqtt.adapters import ReaderAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action, BrokerConfig, ListenerConfig
from amqtt.errors import MQTTError
from amqtt.events import MQTTEvents
from amqtt.mqtt import packet_class
from amqtt.mqtt.connack import IDENTIFIER_REJECTED, NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.constants import QOS_0, QOS_1
from amqtt.mqtt.packet import (
    CONNECT,
    DISCONNECT,
    PINGREQ,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBSCRIBE,
    UNSUBSCRIBE,
    MQTTFixedHeader,
)
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import OUTGOING, OutgoingApplicationMessage, Session

from wanwitness.broker.policy import AGENT_TOPICS, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_PACKET
from wanwitness.collector.protocol import valid_agent_id
from wanwitness.errors import UserError

log = logging.getLogger("wanwitness.broker")

ROLE_COLLECTOR = "collector"
ROLE_AGENT = "agent"

Authenticate = Callable[[str, str], "str | None"]

DEFAULT_MAX_INFLIGHT = 100  # same as the Mosquitto config we generate
CONNECT_TIMEOUT_S = 10   # from accept to a complete CONNECT
PACKET_TIMEOUT_S = 10    # from a packet's first byte to its last

# Keys in amqtt's Session.attributes (namespaced, as amqtt asks).
_ROLE = "wanwitness.role"
_REFUSAL = "wanwitness.refusal"  # CONNACK return code when the CONNECT is refused
_OUTBOX = "wanwitness.outbox"
_NO_REPLAY = "wanwitness.no_retained_replay"


class BrokerPortInUse(UserError):
    """The address the embedded broker should listen on is taken. `free_alternative` is
    a port to suggest, `connect_url` the URL of the broker that may be there."""

    def __init__(self, message: str, *, host: str, port: int):
        super().__init__(message)
        self.host, self.port = host, port
        self.free_alternative = _hostport(host, 11883 if port != 11883 else 21883)
        self.connect_url = f"mqtt://{_hostport(_connect_host(host), port)}"


# --- access policy ------------------------------------------------------------------


@dataclass(frozen=True)
class _Policy:
    prefix: str

    def may_publish(self, role: str | None, user: str | None, topic: str | None) -> bool:
        if role == ROLE_COLLECTOR:
            return True
        if role != ROLE_AGENT or not user or not topic:
            return False
        # An agent writes its records, heartbeats and status, nothing else: above all
        # not its own ack, which only the collector may write (docs/protocol.md "Topics").
        own = f"{self.prefix}/{user}/"
        return topic.startswith(own) and topic[len(own):] in AGENT_TOPICS

    def may_read(self, role: str | None, user: str | None, topic: str | None) -> bool:
        # Used for SUBSCRIBE filters and delivered topics alike: an agent's only
        # readable topic is its own ack, and no wildcard filter equals it.
        if role == ROLE_COLLECTOR:
            return True
        return role == ROLE_AGENT and bool(user) and topic == f"{self.prefix}/{user}/ack"


@dataclass(frozen=True)
class Limits:
    """What one client, one address or one agent may cost the broker."""

    max_packet: int = DEFAULT_MAX_PACKET
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_connections_per_address: int = 32
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    # Failed logins: the first `free_failures` in a row cost nothing (typos); after that
    # each address and each username waits backoff_s, doubling up to backoff_max_s,
    # and a login tried meanwhile is refused without looking at the password.
    free_failures: int = 3
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    # Retained messages an agent may leave on the broker (its `online`/`offline` is one).
    retained_per_agent: int = 3
    retained_bytes_per_agent: int = 4096
    # How often connected agents' credentials are checked again (revoked -> disconnected).
    recheck_s: float = 5.0

    def __post_init__(self) -> None:
        for name in ("max_packet", "max_connections", "max_connections_per_address",
                     "retained_per_agent", "retained_bytes_per_agent"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_packet < 128:
            raise ValueError("max_packet must be at least 128 bytes")


@dataclass
class _Settings:
    authenticate: Authenticate
    policy: _Policy
    max_inflight: int
    limits: Limits = Limits()


# --- amqtt plugins -------------------------------------------------------------------


class WitnessAuthPlugin(BaseAuthPlugin):
    """Logs clients in through our callback; anonymous clients are refused."""

    @dataclass
    class Config:
        settings: Any = None

    async def authenticate(self, *, session: Session) -> bool:
        settings: _Settings = self.config.settings
        user, password = session.username, session.password
        if not user or password is None:
            log.info("MQTT login refused: no username/password (client id %r)", session.client_id)
            return False
        try:
            # The callback may query a database: keep it off the event loop.
            role = await asyncio.get_running_loop().run_in_executor(None, settings.authenticate, user, password)
        except Exception as exc:  # a broken credential store must refuse, not crash the broker
            log.warning("MQTT login of %r refused: checking the credentials failed: %s", user, exc)
            return False
        if role not in (ROLE_COLLECTOR, ROLE_AGENT):
            log.info("MQTT login refused for %r (wrong username or password)", user)
            return False
        if role == ROLE_AGENT and not valid_agent_id(user):
            log.warning("MQTT login refused for agent %r: not a valid agent id (1-32 of a-z 0-9 - _)", user)
            return False
        if role == ROLE_AGENT and session.will_flag and not settings.policy.may_publish(role, user, session.will_topic):
            log.warning("MQTT login refused for agent %r: its last will targets %r", user, session.will_topic)
            return False
        session.attributes[_ROLE] = role
        return True


class WitnessTopicPlugin(BaseTopicPlugin):
    """Per-role topic ACL for publish, subscribe and delivery."""

    @dataclass
    class Config:
        settings: Any = None

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool:
        if session is None:
            return False
        policy: _Policy = self.config.settings.policy
        role, user = session.attributes.get(_ROLE), session.username
        if action == Action.PUBLISH:
            allowed = policy.may_publish(role, user, topic)
            if not allowed:
                log.info("MQTT publish by %r to %r dropped (not allowed)", user, topic)
            return allowed
        if action in (Action.SUBSCRIBE, Action.RECEIVE):
            return policy.may_read(role, user, topic)
        return False


# --- reading packets --------------------------------------------------------------------


class _BadPacket(Exception):
    """The client broke the protocol or a limit: its connection is closed. The text says why."""


class _Frame(ReaderAdapter):
    """One whole packet, read off the socket before amqtt's parser sees a byte of it.

    amqtt parses straight from the socket: a packet with a bad length or field leaves
    the stream out of step (the connection hangs), a huge one is read into memory, and a
    client that stops mid-packet is never timed out. Reading the whole packet first,
    within a size and a time limit, turns each of these into a closed connection.
    """

    def __init__(self, first: int, length: int, head: bytes, body: bytes) -> None:
        self.packet_type, self.flags = first >> 4, first & 0x0F
        self.header = MQTTFixedHeader(self.packet_type, self.flags, length)
        self.body = head + body  # read from the start, amqtt parses the fixed header too
        self.head = len(head)
        self.pos = 0

    async def read(self, n: int = -1) -> bytes:
        end = len(self.body) if n < 0 else min(len(self.body), self.pos + n)
        out, self.pos = self.body[self.pos:end], end
        return out

    def feed_eof(self) -> None:
        pass

    async def parse(self) -> Any:
        """The amqtt packet; raises _BadPacket when it is malformed."""
        self.pos = self.head
        try:
            packet = await packet_class(self.header).from_stream(self, fixed_header=self.header)
        except Exception as exc:  # amqtt raises MQTTError, NoDataError, ValueError, ...
            raise _BadPacket(f"malformed {_PACKET_NAMES.get(self.packet_type, 'packet')}: "
                             f"{exc or type(exc).__name__}") from None
        if self.pos != len(self.body):
            raise _BadPacket(f"malformed {_PACKET_NAMES.get(self.packet_type, 'packet')}: "
                             f"{len(self.body) - self.pos} byte(s) after its end")
        if self.packet_type == PUBLISH:
            topic = getattr(packet.variable_header, "topic_name", None)
            # [MQTT-4.7.3-1] not empty, [MQTT-3.3.2-2] no wildcards; and no `$` topics
            # (reserved for the broker). amqtt would leave the loop without the will.
            if not topic or "+" in topic or "#" in topic or topic.startswith("$") or "\0" in topic:
                raise _BadPacket(f"PUBLISH to a topic a client may not publish to: {topic!r}")
        if self.packet_type in (SUBSCRIBE, UNSUBSCRIBE) and not getattr(packet.payload, "topics", None):
            # [MQTT-3.8.3-3], [MQTT-3.10.3-2]; amqtt also stops quietly at a topic cut short.
            raise _BadPacket(f"malformed {_PACKET_NAMES[self.packet_type]}: no complete topic filter")
        return packet


_PACKET_NAMES = {CONNECT: "CONNECT", PUBLISH: "PUBLISH", PUBACK: "PUBACK", PUBREC: "PUBREC",
                 PUBREL: "PUBREL", PUBCOMP: "PUBCOMP", SUBSCRIBE: "SUBSCRIBE",
                 UNSUBSCRIBE: "UNSUBSCRIBE", PINGREQ: "PINGREQ", DISCONNECT: "DISCONNECT"}
# What a client may send once connected, and the handler method for each.
_CLIENT_PACKETS = {PUBLISH: "handle_publish", PUBACK: "handle_puback", PUBREC: "handle_pubrec",
                   PUBREL: "handle_pubrel", PUBCOMP: "handle_pubcomp", SUBSCRIBE: "handle_subscribe",
                   UNSUBSCRIBE: "handle_unsubscribe", PINGREQ: "handle_pingreq",
                   DISCONNECT: "handle_disconnect"}


async def _read_exactly(reader: ReaderAdapter, n: int) -> bytes | None:
    try:
        data = await reader.read(n)
    except (asyncio.IncompleteReadError, ConnectionError, OSError):
        return None
    return data if len(data) == n else None


async def _read_frame(reader: ReaderAdapter, max_packet: int, first_timeout: float | None) -> _Frame | None:
    """The next whole packet; None at the end of the stream (or when the peer vanished).

    Waits up to `first_timeout` for its first byte (TimeoutError), then PACKET_TIMEOUT_S
    for the rest; raises _BadPacket for a bad length or one above `max_packet`.
    """
    first = await asyncio.wait_for(_read_exactly(reader, 1), first_timeout)
    if first is None:
        return None
    return await asyncio.wait_for(_read_rest(reader, first[0], max_packet), PACKET_TIMEOUT_S)


async def _read_rest(reader: ReaderAdapter, first: int, max_packet: int) -> _Frame | None:
    length, size = 0, 0
    head = bytearray((first,))
    while True:  # [MQTT-2.2.3] remaining length: 7 bits a byte, at most 4 bytes
        byte = await _read_exactly(reader, 1)
        if byte is None:
            return None
        head += byte
        length |= (byte[0] & 0x7F) << (7 * size)
        size += 1
        if not byte[0] & 0x80:
            break
        if size == 4:
            raise _BadPacket("malformed packet: its length field runs over 4 bytes")
    if 1 + size + length > max_packet:
        raise _BadPacket(f"{_PACKET_NAMES.get(first >> 4, 'packet')} of {1 + size + length} bytes "
                         f"refused (limit {max_packet})")
    body = await _read_exactly(reader, length) if length else b""
    if body is None:
        return None
    return _Frame(first, length, bytes(head), body)


def _abort(writer: Any) -> None:
    """Close a client's socket now, without waiting for its send buffer to drain."""
    transport = getattr(getattr(writer, "_writer", None), "transport", None)
    if transport is not None:
        transport.abort()


# --- failed logins ----------------------------------------------------------------------


class _Backoff:
    """Failed logins per address and per username, and how long each must wait.

    A username's wait does not apply to an address it logged in from before: someone
    guessing an agent's password elsewhere on the LAN does not lock the agent out.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.fails: dict[tuple[str, str], tuple[int, float]] = {}  # ("addr"|"user", key) -> (n, until)
        self.known: dict[str, set[str]] = {}  # username -> addresses it logged in from
        self._said: dict[str, float] = {}

    def _wait(self, key: tuple[str, str], now: float) -> float:
        n, until = self.fails.get(key, (0, 0.0))
        return max(0.0, until - now)

    def waiting(self, address: str, user: str) -> float:
        now = time.monotonic()
        wait = self._wait(("addr", address), now)
        if user and address not in self.known.get(user, ()):
            wait = max(wait, self._wait(("user", user), now))
        return wait

    def failed(self, address: str, user: str) -> None:
        now, limits = time.monotonic(), self.limits
        for key in (("addr", address), ("user", user)) if user else (("addr", address),):
            n = self.fails.get(key, (0, 0.0))[0] + 1
            over = n - limits.free_failures
            until = now + min(limits.backoff_s * 2 ** (over - 1), limits.backoff_max_s) if over > 0 else 0.0
            self.fails[key] = (n, until)
        if len(self.fails) > 10000:  # bounded: forget the oldest entries
            for key in list(self.fails)[:5000]:
                del self.fails[key]

    def succeeded(self, address: str, user: str) -> None:
        self.fails.pop(("addr", address), None)
        if user:
            self.fails.pop(("user", user), None)
            addresses = self.known.setdefault(user, set())
            if len(addresses) < 16:
                addresses.add(address)

    def note_refused(self, what: str, address: str, limit: int) -> None:
        # One log line per address and minute, not one per refused connection.
        now = time.monotonic()
        if now - self._said.get(address, -60.0) >= 60:
            self._said[address] = now
            log.warning("MQTT connection from %s refused: %s (%d) reached", address, what, limit)
            if len(self._said) > 1000:
                self._said.clear()


# --- reliable delivery ----------------------------------------------------------------


class _Outbox:
    """A session's QoS 1 messages not yet sent; survives reconnects with the session."""

    def __init__(self) -> None:
        self.queue: deque[OutgoingApplicationMessage] = deque()
        self.wake = asyncio.Event()

    def put(self, topic: str, data: bytes | bytearray, retain: bool) -> OutgoingApplicationMessage:
        message = OutgoingApplicationMessage(None, topic, QOS_1, data, retain)
        self.queue.append(message)
        self.wake.set()
        return message


def _outbox(session: Session) -> _Outbox:
    box: _Outbox | None = session.attributes.get(_OUTBOX)
    if box is None:
        box = session.attributes[_OUTBOX] = _Outbox()
    return box


def _queue_backlog(session: Session) -> None:
    """Move what amqtt queued while the client was offline into the outbox, in order.

    (amqtt would send it all at once with retain=1 and block the connection until every
    message is acked.)
    """
    box = _outbox(session)
    while not session.retained_messages.empty():
        message = session.retained_messages.get_nowait()
        box.put(message.topic, message.data, False)


class _Handler(BrokerProtocolHandler):
    """One client connection; QoS 1 delivery that is paced and never gives up."""

    max_inflight = DEFAULT_MAX_INFLIGHT
    max_packet = DEFAULT_MAX_PACKET

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("MQTT delivery task failed: %r", task.exception())

    async def start(self) -> None:
        await super().start()  # runs _retry_deliveries
        assert self.session is not None
        _queue_backlog(self.session)
        self._spawn(self._pump())

    async def stop(self) -> None:
        self._stopping = True
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        # amqtt's close waits for the send buffer to drain, forever if the peer is gone.
        transport = getattr(getattr(self.writer, "_writer", None), "transport", None)
        guard = asyncio.get_running_loop().call_later(2, transport.abort) if transport else None
        try:
            await super().stop()
        finally:
            if guard:
                guard.cancel()

    async def _retry_deliveries(self) -> None:
        # Resend what the previous connection left unacknowledged, in the background:
        # amqtt waits here (10 s at most, then drops) before serving the client at all.
        assert self.session is not None
        for message in list(self.session.inflight_out.values()) + list(self.session.inflight_in.values()):
            self._spawn(self._handle_message_flow(message))

    async def mqtt_publish(self, topic: str, data: bytes | bytearray, qos: int | None, retain: bool,
                           ack_timeout: int | None = None) -> OutgoingApplicationMessage:
        if not qos:
            try:
                return await super().mqtt_publish(topic, data, QOS_0, retain, ack_timeout)
            except Exception as exc:  # QoS 0 is best effort; a closing socket is not news
                log.debug("MQTT QoS 0 send failed: %r", exc)
                return OutgoingApplicationMessage(None, topic, QOS_0, data, retain)
        assert self.session is not None
        # QoS 2 is served as QoS 1 (subscriptions are granted QoS 1 at most anyway).
        return _outbox(self.session).put(topic, data, retain)

    async def _pump(self) -> None:
        """Move messages from the session's outbox into flight, keeping the window."""
        session = self.session
        assert session is not None
        box = _outbox(session)
        while not self._stopping:
            while box.queue and len(session.inflight_out) < self.max_inflight:
                message = box.queue.popleft()
                message.packet_id = session.next_packet_id
                session.inflight_out[message.packet_id] = message
                self._spawn(self._handle_qos1_message_flow(message))
            box.wake.clear()
            await box.wake.wait()

    async def _handle_qos1_message_flow(self, app_message: Any) -> None:
        if app_message.direction != OUTGOING:
            await super()._handle_qos1_message_flow(app_message)
            return
        session = self.session
        assert session is not None and app_message.packet_id is not None
        packet_id = app_message.packet_id
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        # Register before sending: a quick PUBACK must find its waiter.
        self._puback_waiters[packet_id] = waiter
        packet = app_message.build_publish_packet(dup=app_message.publish_packet is not None)
        app_message.publish_packet = packet
        try:
            await self._send_packet(packet)
            await waiter
        except (asyncio.CancelledError, Exception):
            pass
        finally:
            if self._puback_waiters.get(packet_id) is waiter:
                del self._puback_waiters[packet_id]
        if not waiter.done() or waiter.cancelled():
            # The connection is going away: the message stays in the session's
            # in-flight set and is resent when the client comes back.
            return
        app_message.puback_packet = waiter.result()
        if session.inflight_out.get(packet_id) is app_message:
            del session.inflight_out[packet_id]
        _outbox(session).wake.set()

    async def handle_puback(self, puback: Any) -> None:
        packet_id = puback.variable_header.packet_id if puback.variable_header else None
        waiter = self._puback_waiters.get(packet_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(puback)
            return
        # An ack arriving while the connection is being closed is still an ack: the
        # message must not be resent.
        session = self.session
        if session is not None and session.inflight_out.pop(packet_id, None) is not None:
            _outbox(session).wake.set()

    async def _reader_loop(self) -> None:
        # Ours instead of amqtt's: each packet is read whole (size and time bounded, see
        # _Frame) and checked before it is handled; any breach closes the connection.
        session = self.session
        assert session is not None and self._reader_ready is not None
        keepalive = session.keep_alive if session.keep_alive > 0 else None
        tasks: deque[asyncio.Task[Any]] = deque()
        why = ""
        try:
            self._reader_ready.set()
            while True:
                while tasks and tasks[0].done():
                    tasks.popleft()
                try:
                    frame = await _read_frame(self.reader, self.max_packet, keepalive)
                except TimeoutError:
                    # [MQTT-3.1.2-24] nothing heard for 1.5 x keep-alive (or a packet left
                    # half sent): drop the client, its will is published.
                    why = "silent for longer than its keep-alive allows"
                    break
                if frame is None:
                    break
                name = _CLIENT_PACKETS.get(frame.packet_type)
                if name is None:
                    why = f"sent a packet a client may not send (type {frame.packet_type})"
                    break
                packet = await frame.parse()
                await self.plugins_manager.fire_event(MQTTEvents.PACKET_RECEIVED, packet=packet,
                                                      session=session)
                tasks.append(asyncio.create_task(getattr(self, name)(packet)))
        except _BadPacket as exc:
            why = str(exc)
        except asyncio.CancelledError:
            pass
        finally:
            if why:
                log.warning("MQTT client %r (%s) disconnected: %s", session.client_id,
                            session.remote_address, why)
                _abort(self.writer)
            while tasks:
                tasks.popleft().cancel()
            await self.handle_connection_closed()
            self._reader_stopped.set()
            await self.stop()


class _Broker(Broker):
    """amqtt's Broker with the connection and delivery fixes described above."""

    def __init__(self, config: BrokerConfig, settings: _Settings, loop: asyncio.AbstractEventLoop) -> None:
        self._settings = settings
        self._limits = settings.limits
        self._open: dict[str, int] = {}  # remote address -> open connections
        self._failures = _Backoff(settings.limits)
        super().__init__(config, loop=loop)

    async def _client_connected(self, listener_name: str, reader: Any, writer: Any) -> None:
        peer = writer.get_peer_info()
        address = peer[0] if peer else "?"
        limits = self._limits
        if sum(self._open.values()) >= limits.max_connections:
            self._failures.note_refused("connection limit", address, limits.max_connections)
            _abort(writer)
            return
        if self._open.get(address, 0) >= limits.max_connections_per_address:
            self._failures.note_refused("per-address connection limit", address,
                                        limits.max_connections_per_address)
            _abort(writer)
            return
        self._open[address] = self._open.get(address, 0) + 1
        try:
            await super()._client_connected(listener_name, reader, writer)
        finally:
            # amqtt leaves the socket open when a client goes away before or during its
            # CONNECT (CLOSE-WAIT for minutes): whatever happened, it is closed here.
            _abort(writer)
            left = self._open[address] - 1
            if left:
                self._open[address] = left
            else:
                del self._open[address]

    async def _initialize_client_session(self, reader: Any, writer: Any, remote_address: str,
                                         remote_port: int) -> tuple[BrokerProtocolHandler, Session]:
        limits = self._limits
        try:
            frame = await asyncio.wait_for(_read_frame(reader, limits.max_packet, None),
                                           limits.connect_timeout_s)
            if frame is None:
                raise _BadPacket("closed before its CONNECT")
            if frame.packet_type != CONNECT:
                raise _BadPacket(f"sent packet type {frame.packet_type} before CONNECT [MQTT-3.1.0-1]")
            handler, incoming = await _Handler.init_from_connect(frame, writer, self.plugins_manager)
        except TimeoutError:
            log.info("MQTT connection from %s closed: no CONNECT within %g s", remote_address,
                     limits.connect_timeout_s)
            raise MQTTError("no CONNECT in time") from None
        except _BadPacket as exc:
            # A port scan or health check just connects and leaves: not worth a line.
            log.log(logging.DEBUG if "before its CONNECT" in str(exc) else logging.INFO,
                    "MQTT connection from %s closed: %s", remote_address, exc)
            raise MQTTError(str(exc)) from None
        except Exception as exc:  # a malformed CONNECT (amqtt's own checks)
            log.info("MQTT connection from %s closed: malformed CONNECT: %s", remote_address,
                     exc or type(exc).__name__)
            raise MQTTError(str(exc)) from None
        handler.max_inflight = self._settings.max_inflight
        handler.max_packet = limits.max_packet
        # Guessing passwords: an address or username that keeps failing waits, and a
        # login tried meanwhile is refused without its password being looked at.
        user = incoming.username or ""
        wait = self._failures.waiting(remote_address, user)
        if wait:
            log.info("MQTT login of %r from %s refused: too many failed logins (next try in %.0f s)",
                     user, remote_address, wait)
            incoming.attributes[_REFUSAL] = NOT_AUTHORIZED
            return handler, incoming
        # Check credentials before touching the stored session of the claimed client id.
        if not await super()._authenticate(incoming, None):
            self._failures.failed(remote_address, user)
            incoming.attributes[_REFUSAL] = NOT_AUTHORIZED
            return handler, incoming
        self._failures.succeeded(remote_address, user)
        client_id = incoming.client_id
        stored = self._sessions.get(client_id) if client_id else None
        if stored is not None and stored[0].clean_session and not stored[0].transitions.is_connected():
            await self._delete_session(client_id)  # a closed clean session, just not cleaned up yet
            stored = None
        if stored is not None and stored[0].username != incoming.username:
            # A client id belongs to the user who created its session: an agent must not
            # take over (or wipe, with clean_session) the collector's queue.
            log.warning("MQTT login of %r refused: client id %r belongs to %r",
                        incoming.username, client_id, stored[0].username)
            incoming.attributes[_REFUSAL] = IDENTIFIER_REJECTED
            return handler, incoming
        if stored is not None:
            await self._end_connection(stored[0], stored[1])
            if incoming.clean_session or stored[0].clean_session:
                await self._delete_session(client_id)  # the old state ends here
                stored = None
        if stored is None:
            session = incoming
            session.parent = 0
        else:
            session = stored[0]
            for name in ("will_flag", "will_message", "will_topic", "will_qos", "will_retain",
                         "keep_alive", "username", "password"):
                setattr(session, name, getattr(incoming, name))
            session.attributes[_ROLE] = incoming.attributes[_ROLE]
            session.attributes.pop(_REFUSAL, None)
            session.parent = 1
            _queue_backlog(session)  # before anything newer can be queued behind it
        if session.keep_alive > 0:
            session.keep_alive = math.ceil(session.keep_alive * 1.5)  # [MQTT-3.1.2-24]
        return handler, session

    async def start(self) -> None:
        await super().start()
        self._recheck = asyncio.create_task(self._recheck_agents())

    async def shutdown(self) -> None:
        recheck = getattr(self, "_recheck", None)
        if recheck is not None:
            recheck.cancel()
        await super().shutdown()

    async def _recheck_agents(self) -> None:
        """Disconnect agents whose credentials stopped being valid (revoked, new password)."""
        loop = asyncio.get_running_loop()
        authenticate = self._settings.authenticate
        while True:
            await asyncio.sleep(self._limits.recheck_s)
            for session, handler in list(self._sessions.values()):
                if session.attributes.get(_ROLE) != ROLE_AGENT or not session.transitions.is_connected():
                    continue
                try:
                    role = await loop.run_in_executor(None, authenticate, session.username or "",
                                                      session.password or "")
                except Exception as exc:  # the store is away: not the agent's fault
                    log.debug("re-checking agent %r: %s", session.username, exc)
                    continue
                if role != ROLE_AGENT:
                    log.warning("MQTT agent %r disconnected: its credentials are no longer valid "
                                "(revoked or given a new password)", session.username)
                    _abort(handler.writer)

    async def retain_message(self, source_session: Session | None, topic_name: str | None,
                             data: bytes | bytearray | None, qos: int | None = None) -> None:
        # An agent may keep a few small retained messages (its status), no more: 400
        # retained 256 KiB messages would otherwise all be kept, in memory.
        limits = self._limits
        if data and topic_name and source_session is not None \
                and source_session.attributes.get(_ROLE) == ROLE_AGENT:
            own = f"{self._settings.policy.prefix}/{source_session.username}/"
            mine = [m for t, m in self._retained_messages.items() if t.startswith(own) and t != topic_name]
            size = sum(len(m.data) for m in mine) + len(data)
            if len(mine) >= limits.retained_per_agent or size > limits.retained_bytes_per_agent:
                log.warning("MQTT agent %r: retained message on %r not kept (limit %d messages, %d bytes "
                            "per agent)", source_session.username, topic_name, limits.retained_per_agent,
                            limits.retained_bytes_per_agent)
                return
        await super().retain_message(source_session, topic_name, data, qos)

    async def _end_connection(self, session: Session, handler: BrokerProtocolHandler) -> None:
        """Close a client id's current connection before a new one takes over its session."""
        if not session.transitions.is_connected():
            return
        # Wakes the old connection's loop, which publishes its will and marks it disconnected.
        await handler.handle_connection_closed()
        for _ in range(500):
            if not session.transitions.is_connected():
                return
            await asyncio.sleep(0.01)

    async def _authenticate(self, session: Session, _listener: Any) -> bool:
        # Already decided in _initialize_client_session; do not ask the callback twice.
        return _REFUSAL not in session.attributes and _ROLE in session.attributes

    async def _handle_client_session(self, reader: Any, writer: Any, client_session: Session,
                                     handler: BrokerProtocolHandler, server: Any, listener_name: str) -> None:
        refusal = client_session.attributes.get(_REFUSAL)
        if refusal is not None or _ROLE not in client_session.attributes:
            # amqtt would register a refused client as connected; just answer and hang up.
            try:
                await ConnackPacket.build(0, refusal or NOT_AUTHORIZED).to_stream(writer)
                await writer.close()
            except OSError:
                pass
            return
        await super()._handle_client_session(reader, writer, client_session, handler, server, listener_name)

    async def _handle_disconnect(self, client_session: Session, handler: BrokerProtocolHandler,
                                 disconnect_waiter: asyncio.Future[Any]) -> None:
        # amqtt PUBACKs a publish as soon as it is queued, then drops whatever is still
        # queued when the publisher disconnects: an agent that sends a burst and leaves
        # loses part of it. Route the rest before the session is closed.
        queue = client_session.delivered_message_queue
        while not queue.empty():
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            done.set_result(queue.get_nowait())
            await self._handle_message_delivery(client_session, handler, done)
        await super()._handle_disconnect(client_session, handler, disconnect_waiter)

    async def _publish_session_retained_messages(self, session: Session) -> None:
        _queue_backlog(session)  # normally already done, before anything newer was queued
        session.attributes[_NO_REPLAY] = True  # see _publish_retained_messages_for_subscription

    async def _client_message_loop(self, client_session: Session, handler: BrokerProtocolHandler) -> None:
        client_session.attributes.pop(_NO_REPLAY, None)
        await super()._client_message_loop(client_session, handler)

    async def _publish_retained_messages_for_subscription(self, subscription: tuple[str, int],
                                                          session: Session) -> None:
        # amqtt also calls this on connect for every filter of every client; only a real
        # SUBSCRIBE (inside the message loop) gets retained messages, for its own filter.
        if session.attributes.get(_NO_REPLAY):
            return
        topic_filter = subscription[0]
        granted = next((qos for s, qos in self._subscriptions.get(topic_filter, ())
                        if s.client_id == session.client_id), None)
        handler = self._get_handler(session)
        if granted is None or handler is None:
            return
        for topic, retained in list(self._retained_messages.items()):
            if self._matches(topic, topic_filter) and await self._topic_filtering(session, topic, Action.RECEIVE):
                qos = min(granted, retained.qos if retained.qos is not None else granted)
                await handler.mqtt_publish(topic, retained.data, qos, retain=True)

    async def _run_broadcast(self, running_tasks: deque[asyncio.Task[Any]]) -> None:
        # amqtt walks its live subscription dict and lists across an await (the ACL
        # check): a client subscribing or leaving meanwhile raised "dictionary changed
        # size during iteration" and the message was lost for every subscriber (PUBACKed
        # to the publisher all the same), wills included. Ours walks a snapshot.
        broadcast = await self._broadcast_queue.get()
        topic = broadcast["topic"]
        targets = [(session, qos) for topic_filter, subscriptions in list(self._subscriptions.items())
                   if self._matches(topic, topic_filter) for session, qos in list(subscriptions)]
        for target_session, sub_qos in targets:
            qos = broadcast.get("qos", sub_qos)
            if not await self._topic_filtering(target_session, topic=topic, action=Action.RECEIVE):
                continue
            connected = target_session.transitions.state == "connected"
            if not connected and not target_session.clean_session and qos in (QOS_1, 2):
                await self._retain_broadcast_message(broadcast, qos, target_session)  # its offline queue
                continue
            handler = self._get_handler(target_session) if connected else None
            if handler is not None:
                running_tasks.append(asyncio.ensure_future(
                    handler.mqtt_publish(topic, broadcast["data"], qos, retain=False)))

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        # Grant QoS 1 at most: our delivery guarantees are built on QoS 1.
        topic_filter, qos = subscription
        granted: int = await super().add_subscription((topic_filter, min(qos, QOS_1)), session)
        return granted

    async def _create_server_instance(self, listener_name: Any, listener_type: Any, address: str | None,
                                      port: int, ssl_context: Any) -> Any:
        if address and address.startswith("[") and address.endswith("]"):
            address = address[1:-1]  # amqtt keeps the brackets of "[::1]:1883"
        return await super()._create_server_instance(listener_name, listener_type, address, port, ssl_context)


# --- public API ------------------------------------------------------------------------


class EmbeddedBroker:
    """An MQTT broker inside this process, for installs without Mosquitto.

    `authenticate(username, password)` returns "collector", "agent" (the username is the
    agent id) or None to refuse. It is called from a worker thread.
    """

    def __init__(self, host: str, port: int, authenticate: Authenticate, prefix: str = "wanwitness", *,
                 max_inflight: int = DEFAULT_MAX_INFLIGHT, limits: Limits | None = None,
                 log_level: int | None = None, tls: TlsListener | None = None) -> None:
        if max_inflight < 1:
            raise ValueError("max_inflight must be at least 1")
        self.host = host
        self.port = port
        self.prefix = prefix
        # A second listener serving MQTT over TLS (the agents' on a LAN); the plain one
        # stays, e.g. on loopback for the collector.
        self.tls = tls
        if tls is not None:
            from wanwitness.broker.tls import check_server_files
            check_server_files(tls.cert, tls.key, "the MQTT broker's TLS certificate")
        self._settings = _Settings(authenticate, _Policy(prefix), max_inflight, limits or Limits())
        self._log_level = log_level
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: _Broker | None = None
        self._start_error: BaseException | None = None

    @property
    def url(self) -> str:
        """mqtt://host:port to connect to (127.0.0.1 when listening on all interfaces)."""
        return f"mqtt://{_hostport(_connect_host(self.host), self.port)}"

    @property
    def tls_url(self) -> str | None:
        """mqtts://host:port of the TLS listener, None without one."""
        if self.tls is None:
            return None
        return f"mqtts://{_hostport(_connect_host(self.tls.host), self.tls.port)}"

    @property
    def listening(self) -> list[tuple[str, str]]:
        """("mqtt" or "mqtts", "host:port") of every socket listening now, as bound."""
        broker = self._broker
        if broker is None:
            return []
        found = []
        for name, scheme in (("default", "mqtt"), ("tls", "mqtts")):
            server = broker._servers.get(name)
            for sock in server.instance.sockets if server is not None else ():
                host, port = sock.getsockname()[:2]
                found.append((scheme, _hostport(host, port)))
        return found

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 10) -> None:
        """Listen in a background thread; return once clients can connect."""
        if self._thread is not None:
            raise RuntimeError("the embedded broker is already started")
        _quiet_amqtt(self._log_level)
        if self.port:
            _check_can_listen(self.host, self.port)
        self._start_error = None
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="wanwitness-broker", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            self.stop()
            raise UserError(f"the MQTT broker did not start on {_hostport(self.host, self.port)} within {timeout:g} s")
        if self._start_error is not None:
            self._thread.join()
            self._thread = self._loop = None
            raise self._start_error

    def stop(self, timeout: float = 10) -> None:
        """Disconnect everybody and stop listening. Queued messages are lost."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if thread.is_alive() and not loop.is_closed():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout)
            except Exception as exc:
                log.debug("embedded broker shutdown: %r", exc)
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:  # loop already closed
                pass
        thread.join(timeout)
        self._thread = self._loop = self._broker = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- broker thread --------------------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(_log_loop_error)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._start_error = _start_failure(self.host, self.port, exc)
            ready.set()
            _close_loop(loop)
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            _close_loop(loop)

    async def _serve(self) -> None:
        plugin = f"{__name__}.Witness"
        listeners = {"default": ListenerConfig(bind=f"{_hostport(self.host, self.port)}")}
        tls = self.tls
        if tls is not None:
            problem = _tls_listen_problem(tls)
            if problem is not None:
                raise problem  # outside an except block: its own message, not the plain port's
            listeners["tls"] = _tls_listener_config(tls)
        config = BrokerConfig(
            listeners=listeners,
            plugins={plugin + "AuthPlugin": {"settings": self._settings},
                     plugin + "TopicPlugin": {"settings": self._settings}},
        )
        self._broker = _Broker(config, self._settings, asyncio.get_running_loop())
        await self._broker.start()
        if not self.port:  # port 0: the OS chose one
            server = self._broker._servers["default"].instance
            self.port = server.sockets[0].getsockname()[1]
        if tls is not None and not tls.port:
            server = self._broker._servers["tls"].instance
            self.tls = replace(tls, port=server.sockets[0].getsockname()[1])

    async def _shutdown(self) -> None:
        if self._broker is not None and self._broker.transitions.state == "started":
            await self._broker.shutdown()


# --- helpers ------------------------------------------------------------------------------


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "::", "*") else host


def _port_in_use(host: str, port: int) -> BrokerPortInUse:
    return BrokerPortInUse(
        f"{_hostport(host, port)} is already in use (another MQTT broker, e.g. Mosquitto, may be "
        "running there)", host=host, port=port)


def _listen_error(host: str, port: int, exc: OSError) -> UserError:
    where = _hostport(host, port)
    if exc.errno == errno.EADDRINUSE:
        return _port_in_use(host, port)
    if exc.errno == errno.EADDRNOTAVAIL:
        return UserError(f"cannot listen on {where}: this machine has no such address")
    if exc.errno == errno.EACCES:
        return UserError(f"cannot listen on {where}: permission denied (ports below 1024 need "
                         "privileges; choose another port)")
    if isinstance(exc, socket.gaierror):
        return UserError(f"cannot listen on {where}: unknown host ({exc.strerror})")
    return UserError(f"cannot listen on {where}: {exc.strerror or exc}")


def _check_can_listen(host: str, port: int) -> None:
    """Bind (without listening) every address amqtt will bind, for a clean early error."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise _listen_error(host, port, exc) from None
    for family, kind, proto, _name, address in infos:
        with socket.socket(family, kind, proto) as probe:
            # Same options as asyncio's server, so a port in TIME_WAIT is not "in use".
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise _listen_error(host, port, exc) from None


def _start_failure(host: str, port: int, exc: BaseException) -> UserError:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError):
            return _listen_error(host, port, cause)
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, UserError):
        return exc
    return UserError(f"the MQTT broker could not start on {_hostport(host, port)}: {exc}")


class _NoTracebacks(logging.Filter):
    """amqtt logs some routine failures with tracebacks; keep the line, drop the trace."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() == "Broker startup failed":
            return False  # we raise a UserError saying why
        if record.getMessage().startswith("Failed to initialize client session"):
            return False  # we log why, once, at the right level
        if record.exc_info and not logging.getLogger("amqtt").isEnabledFor(logging.DEBUG):
            record.exc_info = None
            record.exc_text = None
        return True


_FILTER = _NoTracebacks()


def _quiet_amqtt(level: int | None) -> None:
    level = logging.WARNING if level is None else level
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(level)
    for name in ("amqtt.broker", "amqtt.mqtt.protocol.handler", "amqtt.broker.plugins"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # Stray task errors inside amqtt: one debug line instead of a traceback on the console.
    log.debug("embedded broker: %s %r", context.get("message"), context.get("exception"))


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    try:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


# --- TLS listener ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsListener:
    """Where and with which certificate the embedded broker serves MQTT over TLS.
    port 0: the OS chooses one (see EmbeddedBroker.tls after start)."""

    host: str
    port: int
    cert: Path
    key: Path


class TlsListenError(UserError):
    """The TLS listener's address cannot be used (taken, not on this machine, ...)."""


def _tls_listen_problem(tls: TlsListener) -> TlsListenError | None:
    if not tls.port:
        return None
    try:
        _check_can_listen(tls.host, tls.port)
    except UserError as exc:
        return TlsListenError(f"TLS listener: {exc}")
    return None


def _tls_listener_config(tls: TlsListener) -> ListenerConfig:
    # amqtt builds the server context: TLS 1.2 or later (Python's default), and it asks
    # for an optional client certificate that our agents do not send.
    return ListenerConfig(bind=_hostport(tls.host, tls.port), ssl=True,
                          certfile=str(tls.cert), keyfile=str(tls.key))
