"""Home Assistant MQTT discovery (collector/homeassistant.py), observed on a real Mosquitto.

Everything Home Assistant would read is taken from the broker by a paho subscriber on
`homeassistant/#` and `wanwitness/_ha/#`, and every discovery payload is checked against
our JSON Schema of Home Assistant's documentation (tests/ha_discovery_schema.py). The
publisher runs in-process on a store fed through the real Ingestor (testing/records.py),
with a clock of the test's own; the end-to-end tests run `wanwitness collect`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest

from testing.brokers import Mosquitto, MqttClient, free_port
from testing.collector import CollectorProcess
from testing.records import MIN, T0, Board
from tests.ha_discovery_schema import SCHEMAS, TOPIC_RE, schema_for
from wanwitness import config as cfg
from wanwitness.collector.agents import add_agent, set_enabled
from wanwitness.collector.homeassistant import HomeAssistant
from wanwitness.collector.ingest import Ingestor
from wanwitness.store import open_store

WAIT_S = 20


class Seen:
    """What a subscriber received: every message, and each topic's last payload."""

    def __init__(self, url: str, *filters: str):
        self.messages: list[tuple[str, bytes, bool]] = []
        self.last: dict[str, bytes] = {}
        self.cond = threading.Condition()
        self.client = MqttClient(url)
        self.client.client.on_message = self._on_message
        self.client.connect()
        for f in filters:
            self.client.subscribe(f)

    def _on_message(self, _c, _u, msg) -> None:
        with self.cond:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
            self.last[msg.topic] = bytes(msg.payload)
            self.cond.notify_all()

    def wait(self, what: str, check: Callable[[], object], timeout: float = WAIT_S):
        with self.cond:
            if not self.cond.wait_for(check, timeout):
                raise AssertionError(f"not seen within {timeout} s: {what}\n"
                                     f"{sorted(self.last)}")
            return check()

    def json(self, topic: str) -> dict | None:
        body = self.last.get(topic)
        return json.loads(body) if body else None

    def close(self) -> None:
        self.client.close()


def configs_of(seen: Seen, agent: str) -> dict[str, bytes]:
    return {t: p for t, p in seen.last.items()
            if t.startswith("homeassistant/") and f"/wanwitness_{agent}/" in t}


def check_discovery(topic: str, payload: bytes) -> dict:
    import re
    assert re.match(TOPIC_RE, topic), topic
    doc = json.loads(payload)
    jsonschema.validate(doc, schema_for(topic))
    return doc


def write_config(path: Path, ha_broker: str, *, extra: str = "") -> Path:
    path.write_text(f'[homeassistant]\nbroker = "{ha_broker}"\ninterval_s = 1\n'
                    '[tariff]\nmonthly_fee = "100000.00"\ncurrency = "EUR"\n'
                    '[claim]\nrules = "pro-rata"\n' + extra)
    return path


@pytest.fixture
def setup(tmp_path, mosquitto, db_url):
    """A store (SQLite, PostgreSQL) with agent `kitchen` heard from, a publisher with the
    test's clock, a subscriber."""
    store = open_store(db_url)
    add_agent(store, "kitchen")
    board = Board(Ingestor(store), "kitchen")
    board.boot, board.boot_utc = 1, T0
    board.rec("boot", T0, reset="PWRON_RESET", fw="0.1.0", hw="Generic ESP32 module with ESP32")
    board.hb(T0 + MIN)
    clock = [T0 + MIN]
    status = {"kitchen": "online"}
    conf = cfg.load(write_config(tmp_path / "config.toml", mosquitto.url))
    seen = Seen(mosquitto.url, "homeassistant/#", "wanwitness/_ha/#")
    ha = HomeAssistant(store, conf, prefix="wanwitness", status=lambda: dict(status),
                       support_url="http://127.0.0.1:8765/", now_ms=lambda: clock[0])
    ha.start()
    yield store, board, clock, status, ha, seen
    ha.close()
    seen.close()
    store.dispose()


STATE = "wanwitness/_ha/kitchen/state"
EVENT = "wanwitness/_ha/kitchen/event"
N_CONFIGS = 16  # 14 entities, the outage event and the claim


