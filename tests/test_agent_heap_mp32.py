"""The agent's heap budget on the 32-bit frozen build: the heap bench's scripted run
(bench/agent_heap.py: cuts, an LED-only blip, a Wi-Fi drop) on `./dev mp32` with a heap
of 48 KB for the agent, on top of what the virtual board itself leaves on the heap, measured
now (vboard_breakdown): its board/machine/network/flash modules (lwipsocket too where it
has it), the mounted flash image and its frozen boot script run.py: C code and a frozen
_boot.py on an ESP32, ~14 KB here.

It fails when the frozen agent needs more than 48 KB to run the scripted cycle without a
MemoryError, crash or reboot, or when it then misses a scripted cut."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.agent_heap import vboard_breakdown
from testing.mpy import ROOT, micropython32

pytestmark = pytest.mark.integration

AGENT_HEAP_KB = 48


def vboard_residue(tmp_path: Path, exe: str) -> int:
    """Bytes the virtual board's own modules, its mounted image and its boot script take
    (not the runtime's empty-heap bytes, which a board has too)."""
    parts = vboard_breakdown(tmp_path, exe, tmp_path, frozen=True)
    need = {"runtime", "import_board", "import_machine", "import_network", "import_flash",
            "mount", "boot_script"}
    assert need <= set(parts), f"the virtual board breakdown failed: {parts}"
    return sum(v for k, v in parts.items() if k != "runtime")


def test_the_frozen_agent_runs_the_heap_bench_in_48k(tmp_path):
    exe = micropython32()
    residue = vboard_residue(tmp_path, exe)
    heap = f"{AGENT_HEAP_KB + math.ceil(residue / 1024)}K"
    out = tmp_path / "heap.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.agent_heap", "--mp32", "--minutes", "2", "--heaps", heap,
         "--no-live", "--json", str(out), "--workdir", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())["results"][0]
    what = (f"-X heapsize={heap} (the agent's {AGENT_HEAP_KB} KB + the virtual board's "
            f"{residue} bytes): peak {result['peak']}, {result['memory_errors']} MemoryErrors, "
            f"{result['boots']} boots, failures {result['failures']}")
    assert result["memory_errors"] == 0 and result["tracebacks"] == 0, what
    assert result["boots"] == 1 and result["clean"], what
    found, total = (int(n) for n in result["cuts_found"].split("/"))
    assert found == total >= 1, f"cuts found {result['cuts_found']}; {what}"
    assert result["extra_outages"] == 0, what
