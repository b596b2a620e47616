"""Runs every tests/mpy/test_*.py under the real `micropython` binary (unix port).

The agent is never imported into CPython: each file runs in MicroPython with the
compiled agent (mpy-cross, as on a board), the virtual board and the test helpers on
its path, with a heap of ESP32 size.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from testing.mpy import ROOT, run_mpy
from wanwitness.boards.build import agent_sources, compile_agent

MPY_TESTS = sorted((ROOT / "tests" / "mpy").glob("test_*.py"))


def test_there_are_micropython_tests():
    assert len(MPY_TESTS) >= 8, "tests/mpy/test_*.py went missing"


def test_every_agent_module_compiles_with_mpy_cross(tmp_path):
    made = compile_agent(tmp_path)
    assert {p.stem for p in made} == {p.stem for p in agent_sources()}
    assert all(p.stat().st_size > 0 for p in made)


@pytest.mark.parametrize("script", MPY_TESTS, ids=[p.stem for p in MPY_TESTS])
def test_on_micropython(script: Path):
    proc = run_mpy(script)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{script.name} failed under MicroPython:\n{out}"
    assert "ran " in out and "FAIL" not in out, out
