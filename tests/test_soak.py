"""bench/soak.py: its script of outages, and its arguments (the soak itself runs for
hours in the lab: `python -m bench.soak`, bench/README.md)."""

from __future__ import annotations

import pytest

from bench import soak
from bench.lab import scenario as scn


@pytest.mark.parametrize("minutes", [5, 30, 120, 4320])
def test_the_script_is_a_valid_scenario_with_every_kind_of_event(minutes: int) -> None:
    duration = minutes * 60
    sc = scn.parse({"name": "soak", "duration_s": duration,
                    "timeline": soak.timeline(duration, 300 if minutes > 5 else 60, 1)}, "test")
    keys = [e.key for e in sc.timeline]
    assert keys[0] == "loss" and keys[-1] == "loss"
    if minutes >= 30:
        assert {"wan", "router", "dns", "wifi"} <= set(keys)
    truth = scn.truth(sc, sc.planned_times_ms())
    # the Wi-Fi fault makes no truth; the others one outage each
    line_events = sum(1 for e in sc.timeline if e.key in ("wan", "router", "dns") and e.value in ("down", "off"))
    assert len(truth) == line_events
    assert all(e.at <= duration - 20 for e in sc.timeline)


@pytest.mark.parametrize("args, message", [
    (["--minutes", "2"], "--minutes: at least 5"),
    (["--every-s", "10"], "--every-s: at least 60"),
    (["--loss", "50"], "--loss: 0..20"),
    (["--busy-s", "0.1"], "--busy-s: at least 0.5"),
])
def test_a_wrong_argument_is_one_clear_line(args: list[str], message: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        soak.main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_the_busy_led_switches_between_steady_and_flicker_by_a_seeded_coin(tmp_path) -> None:
    class Lab:
        def router_state(self) -> dict[str, bool]:
            return {"power": True, "wan": True}

    a = soak.BusyLeds(tmp_path / "c.json", Lab(), seed=7, busy_s=3)
    b = soak.BusyLeds(tmp_path / "d.json", Lab(), seed=7, busy_s=3)
    slots = [a.busy(t * 3000) for t in range(200)]
    assert slots == [b.busy(t * 3000) for t in range(200)]
    assert 60 < sum(slots) < 140
    steady = a.control_doc(True, True, True, False)["adc"]["34"]
    flicker = a.control_doc(True, True, True, True)["adc"]["34"]
    dark = a.control_doc(False, True, True, False)["adc"]["34"]
    assert "level" in steady and steady["level"] > 40000
    assert flicker.get("pattern") == "flicker"
    assert dark["level"] < 5000
