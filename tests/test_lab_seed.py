"""The outage lab's seed: the probe phase and the packets `loss` drops come from it.

Pure functions: no lab, no network, no root needed. That the kernel drops exactly the
seeded packets is tested in a real lab in tests/test_lab_topology.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.lab.__main__ import main
from bench.lab.runner import probe_phase
from bench.lab.topology import LOSS_SLOTS, direction_loss, drop_slots, loss_rules, new_seed

REPO = Path(__file__).resolve().parents[1]


def test_same_seed_same_phase():
    assert probe_phase(7, 2.0) == probe_phase(7, 2.0)
    phases = {probe_phase(seed, 2.0) for seed in range(50)}
    assert len(phases) == 50 and all(0 <= p <= 2.0 for p in phases)
    assert min(phases) < 0.5 and max(phases) > 1.5  # spread over the whole interval


def test_same_seed_same_drop_slots():
    assert drop_slots(7, 30, "in") == drop_slots(7, 30, "in")
    assert drop_slots(7, 30, "in") != drop_slots(8, 30, "in")
    # the two directions drop independently of each other
    assert drop_slots(7, 30, "in") != drop_slots(7, 30, "out")


@pytest.mark.parametrize("pct", [1, 10, 30, 50, 80, 99])
def test_drop_slots_keep_the_loss_fraction(pct):
    for d in ("in", "out"):
        slots = drop_slots(3, pct, d)
        assert len(slots) == round(direction_loss(pct) * LOSS_SLOTS)
        assert slots == sorted(set(slots)) and 0 <= slots[0] and slots[-1] < LOSS_SLOTS


@pytest.mark.parametrize("pct", [10, 30, 80])
def test_round_trips_lost_as_set(pct):
    # One ping stream through the router, counted the way nftables does: each rule's
    # `numgen inc` counts only the packets it sees, so a reply's slot is the number of
    # replies before it, not the request's.
    drop_out, drop_in = set(drop_slots(5, pct, "out")), set(drop_slots(5, pct, "in"))
    n_out = n_in = lost = 0
    pings = 2 * LOSS_SLOTS
    for _ in range(pings):
        request_dropped = n_out % LOSS_SLOTS in drop_out
        n_out += 1
        if request_dropped:
            lost += 1
            continue
        lost += n_in % LOSS_SLOTS in drop_in
        n_in += 1
    assert abs(lost / pings * 100 - pct) < 1.5


def test_drop_slots_do_not_depend_on_the_python_process():
    code = ("from bench.lab.topology import drop_slots\n"
            "print(sum(i * s for i, s in enumerate(drop_slots(11, 30, 'out'))))")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                           env=dict(os.environ, PYTHONHASHSEED=h, PYTHONPATH=str(REPO)),
                           check=True).stdout
            for h in ("1", "2")}
    assert outs == {f"{sum(i * s for i, s in enumerate(drop_slots(11, 30, 'out')))}\n"}


def test_loss_rules():
    sets, rule_in, rule_out = loss_rules(4, 30)
    assert rule_in == f"numgen inc mod {LOSS_SLOTS} @drop_in drop"
    assert rule_out == f"numgen inc mod {LOSS_SLOTS} @drop_out drop"
    assert sets == {"drop_in": drop_slots(4, 30, "in"), "drop_out": drop_slots(4, 30, "out")}
    assert loss_rules(4, 100) == ({}, "drop", "drop")  # no set of every slot


def test_new_seed_is_random():
    assert len({new_seed() for _ in range(20)}) > 1


@pytest.mark.parametrize("bad", ["-1", "x", "1.5", str(1 << 63)])
@pytest.mark.parametrize("cmd", ["run", "suite"])
def test_cli_rejects_a_bad_seed(cmd, bad, capsys):
    target = str(REPO / "bench" / "scenarios" / ("cut-10s.json" if cmd == "run" else "ci"))
    with pytest.raises(SystemExit) as e:
        main([cmd, target, "--seed", bad])
    assert e.value.code == 2
    assert "argument --seed: invalid seed (a whole number >= 0) value" in capsys.readouterr().err
