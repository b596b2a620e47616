"""Notifications from `wanwitness collect` itself: the hook after each commit, and the queue
surviving the process (stopped between an outage's end and the send, while the receiver
was away: exactly one message once both are back)."""

from __future__ import annotations

import time

from testing.brokers import MqttClient, free_port
from testing.collector import CollectorProcess
from tests.test_homeassistant import _agent_batch, _state
from tests.test_notify import Webhook, wait_for
from wanwitness.collector.agents import add_agent
from wanwitness.store import open_store


def test_collector_sends_line_back_once_across_a_restart(tmp_path, sqlite_url):
    store = open_store(sqlite_url)
    password = add_agent(store, "kitchen")
    store.dispose()
    hook = Webhook()  # not listening yet: the internet is away
    proc = CollectorProcess(tmp_path / "collector", sqlite_url, listen=("127.0.0.1", free_port()),
                            collector_conf=f'[notify]\nurls = ["{hook.url()}"]\nmin_duration_s = 0\n'
                                           'retry_min_s = 1\nretry_max_s = 1\nsilent_after_s = 0\n')
    proc.start()
    agent = MqttClient(f"mqtt://127.0.0.1:{proc.port}", "ww-kitchen", username="kitchen", password=password)
    try:
        agent.connect()
        agent.subscribe("wanwitness/kitchen/ack")
        agent.publish("wanwitness/kitchen/rec", _agent_batch(
            [{"seq": 1, "t": 1000, "utc": None, "k": "boot", "reset": "PWRON_RESET"},
             _state(2, 1000, "isp_down")], 1000))
        agent.publish("wanwitness/kitchen/rec", _agent_batch([_state(3, 4000, "up")], 4000))
        wait_for("a failed send in the log", lambda: "line_back:kitchen:2 to json://127.0.0.1" in proc.log())
        assert proc.stop() == 0
        hook.start()
        proc.start()
        wait_for("the message", lambda: hook.got)
        time.sleep(3)  # rounds go on: nothing more
        # (how long: as the clock map of two messages a moment apart makes it)
        assert len(hook.got) == 1 and hook.got[0][1]["title"].startswith("kitchen: line back after ")
        assert "notifications to json://127.0.0.1" in proc.log()
    finally:
        agent.close()
        proc.stop()
        hook.stop()
