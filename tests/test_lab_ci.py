"""The outage lab's CI subset (bench/scenarios/ci/, about 5 minutes), end to end, as root.

Each scenario builds a fresh lab (network namespaces; every address RFC 5737), runs the
collector, the real agent on the virtual board and the peers, plays the timeline and
scores it (bench/lab/runner.py). Asserted: zero records lost or duplicated and no false
outage, and nothing of the lab left behind. Detection errors are printed (run with -s
to see them), not asserted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench.lab import scenario as scn
from bench.lab.runner import describe, probe_phase, run_scenario
from bench.lab.topology import PREFIX, netns_list

CI_DIR = Path(__file__).resolve().parents[1] / "bench" / "scenarios" / "ci"
SCENARIOS = scn.load_dir(CI_DIR)


@pytest.fixture(scope="module", autouse=True)
def _root():
    if os.geteuid() != 0:
        pytest.fail("tests/test_lab_ci.py builds network namespaces and must run as root "
                    "(this project's test suite runs as root)")


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_ci_scenario(sc, tmp_path, record_property):
    seed = SCENARIOS.index(sc) + 1
    res = run_scenario(sc, workdir=tmp_path / "run", seed=seed)
    report = describe(res)
    # The seed is in the result and decided the phase (repeat: `run FILE --seed N`).
    assert res["seed"] == seed and f"(seed {seed})" in report
    details = json.loads((tmp_path / "run" / "details.json").read_text())
    assert details["phase_s"] == round(probe_phase(seed, 2.0), 3)
    print("\n" + report)
    record_property("lab_result", json.dumps(res))
    assert res["records_lost"] == 0, report
    assert res["records_duplicated"] == 0, report
    assert res["false"] == 0, report
    mine = [ns for ns in netns_list() if ns.startswith(f"{PREFIX}-{os.getpid()}-")]
    assert mine == [], f"namespaces left behind: {mine}"
