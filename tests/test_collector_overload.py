"""A collector whose store falls behind the agents: paho's network thread never waits on
the queue (it also sends the keepalive PINGREQs and the PUBACKs of what was committed),
heartbeats beyond the queue's limit are dropped and counted, records are not.

Before the fix the queue was bounded and paho's thread blocked in `put` once it was
full of heartbeats: a record published after them never reached the queue, and after
1.5 x keepalive the broker dropped the collector and redelivered everything (found by
bench/scale.py with a backlog of 100 records per agent)."""

from __future__ import annotations

import json
import threading
import time

import sqlalchemy as sa

from testing.brokers import MqttClient
from testing.records import T0
from wanwitness import store as s
from wanwitness.collector.agents import add_agent
from wanwitness.collector.loop import Collector
from wanwitness.store import open_store


def wait_for(check, timeout: float = 20) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_a_store_that_falls_behind_sheds_heartbeats_and_keeps_records(mosquitto, tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'w.db'}")
    add_agent(store, "busy")
    collector = Collector(store, mosquitto.url, client_id="overload-test", batch_max=25)
    assert collector.qos0_max == 100
    collector.connect()
    assert collector.wait_connected(10)
    agent = MqttClient(mosquitto.url, client_id="busy").connect()
    # The writer is not running (the store "falls behind"): 300 heartbeats fill the queue...
    for i in range(300):
        agent.publish("wanwitness/busy/hb", json.dumps({"boot": 1, "t": 1000 + i}), qos=0)
    assert wait_for(lambda: collector.hb_dropped >= 200), collector.hb_dropped
    # ...and a record still reaches it: paho's thread was not left waiting on a full queue.
    rec = {"v": 1, "agent": "busy", "boot": 1,
           "recs": [{"seq": 1, "t": 5000, "utc": T0, "k": "boot", "reset": "PWRON_RESET"}]}
    agent.publish("wanwitness/busy/rec", json.dumps(rec), qos=1)
    assert wait_for(lambda: collector._queue.qsize() >= 101), collector._queue.qsize()
    assert collector.hb_dropped == 200
    # The writer catches up: the record is stored and acked, the heartbeats it kept too.
    agent.subscribe("wanwitness/busy/ack", qos=1)
    runner = threading.Thread(target=collector.run, daemon=True)
    runner.start()
    try:
        ack = agent.get_until("wanwitness/busy/ack", 20)
        assert json.loads(ack[-1].payload)["seq"] == 1
        with store.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(s.records)).scalar() == 1
    finally:
        collector.stop()
        runner.join(10)
        collector.close()
        agent.close()
        store.dispose()
