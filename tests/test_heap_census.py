"""The heap census of the 32-bit build (testing/heap_census.c, bench/heap_census.py):
what `micropython.mem_info(1)` prints there, and the report over a console log."""

from __future__ import annotations

import subprocess
import sys

import pytest

from testing import mp32
from testing.mpy import ROOT, micropython32

SCRIPT = """
import gc, micropython
class Probe:
    def __init__(self, i):
        self.hist = [i, i, i]          # a list that only this object holds
async def waiting():
    pass
keep = [Probe(i) for i in range(7)]
co = [waiting() for i in range(3)]     # three coroutines, not started
buf = bytearray(1000)
gc.collect()
micropython.mem_info(1)
keep.extend(Probe(i) for i in range(5))
gc.collect()
micropython.mem_info(1)
"""


def census(text: str) -> list[dict[str, tuple[int, int]]]:
    from bench.heap_census import parse
    return [s.kinds for s in parse(text)]


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> str:
    if not mp32.census_built():
        pytest.fail("the heap census is added only to a build from the vendored tarball "
                    f"(unset {mp32.SRC_ENV})")
    run = subprocess.run([micropython32(), "-X", "heapsize=64K", "-c", SCRIPT],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_each_kind_is_counted_with_its_owner(log):
    first, second = census(log)
    assert first["Probe"] == (7, 7 * 16)            # an instance: one 16-byte block
    assert first["list<Probe"][0] == 7              # their lists, charged to their class
    assert first["gen:waiting"][0] == 3             # coroutines by the function they run
    count, size = first["bytearray[]"]              # the 1,000 bytes behind the bytearray
    assert count >= 1 and size >= 1000
    assert "?unknown" in first                      # the interpreter's own blocks
    assert second["Probe"] == (12, 12 * 16)


def test_the_report_shows_what_grew(log, tmp_path):
    path = tmp_path / "agent.log"
    path.write_text(log)
    run = subprocess.run([sys.executable, "-m", "bench.heap_census", str(path), "--min", "0",
                          "--track", "Probe,gen:waiting"], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "| `Probe` | 7 | 112 | 12 | 192 | +80 |" in run.stdout
    rows = [ln for ln in run.stdout.splitlines() if ln.startswith("|  | ")]
    assert [r.rstrip(" |").split(" | ")[2:4] for r in rows] == [["7 / 112", "3 / 96"],
                                                                 ["12 / 192", "3 / 96"]]


def test_a_log_without_a_census_is_a_clear_error(tmp_path):
    path = tmp_path / "plain.log"
    path.write_text("GC: total: 57984, used: 42336, free: 15648\n")
    run = subprocess.run([sys.executable, "-m", "bench.heap_census", str(path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert run.returncode == 2
    assert "has no census" in run.stderr and "Traceback" not in run.stderr
    run = subprocess.run([sys.executable, "-m", "bench.heap_census", str(tmp_path / "none")],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert run.returncode == 2 and "cannot read" in run.stderr
