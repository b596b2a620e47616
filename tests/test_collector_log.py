"""What the collector's log tells the person running it: agents coming online and going
offline, and a one-line summary while it works (a real collector process, its embedded
broker, an agent speaking MQTT)."""

from __future__ import annotations

import re
import socket
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from testing.collector import CollectorProcess
from wanwitness.collector.agents import add_agent
from wanwitness.loopback import free_port
from wanwitness.store import open_store

RECORD = b'{"v":1,"agent":"kitchen","boot":1,"t":5,"recs":[{"seq":1,"t":5,"utc":null,"k":"stats"}]}'


def wait_for(predicate, timeout: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_agents_online_offline_and_a_summary_are_logged(tmp_path):
    db = f"sqlite:///{tmp_path / 'w.db'}"
    st = open_store(db)
    password = add_agent(st, "kitchen")
    st.dispose()
    port = free_port()
    col = CollectorProcess(tmp_path / "col", db, listen=("127.0.0.1", port),
                           collector_conf="summary_s = 1\n")
    col.start()
    try:
        agent = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="ww-kitchen", protocol=mqtt.MQTTv311)
        agent.username_pw_set("kitchen", password)
        agent.will_set("wanwitness/kitchen/status", "offline", qos=1, retain=True)
        agent.connect("127.0.0.1", port)
        agent.loop_start()
        agent.publish("wanwitness/kitchen/status", "online", qos=1, retain=True).wait_for_publish(10)
        agent.publish("wanwitness/kitchen/rec", RECORD, qos=1).wait_for_publish(10)
        wait_for(lambda: "agent kitchen online" in col.log(), what="the online line")
        wait_for(lambda: "agents online: kitchen" in col.log(), what="a summary naming it")
        # The board loses power: its TCP connection just ends, the broker sends its will.
        agent.loop_stop()
        agent.socket().shutdown(socket.SHUT_RDWR)
        agent.socket().close()
        wait_for(lambda: "agent kitchen offline" in col.log(), what="the offline line")
        wait_for(lambda: "agents online: none" in col.log(), what="a summary after the will")
    finally:
        col.stop()
    log = col.log()
    summaries = re.findall(r"last 1 s: (\d+) record\(s\) stored, (\d+) quarantined; broker (\w+); "
                           r"agents online: (.*)", log)
    assert summaries, log
    assert sum(int(n) for n, _q, _b, _a in summaries) == 1       # the one record, counted once
    assert all(q == "0" and b == "connected" for _n, q, b, _a in summaries)
    assert log.index("agent kitchen online") < log.index("agent kitchen offline")
