"""From a bare board to an outage at the collector, in the order a user goes.

The tests share one board and run in file order (each step needs the one before).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from wanwitness.boards.link import BoardLink

from .conftest import AGENT, BRIGHT, DARK, Rig


def wanwitness(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wanwitness", *args], capture_output=True,
                          text=True, timeout=timeout)


def console(rig: Rig, seconds: float) -> str:
    return wanwitness("console", "--port", rig.port, "--seconds", str(seconds)).stdout


def test_deploy_copies_the_agent_and_verifies_it(rig: Rig):
    r = wanwitness("deploy", "--port", rig.port, "--agent", AGENT, "--config", str(rig.config_path))
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert re.search(r"(\d+) file\(s\) copied, 0 unchanged, all \1 verified by SHA-256", out), out
    for name in ("main.py", "boot.py", "config.json", "app.mpy", "outbox.mpy"):
        assert f"copied {name} " in out, out
    print(out)


def test_deploy_refuses_a_wrong_profile_and_pins_that_do_not_fit(rig: Rig, tmp_path):
    from wanwitness.boards import profiles as boards
    with BoardLink(rig.port) as link:
        link.enter()
        chip = link.info().chip
    other = next(p for p in boards.all_profiles() if p.chip != chip)
    r = wanwitness("deploy", "--port", rig.port, "--agent", AGENT, "--config",
                   str(rig.config_path), "--board", other.name)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"--board {other.name} is for an {other.chip.upper()}" in r.stderr, r.stderr
    mine = next(p for p in boards.all_profiles() if p.chip == chip)
    conf = json.loads(rig.config_path.read_text())
    conf["leds"] = [{"pin": mine.adc2_pins[0], "role": "internet"}]  # ADC2: dead with Wi-Fi on
    bad = tmp_path / "bad.config.json"
    bad.write_text(json.dumps(conf))
    r = wanwitness("deploy", "--port", rig.port, "--agent", AGENT, "--config", str(bad))
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"does not fit board {mine.name}" in r.stderr and "ADC2" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_board_boots_the_agent_and_it_reaches_the_collector(rig: Rig):
    boots = rig.wait_records(lambda r: r["k"] == "boot", 60, "boot record")
    assert boots[-1]["reset"] in ("HARD_RESET", "SOFT_RESET", "PWRON_RESET"), boots
    assert boots[-1]["safe"] is False


def test_online_at_the_broker(rig: Rig):
    c = rig.watch("status")
    seen = []
    try:  # retained first (may still be the last will, `offline`, of a board just reset)
        deadline = time.monotonic() + 60
        while not seen or seen[-1] != b"online":
            seen.append(c.messages.get(timeout=max(0.1, deadline - time.monotonic())).payload)
    finally:
        c.close()
    assert seen[-1] == b"online", seen


def test_free_heap_after_boot_is_reported(rig: Rig):
    c = rig.watch("hb")
    try:
        hb = json.loads(c.messages.get(timeout=30).payload)
    finally:
        c.close()
    assert hb["heap"] > 0 and hb["peak"] > 0, hb
    print(f"free heap after boot: {hb['heap']} bytes (peak use {hb['peak']})")


def test_each_led_channel_responds(rig: Rig):
    if not rig.leds:
        pytest.fail("no LED sensor pins: give --leds 34,35 for a real board")
    for i, pin in enumerate(rig.leds):
        role = ["internet", "power", "wan", "lan"][i]
        before = len([r for r in rig.records("led") if r["ch"] == role])
        if rig.virtual:
            rig.light({p: (DARK if p == pin else BRIGHT) for p in rig.leds})
        else:
            rig.ask(f"cover the sensor on GPIO {pin} ({role} LED) for 10 s, then uncover it")
        rig.wait_records(lambda r: r["k"] == "led" and r["ch"] == role and r["st"] == "off",
                         90, f"'off' from the {role} LED (GPIO {pin})")
        if rig.virtual:
            rig.light({p: BRIGHT for p in rig.leds})
        recs = rig.wait_records(lambda r: r["k"] == "led" and r["ch"] == role and r["st"] == "on",
                                90, f"'on' again from the {role} LED (GPIO {pin})")
        assert len([r for r in rig.records("led") if r["ch"] == role]) >= before + 2, recs


def test_calibrate_measures_the_levels_and_writes_them(rig: Rig):
    if rig.virtual:  # the internet LED blinks between dark and bright while we watch
        control = {"wifi": "up", "adc": {str(rig.leds[0]): {"pattern": "blink", "on": BRIGHT,
                                                             "off": DARK, "period_ms": 1000},
                                          **{str(p): {"level": BRIGHT} for p in rig.leds[1:]}}}
        tmp = rig.control.with_name("control.tmp")
        tmp.write_text(json.dumps(control))
        tmp.replace(rig.control)
    else:
        rig.ask(f"during the next 20 s cover and uncover the sensor on GPIO {rig.leds[0]} a few times")
    r = wanwitness("calibrate", "--port", rig.port, "--config", str(rig.config_path),
                   "--seconds", "6" if rig.virtual else "20", "--yes")
    if rig.virtual:
        rig.light({p: BRIGHT for p in rig.leds})
    assert r.returncode == 0, r.stdout + r.stderr
    print(r.stdout)
    levels = json.loads(rig.config_path.read_text())["leds"][0]["levels"]
    if rig.virtual:
        assert abs(levels[0] - DARK) < 1500 and abs(levels[1] - BRIGHT) < 1500, levels
    else:
        assert levels[1] - levels[0] >= 2048, levels
    assert "copied config.json" in r.stdout  # and the board got it
    rig.wait_records(lambda r: r["k"] == "boot" and r["seq"] > 0, 60, "a boot after calibrating")


def test_a_record_written_before_a_reset_is_delivered_after_it(rig: Rig):
    rig.collector.stop()
    rig.mosquitto.stop()                   # the broker is gone: records stay in the outbox
    time.sleep(2)
    stored = {r["seq"] for r in rig.records()}
    if rig.virtual:
        rig.light({rig.leds[0]: DARK, **{p: BRIGHT for p in rig.leds[1:]}})
    else:
        rig.ask(f"cover the sensor on GPIO {rig.leds[0]} for 10 s, then uncover it")
    out = console(rig, 12)
    written = [int(n) for n in re.findall(r"record (\d+) ", out)]
    assert written, f"the board wrote no record while the broker was down:\n{out}"
    assert not set(written) & stored
    with BoardLink(rig.port) as link:     # a reset now: Ctrl-C, then machine.reset()
        link.enter()
        link.reset()
    if rig.virtual:
        rig.light({p: BRIGHT for p in rig.leds})
    rig.mosquitto.start()
    rig.collector.start()
    rig.wait_records(lambda r: r["seq"] == max(written), 90,
                     f"record {max(written)} (written before the reset)")
    seqs = [r["seq"] for r in rig.records()]
    assert seqs == list(range(1, seqs[-1] + 1)), "a gap in the delivered records"


def test_the_watchdog_is_running(rig: Rig):
    """mpremote (the stock tool, `resume`: no soft reset) interrupts the agent with Ctrl-C
    and lists the flash; at the REPL nothing feeds the watchdog: the board must reset
    itself within wdt_s and say WDT_RESET."""
    wdt_s = json.loads(rig.config_path.read_text())["wdt_s"]
    last = max(r["seq"] for r in rig.records())
    r = subprocess.run([sys.executable, "-m", "mpremote", "connect", rig.port, "resume", "exec",
                        "import os, json; print(sorted(os.listdir())); "
                        "print(json.load(open('wanwitness.json'))['agent'])"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "'main.py'" in r.stdout and "'config.json'" in r.stdout and AGENT in r.stdout, r.stdout
    # (a boot record of the reset before may still be on its way: look for this one)
    rig.wait_records(lambda r: r["k"] == "boot" and r["seq"] > last and r["reset"] == "WDT_RESET",
                     wdt_s + 60, "a boot record saying WDT_RESET (the board did not reset "
                     "itself: is the watchdog running?)")


def test_an_outage_reaches_wanwitness_outages(rig: Rig):
    rig.wait_records(lambda r: r["k"] == "state" and r.get("s") == "up", 60, "line up")
    t_down = time.time()
    if rig.virtual:
        rig.light({rig.leds[0]: DARK, **{p: BRIGHT for p in rig.leds[1:]}})
        rig.internet(False)
        time.sleep(15)
        t_up = time.time()
        rig.light({p: BRIGHT for p in rig.leds})
        rig.internet(True)
    else:
        rig.ask("unplug the router's WAN (DSL/fibre/cable) connection now for 30 s, then plug it back")
        t_up = None
    down = rig.wait_records(lambda r: r["k"] == "state" and r.get("s") == "isp_down", 120,
                            "an isp_down state")
    rig.wait_records(lambda r: r["k"] == "state" and r.get("s") == "up"
                     and r["seq"] > down[-1]["seq"], 180, "the line coming back")
    r = wanwitness("outages", "--json", "--db", rig.db_url)
    assert r.returncode == 0, r.stderr
    outages = [o for o in json.loads(r.stdout) if o["class"] == "isp_down"]
    assert outages, r.stdout
    print(json.dumps(outages[-1], indent=1))
    if rig.virtual:
        from datetime import datetime
        o = outages[-1]
        start = datetime.fromisoformat(o["start"].replace("Z", "+00:00")).timestamp()
        end = datetime.fromisoformat(o["end"].replace("Z", "+00:00")).timestamp()
        assert abs(start - t_down) < 3 and abs(end - t_up) < 3, (o, t_down, t_up)