def test_discovery_payloads_match_the_schema(setup):
    *_, seen = setup
    seen.wait("every config", lambda: len(configs_of(seen, "kitchen")) == N_CONFIGS
              and "homeassistant/binary_sensor/wanwitness/collector/config" in seen.last)
    found = {**configs_of(seen, "kitchen"),
             "homeassistant/binary_sensor/wanwitness/collector/config":
                 seen.last["homeassistant/binary_sensor/wanwitness/collector/config"]}
    docs = {t: check_discovery(t, p) for t, p in found.items()}
    platforms = {t.split("/")[1] for t in docs}
    assert platforms == set(SCHEMAS)
    internet = docs["homeassistant/binary_sensor/wanwitness_kitchen/internet/config"]
    assert internet["device_class"] == "connectivity"
    assert internet["default_entity_id"] == "binary_sensor.wanwitness_kitchen_internet"
    assert internet["availability_mode"] == "all"
    assert [a["topic"] for a in internet["availability"]] == [
        "wanwitness/_ha/collector/status", "wanwitness/_ha/kitchen/status"]
    assert internet["device"]["via_device"] == "wanwitness_collector"
    assert internet["device"]["sw_version"] == "0.1.0"  # the agent's firmware
    assert internet["device"]["model"] == "Generic ESP32 module with ESP32"  # its boot's hw
    assert internet["origin"]["name"] == "wanwitness"
    claim = docs["homeassistant/sensor/wanwitness_kitchen/period_claim/config"]
    assert claim["unit_of_measurement"] == "EUR" and claim["device_class"] == "monetary"
    assert all("object_id" not in d for d in docs.values())
    # the status follows the round's period figures (the claim may make a ledger checkpoint)
    seen.wait("the agent's status", lambda: "wanwitness/_ha/kitchen/status" in seen.last)
    assert seen.last["wanwitness/_ha/collector/status"] == b"online"
    # The agents' states follow their configs (after the period's figures and claim).
    seen.wait("the agent's status", lambda: "wanwitness/_ha/kitchen/status" in seen.last)
    assert seen.last["wanwitness/_ha/kitchen/status"] == b"online"


def test_state_follows_an_outage(setup):
    store, board, clock, _status, ha, seen = setup

    def line(s: str, at: int, now: int) -> dict:
        """The agent reports line state `s` at `at`; the state JSON once it shows it at `now`."""
        board.state(s, at, ev={"by": "probe"})
        clock[0] = now
        ha.changed()
        return seen.wait(s, lambda: (doc := seen.json(STATE)) and doc["line"] == s and doc)

    def events(kind: str) -> list[dict]:
        return [doc for t, p, _r in seen.messages if t == EVENT
                and (doc := json.loads(p))["event_type"] == kind]

    seen.wait("line up", lambda: (seen.json(STATE) or {}).get("line") == "up")
    assert seen.json(STATE)["internet"] == "ON"
    state = line("isp_down", T0 + 2 * MIN, T0 + 3 * MIN)
    assert state["internet"] == "OFF" and state["isp_fault"] == "ON"
    assert state["outage_s"] == 60.0
    assert state["last_outage_start"] == "2026-11-03T06:02:00.000Z"
    assert state["last_outage_end"] is None
    seen.wait("started event", lambda: events("started"))
    state = line("up", T0 + 7 * MIN, T0 + 8 * MIN)
    assert state["internet"] == "ON" and state["isp_fault"] == "OFF"
    assert state["period_down_s"] == 300.0
    assert state["period_outages"] == 1
    assert state["period"] == "2026-11"
    assert 0 < state["period_availability"] < 100
    assert state["last_outage_end"] == "2026-11-03T06:07:00.000Z"
    assert state["claim"] is not None and float(state["claim"]) > 0
    ended = seen.wait("ended event", lambda: events("ended"))
    assert ended[0]["class"] == "isp_down" and events("started")[0]["class"] == "isp_down"
    assert not any(retained for t, _p, retained in seen.messages if t == EVENT)


def test_silent_agent_is_unknown_and_unavailable(setup):
    _store, _board, clock, status, ha, seen = setup
    seen.wait("line up", lambda: (seen.json(STATE) or {}).get("line") == "up")
    clock[0] = T0 + 10 * MIN  # 9 minutes without a word: more than 3 heartbeat periods
    status["kitchen"] = "offline"  # its will
    ha.changed()
    state = seen.wait("silent", lambda: (s := seen.json(STATE)) and s["line"] == "unknown" and s)
    assert state["internet"] is None and state["isp_fault"] is None
    assert state["outage_s"] is None
    seen.wait("agent unavailable", lambda: seen.last.get("wanwitness/_ha/kitchen/status") == b"offline")


def test_configs_again_when_home_assistant_comes_online(setup, mosquitto):
    *_, seen = setup
    seen.wait("every config", lambda: len(configs_of(seen, "kitchen")) == N_CONFIGS)
    before = len(seen.messages)
    with MqttClient(mosquitto.url) as ha_core:
        ha_core.connect()
        ha_core.publish("homeassistant/status", "online")

    def again():
        return {t for t, p, _r in seen.messages[before:]
                if t.startswith("homeassistant/") and "/config" in t and p}
    got = seen.wait("configs republished", lambda: len(again()) == N_CONFIGS + 1 and again())
    for topic in got:
        check_discovery(topic, seen.last[topic])


def test_revoked_agent_is_removed(setup, mosquitto):
    store, _board, _clock, _status, ha, seen = setup
    seen.wait("every config", lambda: len(configs_of(seen, "kitchen")) == N_CONFIGS)
    set_enabled(store, "kitchen", False)
    ha.changed()
    seen.wait("configs emptied", lambda: all(p == b"" for p in configs_of(seen, "kitchen").values()))
    seen.wait("state emptied", lambda: seen.last[STATE] == b"")
    # Retained nothing: a new subscriber (Home Assistant restarting) finds no kitchen.
    late = Seen(mosquitto.url, "homeassistant/#")
    try:
        late.wait("the collector's config", lambda: any("/wanwitness/" in t for t in late.last))
        assert configs_of(late, "kitchen") == {}
    finally:
        late.close()


