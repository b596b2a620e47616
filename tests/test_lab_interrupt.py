"""A whole `python -m bench.lab suite` run, interrupted mid-scenario, leaves nothing:
no namespace, no nftables rule, no process (collector, board, peers, DNS), no work
directory. Ctrl-C and SIGTERM clean up at once; after a SIGKILL the next run does.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.lab.topology import PREFIX, netns_list

from .test_lab_topology import alive, root_snapshot, sigint_as_in_a_terminal

ROOT = Path(__file__).resolve().parents[1]
CI_DIR = ROOT / "bench" / "scenarios" / "ci"


@pytest.fixture(scope="module", autouse=True)
def _root():
    if os.geteuid() != 0:
        pytest.fail("the outage lab builds network namespaces and must run as root")


def descendants(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        p, pp = (int(x) for x in line.split())
        children.setdefault(pp, []).append(p)
    found, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in found:
                found.add(c)
                todo.append(c)
    return found


def start_suite(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / "suite.log"
    env = dict(os.environ, TMPDIR=str(tmp_path))  # the lab's work directories go here
    proc = subprocess.Popen([sys.executable, "-m", "bench.lab", "suite", str(CI_DIR)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(log, "wb"), start_new_session=True,
                            preexec_fn=sigint_as_in_a_terminal)
    deadline = time.monotonic() + 120
    while "timeline starts" not in log.read_text(errors="replace"):
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the suite did not get to a timeline:\n" + log.read_text()
        time.sleep(0.2)
    time.sleep(3)  # in the middle of a scenario: agent, collector, peers all running
    return proc, log


def assert_nothing_left(pid: int, before: tuple, kids: set[int], tmp_path: Path) -> None:
    mine = [n for n in netns_list() if n.startswith(f"{PREFIX}-{pid}-")]
    assert mine == [], f"namespaces left behind: {mine}"
    assert [k for k in kids if alive(k)] == [], "processes left behind"
    assert root_snapshot() == before, "the root namespace changed"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("wwlab-")] == []


@pytest.mark.parametrize("sig,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_suite_cleans_up(sig, status, tmp_path):
    before = root_snapshot()
    proc, log = start_suite(tmp_path)
    kids = descendants(proc.pid)
    assert kids, "the suite runs no processes?"
    # No --seed: the suite picked one, logged it, and its scenario runs with it.
    seed = re.search(r"suite: .*, seed (\d+)\n", log.read_text())
    assert seed and f": seed {seed[1]}; building the lab" in log.read_text(), log.read_text()
    proc.send_signal(sig)
    assert proc.wait(60) == status, log.read_text()[-2000:]
    assert_nothing_left(proc.pid, before, kids, tmp_path)


def test_killed_suite_is_cleaned_up_by_the_next_run(tmp_path):
    before = root_snapshot()
    proc, log = start_suite(tmp_path)
    kids = descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)  # the lab and everything in its session
    proc.wait(30)
    assert [n for n in netns_list() if n.startswith(f"{PREFIX}-{proc.pid}-")], \
        "a SIGKILLed run cannot clean up: its namespaces should still be there"
    # The next lab command removes what dead runs left (bench/lab/topology.cleanup_stale)
    r = subprocess.run([sys.executable, "-m", "bench.lab", "suite", str(CI_DIR), "--only", "nope"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no such scenario" in r.stderr, r.stderr
    for k in kids:  # processes of other sessions (namespaced daemons) die with their netns
        deadline = time.monotonic() + 10
        while alive(k) and time.monotonic() < deadline:
            time.sleep(0.1)
    mine = [n for n in netns_list() if n.startswith(f"{PREFIX}-{proc.pid}-")]
    assert mine == [], f"namespaces of the killed run still there: {mine}"
    assert [k for k in kids if alive(k)] == [], "processes of the killed run left behind"
    assert root_snapshot() == before
