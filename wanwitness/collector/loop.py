"""The collector's MQTT half: receive, hand to the ingestor, then PUBACK and ack.

paho-mqtt runs its network loop in its own thread and only queues messages here;
the writer loop (the caller's thread) takes everything queued, commits it in one
transaction, and only then sends the PUBACKs and the retained `{"seq": N}` acks.
The session is persistent (clean_session=False, a fixed client id) and acks are
manual, so whatever was received but not committed when the process dies is
redelivered by the broker, and whatever the broker lost is resent by the agent,
which keeps every record until our ack covers it.

Several collectors (`share_group`, `wanwitness collect --shared G`): each subscribes to
the agents' `rec` and `hb` through `$share/G/...`, so the broker hands every message to
one of them, with a clean session and a client id of its own (`shared_client_id`): a
dead collector's share is then not parked in an offline session, and what it had
received but not committed goes unacknowledged, so the agents send it again (to a
living one). Each ack is still computed from the database in the transaction that
stored the records and published after that commit.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import sqlalchemy as sa
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from wanwitness.collector.ingest import Ingestor, Message, ack_payload
from wanwitness.collector.quarantine import Quota
from wanwitness.errors import UserError
from wanwitness.store import Store
from wanwitness.store.errors import is_corrupt
from wanwitness.store.errors import reason as db_reason

log = logging.getLogger("wanwitness.collector")

CONNECT_TIMEOUT_S = 15
KEEPALIVE_S = 30
DB_RETRY_MAX_S = 30
SUMMARY_S = 600  # one line in the log every 10 minutes: the collector is alive and working


@dataclass
class _Item:
    message: Message
    mid: int
    qos: int
    generation: int  # which connection it came on: a mid means nothing on another one


class Collector:
    def __init__(self, store: Store, broker_url: str, *, prefix: str = "wanwitness",
                 client_id: str = "wanwitness-collector", username: str = "",
                 password: str = "", ca_file: str = "", share_group: str = "",
                 batch_max: int = 1000, summary_s: float = SUMMARY_S, quota: Quota | None = None):
        self.store = store
        self.prefix = prefix
        self.batch_max = batch_max
        self.ingestor = Ingestor(store, prefix, quota)
        # Never blocks paho's network thread (it also sends our PINGREQs and the PUBACKs
        # of what was committed: blocked, the broker drops us after 1.5 x keepalive and
        # redelivers everything). QoS 1 messages are bounded by the broker's in-flight
        # window (max_inflight_messages: PUBACK only after the commit), so the backlog
        # stays at the broker; QoS 0 heartbeats beyond `qos0_max` queued are dropped and
        # counted (a heartbeat is no record: liveness, a clock point, a latency summary).
        self._queue = _Inbox()
        self.qos0_max = max(100, batch_max * 4)
        self.hb_dropped = 0
        self._hb_dropped_told = 0
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._subscribed = threading.Event()  # the broker's SUBACK for this connection
        self._sub_mid: int | None = None
        self._republish = threading.Event()
        self._generation = 0
        self._gen_lock = threading.Lock()
        self.stored = 0
        self.quarantined = 0
        # What each agent last said on its status topic: "online" after every CONNACK,
        # "offline" as its last will (docs/protocol.md, "Topics").
        self.status: dict[str, str] = {}
        self.summary_s = summary_s
        self._summary_at = time.monotonic() + summary_s
        self._summary_from = (0, 0)
        # Called after every commit (from the writer loop): must only note it and return
        # (the Home Assistant publisher wakes its own thread).
        self.on_commit: Callable[[], None] | None = None

        parts = urlsplit(broker_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self.broker_url = broker_url
        self.shared = bool(share_group)
        self.share_group = share_group
        self.client_id = shared_client_id(client_id) if self.shared else client_id
        self.client = BufferedClient(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                     clean_session=self.shared, protocol=mqtt.MQTTv311,
                                     manual_ack=True)
        if username:
            self.client.username_pw_set(username, password)
        if parts.scheme == "mqtts":
            self.client.tls_set(ca_certs=ca_file or None, cert_reqs=ssl.CERT_REQUIRED)
        self.client.reconnect_delay_set(1, 30)
        # A bug in a callback must not kill paho's network thread with a traceback.
        self.client.suppress_exceptions = True
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        filt = f"{prefix}/+/"
        share = f"$share/{share_group}/" if share_group else ""
        self._subscriptions = [(share + filt + "rec", 1), (share + filt + "hb", 0),
                               (filt + "status", 1)]

    # -- paho callbacks (network thread) ----------------------------------------

    def _on_connect(self, client, _userdata, flags, reason_code, _props):
        if reason_code.is_failure:
            log.error("broker %s refused the connection: %s", self.broker_url, reason_code)
            return
        with self._gen_lock:
            self._generation += 1
        # Subscribe every time: harmless when the session already has them, needed
        # when the broker lost the session (restarted without persistence).
        self._subscribed.clear()
        _rc, self._sub_mid = client.subscribe(self._subscriptions)
        self._republish.set()
        self._connected.set()
        if self.shared:
            log.info("connected to %s (shared subscriptions, group %r, client id %s)",
                     self.broker_url, self.share_group, self.client_id)
        else:
            log.info("connected to %s (session %s)", self.broker_url,
                     "resumed" if flags.session_present else "new")

    def _on_subscribe(self, _client, _userdata, mid, _reason_codes, _props):
        if mid == self._sub_mid:  # called on the network thread, after _on_connect set it
            self._subscribed.set()

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _props):
        self._connected.clear()
        self._subscribed.clear()
        if not self._stop.is_set():
            log.warning("lost the broker %s (%s); reconnecting", self.broker_url, reason_code)

    def _on_message(self, _client, _userdata, msg: mqtt.MQTTMessage):
        recv_ms = time.time_ns() // 1_000_000
        if msg.topic.endswith("/status"):
            self._note_status(msg.topic, bytes(msg.payload), bool(msg.retain))
        if msg.qos == 0 and self._queue.qsize() >= self.qos0_max:
            self.hb_dropped += 1  # the store is behind: shed what QoS 0 allows
            return
        self._queue.put(_Item(Message(msg.topic, bytes(msg.payload), recv_ms), msg.mid, msg.qos,
                              self._generation))

    def _note_status(self, topic: str, payload: bytes, retained: bool) -> None:
        """Log an agent coming online or going offline (its last will), once per change."""
        parts = topic.split("/")
        if len(parts) != 3 or parts[0] != self.prefix:
            return
        agent, state = parts[1], payload.decode("utf-8", "replace").strip()[:20]
        if state not in ("online", "offline") or self.status.get(agent) == state:
            return
        self.status[agent] = state
        if retained:  # the broker's last word at (re)subscribe: how things stand now
            log.info("agent %s is %s", agent, state)
        elif state == "online":
            log.info("agent %s online", agent)
        else:
            log.warning("agent %s offline (its connection to the broker was lost)", agent)

    def _maybe_summary(self) -> None:
        now = time.monotonic()
        if now < self._summary_at:
            return
        self._summary_at = now + self.summary_s
        stored, quarantined = self.stored - self._summary_from[0], self.quarantined - self._summary_from[1]
        self._summary_from = (self.stored, self.quarantined)
        online = sorted(a for a, st in self.status.items() if st == "online")
        log.info("last %s: %d record(s) stored, %d quarantined; broker %s; agents online: %s",
                 _span(self.summary_s), stored, quarantined,
                 "connected" if self._connected.is_set() else "DISCONNECTED",
                 ", ".join(online) if online else "none")
        dropped, self._hb_dropped_told = self.hb_dropped - self._hb_dropped_told, self.hb_dropped
        if dropped:
            log.warning("last %s: %d heartbeat(s) dropped: the store falls behind the agents "
                        "(records are not dropped: the broker holds them until committed)",
                        _span(self.summary_s), dropped)

    # -- running -------------------------------------------------------------

    def connect(self) -> None:
        try:
            self.client.connect_async(self.host, self.port, keepalive=KEEPALIVE_S)
        except (OSError, ValueError) as e:
            raise UserError(f"broker {self.broker_url}: {e}") from None
        self.client.loop_start()

    def wait_connected(self, timeout: float = CONNECT_TIMEOUT_S) -> bool:
        """True once connected and subscribed (the broker's SUBACK): a heartbeat (QoS 0)
        published before the broker had the SUBSCRIBE would not reach this collector."""
        return self._subscribed.wait(timeout)

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()

    def run(self) -> None:
        """The writer loop; returns after stop()."""
        while not self._stop.is_set():
            if self._republish.is_set():
                self._republish_acks()
            items = self._take()
            if items:
                self._commit(items)
            self._maybe_summary()

    def _take(self) -> list[_Item]:
        return self._queue.take(self.batch_max, 0.2)

    def _commit(self, items: list[_Item]) -> None:
        delay = 0.5
        while True:
            try:
                result = self.ingestor.ingest([i.message for i in items])
                break
            except Exception as e:
                # A message the store refuses is quarantined inside ingest (a savepoint
                # each): what is raised here is the store's condition, never one message's.
                if is_corrupt(e):
                    raise StoreCorrupt(self.store.url, db_reason(e), len(items)) from None
                # Away (PostgreSQL restarting, connection lost), disk full, read-only, or
                # a bug: nothing was committed and nothing is acked, so the broker keeps
                # the messages; try the same ones again.
                log.error("cannot commit to the store (%s: %s); nothing is acknowledged; "
                          "retrying in %g s", type(e).__name__, db_reason(e), delay)
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, DB_RETRY_MAX_S)
        self.stored += result.stored
        self.quarantined += result.quarantined
        gen = self._generation
        for item in items:
            if item.qos > 0 and item.generation == gen:
                self.client.ack(item.mid, item.qos)
        for agent, seq in result.acks.items():
            self._publish_ack(agent, seq, result.streams.get(agent))
        if self.on_commit is not None:
            self.on_commit()

    def _republish_acks(self) -> None:
        """After each (re)connect: the broker may have lost its retained acks."""
        from wanwitness import store as s
        try:
            with self.store.engine.connect() as conn:
                A, S = s.agents, s.streams
                rows = conn.execute(
                    sa.select(A.c.id, A.c.ack_seq, A.c.ob, S.c.seq_base)
                    .select_from(A.outerjoin(S, sa.and_(S.c.agent == A.c.id, S.c.ob == A.c.ob)))
                    .where(A.c.ack_seq > 0)).all()
        except sa.exc.SQLAlchemyError as e:
            if is_corrupt(e):
                raise StoreCorrupt(self.store.url, db_reason(e), 0) from None
            return  # the store is away: try again on the next round
        self._republish.clear()
        for agent, seq, ob, base in rows:
            self._publish_ack(agent, seq, None if ob is None else (ob, base or 0))

    def _publish_ack(self, agent: str, seq: int, stream: tuple[str, int] | None) -> None:
        # In the agent's own numbering and naming its outbox (ingest.ack_payload): the
        # agent takes no ack for another outbox or above its own last seq.
        self.client.publish(f"{self.prefix}/{agent}/ack", ack_payload(seq, stream), qos=1,
                            retain=True)



class _Inbox:
    """What paho's thread hands the writer loop, unbounded (see Collector.__init__): a
    deque, and an event set when it turns non-empty (queue.Queue takes a lock and
    notifies a condition for every message put and taken)."""

    def __init__(self) -> None:
        self._items: collections.deque[_Item] = collections.deque()
        self._ready = threading.Event()

    def put(self, item: _Item) -> None:
        self._items.append(item)
        if not self._ready.is_set():
            self._ready.set()

    def qsize(self) -> int:
        return len(self._items)

    def take(self, limit: int, timeout: float) -> list[_Item]:
        """Up to `limit` items, waiting up to `timeout` seconds for the first."""
        if not self._items:
            self._ready.wait(timeout)
        self._ready.clear()  # before taking: a put after this sets it again
        items: list[_Item] = []
        while self._items and len(items) < limit:
            items.append(self._items.popleft())
        return items


class BufferedClient(mqtt.Client):
    """paho's client, reading the socket in gulps of up to 64 KiB. paho itself asks the
    socket for one byte (the packet type), then for each byte of the remaining length,
    then for the rest, and after the last packet for one more that raises
    BlockingIOError: 4 system calls and an exception for each record message, the
    largest cost of the network thread (bench/README.md). Here those reads are served
    from what one recv returned; `loop_read` goes on while bytes wait in that buffer
    (paho's loop would otherwise wait in select() for more from the socket). A new
    socket (a reconnect) starts with an empty buffer."""

    RECV_BYTES = 65536

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0
        self._rsock: object = None  # the socket the buffered bytes came from

    def _buffered(self) -> bool:
        return self._rpos < len(self._rbuf) and self._rsock is self._sock

    def _sock_recv(self, bufsize: int) -> bytes:
        if not self._buffered():
            data = super()._sock_recv(max(bufsize, self.RECV_BYTES))  # raises when none
            if len(data) <= bufsize:
                return data  # all of it asked for (or b"": the connection closed)
            self._rbuf, self._rpos, self._rsock = data, 0, self._sock
        out = self._rbuf[self._rpos:self._rpos + bufsize]
        self._rpos += len(out)
        return out

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._buffered():
            rc = super().loop_read(max_packets)
        return rc


class StoreCorrupt(UserError):
    """The SQLite file is damaged: ingest stops (exit status 3) rather than spin, and
    nothing received meanwhile is acked, so the broker and the agents keep it."""

    exit_code = 3

    def __init__(self, url: str, why: str, pending: int):
        path = sa.engine.make_url(url).database or url
        super().__init__(
            f"the store {path} is corrupt ({why}): ingest stopped; the {pending} message(s) "
            "of the failed commit were not acknowledged: the broker and the agents keep them. "
            "Restore the file from a backup (or check it: wanwitness verify --db "
            f"{url}), then start the collector again")


def shared_client_id(base: str) -> str:
    """A client id of this process alone: `base`, the host name and the pid (a second
    collector with the same id would take the first one's connection over)."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "", socket.gethostname().split(".")[0]) or "host"
    return f"{base}-{host[:40]}-{os.getpid()}"


def _span(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
