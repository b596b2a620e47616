"""A simulated agent in CPython: the agent's delivery rules without the board.

It follows the same contract as the MicroPython agent (docs/protocol.md): every record
stays in its outbox until the collector's retained ack `{"seq": N}` covers it; the
whole outbox is resent after every reconnect, and a record published but not acked
within `resend_s` is published again (a PUBACK only proves the broker has it). The
ingest tests and `bench/ingest.py` drive the collector with it; it is not the agent.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt


class SimAgent:
    def __init__(self, agent_id: str, password: str, host: str, port: int, *,
                 prefix: str = "wanwitness", boot: int = 1, batch: int = 1,
                 window: int = 2000, resend_s: float = 5.0,
                 on_ack: Callable[[str, int], None] | None = None, seed: int | None = None):
        self.id = agent_id
        self.prefix = prefix
        self.boot = boot
        self.batch = batch
        self.window = window
        self.resend_s = resend_s
        self.on_ack = on_ack
        self.rng = random.Random(seed)
        self.acked = 0
        self.acks_seen: list[int] = []
        self.next_seq = 1
        self.outbox: dict[int, dict[str, Any]] = {}
        self.sent_at: dict[int, float] = {}
        self.published = 0
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread: threading.Thread | None = None
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sim-{agent_id}",
                                  clean_session=True, protocol=mqtt.MQTTv311)
        self.client.username_pw_set(agent_id, password)
        self.client.will_set(f"{prefix}/{agent_id}/status", "offline", qos=1, retain=True)
        self.client.reconnect_delay_set(0.1, 1)
        self.client.max_queued_messages_set(0)
        self.client.max_inflight_messages_set(100)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.host, self.port = host, port

    # -- records ---------------------------------------------------------------

    def now_t(self) -> int:
        return int((time.monotonic() - self._t0) * 1000)

    def add(self, kind: str = "stats", **fields: Any) -> int:
        with self._lock:
            seq = self.next_seq
            self.next_seq += 1
            rec = {"seq": seq, "t": self.now_t(), "utc": None, "k": kind}
            rec.update(fields)
            self.outbox[seq] = rec
            return seq

    def add_many(self, n: int, kind: str = "stats") -> None:
        for _ in range(n):
            self.add(kind, n=self.rng.randrange(1000))

    # -- MQTT --------------------------------------------------------------------

    def _on_connect(self, client, _u, _flags, reason_code, _p):
        if reason_code.is_failure:
            return
        client.subscribe(f"{self.prefix}/{self.id}/ack", qos=1)
        client.publish(f"{self.prefix}/{self.id}/status", "online", qos=1, retain=True)
        with self._lock:
            self.sent_at.clear()  # drain the whole outbox again after every reconnect
        self._connected.set()

    def _on_disconnect(self, *_a):
        self._connected.clear()

    def _on_message(self, _c, _u, msg):
        try:
            seq = int(json.loads(msg.payload)["seq"])
        except (ValueError, KeyError, TypeError):
            return
        if self.on_ack:
            self.on_ack(self.id, seq)
        with self._lock:
            self.acks_seen.append(seq)
            if seq > self.acked:
                for s in [s for s in self.outbox if s <= seq]:
                    del self.outbox[s]
                    self.sent_at.pop(s, None)
                self.acked = seq

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=10)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._pump, name=f"sim-{self.id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        self.client.disconnect()
        self.client.loop_stop()

    def _pump(self) -> None:
        topic = f"{self.prefix}/{self.id}/rec"
        while not self._stop.is_set():
            if not self._connected.wait(0.1):
                continue
            now = time.monotonic()
            with self._lock:
                due = [s for s in sorted(self.outbox)[: self.window]
                       if now - self.sent_at.get(s, -1e9) > self.resend_s]
            if not due:
                time.sleep(0.01)
                continue
            for i in range(0, len(due), self.batch):
                chunk = due[i:i + self.batch]
                with self._lock:
                    recs = [self.outbox[s] for s in chunk if s in self.outbox]
                if not recs:
                    continue
                payload = json.dumps({"v": 1, "agent": self.id, "boot": self.boot,
                                      "t": self.now_t(), "recs": recs}, separators=(",", ":"))
                info = self.client.publish(topic, payload, qos=1)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    break  # disconnected: everything is resent after the reconnect
                with self._lock:
                    for r in recs:
                        self.sent_at[r["seq"]] = now
                self.published += 1

    def pending(self) -> int:
        with self._lock:
            return len(self.outbox)

    def wait_drained(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pending() == 0:
                return True
            time.sleep(0.05)
        return self.pending() == 0
