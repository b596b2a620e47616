"""Acks and outbox ids end to end: the real agent on the virtual board (MicroPython), a
real collector and broker. An ack never deletes or skips a record the agent has not
written (a forged one published with the collector's own credential included), and a
board whose flash is erased starts a new outbox whose records follow the old ones."""

from __future__ import annotations

import json
import re
import time

import pytest
import sqlalchemy as sa

from testing.brokers import Mosquitto, MqttClient
from testing.demo import query
from wanwitness import store as s
from wanwitness.broker.mosquitto import write_mosquitto_config
from wanwitness.broker.passwords import hash_password
from wanwitness.collector.timeline import parse_time
from wanwitness.demo import AGENT, LED_ACTIVE, LED_DARK, Demo

pytestmark = pytest.mark.integration  # the real agent, collector and broker, for minutes

FORGED = 9223372036854775807  # 2^63 - 1


def stored(demo: Demo) -> list[tuple[int, int, dict]]:
    """(seq, boot, body) of every stored record, in seq order."""
    R = s.records
    return [(r.seq, r.boot, json.loads(r.body)) for r in query(
        demo, sa.select(R.c.seq, R.c.boot, R.c.body).where(R.c.agent == AGENT).order_by(R.c.seq))]


def quarantined(demo: Demo) -> list[str]:
    return [r.reason for r in query(demo, sa.select(s.quarantine.c.reason))]


def agent_log(demo: Demo) -> str:
    return (demo.workdir / "agent.log").read_text(errors="replace")


