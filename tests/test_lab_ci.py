"""The outage lab's CI subset (bench/scenarios/ci/, about 3 minutes: the scenarios run at
once, each in its own process and lab), end to end, as root.

Each scenario builds a fresh lab (network namespaces; every address RFC 5737), runs the
collector, the real agent on the virtual board and the peers, plays the timeline and
scores it (bench/lab/runner.py). Asserted: zero records lost or duplicated and no false
outage, and nothing of the lab left behind. Detection errors are printed (run with -s
to see them), not asserted.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
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


def _run(sc: scn.Scenario, workdir: Path, seed: int) -> tuple[dict, str, list[str]]:
    """In a worker process: the scenario's result, its details.json, and the namespaces
    of this process's labs still there afterwards (none, or cleanup failed)."""
    res = run_scenario(sc, workdir=workdir, seed=seed)
    details = (workdir / "details.json").read_text()
    left = [ns for ns in netns_list() if ns.startswith(f"{PREFIX}-{os.getpid()}-")]
    return res, details, left


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every CI scenario at once, each in its own process and lab: they spend their time
    waiting on timelines (40-80 s) and on the agent, so together they take about as long
    as the longest one, not the sum (4 scenarios: ~3 minutes instead of ~10)."""
    root = tmp_path_factory.mktemp("lab-ci")
    with ProcessPoolExecutor(max_workers=len(SCENARIOS), mp_context=mp.get_context("spawn")) as ex:
        yield {sc.name: ex.submit(_run, sc, root / sc.name, SCENARIOS.index(sc) + 1)
               for sc in SCENARIOS}


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_ci_scenario(sc, runs, record_property):
    seed = SCENARIOS.index(sc) + 1
    res, details_text, left = runs[sc.name].result()
    report = describe(res)
    # The seed is in the result and decided the phase (repeat: `run FILE --seed N`).
    assert res["seed"] == seed and f"(seed {seed})" in report
    details = json.loads(details_text)
    assert details["phase_s"] == round(probe_phase(seed, 2.0), 3)
    print("\n" + report)
    record_property("lab_result", json.dumps(res))
    assert res["records_lost"] == 0, report
    assert res["records_duplicated"] == 0, report
    assert res["false"] == 0, report
    assert left == [], f"namespaces left behind: {left}"
