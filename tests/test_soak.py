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
    (["--ticks-start", str(1 << 30)], "--ticks-start: 0..2**30-1 ms, or -1"),
    (["--meminfo-s", "0"], "--meminfo-s: at least 1"),
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


def test_the_figures_add_up_memory_errors_over_boots_and_take_the_live_peak() -> None:
    log = "\n".join([
        "09:00:00.000 [vboard] boot 1: PWRON_RESET, pid 1",
        "09:00:01.000 heap alloc=45000 peak=42000 free=11000 memerr=0",
        "09:00:02.000 GC: total: 64000, used: 49000, free: 15000",
        "09:00:02.000  No. of 1-blocks: 700, 2-blocks: 100, max blk sz: 257, max free sz: 300",
        "09:00:05.000 record lost: out of memory: led (not worth the rest of the reserve)",
        "09:00:05.500 loop stall 73 ms: 2 flash write(s)/commit(s), 1 MemoryError(s)",
        "09:00:06.000 heap alloc=60000 peak=61000 free=4000 memerr=7 gap=73",
        "09:00:07.000 [vboard] boot 2: WDT_RESET, pid 2",
        "09:00:08.000 heap alloc=44000 peak=43000 free=20000 memerr=2",
        "09:00:09.000 GC: total: 64000, used: 51500, free: 12500",
        "09:00:09.000  No. of 1-blocks: 700, 2-blocks: 100, max blk sz: 257, max free sz: 120",
        "09:00:09.500 record lost: out of memory: state (the reserve is full)",
        "09:00:09.600 record lost: out of memory: led (not worth the rest of the reserve)",
        "09:00:10.000 heap alloc=50000 peak=52000 free=14000 memerr=2 gap=31",
    ])
    f = soak.agent_figures(log, 16)
    assert f["resets"] == 1 and f["reset_causes"] == ["WDT_RESET"]
    assert f["memory_errors_survived"] == 7 + 2
    assert f["live_max"] == 51500
    assert f["largest_free_block_min"] == 120 * 16
    assert f["peak"] == 61000 and f["free_min"] == 4000
    assert f["sample_gap_max_ms"] == 73
    assert f["stalls"] == 1
    assert f["records_lost_by_kind"] == {"led": 2, "state": 1}
