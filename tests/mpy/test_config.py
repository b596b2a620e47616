# agent/config.py under MicroPython: bad values fall back to defaults and are named.
import json
import os

import config
from mpyunit import eq, main

GOOD = {
    "id": "kitchen", "prefix": "wanwitness",
    "wifi": {"ssid": "home", "password": "pw"},
    "broker": {"host": "192.0.2.5", "port": 1883, "user": "kitchen", "password": "x", "tls": False},
    "hb_s": 30,
    "probe": {"interval_s": 2, "gateway": "192.0.2.1", "anchors": ["198.51.100.7"],
              "dns": {"server": "198.51.100.53", "name": "example.com"}},
    "debounce": {"down": 3, "up": 2},
    "leds": [{"pin": 34, "role": "internet"}, {"pin": 35, "role": "power"}],
}


def test_good_config_has_no_problems():
    c = config.parse(GOOD)
    eq(c.problems, [])
    eq(c.get("broker.host"), "192.0.2.5")
    eq(c.get("probe.anchors"), ["198.51.100.7"])
    eq(c.get("leds")[0], {"pin": 34, "role": "internet", "down_when_off": True, "lag_ms": 0})
    eq(c.get("leds")[1]["down_when_off"], False)


def test_bad_values_are_named_and_replaced_by_defaults():
    raw = json.loads(json.dumps(GOOD))
    raw["broker"]["port"] = "1883"
    raw["hb_s"] = 1
    raw["probe"]["anchors"] = []
    raw["leds"][0]["role"] = "disco"
    raw["debounce"] = 3
    c = config.parse(raw)
    keys = [k for k, _ in c.problems]
    eq(keys, ["hb_s", "broker.port", "probe.anchors", "debounce", "leds[0].role"])
    eq(c.get("broker.port"), 1883)
    eq(c.get("hb_s"), 30)
    eq(c.get("debounce.down"), 3)
    eq(len(c.get("leds")), 1)
    eq(c.problems[0][1], "1 is out of range 5..3600")


def test_broker_others_to_fail_over_to():
    raw = json.loads(json.dumps(GOOD))
    eq(config.parse(raw).get("broker.others"), ())
    raw["broker"]["others"] = [{"host": "192.0.2.6"}, {"host": "b3.example.net", "port": 8883},
                               {"host": ""}]
    c = config.parse(raw)
    eq(c.get("broker.others"), (("192.0.2.6", 1883), ("b3.example.net", 8883)))
    eq([k for k, _ in c.problems], ["broker.others[2]"])
    raw["broker"]["others"] = [{"host": "x", "port": 70000}, "y"]
    c = config.parse(raw)
    eq(c.get("broker.others"), ())
    eq([k for k, _ in c.problems], ["broker.others[0]", "broker.others[1]"])
    raw["broker"]["others"] = "192.0.2.6"
    c = config.parse(raw)
    eq(c.get("broker.others"), ())
    eq([k for k, _ in c.problems], ["broker.others"])


def test_watch_interval_is_off_or_at_least_200_ms():
    for v, want, problem in ((0, 0, None), (750, 750, None), (100, 500, "100 is out of range 200..60000"),
                             (True, 500, "expected an integer, got a boolean"),
                             (False, 500, "expected an integer, got a boolean")):
        raw = json.loads(json.dumps(GOOD))
        raw["probe"]["watch_ms"] = v
        c = config.parse(raw)
        eq(c.get("probe.watch_ms"), want, v)
        eq([m for k, m in c.problems if k == "probe.watch_ms"], [problem] if problem else [], v)
    eq(config.parse(GOOD).get("probe.watch_ms"), 500)


def test_missing_and_broken_files_give_defaults():
    c = config.load("/nonexistent/config.json")
    eq(c.problems[0][0], "config.json")
    eq(c.get("probe.interval_s"), 2)
    with open("/tmp/ww_cfg_broken.json", "w") as f:
        f.write("{not json")
    c = config.load("/tmp/ww_cfg_broken.json")
    eq(c.problems, [("config.json", "not valid JSON: running on defaults")])
    os.remove("/tmp/ww_cfg_broken.json")


def test_not_an_object_and_unknown_keys():
    eq(config.parse([1]).problems[0][0], "config.json")
    c = config.parse(dict(GOOD, colour="red"))
    eq(c.problems, [("colour", "unknown key (ignored)")])


def test_missing_id_and_broker_are_reported():
    c = config.parse({})
    eq([k for k, _ in c.problems], ["id", "broker.host"])


main(globals())
