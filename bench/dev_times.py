"""How long a developer and a new user wait: `./dev check` with empty and with warm
caches, and `wanwitness demo --once` (collector, the agent on the virtual board, a 20 s
scripted cut, all on loopback).

    .venv/bin/python -m bench.dev_times [--skip-demo]

Wall-clock seconds on this machine; run it with nothing else busy. The whole suite's
time is what `./dev test` (pytest) prints at its end.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHES = ("build/mypy-cache", "build/mypy-agent-cache", "build/mpy-typeshed", ".pytest_cache",
          ".ruff_cache")


def timed(cmd: list[str], **kw) -> float:
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, **kw)
    took = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return took


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--skip-demo", action="store_true", help="only ./dev check")
    args = ap.parse_args(argv)
    for cache in CACHES:
        shutil.rmtree(ROOT / cache, ignore_errors=True)
    rows = [("./dev check, empty caches", timed(["./dev", "check"])),
            ("./dev check, warm caches", timed(["./dev", "check"]))]
    if not args.skip_demo:
        with tempfile.TemporaryDirectory(prefix="ww-demo-") as work:
            rows.append(("wanwitness demo --once", timed(
                [str(ROOT / ".venv/bin/wanwitness"), "demo", "--once", "--dir", work])))
    for what, seconds in rows:
        print(f"{what:<28} {seconds:6.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
