"""Loop stalls from the broker's name during a WAN outage, before and after the fix.

Runs tests/mpy/dns_stall_drive.py under the `micropython` binary (unix port) on the
virtual board's lwIP-like sockets (`getaddrinfo` blocks the only task for lwIP's
1+1+2+3 s of retries while the upstream DNS is silent): the broker's name resolved at
boot, then the WAN is down for SECONDS: the broker refuses, the DNS is silent. Once with
agent/mqtt.py as it was before the fix (git revision BEFORE: it dropped the address after
3 failed connects and called getaddrinfo), once with the current one (keeps the last
good address, looks the name up with probe.resolve). Prints for each: the longest gap
between LED samples (a 20 ms sampler), probe rounds completed (one a second) and the
blocking lookups. Loopback only.

    .venv/bin/python -m bench.dns_stall [--seconds 60] [--before 6ccfa61]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from testing.mpy import micropython

ROOT = Path(__file__).resolve().parent.parent
DRIVE = ROOT / "tests" / "mpy" / "dns_stall_drive.py"
BEFORE = "6ccfa61"  # main before issue 14's mqtt.py fix


def run(agent_dirs: list[Path], seconds: int, tmp: Path) -> dict:
    path = [str(d) for d in agent_dirs] + [
        str(ROOT / "wanwitness" / "agent"),
        str(ROOT / "wanwitness" / "firmware" / "boards" / "virtual"), ".frozen"]
    env = dict(os.environ, MICROPYPATH=":".join(path))
    for k in ("WANWITNESS_VBOARD_CONTROL", "WANWITNESS_VBOARD_STATE", "WANWITNESS_VBOARD_FLASH"):
        env.pop(k, None)
    out = subprocess.run([str(micropython()), "-X", "heapsize=1M", str(DRIVE),
                          str(tmp / "control.json"), str(seconds)],
                         env=env, capture_output=True, text=True, timeout=seconds + 120)
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise SystemExit(f"dns_stall_drive.py gave no figures (status {out.returncode}):\n"
                     f"{out.stdout}{out.stderr}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--before", default=BEFORE, help="git revision of the old mqtt.py")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ww-dns-stall-") as d:
        tmp = Path(d)
        old = tmp / "before"
        old.mkdir()
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{a.before}:wanwitness/agent/mqtt.py"],
                             capture_output=True, text=True, check=True).stdout
        (old / "mqtt.py").write_text(src)
        rows = [("before (" + a.before + ")", run([old], a.seconds, tmp)),
                ("after", run([], a.seconds, tmp))]
    print(f"WAN down {a.seconds} s, broker name off-site, lwIP lookup 7000 ms when the DNS is silent")
    print(f"{'mqtt.py':<20} {'longest LED gap':>16} {'probe rounds':>13} {'blocking lookups':>17}"
          f" {'loop blocked':>13} {'connects':>9}")
    for name, r in rows:
        print(f"{name:<20} {r['gap_ms']:>13} ms {r['rounds']:>8} / {r['seconds']:<3}"
              f" {r['blocking_lookups']:>17} {r['blocked_ms']:>10} ms {r['connects']:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
