"""The outage lab's scenario files (bench/lab/scenario.py) and scoring (bench/lab/score.py).

Pure functions: no lab, no network, no root needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.lab import scenario as scn
from bench.lab import score
from wanwitness.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = REPO / "bench" / "scenarios"


def sc(timeline, duration=60, **extra):
    return {"name": "t", "duration_s": duration, "timeline": timeline, **extra}


def entry(at, key, to):
    return {"at": at, "set": key, "to": to}


def err(data) -> str:
    with pytest.raises(UserError) as e:
        scn.parse(data, "x.json")
    assert e.value.exit_code == 2
    assert str(e.value).startswith("x.json")
    return str(e.value)


# --- validation: each message ----------------------------------------------------------

def test_valid_scenario_parses():
    s = scn.parse(sc([entry(10, "wan", "down"), entry(20, "wan", "up")],
                     agent={"debounce": {"down": 2}}))
    assert [(e.at, e.key, e.value) for e in s.timeline] == [(10, "wan", "down"), (20, "wan", "up")]
    assert s.agent == {"debounce": {"down": 2}}
    assert s.degraded_pct == 50


def test_not_an_object():
    assert "a scenario is a JSON object, not list" in err([])


def test_unknown_top_level_key():
    assert "unknown key 'timelime'" in err({"name": "t", "duration_s": 5, "timelime": []})


def test_name_required():
    assert '"name" must be a non-empty string' in err({"duration_s": 5, "timeline": []})


@pytest.mark.parametrize("bad", [0, -1, "60", None, True, float("nan")])
def test_duration(bad):
    assert '"duration_s" must be a number of seconds > 0' in err(sc([], duration=bad))


def test_timeline_must_be_a_list():
    assert '"timeline" must be a list' in err({"name": "t", "duration_s": 5, "timeline": {}})


def test_entry_not_an_object():
    assert "timeline entry 0: must be an object" in err(sc([["wan", "down"]]))


def test_entry_unknown_field():
    assert "timeline entry 0 " in err(sc([{"at": 1, "set": "wan", "to": "down", "x": 1}]))
    assert "unknown field 'x'" in err(sc([{"at": 1, "set": "wan", "to": "down", "x": 1}]))


def test_entry_missing_field():
    assert "missing 'to'" in err(sc([{"at": 1, "set": "wan"}]))


def test_unknown_key_names_entry_and_keys():
    m = err(sc([entry(1, "wan", "down"), entry(2, "lan", "down")]))
    assert "timeline entry 1" in m and "unknown key 'lan'" in m and "agent_power" in m


@pytest.mark.parametrize("key,value,want", [
    ("wan", "off", "wan must be set to up or down, not 'off'"),
    ("router", "down", "router must be set to on or off, not 'down'"),
    ("agent_power", "up", "agent_power must be set to on or off"),
    ("dns", True, "dns must be set to up or down"),
    ("wifi", "Down", "wifi must be set to up or down"),
    ("power_led", "off", "power_led must be set to lit or dark, not 'off'"),
    ("broker", 0, "broker must be set to up or down"),
    ("collector", "restart", "collector must be set to up or down"),
    ("loss", 101, "loss must be an integer percentage 0..100, not 101"),
    ("loss", 12.5, "loss must be an integer percentage 0..100"),
    ("loss", "30", "loss must be an integer percentage"),
    ("led_lag_s", -1, "led_lag_s must be a number of seconds 0..600"),
    ("led_lag_s", "2", "led_lag_s must be a number of seconds"),
])
def test_bad_values(key, value, want):
    assert want in err(sc([entry(1, key, value)]))


def test_at_beyond_duration():
    m = err(sc([entry(10, "wan", "down"), entry(61, "wan", "up")]))
    assert "timeline entry 1" in m and "beyond the scenario's duration_s 60 s" in m


def test_at_negative():
    assert '"at" must be a number of seconds >= 0' in err(sc([entry(-1, "wan", "down")]))


def test_at_goes_back():
    m = err(sc([entry(10, "wan", "down"), entry(5, "wan", "up")]))
    assert "timeline entry 1" in m and "goes back in time" in m and "at 10 s" in m


def test_same_at_is_allowed_in_file_order():
    s = scn.parse(sc([entry(10, "router", "off"), entry(10, "wan", "down"),
                      entry(20, "router", "on"), entry(20, "wan", "up")]))
    assert [e.key for e in s.timeline] == ["router", "wan", "router", "wan"]


def test_no_op_entry():
    m = err(sc([entry(10, "wan", "down"), entry(12, "wan", "down"), entry(20, "wan", "up")]))
    assert "timeline entry 1" in m and "wan is already 'down' (since entry 0)" in m
    assert "already 'up' (since the start)" in err(sc([entry(1, "wan", "up")]))


def test_left_faulty_at_the_end():
    m = err(sc([entry(10, "collector", "down")]))
    assert "leaves collector 'down' at the end (since entry 0)" in m and "'up'" in m
    m = err(sc([entry(10, "power_led", "dark")]))
    assert "leaves power_led 'dark' at the end (since entry 0)" in m and "back to 'lit'" in m
    assert "leaves loss 30" in err(sc([entry(10, "loss", 30)]))


def test_led_lag_may_stay():
    scn.parse(sc([entry(0, "led_lag_s", 5)]))


def test_agent_overrides_checked():
    assert '"agent" must be an object' in err(sc([], agent=[]))
    assert "agent.broker: set by the lab" in err(sc([], agent={"broker": {"host": "x"}}))
    assert "agent.colour: not an agent config key" in err(sc([], agent={"colour": 1}))
    assert "agent.probe.anchors: set by the lab" in err(
        sc([], agent={"probe": {"anchors": ["198.51.100.99"]}}))
    m = err(sc([], agent={"degraded_loss_pct": 0}))
    assert "agent.degraded_loss_pct: 0 is out of range 1..100" in m
    assert "agent.debounce.down: expected an integer" in err(
        sc([], agent={"debounce": {"down": "3"}}))


def test_load_names_file(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{"name": "x", "duration_s": 5, "timeline": [}')
    with pytest.raises(UserError, match=r"bad\.json: not valid JSON"):
        scn.load(p)
    with pytest.raises(UserError, match="no such scenario file"):
        scn.load(tmp_path / "missing.json")


def test_load_dir_duplicate_names(tmp_path):
    for name in ("a.json", "b.json"):
        (tmp_path / name).write_text(json.dumps(sc([])))
    with pytest.raises(UserError, match="scenario name 't' is also used by"):
        scn.load_dir(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"no \*\.json scenario files"):
        scn.load_dir(tmp_path / "empty")


def test_shipped_scenarios_are_valid():
    all_ = scn.load_dir(SCENARIOS)  # every file, validated as `python -m bench.lab` would
    assert len(all_) >= 23
    ci = scn.load_dir(SCENARIOS / "ci")
    assert sum(s.duration_s for s in ci) <= 330


def shipped(name):
    s = scn.load(SCENARIOS / f"{name}.json")
    assert s.name == name
    return [(x.cls, x.start_ms / 1000, x.end_ms / 1000) for x in scn.truth(s, s.planned_times_ms())]


def test_shipped_router_and_own_chain_scenarios():
    assert shipped("router-off-5s") == [("local_down", 20, 25)]
    assert shipped("router-off-15s") == [("local_down", 20, 35)]
    assert shipped("router-off-wan-down") == [("isp_down", 10, 20), ("local_down", 20, 35),
                                              ("isp_down", 35, 50)]
    # Our own chain's faults: any outage found in them is a false one.
    assert shipped("wifi-alone-20s") == []
    assert shipped("power-led-dark") == []
    s = scn.load(SCENARIOS / "power-led-dark.json")
    dark = scn.fault_spans(s, s.planned_times_ms(), 1_000_000)
    assert [(f.cls, f.end_ms - f.start_ms) for f in dark] == [("power_led", 180_000)]


def test_shipped_short_and_noisy_scenarios():
    assert shipped("dns-only-5s") == [("dns_down", 20, 25)]
    flaps = shipped("flapping-2s")
    assert len(flaps) == 15 and {e - b for _, b, e in flaps} == {2}
    assert flaps[0][1] == 10 and flaps[-1][2] == 68           # a minute of flapping
    assert {flaps[i + 1][1] - flaps[i][2] for i in range(14)} == {2}
    # The cut is the only truth: 30 % loss stays below degraded_loss_pct (50).
    assert shipped("cut-3s-loss-30") == [("isp_down", 100, 103)]
    s = scn.load(SCENARIOS / "cut-3s-loss-30.json")
    assert [(e.at, e.value) for e in s.timeline if e.key == "loss"] == [(10, 30), (190, 0)]


def test_cli_check_exit_2(tmp_path):
    from bench.lab.__main__ import main
    p = tmp_path / "s.json"
    p.write_text(json.dumps(sc([entry(1, "wan", "sideways")])))
    assert main(["check", str(p)]) == 2
    assert main(["run", str(p)]) == 2  # rejected before any lab is built


# --- ground truth ------------------------------------------------------------------------

def spans(data, threshold=None):
    s = scn.parse(sc(data, duration=200, **({"agent": {"degraded_loss_pct": threshold}}
                                           if threshold else {})))
    return [(x.cls, x.start_ms / 1000, x.end_ms / 1000)
            for x in scn.truth(s, s.planned_times_ms())]


def test_truth_simple_classes():
    assert spans([entry(10, "wan", "down"), entry(20, "wan", "up")]) == [("isp_down", 10, 20)]
    assert spans([entry(10, "dns", "down"), entry(20, "dns", "up")]) == [("dns_down", 10, 20)]
    assert spans([entry(10, "router", "off"), entry(20, "router", "on")]) == [
        ("local_down", 10, 20)]


def test_truth_loss_threshold():
    assert spans([entry(10, "loss", 30), entry(20, "loss", 0)]) == []
    assert spans([entry(10, "loss", 50), entry(20, "loss", 0)]) == [("degraded", 10, 20)]
    assert spans([entry(10, "loss", 30), entry(20, "loss", 0)], threshold=30) == [
        ("degraded", 10, 20)]
    # 80 -> 60 stays one degraded outage; 60 -> 10 ends it
    assert spans([entry(10, "loss", 80), entry(15, "loss", 60), entry(20, "loss", 10),
                  entry(30, "loss", 0)]) == [("degraded", 10, 20)]


def test_truth_overlaps_router_wins():
    assert spans([entry(10, "wan", "down"), entry(20, "router", "off"),
                  entry(30, "router", "on"), entry(40, "wan", "up")]) == [
        ("isp_down", 10, 20), ("local_down", 20, 30), ("isp_down", 30, 40)]
    assert spans([entry(10, "router", "off"), entry(10, "wan", "down"),
                  entry(40, "router", "on"), entry(60, "wan", "up")]) == [
        ("local_down", 10, 40), ("isp_down", 40, 60)]


def test_truth_wan_beats_dns_beats_loss():
    assert spans([entry(10, "loss", 80), entry(20, "dns", "down"), entry(30, "wan", "down"),
                  entry(40, "wan", "up"), entry(50, "dns", "up"), entry(60, "loss", 0)]) == [
        ("degraded", 10, 20), ("dns_down", 20, 30), ("isp_down", 30, 40),
        ("dns_down", 40, 50), ("degraded", 50, 60)]


def test_faults_make_no_truth():
    data = [entry(10, "wifi", "down"), entry(12, "collector", "down"),
            entry(14, "agent_power", "off"), entry(16, "broker", "down"),
            entry(18, "power_led", "dark"),
            entry(20, "broker", "up"), entry(22, "agent_power", "on"),
            entry(24, "collector", "up"), entry(26, "wifi", "up"), entry(28, "power_led", "lit"),
            entry(30, "led_lag_s", 3)]
    assert spans(data) == []
    s = scn.parse(sc(data, duration=200))
    f = scn.fault_spans(s, s.planned_times_ms(), 200_000)
    assert [(x.cls, x.start_ms, x.end_ms) for x in f] == [
        ("wifi", 10_000, 26_000), ("collector", 12_000, 24_000),
        ("agent_power", 14_000, 22_000), ("broker", 16_000, 20_000),
        ("power_led", 18_000, 28_000)]


def test_truth_uses_actual_times():
    s = scn.parse(sc([entry(10, "wan", "down"), entry(20, "wan", "up")]))
    assert [(x.start_ms, x.end_ms) for x in scn.truth(s, [1_000_017, 1_010_019])] == [
        (1_000_017, 1_010_019)]


# --- scoring ours --------------------------------------------------------------------------

T = [{"class": "isp_down", "start_ms": 10_000, "end_ms": 20_000}]


def f(cls, start, end, seq=None):
    return {"class": cls, "start_ms": start, "end_ms": end, "open_seq": seq}


def test_match_errors_and_latency():
    r = score.score_found(T, [f("isp_down", 10_250, 21_500, 9)], {9: 12_000})
    assert r["matched"] == [{"class": "isp_down", "start_err_s": 0.25, "end_err_s": 1.5,
                             "detect_latency_s": 2.0, "pieces": 1}]
    assert r["missed"] == 0 and r["false"] == 0
    assert r["found"][0]["verdict"] == "matched"


def test_missed_and_false():
    r = score.score_found(T, [f("isp_down", 30_000, 31_000)], {})
    assert r["missed"] == 1 and r["false"] == 1 and r["matched"] == []
    assert r["found"][0]["verdict"] == "false"


def test_wrong_class_is_misclassified_not_false():
    r = score.score_found(T, [f("local_down", 12_000, 13_000)], {})
    assert r["missed"] == 1 and r["false"] == 0 and r["misclassified"] == 1
    assert r["found"][0]["verdict"] == "misclassified"


def test_pieces_merge_into_one_match():
    # An agent power cut in the middle: the old boot's outage ends, the new boot opens one.
    r = score.score_found(T, [f("isp_down", 10_100, 14_000, 5), f("isp_down", 17_000, 20_300, 30)],
                          {5: 10_900, 30: 18_000})
    assert r["matched"] == [{"class": "isp_down", "start_err_s": 0.1, "end_err_s": 0.3,
                             "detect_latency_s": 0.9, "pieces": 2}]
    assert r["false"] == 0


def test_open_outage_has_no_end_error():
    r = score.score_found(T, [f("isp_down", 10_100, None, 5)], {})
    assert r["matched"][0]["end_err_s"] is None
    assert r["matched"][0]["detect_latency_s"] is None


def test_each_found_goes_to_its_best_truth():
    truth = [{"class": "isp_down", "start_ms": 0, "end_ms": 4_000},
             {"class": "isp_down", "start_ms": 8_000, "end_ms": 12_000}]
    r = score.score_found(truth, [f("isp_down", 3_000, 9_000), f("isp_down", 9_500, 12_100)], {})
    # the first found overlaps both by 1 s; ties go to the first truth
    assert r["missed"] == 0 and len(r["matched"]) == 2


def test_zero_length_found_inside_truth():
    assert score.overlaps(15_000, 15_000, 10_000, 20_000)
    assert not score.overlaps(20_000, 20_000, 10_000, 20_000)
    assert not score.overlaps(0, 10_000, 10_000, 20_000)
    assert score.overlaps(0, None, 10_000, 20_000)


def test_records_lost():
    assert score.records_lost([1, 2, 3, 5, 6], []) == 1
    assert score.records_lost([1, 2, 6], [(3, 5)]) == 0
    assert score.records_lost([2, 3], []) == 1
    assert score.records_lost([], []) == 0


def test_found_from_outages_json():
    rows = [{"agent": "lab", "class": "isp_down", "start": "2026-11-22T02:06:05.808Z",
             "end": "2026-11-22T02:06:17.184Z", "start_uncertainty_s": 0.02,
             "evidence": {"boot": 1, "open_seq": 9, "close_seq": 20}},
            {"agent": "lab", "class": "unknown", "start": "2026-11-22T02:07:00.000Z",
             "end": None, "start_uncertainty_s": None, "evidence": {}}]
    found = score.found_from_outages(rows)
    assert found == [{"class": "isp_down", "start_ms": 1795313165808, "end_ms": 1795313177184,
                      "open_seq": 9, "boot": 1, "end_reason": None}]


def test_result_shape():
    res = score.result("s", T, [f("isp_down", 10_250, 21_500, 9)], {9: 12_000}, [1, 2, 3, 5],
                       [], 0, {"gatus": [(70_000, 200_000)], "docsight": [(12_000, 25_000)]})
    assert list(res) == ["scenario", "truth", "found", "matched", "missed", "false",
                         "misclassified", "records_lost", "records_duplicated", "peers"]
    assert res["records_lost"] == 1
    assert res["matched"] == [{"class": "isp_down", "start_err_s": 0.25, "end_err_s": 1.5,
                               "detect_latency_s": 2.0}]
    assert res["peers"]["gatus"] == {"missed": 1, "false": 1, "start_err_s_median": None,
                                     "end_err_s_median": None}
    assert res["peers"]["docsight"] == {"missed": 0, "false": 0, "start_err_s_median": 2.0,
                                        "end_err_s_median": 5.0}
    json.dumps(res)


# --- scoring peers ---------------------------------------------------------------------

def test_peer_sees_down_only_merged():
    truth = [{"class": "local_down", "start_ms": 10_000, "end_ms": 40_000},
             {"class": "isp_down", "start_ms": 40_000, "end_ms": 60_000},
             {"class": "dns_down", "start_ms": 100_000, "end_ms": 120_000}]
    assert score.down_spans(truth) == [(10_000, 60_000)]
    p = score.score_peer([(30_000, 90_000)], truth)
    assert p["missed"] == 0 and p["false"] == 0
    assert p["start_err_s_median"] == 20.0 and p["end_err_s_median"] == 30.0
    p = score.score_peer([(105_000, 110_000)], truth)  # DNS is not "down" for a pinger
    assert p["missed"] == 1 and p["false"] == 1


def test_peer_open_outage():
    p = score.score_peer([(12_000, None)], T)
    assert p["missed"] == 0 and p["start_err_s_median"] == 2.0 and p["end_err_s_median"] is None


def test_median_p95():
    assert score.median([]) is None
    assert score.median([3, 1, 2]) == 2
    assert score.median([1, 2, 3, 4]) == 2.5
    assert score.p95(list(range(1, 21))) == 19
    assert score.p95([5]) == 5


def test_summarize_and_table():
    r1 = score.result("a", T, [f("isp_down", 10_250, 21_500, 9)], {9: 12_000}, [1, 2], [], 0,
                      {"gatus": []})
    r2 = score.result("b", [], [f("isp_down", 1_000, 2_000)], {}, [1, 3], [], 1, {"gatus": []})
    r1["sample_gap_max_ms"] = 57
    r2["sample_gap_max_ms"] = 31
    s = score.summarize([r1, r2])
    o = s["overall"]
    assert o["truth"] == 1 and o["recall"] == 1.0 and o["false"] == 1
    assert o["start_median"] == 0.25 and o["end_median"] == 1.5 and o["latency_median"] == 2.0
    assert o["records_lost"] == 1 and o["records_duplicated"] == 1
    assert o["peers"]["gatus"]["missed"] == 1
    text = score.table(s)
    assert "| a | 1 | 100% | 0 |" in text and "**overall**" in text and "gatus" in text
    assert o["sample_gap_max_ms"] == 57 and "| 1 | 1 | 57 |" in text   # lost, dup, LED gap


def test_sample_gap_is_the_largest_gap_on_the_agents_console():
    from bench.lab.runner import sample_gap_max
    log = ("09:00:00 heap alloc=1 peak=2 free=3 memerr=0 gap=21\n"
           "09:00:05 heap alloc=1 peak=2 free=3 memerr=0 gap=57\n"
           "09:00:06 [vboard] boot 2: WDT_RESET\n09:00:07 heap alloc=1 peak=2 free=3 memerr=0 gap=20\n")
    assert sample_gap_max(log) == 57
    assert sample_gap_max("no heap lines") is None


# --- runner helpers (pure parts) ------------------------------------------------------

class FakeLab:
    def __init__(self):
        self.state = {"power": True, "wan": True, "loss": 0, "dns": True}

    def router_state(self):
        return dict(self.state)


def test_led_driver_lag_and_power(tmp_path):
    from bench.lab.runner import LedDriver
    lab = FakeLab()
    d = LedDriver(tmp_path / "control.json", lab, lag_s=2.0)
    d.apply()
    c = json.loads((tmp_path / "control.json").read_text())
    assert c["wifi"] == "up" and c["adc"]["34"]["pattern"] == "flicker"
    assert c["adc"]["35"]["level"] > 50000
    assert c["ifconfig"] == ["192.0.2.20", "255.255.255.0", "192.0.2.1", "198.51.100.53"]
    lab.state["wan"] = False
    d.note(100_000)
    assert d.desired(101_000) == (True, True, True)      # the LED still shows the old WAN
    assert d.desired(102_000) == (False, True, True)     # 2 s later it goes dark
    lab.state.update(power=False, wan=False)
    d.note(103_000)
    assert d.desired(103_000) == (False, False, False)   # off: all dark, no Wi-Fi
    lab.state.update(power=True, wan=True)
    d.note(110_000)
    assert d.desired(111_000) == (False, True, True)     # power LED at once
    assert d.desired(112_000) == (True, True, True)      # internet LED after the lag
    d.set_wifi(False)
    assert d.desired(113_000) == (True, True, False)
    d.set_lag(0)
    assert d.desired(110_000) == (True, True, False)


def test_led_driver_power_led_sensor_fault(tmp_path):
    from bench.lab.runner import LED_DARK, LED_STEADY, LedDriver
    path = tmp_path / "control.json"
    d = LedDriver(path, FakeLab())
    d.set_power_led(False)  # the router works on: internet LED and Wi-Fi untouched
    c = json.loads(path.read_text())
    assert c["adc"]["35"] == LED_DARK and c["adc"]["34"]["pattern"] == "flicker"
    assert c["wifi"] == "up"
    assert [(w, v) for _, w, v in d.changes] == [("internet_led", "on"), ("power_led", "off"),
                                                 ("board_wifi", "on")]
    d.set_power_led(True)
    assert json.loads(path.read_text())["adc"]["35"] == LED_STEADY
    assert d.changes[-1][1:] == ("power_led", "on")


def test_heartbeat_tap_parses_mqtt_publish():
    import socket as so
    import struct as st

    from bench.lab.runner import HeartbeatTap
    tap = HeartbeatTap.__new__(HeartbeatTap)
    tap.src, tap.port, tap.beats, tap._tail = so.inet_aton("192.0.2.20"), 1883, [], b""
    body = (b'{"boot":3,"t":123456,"utc":null,"s":"isp_down","heap":1000,"peak":2000,'
            b'"q":17,"rssi":-55,"safe":false}')
    topic = b"wanwitness/lab/hb"
    mqtt = bytes([0x30, 2 + len(topic) + len(body)]) + st.pack("!H", len(topic)) + topic + body
    tcp = st.pack("!HHIIBBHHH", 40000, 1883, 1, 1, 5 << 4, 0x18, 1000, 0, 0)
    ip = st.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(mqtt), 0, 0, 64, 6, 0,
                 so.inet_aton("192.0.2.20"), so.inet_aton("192.0.2.10"))
    tap.feed(ip + tcp + mqtt, 42)
    assert [(b.recv_ms, b.boot, b.t, b.s, b.q) for b in tap.beats] == [
        (42, 3, 123456, "isp_down", 17)]
    other = ip[:12] + so.inet_aton("192.0.2.99") + ip[16:]
    tap.feed(other + tcp + mqtt, 43)           # another host: ignored
    assert len(tap.beats) == 1
    tap.feed(ip + tcp + mqtt, 44)              # the same segment again: a retransmission
    assert len(tap.beats) == 1
    # The agent writes a PUBLISH's header and topic, then its payload: two segments.
    body2 = body.replace(b'"t":123456', b'"t":128456').replace(b'"q":17', b'"q":0')
    mqtt2 = bytes([0x30, 2 + len(topic) + len(body2)]) + st.pack("!H", len(topic)) + topic + body2
    cut = 4 + len(topic)
    tap.feed(ip + tcp + mqtt2[:cut], 45)
    assert len(tap.beats) == 1
    tap.feed(ip + tcp + mqtt2[cut:], 46)
    assert [(b.recv_ms, b.t, b.q) for b in tap.beats[1:]] == [(46, 128456, 0)]
