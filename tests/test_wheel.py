"""wanwitness as a user installs it: the wheel, in a fresh venv outside this checkout.

Everything a collector needs comes from the wheel (the agent, the board profiles, the
virtual board); what it builds goes to the user cache dir, what it keeps to the user
data dir, nothing to the cwd or into the installed package.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from wanwitness import __version__

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "constraints.txt"

pytestmark = pytest.mark.integration


def files_below(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                           str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (whl,) = out.glob("wanwitness-*.whl")
    return whl


def test_the_wheel_carries_the_agent_the_firmware_and_the_virtual_board(wheel):
    assert wheel.name.startswith(f"wanwitness-{__version__}-")
    names = set(zipfile.ZipFile(wheel).namelist())
    agent = {p.name for p in (ROOT / "wanwitness" / "agent").glob("*.py")}
    assert {f"wanwitness/agent/{n}" for n in agent} <= names
    for shipped in ("wanwitness/firmware/boot.py", "wanwitness/firmware/manifest.py",
                    "wanwitness/firmware/WIRING.md", "wanwitness/firmware/boards/esp32-devkitc.json",
                    "wanwitness/firmware/boards/virtual/run.py",
                    "wanwitness/firmware/boards/virtual/machine.py",
                    "wanwitness/claims/rules/data/uk-ofcom-amounts.json",
                    "wanwitness/web/templates/now.html", "wanwitness/web/static/style.css"):
        assert shipped in names
    # test support and development files stay out
    assert not [n for n in names if n.startswith(("testing/", "tests/", "bench/"))]
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert f"Version: {__version__}" in text and "License-Expression: MIT" in text
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict:
    """A fresh venv outside the repo with the wheel and its pinned dependencies, and a
    home of its own: XDG dirs, cwd, all in a temp dir."""
    base = tmp_path_factory.mktemp("user")
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                           "-c", str(CONSTRAINTS), str(wheel)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    home = base / "home"
    dirs = {"HOME": home, "XDG_CACHE_HOME": home / ".cache", "XDG_DATA_HOME": home / ".local/share",
            "XDG_CONFIG_HOME": home / ".config", "XDG_STATE_HOME": home / ".local/state"}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    cwd = base / "cwd"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("WANWITNESS_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update({k: str(v) for k, v in dirs.items()})
    env["PATH"] = f"{env_dir / 'bin'}:/usr/bin:/bin:/usr/sbin:/sbin"
    site = subprocess.run([str(py), "-c", "import wanwitness, pathlib; "
                           "print(pathlib.Path(wanwitness.__file__).parent)"],
                          capture_output=True, text=True, cwd=cwd, env=env).stdout.strip()
    return {"py": py, "exe": env_dir / "bin" / "wanwitness", "env": env, "cwd": cwd,
            "home": home, "package": Path(site)}


def ww(inst: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(inst["exe"]), *args], capture_output=True, text=True,
                          cwd=inst["cwd"], env=inst["env"], timeout=timeout)


def test_installed_from_the_wheel_it_runs_the_agent_with_nothing_outside_its_dirs(installed):
    package = installed["package"]
    assert ROOT not in package.parents, f"the installed package is the checkout: {package}"
    before = files_below(package)

    version = ww(installed, "--version")
    assert version.returncode == 0 and __version__ in version.stdout

    boards = ww(installed, "boards")
    assert boards.returncode == 0, boards.stderr
    assert "esp32-devkitc" in boards.stdout and "ESP32-C3" in boards.stdout

    data = installed["home"] / ".local/share/wanwitness"
    added = ww(installed, "agent", "add", "kitchen", "--broker-host", "127.0.0.1",
               "--led", "34:internet")
    assert added.returncode == 0, added.stderr
    board_config = data / "agents" / "kitchen.config.json"
    assert str(board_config) in added.stdout
    assert board_config.stat().st_mode & 0o777 == 0o600
    assert json.loads(board_config.read_text())["id"] == "kitchen"

    # The real agent on the virtual board against a real collector, a scripted outage.
    demo = ww(installed, "demo", "--once", "--json", "--outage", "8",
              "--dir", str(data / "demo"), timeout=240)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    result = json.loads(demo.stdout[demo.stdout.index("{"):])
    classes = [o["class"] for o in result["outages"]]
    assert "isp_down" in classes, result
    # The board's boot record carries the version pip installed (agent/version.py).
    with sqlite3.connect(data / "demo" / "wanwitness.db") as db:
        boots = [json.loads(b) for (b,) in db.execute("SELECT body FROM records WHERE k = 'boot'")]
    assert boots and {b["fw"] for b in boots} == {__version__}

    assert list(installed["cwd"].iterdir()) == [], "something was written into the cwd"
    assert files_below(package) == before, "something was written into the installed package"
    cache = installed["home"] / ".cache/wanwitness/build/agent-mpy"
    assert {p.stem for p in cache.glob("*.mpy")} >= {"app", "mqtt", "outbox", "version"}
    # Outside HOME's XDG dirs nothing of ours: the temp dir holds only venv, home, cwd.
    assert sorted(p.name for p in installed["home"].parent.iterdir()) == ["cwd", "home", "venv"]
    outside = [p for p in installed["home"].iterdir() if p.name not in (".cache", ".local", ".config")]
    assert outside == []

