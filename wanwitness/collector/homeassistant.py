"""Home Assistant MQTT discovery: each agent a device with its entities, on a connection
of its own to Home Assistant's broker (`[homeassistant] broker`).

Followed from home-assistant.io: integrations/mqtt/ ("MQTT Discovery": the config topic,
`device`, `origin`, `availability`, the birth message on `<discovery_prefix>/status`),
integrations/binary_sensor.mqtt/, integrations/sensor.mqtt/, integrations/event.mqtt/,
and integrations/sensor/ and integrations/binary_sensor/ for device classes, units and
state classes. `tests/ha_discovery_schema.py` checks every payload against them.

Topics at that broker (`P` = `[broker] prefix`, `D` = `discovery_prefix`):

| topic | retained | payload |
|---|---|---|
| `D/<component>/wanwitness_<id>/<key>/config` | yes | an entity's discovery config; empty: removed |
| `D/binary_sensor/wanwitness/collector/config` | yes | the collector's own device |
| `P/_ha/collector/status` | yes | `online`; `offline` when it stops (also its will) |
| `P/_ha/<id>/status` | yes | the agent's status as the collector last heard it |
| `P/_ha/<id>/state` | yes | one JSON object: what every entity of the agent shows |
| `P/_ha/<id>/event` | no | `{"event_type": "started" \\| "ended", "class": …, "start": …}` |

(`_ha` is no agent id: they start with a letter or digit.) Everything the state holds is
what the web UI shows (`wanwitness.web.data`): the line now, the billing period's
calendar, the claim. A thread of its own computes and publishes it, woken after each
commit of the collector (`changed()`) and every `interval_s`; paho's own thread keeps
the connection, reconnecting with back-off, so Home Assistant's broker being away never
holds up ingest.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from wanwitness import __version__
from wanwitness import store as s
from wanwitness.collector import timeline
from wanwitness.config import Config
from wanwitness.errors import UserError

log = logging.getLogger("wanwitness.homeassistant")

KEEPALIVE_S = 30
MIN_GAP_S = 1.0  # at most one round a second, however much is ingested
LINE_STATES = ("up", "isp_down", "dns_down", "degraded", "local_down", timeline.UNKNOWN)
OFFLINE_CLASSES = ("isp_down", "dns_down", "local_down")  # internet OFF; degraded: slow, on
ISP_CLASSES = ("isp_down", "dns_down", "degraded")  # the line's fault, not the home's
EVENT_TYPES = ["started", "ended"]
COLLECTOR_NODE = "wanwitness"
COLLECTOR_DEVICE = "wanwitness_collector"

# (component, key, name, fields): an agent's entities. Their state is the agent's state
# JSON; a value of null there renders "None", which these platforms take as unknown.
_DIAGNOSTIC = {"entity_category": "diagnostic"}
ENTITIES: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("binary_sensor", "internet", "Internet",
     {"device_class": "connectivity", "value_template": "{{ value_json.internet }}"}),
    ("binary_sensor", "isp_fault", "ISP fault",
     {"device_class": "problem", "value_template": "{{ value_json.isp_fault }}"}),
    ("sensor", "line_state", "Line state",
     {"device_class": "enum", "options": list(LINE_STATES), "value_template": "{{ value_json.line }}"}),
    ("sensor", "outage_duration", "Current outage",
     {"device_class": "duration", "unit_of_measurement": "s", "state_class": "measurement",
      "value_template": "{{ value_json.outage_s }}"}),
    ("sensor", "last_outage_start", "Last outage start",
     {"device_class": "timestamp", "value_template": "{{ value_json.last_outage_start }}"}),
    ("sensor", "last_outage_end", "Last outage end",
     {"device_class": "timestamp", "value_template": "{{ value_json.last_outage_end }}"}),
    ("sensor", "period_downtime", "Downtime this period",
     {"device_class": "duration", "unit_of_measurement": "s", "state_class": "total",
      "value_template": "{{ value_json.period_down_s }}",
      "last_reset_value_template": "{{ value_json.period_start }}"}),
    ("sensor", "period_availability", "Availability this period",
     {"unit_of_measurement": "%", "state_class": "measurement", "suggested_display_precision": 3,
      "value_template": "{{ value_json.period_availability }}"}),
    ("sensor", "period_outages", "Outages this period",
     {"state_class": "total", "value_template": "{{ value_json.period_outages }}",
      "last_reset_value_template": "{{ value_json.period_start }}"}),
    ("sensor", "rssi", "Wi-Fi signal",
     {"device_class": "signal_strength", "unit_of_measurement": "dBm", "state_class": "measurement",
      "value_template": "{{ value_json.rssi }}", **_DIAGNOSTIC}),
    ("sensor", "heap_free", "Free heap",
     {"device_class": "data_size", "unit_of_measurement": "B", "state_class": "measurement",
      "value_template": "{{ value_json.heap_free }}", **_DIAGNOSTIC}),
    ("sensor", "outbox", "Records waiting",
     {"state_class": "measurement", "value_template": "{{ value_json.outbox }}", **_DIAGNOSTIC}),
    ("sensor", "last_seen", "Last seen",
     {"device_class": "timestamp", "value_template": "{{ value_json.last_seen }}", **_DIAGNOSTIC}),
    ("sensor", "reset_cause", "Last reset cause",
     {"value_template": "{{ value_json.reset_cause }}", **_DIAGNOSTIC}),
)
CLAIM_KEY = "period_claim"
EVENT_KEY = "outage"


def _slug(agent: str) -> str:
    return agent.replace("-", "_")


class Topics:
    """Where everything goes, for one broker prefix and discovery prefix."""

    def __init__(self, prefix: str, discovery_prefix: str):
        self.prefix = prefix
        self.discovery = discovery_prefix
        self.collector_status = f"{prefix}/_ha/collector/status"
        self.birth = f"{discovery_prefix}/status"
        # One entity of each agent, read back at (re)connect: a retained config there names
        # an agent we published before (to remove it if it is gone meanwhile).
        self.marker = f"{discovery_prefix}/binary_sensor/+/internet/config"

    def agent(self, agent: str, leaf: str) -> str:
        return f"{self.prefix}/_ha/{agent}/{leaf}"

    def config(self, component: str, agent: str, key: str) -> str:
        return f"{self.discovery}/{component}/wanwitness_{agent}/{key}/config"

    def collector_config(self) -> str:
        return f"{self.discovery}/binary_sensor/{COLLECTOR_NODE}/collector/config"

    def marked_agent(self, topic: str) -> str | None:
        """The agent whose `internet` config `topic` is, if it is one of ours."""
        parts = topic.split("/")
        node = parts[-3] if len(parts) >= 4 else ""
        return node[len("wanwitness_"):] if node.startswith("wanwitness_") else None

    def agent_configs(self, agent: str) -> list[str]:
        """Every config topic an agent may have (the claim's too)."""
        keys = [(c, k) for c, k, _n, _f in ENTITIES] + [("sensor", CLAIM_KEY), ("event", EVENT_KEY)]
        return [self.config(c, agent, k) for c, k in keys]


def origin(support_url: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": "wanwitness", "sw_version": __version__}
    if support_url:
        out["support_url"] = support_url
    return out


def collector_config(topics: Topics, support_url: str) -> dict[str, Any]:
    """The collector's own device (the agents' `via_device`): one binary sensor, running."""
    device: dict[str, Any] = {"identifiers": [COLLECTOR_DEVICE], "name": "wanwitness collector",
                              "manufacturer": "wanwitness", "model": "collector",
                              "sw_version": __version__}
    if support_url:
        device["configuration_url"] = support_url
    return {"name": "Collector", "unique_id": "wanwitness_collector_running",
            "default_entity_id": "binary_sensor.wanwitness_collector",
            "device_class": "running", "state_topic": topics.collector_status,
            "payload_on": "online", "payload_off": "offline", "device": device,
            "origin": origin(support_url), "qos": 1}


def agent_configs(topics: Topics, agent: str, *, firmware: str | None, currency: str | None,
                  support_url: str, hardware: str | None = None) -> dict[str, dict[str, Any] | None]:
    """Config topic -> discovery payload of each of an agent's entities; None: remove it
    (the claim, when no claim is configured)."""
    device: dict[str, Any] = {"identifiers": [f"wanwitness_agent_{agent}"], "name": agent,
                              "manufacturer": "wanwitness",
                              # the board as MicroPython names it (boot record `hw`)
                              "model": hardware or "ESP32 agent",
                              "via_device": COLLECTOR_DEVICE}
    if firmware:
        device["sw_version"] = firmware
    common = {
        "state_topic": topics.agent(agent, "state"),
        "availability": [{"topic": topics.collector_status}, {"topic": topics.agent(agent, "status")}],
        "availability_mode": "all",
        "device": device, "origin": origin(support_url), "qos": 1,
    }
    entities = list(ENTITIES)
    entities.append(("event", EVENT_KEY, "Outage",
                     {"event_types": EVENT_TYPES, "state_topic": topics.agent(agent, "event")}))
    if currency:
        entities.append(("sensor", CLAIM_KEY, "Claim this period",
                         {"device_class": "monetary", "unit_of_measurement": currency,
                          "value_template": "{{ value_json.claim }}"}))
    out: dict[str, dict[str, Any] | None] = {topic: None for topic in topics.agent_configs(agent)}
    for component, key, name, fields in entities:
        out[topics.config(component, agent, key)] = {
            "name": name, "unique_id": f"wanwitness_{agent}_{key}",
            "default_entity_id": f"{component}.wanwitness_{_slug(agent)}_{key}",
            **common, **fields}
    return out


def _ms(text: str | None) -> int | None:
    return None if text is None else timeline.parse_time(text, option="time")


def agent_state(a: dict[str, Any], period: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """The state JSON of one agent from its row of `data.agents` and its period figures."""
    line = a["state"] if a["state"] in LINE_STATES else None  # never_seen: unknown
    known = line not in (None, timeline.UNKNOWN)
    ongoing = known and line != "up"
    since = _ms(a["since"])
    if ongoing and since is not None:
        outage_s: float | None = round(max(now_ms - since, 0) / 1000, 3)
    else:
        outage_s = 0.0 if line == "up" else None
    last = a.get("last_outage")
    if ongoing:
        last_start, last_end = a["since"], None
    elif last:
        last_start, last_end = last["start"], last["end"]
    else:
        last_start = last_end = None
    return {
        "line": line,
        "since": a["since"],
        "internet": None if not known else "OFF" if line in OFFLINE_CLASSES else "ON",
        "isp_fault": None if not known else "ON" if line in ISP_CLASSES else "OFF",
        "outage_s": outage_s,
        "last_outage_start": last_start, "last_outage_end": last_end,
        **period,
        "rssi": a.get("rssi"), "heap_free": a.get("heap_free"), "outbox": a.get("outbox"),
        "last_seen": a.get("last_seen"), "reset_cause": a.get("reset_cause"),
        "firmware": a.get("firmware"),
    }


def period_figures(store: s.Store, conf: Config, agent: str, now_ms: int) -> dict[str, Any]:
    """The current billing period of one agent as the Calendar page counts it: downtime
    (every class but unknown), availability over the time the witness saw, outages."""
    from wanwitness.claims.model import Tariff
    from wanwitness.web import data
    cal = data.calendar(store, conf, agent=agent, now_ms=now_ms)
    conf = conf.for_agent(agent) or conf   # the period as the agent's line counts it
    down_s = sum(day["down_s"] for day in cal["days"])
    covered = unknown = 0
    for day in cal["days"]:
        for seg in day["segments"]:
            length = (_ms(seg["end"]) or 0) - (_ms(seg["start"]) or 0)
            if seg["cls"] == "up":  # the base strip: the time the witness was there
                covered += length
            elif seg["cls"] == timeline.UNKNOWN:
                unknown += length
    seen_s = (covered - unknown) / 1000
    availability = (round(min(max(100 * (seen_s - down_s) / seen_s, 0.0), 100.0), 3)
                    if seen_s > 0 else None)
    p = Tariff(Decimal(0), "XXX", conf.tariff.period_start_day, conf.tariff.timezone).period(cal["period"])
    start, end = int(p.start.timestamp() * 1000), int(p.end.timestamp() * 1000)
    count = sum(1 for o in data.outages(store, agent=agent, since_ms=start, until_ms=end, now_ms=now_ms)
                if o.cls != timeline.UNKNOWN)
    return {"period": cal["period"], "period_start": data.iso(start),
            "period_down_s": round(down_s, 3), "period_availability": availability,
            "period_outages": count}


def claim_currency(conf: Config) -> str | None:
    """The claim's currency when a claim can be made (fee, currency and a rule pack)."""
    if not (conf.tariff.monthly_fee and conf.tariff.currency and conf.claim.rules):
        return None
    return conf.tariff.currency


def claims(store: s.Store, conf: Config, label: str, agents: list[str],
           now_ms: int) -> dict[str, str | None]:
    """Each agent's claim for period `label` as the Claim page makes it, from that agent's
    outages alone (agents watching one line each make their own case). With [lines],
    `conf` is the agents' line's (Config.for_agent)."""
    from wanwitness.claims import build as b
    from wanwitness.claims import make
    pack, options = make.choose_pack(conf, None, {}, how="[claim] rules")
    try:
        inputs = b.from_store(store, conf, label, now=datetime.fromtimestamp(now_ms / 1000, UTC))
    except UserError:  # nothing was reported in the period: nothing to claim
        return dict.fromkeys(agents)
    return {agent: str(b.build(replace(inputs, outages=[o for o in inputs.outages if o.agent == agent]),
                               pack, options)["total"]) for agent in agents}


def _agent_currency(conf: Config, agent: str) -> str | None:
    lconf = conf.for_agent(agent)
    return None if lconf is None else claim_currency(lconf)


def web_url(web_at: tuple[str, int] | None, tls: bool) -> str:
    """The web UI's address as Home Assistant's user can open it ('' without one)."""
    if web_at is None:
        return ""
    host, port = web_at
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn() or "localhost"
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}/"


class HomeAssistant:
    """The publisher: start(), changed() after each commit, close()."""

    def __init__(self, store: s.Store, conf: Config, *, prefix: str,
                 status: Callable[[], dict[str, str]], support_url: str = "",
                 now_ms: Callable[[], int] = s.now_ms):
        ha = conf.homeassistant
        self.store = store
        self.conf = conf
        self.topics = Topics(prefix, ha.discovery_prefix)
        self.status = status
        self.support_url = support_url
        self.now_ms = now_ms
        self.interval_s = ha.interval_s
        self.broker_url = ha.broker
        parts = urlsplit(ha.broker)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=ha.client_id,
                                  clean_session=True, protocol=mqtt.MQTTv311)
        if ha.username:
            self.client.username_pw_set(ha.username, ha.password)
        if parts.scheme == "mqtts":
            self.client.tls_set(ca_certs=ha.ca_file or None, cert_reqs=ssl.CERT_REQUIRED)
        self.client.will_set(self.topics.collector_status, "offline", qos=1, retain=True)
        self.client.reconnect_delay_set(1, 60)
        self.client.suppress_exceptions = True
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="homeassistant", daemon=True)
        self._away_logged = False
        self._error_logged = ""
        # Shared with paho's thread (under _lock): what a round must do.
        self._fresh = True                   # (re)connected: publish everything again
        self._configs_due = True             # Home Assistant asked for the configs
        self._marked: set[str] = set()       # agents with a retained config at the broker
        # The publishing thread's own: what it published last.
        self._sent: dict[str, bytes] = {}    # topic -> retained payload
        self._devices: dict[str, tuple[str | None, str | None, str | None]] = {}  # (firmware, hw, currency)
        self._period: dict[str, dict[str, Any]] = {}   # agent -> its period figures
        self._period_of: dict[str, tuple[str, str | None]] = {}  # ... for this line state
        self._ongoing: dict[str, tuple[str, str | None] | None] = {}  # outage it last showed

    # -- paho callbacks (its network thread) -----------------------------------------
    def _on_connect(self, client, _userdata, _flags, reason_code, _props) -> None:
        if reason_code.is_failure:
            log.error("Home Assistant broker %s refused the connection: %s", self.broker_url,
                      reason_code)
            return
        with self._lock:
            self._fresh = True
            self._marked = set()
        client.subscribe([(self.topics.birth, 1), (self.topics.marker, 1)])
        client.publish(self.topics.collector_status, "online", qos=1, retain=True)
        self._connected.set()
        self._away_logged = False
        log.info("Home Assistant: broker %s up; discovery under %s/", self.broker_url,
                 self.topics.discovery)
        self._wake.set()

    def _on_connect_fail(self, _client, _userdata) -> None:
        if not self._away_logged and not self._stop.is_set():
            self._away_logged = True
            log.warning("Home Assistant broker %s is not reachable; retrying with back-off "
                        "(ingest goes on)", self.broker_url)

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _props) -> None:
        self._connected.clear()
        if not self._stop.is_set() and not self._away_logged:
            self._away_logged = True
            log.warning("lost the Home Assistant broker %s (%s); reconnecting with back-off "
                        "(ingest goes on)", self.broker_url, reason_code)

    def _on_message(self, _client, _userdata, msg: mqtt.MQTTMessage) -> None:
        payload = bytes(msg.payload).decode("utf-8", "replace").strip()
        if msg.topic == self.topics.birth:
            if payload == "online":  # Home Assistant (re)started: it wants every config again
                with self._lock:
                    self._configs_due = True
                self._wake.set()
            return
        agent = self.topics.marked_agent(msg.topic)
        if agent is not None and payload:
            with self._lock:
                self._marked.add(agent)
            self._wake.set()

    # -- running ---------------------------------------------------------------------------
    def start(self) -> None:
        try:
            self.client.connect_async(self.host, self.port, keepalive=KEEPALIVE_S)
        except (OSError, ValueError) as e:
            raise UserError(f"[homeassistant] broker {self.broker_url}: {e}") from None
        self.client.loop_start()
        self._thread.start()

    def changed(self) -> None:
        """Something was ingested: publish what changed (soon, in this object's thread)."""
        self._wake.set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(10)
        try:
            if self._connected.is_set():
                info = self.client.publish(self.topics.collector_status, "offline", qos=1, retain=True)
                info.wait_for_publish(2)
            self.client.disconnect()
        except (RuntimeError, ValueError, OSError):
            pass
        finally:
            self.client.loop_stop()

    def _run(self) -> None:
        next_full = time.monotonic()
        while not self._stop.is_set():
            if self._connected.is_set():
                self._wake.wait(max(0.0, next_full - time.monotonic()))
            else:
                self._wake.wait(self.interval_s)  # the connect wakes it
            if self._stop.is_set():
                return
            self._wake.clear()
            if not self._connected.is_set():
                continue
            now = time.monotonic()
            full = now >= next_full
            if full:
                next_full = now + self.interval_s
            try:
                self.publish_round(full=full)
                self._error_logged = ""
            except Exception as e:  # the store away, a bug: say it once, keep trying
                text = f"{type(e).__name__}: {e}"
                if text != self._error_logged:
                    self._error_logged = text
                    log.error("Home Assistant: cannot publish the agents' state (%s); trying "
                              "again", text)
            self._stop.wait(MIN_GAP_S)

    def _publish(self, topic: str, payload: dict[str, Any] | str | None, *,
                 retain: bool = True) -> None:
        """Publish (retained: only when it differs from what was sent); None: empty."""
        if payload is None:
            body = b""
        elif isinstance(payload, str):
            body = payload.encode()
        else:
            body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        if retain and self._sent.get(topic) == body:
            return
        self.client.publish(topic, body, qos=1, retain=retain)
        if retain:
            self._sent[topic] = body

    def publish_round(self, *, full: bool = False) -> None:
        """Everything due: removals, configs, period figures (`full`: all of them), each
        agent's state and status."""
        from wanwitness.web import data
        with self._lock:
            fresh, self._fresh = self._fresh, False
        if fresh:  # a new connection: the broker may have lost what we published
            self._sent.clear()
            self._devices.clear()
            self._period.clear()
            self._period_of.clear()
            full = True
        now = self.now_ms()
        status = self.status()
        rows = data.agents(self.store, now_ms=now, status=status)
        enabled = [a for a in rows if a["enabled"]]
        names = {a["id"] for a in enabled}
        with self._lock:
            configs_due, self._configs_due = self._configs_due or fresh, False
            gone = {a for a in self._marked if a not in names}
            self._marked -= gone
        gone |= {a for a in self._devices if a not in names}
        for agent in sorted(gone):
            self._remove(agent)
        if configs_due:
            self._sent.pop(self.topics.collector_config(), None)
            self._devices.clear()
            self._publish(self.topics.collector_config(),
                          collector_config(self.topics, self.support_url))
        for a in enabled:
            currency = _agent_currency(self.conf, a["id"])
            device = (a["firmware"], a.get("hardware"), currency)
            if self._devices.get(a["id"]) != device:
                for topic, payload in agent_configs(self.topics, a["id"], firmware=a["firmware"],
                                                    hardware=a.get("hardware"),
                                                    currency=currency,
                                                    support_url=self.support_url).items():
                    if configs_due:
                        self._sent.pop(topic, None)
                    self._publish(topic, payload)
                self._devices[a["id"]] = device
        self._period_figures(enabled, now, full)
        for a in enabled:
            agent = a["id"]
            self._publish(self.topics.agent(agent, "status"), status.get(agent) or "offline")
            state = agent_state(a, self._period.get(agent, {}), now)
            self._events(agent, state)
            self._publish(self.topics.agent(agent, "state"), state)

    def _period_figures(self, agents: list[dict[str, Any]], now: int, full: bool) -> None:
        """The billing period's figures: every `interval_s`, and when a line changed."""
        due = [a for a in agents if full or self._period_of.get(a["id"]) != (a["state"], a["since"])]
        if not due:
            return
        for a in due:
            self._period[a["id"]] = period_figures(self.store, self.conf, a["id"], now)
            self._period_of[a["id"]] = (a["state"], a["since"])
        # One claim per line and period (lines may differ in tariff and period start).
        groups: dict[tuple[str | None, str], list[str]] = {}
        for a in due:
            if _agent_currency(self.conf, a["id"]):
                key = (self.conf.line_of(a["id"]), self._period[a["id"]]["period"])
                groups.setdefault(key, []).append(a["id"])
        for (_line, label), names in sorted(groups.items(), key=lambda kv: str(kv[0])):
            lconf = self.conf.for_agent(names[0])
            assert lconf is not None  # _agent_currency found its line
            try:
                totals = claims(self.store, lconf, label, names, now)
            except UserError as e:  # e.g. an unknown [claim] rules: the rest goes on
                totals = dict.fromkeys(names, None)
                if str(e) != self._error_logged:
                    self._error_logged = str(e)
                    log.error("Home Assistant: no claim this period: %s", e)
            for agent, total in totals.items():
                self._period[agent]["claim"] = total

    def _events(self, agent: str, state: dict[str, Any]) -> None:
        """`started` / `ended` when the agent's ongoing outage changes (not at start-up)."""
        line = state["line"]
        current = (line, state["since"]) if line not in (None, "up", timeline.UNKNOWN) else None
        if agent not in self._ongoing:
            self._ongoing[agent] = current
            return
        before = self._ongoing[agent]
        if before == current:
            return
        if before is not None:
            self._publish(self.topics.agent(agent, "event"),
                          {"event_type": "ended", "class": before[0], "start": before[1]},
                          retain=False)
        if current is not None:
            self._publish(self.topics.agent(agent, "event"),
                          {"event_type": "started", "class": current[0], "start": current[1]},
                          retain=False)
        self._ongoing[agent] = current

    def _remove(self, agent: str) -> None:
        """A revoked or deleted agent: its configs (Home Assistant drops the device), its
        state and status, all as empty retained messages."""
        for topic in self.topics.agent_configs(agent) + [self.topics.agent(agent, "state"),
                                                         self.topics.agent(agent, "status")]:
            self._sent.pop(topic, None)
            self._publish(topic, None)
        self._devices.pop(agent, None)
        self._period.pop(agent, None)
        self._period_of.pop(agent, None)
        self._ongoing.pop(agent, None)
        log.info("Home Assistant: removed agent %s (revoked or deleted)", agent)
