"""Running code under the real `micropython` binary (unix port) from pytest."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from wanwitness.boards.build import agent_build_dir, compile_agent, mpy_cross
from wanwitness.errors import UserError
from wanwitness.resources import find_tool, firmware_dir

ROOT = Path(__file__).resolve().parent.parent
MPY_TESTS = ROOT / "tests" / "mpy"


def micropython() -> str:
    try:
        return find_tool("micropython")
    except UserError as e:
        pytest.fail(str(e))


def mpy_cross_exe() -> str:
    try:
        return mpy_cross()
    except UserError as e:
        pytest.fail(str(e))


def compiled_agent() -> Path:
    """The agent compiled with mpy-cross, as it runs on a board."""
    compile_agent()
    return agent_build_dir()


def mpy_path(*extra: str | Path) -> str:
    """MICROPYPATH: the compiled agent, the virtual board, the test helpers, and
    `.frozen` (where the unix port keeps asyncio)."""
    parts = [str(p) for p in extra]
    parts += [str(compiled_agent()), str(firmware_dir() / "boards" / "virtual"),
              str(MPY_TESTS), ".frozen"]
    return ":".join(parts)


def run_mpy(script: Path, *args: str, heap: str = "128K", timeout: float = 300,
            env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ, MICROPYPATH=mpy_path())
    full_env.update(env or {})
    return subprocess.run([micropython(), "-X", f"heapsize={heap}", str(script), *args],
                          cwd=cwd or script.parent, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
