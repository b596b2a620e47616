"""The agent type-checks against the ESP32 port's API (micropython-esp32-stubs), with mypy.

mypy-agent.ini (repo root) holds the configuration; this file assembles the custom
typeshed it points at (build/mpy-typeshed) from the installed stub distributions, then
runs mypy over agent/. A second test checks a deliberately wrong snippet with the same
configuration, so the check cannot pass by silently not looking at the stubs.

Run it by hand, without pytest:  .venv/bin/python tests/test_agent_typecheck.py
"""

import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "mypy-agent.ini"
TYPESHED = ROOT / "build" / "mpy-typeshed"  # custom_typeshed_dir in mypy-agent.ini
STDLIB_DIST = "micropython-stdlib-stubs"
PORT_DIST = "micropython-esp32-stubs"
_LAYOUT = "2"  # bump when build_typeshed() changes what it writes


def build_typeshed(dst=TYPESHED):
    """Assemble a custom typeshed for mypy from the installed stub distributions.

    micropython-stdlib-stubs ships typeshed's layout (stdlib/, stubs/, stdlib/VERSIONS)
    plus a helper package _mpy_shed/ at the top level; micropython-esp32-stubs ships
    top-level modules (machine.pyi, time.pyi, network.pyi, ...). Everything that is not
    already under stdlib/ is copied into stdlib/ and listed in VERSIONS, so mypy takes
    it as the standard library: it replaces CPython's (which mypy then never sees) and
    errors inside the stubs are not reported. Where both distributions had a module,
    stdlib/'s copy would win; these versions have none in common.
    Offline and idempotent: rebuilt only when a distribution's version changes.
    """
    try:
        dists = [md.distribution(STDLIB_DIST), md.distribution(PORT_DIST)]
    except md.PackageNotFoundError as e:
        raise RuntimeError("%s is not installed: pip install -e '.[test]'" % e) from None
    stamp = "%s layout %s\n" % (" ".join("%s==%s" % (d.metadata["Name"], d.version) for d in dists), _LAYOUT)
    if (dst / "STAMP").is_file() and (dst / "STAMP").read_text() == stamp:
        return dst
    tmp = dst.with_name(".%s.%d" % (dst.name, os.getpid()))
    shutil.rmtree(tmp, ignore_errors=True)
    std = tmp / "stdlib"
    added = set()
    files = [(d, f) for d in dists for f in d.files or ()]
    files.sort(key=lambda df: df[1].parts[0] not in ("stdlib", "stubs"))  # typeshed's own first
    for dist, f in files:
        top = f.parts[0]
        if top.endswith(".dist-info") or not (f.suffix == ".pyi" or f.name == "VERSIONS"):
            continue
        if top in ("stdlib", "stubs"):
            out = tmp / f
        else:  # a top-level module or package: into stdlib/
            out = std / f
            mod = top[:-4] if top.endswith(".pyi") else top
            if mod not in added and ((std / (mod + ".pyi")).exists() or (std / mod).is_dir()):
                continue  # stdlib/ has its own copy of this module
            added.add(mod)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(dist.locate_file(f), out)
    if not (std / "VERSIONS").is_file() or "machine" not in added or "time" not in added:
        raise RuntimeError("unexpected layout of %s / %s" % (STDLIB_DIST, PORT_DIST))
    with open(std / "VERSIONS", "a") as fh:
        fh.write("\n# MicroPython modules from %s (added by tests/test_agent_typecheck.py)\n" % PORT_DIST)
        for mod in sorted(added):
            fh.write("%s: 3.0-\n" % mod)
    (tmp / "STAMP").write_text(stamp)
    shutil.rmtree(dst, ignore_errors=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, dst)
    return dst


def run_mypy(*files, cache_dir=None):
    build_typeshed()
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(CONFIG)]
    if cache_dir is not None:  # mypy replays a cached module's errors with its old path
        cmd += ["--cache-dir", str(cache_dir)]
    cmd += [str(f) for f in files]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    return p.returncode, p.stdout + p.stderr


def test_agent_typechecks_against_esp32_stubs():
    rc, out = run_mypy()
    print(out)
    assert rc == 0, "mypy (mypy-agent.ini) found problems in agent/:\n" + out
    # Every file that goes onto the board was checked, none skipped.
    n = len(list((ROOT / "wanwitness" / "agent").glob("*.py")))
    assert re.search(r"Success: no issues found in %d source files" % n, out), out


BAD = '''\
import asyncio, gc, machine, sys, time
from micropython import const

_N = const(3)


def fine():
    # MicroPython-only API (CPython's typeshed has none of it): must not be reported.
    t0 = time.ticks_ms()
    time.sleep_ms(5)
    gc.mem_free()
    sys.print_exception(ValueError())
    machine.WDT(timeout=8000).feed()
    return time.ticks_diff(time.ticks_ms(), t0) + _N


async def fine_async():
    await asyncio.sleep_ms(10)
    await asyncio.wait_for_ms(asyncio.sleep_ms(1), 100)


def wrong():  # unannotated, like all agent code: checked thanks to check_untyped_defs
    time.ticks_ms(1)
    machine.WDT(timeout="x")
    time.perf_counter()
'''


def test_misuse_of_the_esp32_api_is_reported(tmp_path):
    src = tmp_path / "misuse.py"
    src.write_text(BAD)
    rc, out = run_mypy(src, cache_dir=tmp_path / "mypy-cache")
    print(out)
    errors = [ln for ln in out.splitlines() if ": error:" in ln]
    assert rc == 1, out
    lines = BAD.splitlines()
    wrong_at = lines.index("def wrong():  # unannotated, like all agent code: checked thanks to check_untyped_defs") + 1
    want = {
        wrong_at + 1: 'Too many arguments for "ticks_ms"',
        wrong_at + 2: 'Argument "timeout" to "WDT" has incompatible type "str"; expected "int"',
        wrong_at + 3: 'Module has no attribute "perf_counter"',
    }
    for line, msg in want.items():
        assert any(ln.startswith("%s:%d: error:" % (src, line)) and msg in ln for ln in errors), (line, msg, out)
    # ... and nothing else: the MicroPython-only calls in fine() resolved against the stubs.
    assert len(errors) == len(want), out


def _main():
    rc, out = run_mypy()
    sys.stdout.write(out)
    return rc


if __name__ == "__main__":
    sys.exit(_main())
