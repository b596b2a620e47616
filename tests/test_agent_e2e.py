"""The real agent on the virtual board, end to end with a real collector and broker.

Everything runs on loopback: the "internet" is TCP listeners on 127.0.0.1 that the
agent probes (wanwitness/demo.py), the router's LED is the virtual board's ADC.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from testing.brokers import Mosquitto
from testing.demo import query
from wanwitness import store as s
from wanwitness.broker.mosquitto import write_mosquitto_config
from wanwitness.broker.passwords import hash_password
from wanwitness.demo import AGENT, LED_ACTIVE, LED_DARK, Demo

INTERVAL_MS = 2000  # the agent's probe interval in the demo


def stored_seqs(demo: Demo) -> list[int]:
    R = s.records
    return [r.seq for r in query(demo, sa.select(R.c.seq).where(R.c.agent == AGENT).order_by(R.c.seq))]


def records(demo: Demo, kind: str) -> list[dict]:
    R = s.records
    return [json.loads(r.body) for r in query(
        demo, sa.select(R.c.body).where(R.c.agent == AGENT, R.c.k == kind).order_by(R.c.seq))]


def test_an_outage_driven_through_the_virtual_board_is_recorded_as_isp_down(demo, tmp_path):
    # A bad config value on the way: the agent names it and runs on the default.
    d = demo(extra_config={"debounce": {"down": "three", "up": 2}})
    d.start()
    time.sleep(10)  # LED calibration and a few good rounds
    truth = d.outage(15)
    # What a user runs: `wanwitness outages --json`.
    out = subprocess.run([sys.executable, "-m", "wanwitness", "outages", "--db", d.db_url,
                          "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [r for r in json.loads(out.stdout) if r["class"] != "unknown"]
    assert len(rows) == 1, rows
    got = rows[0]
    assert got["class"] == "isp_down" and got["agent"] == AGENT
    from wanwitness.collector.timeline import parse_time
    start, end = parse_time(got["start"], option="start"), parse_time(got["end"], option="end")
    assert abs(start - truth.start_ms) <= INTERVAL_MS, (got, truth)
    assert abs(end - truth.end_ms) <= INTERVAL_MS, (got, truth)
    # Traceable: the outage names the ledger records that opened and closed it.
    assert got["evidence"]["open_seq"] in stored_seqs(d)
    assert got["evidence"]["close_seq"] in stored_seqs(d)
    errors = records(d, "error")
    assert [(e["key"], e["msg"]) for e in errors] == [
        ("debounce.down", "config: expected an integer, got a string")]
    # The boot record names the board as MicroPython does (here the unix port's machine).
    hw = records(d, "boot")[0]["hw"]
    assert isinstance(hw, str) and 0 < len(hw) <= 64, hw
    # The heartbeats' round-trip summaries (the latency charts): the anchors lost the
    # probes of the outage and answered the others, with times.
    L = s.latency
    lat = query(d, sa.select(L.c.target, sa.func.sum(L.c.sent), sa.func.sum(L.c.lost),
                             sa.func.min(L.c.rtt_min), sa.func.max(L.c.rtt_max))
                .where(L.c.agent == AGENT).group_by(L.c.target))
    anchors = [r for r in lat if not r[0].startswith(("gw:", "dns:"))]
    assert anchors and all(sent > lost > 0 and 0 <= lo <= hi for _, sent, lost, lo, hi in anchors), lat


def test_a_hung_task_is_reset_by_the_watchdog_and_a_crash_loop_ends_in_safe_mode(demo):
    d = demo(wdt_s=5)
    d.start()
    d.set_control({"pattern": "hang"})  # the LED sensor's ADC never answers again
    d.wait_records(lambda n_boot, _n: n_boot >= 2, 90, "second boot record")
    boots = records(d, "boot")
    assert [b["reset"] for b in boots[:2]] == ["PWRON_RESET", "WDT_RESET"]
    assert "hangs" in (d.workdir / "agent.log").read_text()
    # The sensor stays hung: every boot hangs again. The third crash within ten
    # minutes starts safe mode, which does not sample, so the board stays up.
    d.wait_records(lambda n_boot, _n: n_boot >= 4, 120, "fourth boot record")
    time.sleep(12)
    boots = records(d, "boot")
    assert [b["reset"] for b in boots] == ["PWRON_RESET"] + ["WDT_RESET"] * 3, boots
    assert [b["safe"] for b in boots] == [False, False, False, True]
    told = [e["msg"] for e in records(d, "error") if "watchdog" in e["msg"]]
    assert len(told) == 3, told  # each boot says why the one before it ended


@pytest.mark.slow
def test_broker_down_for_60_s_while_the_agent_keeps_recording(demo, tmp_path):
    """A real Mosquitto killed for 60 s: every record the agent wrote meanwhile arrives."""
    collector = ("wanwitness-collector", "collector-secret")
    d = demo()
    d.setup()  # registers the agent: its password is needed for Mosquitto's files
    files = {p.name: p for p in write_mosquitto_config(
        tmp_path / "mq-conf", [(AGENT, hash_password(d.agent_password))],
        (collector[0], hash_password(collector[1])))}
    m = Mosquitto(tmp_path / "mq", port=d.broker_port, password_file=files["passwd"],
                  acl_file=files["acl"], extra_conf="max_queued_messages 100000\n")
    m.start()
    try:
        d.external = collector
        d.start()
        time.sleep(8)
        before = max(stored_seqs(d))
        m.kill()
        # The agent keeps recording: the LED goes dark and comes back, several times.
        for i in range(6):
            d.set_control(LED_DARK if i % 2 == 0 else LED_ACTIVE)
            time.sleep(10)
        d.set_control(LED_ACTIVE)
        m.start()
        log = (d.workdir / "agent.log").read_text()
        written = [int(n) for n in re.findall(r"record (\d+) ", log)]
        assert max(written) > before, "the agent wrote nothing while the broker was down"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            seqs = stored_seqs(d)
            if seqs and seqs[-1] >= max(written) and seqs == list(range(1, seqs[-1] + 1)):
                break
            time.sleep(1)
        seqs = stored_seqs(d)
        assert seqs == list(range(1, seqs[-1] + 1)), "a seq is missing"
        assert set(written) <= set(seqs)
        during = [r for r in records(d, "led") if r["seq"] > before]
        assert len(during) >= 3, "LED changes during the outage were not delivered"
    finally:
        d.stop()
        m.stop()


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line names `text` (the demo's directory)."""
    found = []
    for proc_dir in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(proc_dir.name))
    return found


def test_sigterm_to_the_demo_alone_stops_everything_it_started(tmp_path):
    """A service manager or a terminal closing sends SIGTERM to the demo process only:
    its collector, agent runner and micropython must go with it."""
    workdir = tmp_path / "demo"
    proc = subprocess.Popen([sys.executable, "-m", "wanwitness", "demo", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "agent online" in line:
            break
    else:
        pytest.fail(f"the demo never got its agent online (exit {proc.wait()})")
    children = [pid for pid in _processes_mentioning(str(workdir)) if pid != proc.pid]
    assert len(children) >= 2, children          # the collector and the agent runner at least
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    deadline = time.monotonic() + 10
    while _processes_mentioning(str(workdir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_mentioning(str(workdir)) == []
    log = (workdir / "collector.log").read_text()
    assert "stopped:" in log                       # stopped in order, not killed
    # The demo waited on the collector's log, not by connecting to its port (the broker
    # warned about a client that left before CONNECT): no warning until the agent came.
    start = log[:log.index("agent demo")]
    assert "WARNING" not in start and "ERROR" not in start, start