def wait_for(what: str, ready, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def all_delivered(demo: Demo) -> bool:
    """Every record the agent announced is stored, and the seqs have no hole."""
    written = [int(n) for n in re.findall(r"record (\d+) ", agent_log(demo))]
    seqs = [seq for seq, _, _ in stored(demo)]
    return bool(seqs) and seqs == list(range(1, seqs[-1] + 1)) and seqs[-1] >= max(written)


def blink_the_line(demo: Demo, times: int, pause: float = 6) -> None:
    """The router's LED goes dark and comes back: led and state records."""
    for i in range(times):
        demo.set_control(LED_DARK if i % 2 == 0 else LED_ACTIVE)
        time.sleep(pause)
    demo.set_control(LED_ACTIVE)


@pytest.mark.slow
def test_a_forged_high_ack_deletes_no_record(demo, tmp_path):
    """Published retained on the agent's ack topic with the collector's own credential,
    while the collector is away and the agent holds unacked records: with and without the
    agent's outbox id, and across a reboot of the agent."""
    collector = ("wanwitness-collector", "collector-secret")
    d = demo()
    d.setup()
    files = {p.name: p for p in write_mosquitto_config(
        tmp_path / "mq-conf", [(AGENT, hash_password(d.agent_password))],
        (collector[0], hash_password(collector[1])))}
    m = Mosquitto(tmp_path / "mq", port=d.broker_port, password_file=files["passwd"],
                  acl_file=files["acl"], extra_conf="max_queued_messages 100000\n")
    m.start()
    forger = None
    try:
        d.external = collector
        d.start()
        time.sleep(6)
        ob = query(d, sa.select(s.agents.c.ob).where(s.agents.c.id == AGENT))[0].ob
        assert re.fullmatch(r"[0-9a-f]{8}", ob)
        d.stop_collector()
        blink_the_line(d, 2)
        before = max(int(n) for n in re.findall(r"record (\d+) ", agent_log(d)))
        assert before > max(seq for seq, _, _ in stored(d)), "nothing unacked to lose"

        forger = MqttClient(m.url, "forged-ack", username=collector[0],
                            password=collector[1]).connect()
        topic = f"wanwitness/{AGENT}/ack"
        forger.publish(topic, json.dumps({"seq": FORGED}), retain=True)
        wait_for("the agent to refuse the ack without its outbox id",
                 lambda: f"ack {FORGED} ignored: for outbox (none), not {ob}" in agent_log(d), 30)
        forger.publish(topic, json.dumps({"seq": FORGED, "ob": ob}), retain=True)
        wait_for("the agent to refuse the ack above its last seq",
                 lambda: f"ack {FORGED} ignored: above the last seq" in agent_log(d), 30)
        # A reboot with the forged ack still retained: it comes again and is refused again.
        refusals = agent_log(d).count(f"ack {FORGED} ignored")
        d.stop_agent()
        d.start_agent()
        wait_for("the rebooted agent to refuse the retained ack",
                 lambda: agent_log(d).count(f"ack {FORGED} ignored") > refusals, 60)
        blink_the_line(d, 2)

        d.start_collector()
        wait_for("every record, with contiguous seqs", lambda: all_delivered(d), 120)
        # The records after the reboot (its boot record, the line blinking) are stored,
        # not refused: the forged ack moved no seq.
        rows = stored(d)
        boots = [b for _, _, b in rows if b["k"] == "boot"]
        assert [b["reset"] for b in boots] == ["PWRON_RESET", "PWRON_RESET"]
        assert rows[-1][0] < 10000
        assert quarantined(d) == []
        # The collector's own ack replaced the forged one, and the agent took it: the only
        # acks it refused are the forged ones.
        wait_for("the collector to ack everything", lambda: _acked_all(d), 60)
        time.sleep(2)
        assert set(re.findall(r"ack (\d+) ignored", agent_log(d))) == {str(FORGED)}
    finally:
        if forger is not None:
            forger.disconnect()
        d.stop()
        m.stop()


def _acked_all(demo: Demo) -> bool:
    row = query(demo, sa.select(s.agents.c.ack_seq, s.agents.c.max_seq)
                .where(s.agents.c.id == AGENT))[0]
    return row.ack_seq == row.max_seq


@pytest.mark.slow
def test_a_reflashed_board_continues_after_its_old_records(demo, ww):
    """The board's flash is erased (a new outbox: seq 1, boot 1, a new outbox id) while the
    collector's retained ack of the old outbox is still on the broker."""
    d = demo()
    d.start()
    time.sleep(8)
    first = d.outage(8)
    wait_for("the old flash's records to be acked", lambda: all_delivered(d) and _acked_all(d), 60)
    old_ob = query(d, sa.select(s.agents.c.ob).where(s.agents.c.id == AGENT))[0].ob
    old_max = stored(d)[-1][0]
    old_boot = max(b for _, b, _ in stored(d))

    d.stop_agent()
    d.flash.unlink()  # erased: the virtual board formats a new flash image
    d.start_agent()
    wait_for("the new flash's boot record", lambda: d.counts()[0] >= 2, 60)
    second = d.outage(8)
    wait_for("every record of both flashes", lambda: all_delivered(d) and _acked_all(d), 90)

    assert f"ignored: for outbox {old_ob}, not " in agent_log(d)  # the old retained ack
    rows = stored(d)
    new = [(seq, boot, body) for seq, boot, body in rows if seq > old_max]
    assert new and new[0][2]["k"] == "boot"        # the new flash's seq 1 ...
    assert all(body["ob"] != old_ob and re.fullmatch(r"[0-9a-f]{8}", body["ob"])
               for _, _, body in new)                # ... from the new outbox
    assert {boot for _, boot, _ in new} == {old_boot + 1}  # its boot 1 follows the old boots
    assert quarantined(d) == []

    out = ww("outages", "--db", d.db_url, "--json")
    assert out.returncode == 0, out.stderr
    got = [r for r in json.loads(out.stdout) if r["class"] == "isp_down"]
    assert len(got) == 2, got
    assert got[0]["evidence"]["boot"] == old_boot and got[1]["evidence"]["boot"] == old_boot + 1
    assert got[0]["evidence"]["close_seq"] <= old_max < got[1]["evidence"]["open_seq"]
    for row, truth in zip(got, (first, second), strict=True):
        assert abs(parse_time(row["start"], option="start") - truth.start_ms) <= 3000, (row, truth)
    verify = ww("verify", "--db", d.db_url)
    assert verify.returncode == 0, verify.stdout + verify.stderr
