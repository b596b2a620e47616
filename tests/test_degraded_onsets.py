"""bench/degraded_onsets.py: the detector's `degraded` call at the onset of 80 % loss over
simulated onsets, run by MicroPython (tests/mpy/degraded_onsets.py)."""

from __future__ import annotations

import re
import subprocess
import sys

from testing.mpy import ROOT


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.degraded_onsets", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_the_figures_count_every_onset_and_agree_with_each_other():
    run = bench("--onsets", "20")
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "20 onsets of 80 % loss (seeds 1-20)" in out
    m = re.search(r"median (\d+) \((\d+) s\), p90 (\d+) .* max (\d+)", out)
    assert m, out
    median, median_s, p90, most = map(int, m.groups())
    # The detector's own test: a median call in the 5th lossy round, none after the 9th.
    assert median_s == 2 * median and median <= 5 and median <= p90 <= most <= 9
    within = re.search(r"called within 15 s: (\d+) of 20 .*not within 30 rounds: 0", out)
    # A median of at most 5 rounds (10 s): at least half of them within 15 s.
    assert within and 10 <= int(within.group(1)) <= 20, out
    isp = re.search(r"an isp_down first, withdrawn as degraded: (\d+) of 20", out)
    assert isp and 1 <= int(isp.group(1)) < 20, out   # seeds 4-7 and 15 begin with one


def test_a_count_below_one_is_refused_with_a_message():
    run = bench("--onsets", "0")
    assert run.returncode == 2
    assert "--onsets must be at least 1" in run.stderr
    assert "Traceback" not in run.stderr
