"""How soon `degraded` is called at the onset of 80 % loss, over many simulated onsets.

Runs tests/mpy/degraded_onsets.py under the `micropython` binary (unix port): the agent's
detector fed the lab's probe pattern (a round of three anchors every 2 s, three watches
between rounds), every probe lost at random at 80 % after 30 clean rounds. Prints the
distribution of the lossy rounds until the call (2 s each), the share called within
15 s, and the onsets that began with a run of dead probes: an `isp_down` first, withdrawn
as `degraded` from its start (docs/agent.md, HINDSIGHT). No network.

    .venv/bin/python -m bench.degraded_onsets [--onsets 400] [--first-seed 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from wanwitness.errors import UserError
from wanwitness.resources import find_tool

ROOT = Path(__file__).resolve().parent.parent
DRIVE = ROOT / "tests" / "mpy" / "degraded_onsets.py"
ROUND_S = 2


def run(first: int, count: int) -> list[list]:
    path = [str(ROOT / "tests" / "mpy"), str(ROOT / "wanwitness" / "agent"), ".frozen"]
    env = dict(os.environ, MICROPYPATH=":".join(path))
    try:
        binary = find_tool("micropython")
    except UserError as e:
        raise SystemExit(f"bench.degraded_onsets: {e}") from None
    out = subprocess.run([binary, "-X", "heapsize=4M", str(DRIVE), str(first), str(count)],
                         env=env, capture_output=True, text=True, timeout=600)
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)["onsets"]
    raise SystemExit(f"degraded_onsets.py gave no figures (status {out.returncode}):\n"
                     f"{out.stdout}{out.stderr}")


def pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f} %"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onsets", type=int, default=400, help="simulated onsets (default 400)")
    ap.add_argument("--first-seed", type=int, default=1)
    a = ap.parse_args(argv)
    if a.onsets < 1:
        ap.error("--onsets must be at least 1")
    rows = run(a.first_seed, a.onsets)
    n = len(rows)
    called = sorted(r[0] for r in rows if r[2])
    never = n - len(called)
    isp = sorted(r[0] for r in rows if r[1])
    within = sum(1 for k in called if k * ROUND_S <= 15)
    print(f"{n} onsets of 80 % loss (seeds {a.first_seed}-{a.first_seed + n - 1}), "
          f"rounds of {ROUND_S} s")
    if called:
        def q(p: float) -> int:
            return called[min(len(called) - 1, int(len(called) * p))]
        print(f"lossy rounds until degraded: median {q(0.5)} ({q(0.5) * ROUND_S} s), "
              f"p90 {q(0.9)} ({q(0.9) * ROUND_S} s), p99 {q(0.99)}, max {called[-1]} "
              f"({called[-1] * ROUND_S} s)")
    print(f"called within 15 s: {within} of {n} ({pct(within, n)}); not within 30 rounds: {never}")
    print(f"an isp_down first, withdrawn as degraded: {len(isp)} of {n} ({pct(len(isp), n)})"
          + (f", called after {isp[len(isp) // 2]} rounds (median), {isp[-1]} at most" if isp else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