def test_agent_revoked_while_the_publisher_was_away_is_removed(tmp_path, mosquitto, sqlite_url):
    store = open_store(sqlite_url)
    add_agent(store, "hall")
    Board(Ingestor(store), "hall").start(1, T0)
    conf = cfg.load(write_config(tmp_path / "config.toml", mosquitto.url))
    seen = Seen(mosquitto.url, "homeassistant/#")
    try:
        first = HomeAssistant(store, conf, prefix="wanwitness", status=dict, now_ms=lambda: T0)
        first.start()
        seen.wait("hall's configs", lambda: len(configs_of(seen, "hall")) == N_CONFIGS)
        first.close()
        set_enabled(store, "hall", False)
        second = HomeAssistant(store, conf, prefix="wanwitness", status=dict, now_ms=lambda: T0)
        second.start()
        try:
            seen.wait("configs emptied",
                      lambda: all(p == b"" for p in configs_of(seen, "hall").values()))
        finally:
            second.close()
    finally:
        seen.close()
        store.dispose()


# --- the collector process ---------------------------------------------------------------

def _agent_batch(recs: list[dict], t: int) -> str:
    return json.dumps({"v": 1, "agent": "kitchen", "boot": 1, "t": t, "recs": recs})


def _state(seq: int, t: int, s: str) -> dict:
    return {"seq": seq, "t": t, "utc": None, "k": "state", "s": s, "at": t, "bound": None,
            "ev": {"by": "probe"}}


@pytest.fixture
def collector_with_ha(tmp_path, sqlite_url):
    """`wanwitness collect` (embedded broker) with [homeassistant] on a port of its own:
    (collector, Home Assistant's Mosquitto not yet started, the agent's password)."""
    store = open_store(sqlite_url)
    password = add_agent(store, "kitchen")
    store.dispose()
    ha_broker = Mosquitto(tmp_path / "ha-mosquitto")
    proc = CollectorProcess(tmp_path / "collector", sqlite_url, listen=("127.0.0.1", free_port()),
                            collector_conf=f'[homeassistant]\nbroker = "{ha_broker.url}"\n'
                                           'interval_s = 1\n')
    yield proc, ha_broker, password
    proc.stop()
    ha_broker.close()


def test_collector_publishes_an_ingested_outage(collector_with_ha):
    proc, ha_broker, password = collector_with_ha
    ha_broker.start()
    proc.start()
    seen = Seen(ha_broker.url, "homeassistant/#", "wanwitness/_ha/#")
    agent = MqttClient(f"mqtt://127.0.0.1:{proc.port}", "ww-kitchen", username="kitchen",
                       password=password)
    try:
        agent.connect()
        agent.publish("wanwitness/kitchen/status", "online", retain=True)
        agent.publish("wanwitness/kitchen/rec", _agent_batch(
            [{"seq": 1, "t": 1000, "utc": None, "k": "boot", "reset": "PWRON_RESET", "fw": "0.1.0"},
             _state(2, 1000, "isp_down")], 1000))
        state = seen.wait("isp_down", lambda: (s := seen.json(STATE)) and s["line"] == "isp_down" and s)
        assert state["internet"] == "OFF"
        published = {t: p for t, p in configs_of(seen, "kitchen").items() if p}
        assert len(published) == N_CONFIGS - 1  # no claim without [tariff] and [claim]
        for topic, payload in published.items():
            check_discovery(topic, payload)
        assert seen.last["wanwitness/_ha/kitchen/status"] == b"online"
        agent.publish("wanwitness/kitchen/rec", _agent_batch([_state(3, 3000, "up")], 3000))
        state = seen.wait("up with downtime", lambda: (s := seen.json(STATE)) and s["line"] == "up"
                          and s["period_down_s"] > 0 and s)
        assert state["internet"] == "ON" and state["period_outages"] == 1
    finally:
        agent.close()
        seen.close()


def test_home_assistant_broker_down_does_not_stop_ingest(collector_with_ha):
    proc, ha_broker, password = collector_with_ha
    proc.start()  # Home Assistant's broker is not running
    agent = MqttClient(f"mqtt://127.0.0.1:{proc.port}", "ww-kitchen", username="kitchen",
                       password=password)
    try:
        agent.connect()
        agent.subscribe("wanwitness/kitchen/ack")
        agent.publish("wanwitness/kitchen/rec", _agent_batch(
            [{"seq": 1, "t": 1000, "utc": None, "k": "boot", "reset": "PWRON_RESET"}], 1000))
        msg = agent.get(WAIT_S)
        assert json.loads(msg.payload)["seq"] == 1
        deadline = time.monotonic() + WAIT_S
        while "is not reachable; retrying with back-off" not in proc.log():
            assert time.monotonic() < deadline, proc.log_tail()
            time.sleep(0.1)
        ha_broker.start()  # it comes back: the collector finds it
        seen = Seen(ha_broker.url, "wanwitness/_ha/#")
        try:
            seen.wait("state after the broker came", lambda: seen.json(STATE) is not None, 90)
        finally:
            seen.close()
    finally:
        agent.close()
