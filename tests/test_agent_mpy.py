"""Runs every tests/mpy/test_*.py under the real `micropython` binary (unix port).

The agent is never imported into CPython: each file runs in MicroPython with the
compiled agent (mpy-cross, as on a board), the virtual board and the test helpers on
its path, with a heap of ESP32 size.

Each test function of those files is its own pytest item, `test_on_micropython[test_led.
test_one_hz_blink]`, so a failure names it and `-k` selects it. The functions are read from
the source with CPython's `ast`; each script runs once per session, one at a time
(WANWITNESS_MPY_JOBS=N runs N at once), with only the selected functions
when the selection is part of a script, and tests/mpy/mpyunit.py reports a result per
function. A function without a result (the script crashed, ran out of heap, timed out)
fails with what the script printed last (its crash); `test_mpy_reports_every_function`
checks that the functions mpyunit ran are exactly those in the source.
"""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from testing.mpy import (
    ROOT,
    MpyUnitRun,
    find_mpyunit_tests,
    micropython,
    micropython32,
    mpy_path,
    run_mpyunit,
)
from wanwitness.boards.build import agent_sources, compile_agent
from wanwitness.resources import firmware_dir

MPY_TESTS = sorted((ROOT / "tests" / "mpy").glob("test_*.py"))
FOUND = {script: find_mpyunit_tests(script) for script in MPY_TESTS}

# Every script runs on two MicroPythons: "wheel", the 64-bit unix port from PyPI with the
# agent compiled to .mpy files on its path, and "mp32", the 32-bit build with the agent,
# asyncio and the virtual board frozen in (testing/mp32.py): pointers, small ints
# (2^30) and the firmware's frozen bytecode as on an ESP32.
BUILDS = ("wheel", "mp32")
# Scripts that need the ssl module stay on the wheel: the 32-bit build has no TLS
# (MICROPY_PY_SSL=0, mbedtls is not in the vendored source).
WHEEL_ONLY = {"test_tls_config"}
CASES = [(build, script, name) for build in BUILDS for script in MPY_TESTS
         if build == "wheel" or script.stem not in WHEEL_ONLY for name in FOUND[script][0]]
SCRIPTS = [(build, script) for build in BUILDS for script in MPY_TESTS
           if build == "wheel" or script.stem not in WHEEL_ONLY]


def case_id(build: str, script: Path, name: str = "") -> str:
    """test_led.test_one_hz_blink on the wheel (the ids of old), mp32-test_led.… frozen."""
    stem = f"{script.stem}.{name}" if name else script.stem
    return stem if build == "wheel" else f"{build}-{stem}"

# How each script runs: the defaults (an ESP32-size heap, as
# run_mpy); a script that needs other settings gets an entry, e.g.
# "test_outbox": {"heap": "256K", "timeout": 600, "env": {"X": "1"}}.
RUN_DEFAULTS: dict[str, Any] = {"heap": "128K", "timeout": 300.0, "env": {}}
RUN_SETTINGS: dict[str, dict[str, Any]] = {
    # imports the whole agent (app and all it imports): as .mpy files on the 64-bit
    # wheel that is ~85 KB of code on the heap (bench/README.md "Agent heap")
    "test_app_tasks": {"heap": "256K"},
    # its own bytecode (compiled from source on the board: the script, not the agent)
    # outgrew 128K with the DNS receive tests
    "test_probe": {"heap": "256K"},
    # the same, with the tests of a record encoded into the app's reserve
    "test_outbox": {"heap": "256K"},
}

DURATIONS_KEY = "wanwitness/mpy-seconds"  # last run's time per script: the longest start first


def run_settings(script: Path) -> dict[str, Any]:
    return {**RUN_DEFAULTS, **RUN_SETTINGS.get(script.stem, {})}


class MpyRuns:
    """The session's runs of the tests/mpy scripts: started together, each read once."""

    def __init__(self, build: str, wanted: dict[Path, list[str] | None],
                 durations: dict[str, float]):
        self.build = build
        frozen = build == "mp32"
        # Built (or found up to date) and compiled here, not in the threads.
        self.exe = micropython32() if frozen else micropython()
        self.micropypath = mpy_path(frozen=frozen)
        self.wanted = wanted
        # One script at a time unless asked: test_probe times the event loop (a stall of
        # at most 60 ms), and two MicroPython processes on a loaded 2-core CI machine
        # could make that flaky. WANWITNESS_MPY_JOBS=2 halves the wall time.
        jobs = int(os.environ.get("WANWITNESS_MPY_JOBS") or 1)
        self.pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="mpy")
        self.futures: dict[Path, Future[MpyUnitRun]] = {}
        for script in sorted(wanted, key=lambda s: -durations.get(s.stem, 0.0)):
            self.futures[script] = self.pool.submit(self._run, script)

    def _run(self, script: Path) -> MpyUnitRun:
        return run_mpyunit(script, self.wanted.get(script) or (), exe=self.exe,
                           micropypath=self.micropypath, **run_settings(script))

    def get(self, script: Path) -> MpyUnitRun:
        if script not in self.futures:  # not known at the start of the session
            self.futures[script] = self.pool.submit(self._run, script)
        return self.futures[script].result()

    def close(self) -> dict[str, float]:
        self.pool.shutdown(wait=True, cancel_futures=True)
        return {s.stem: f.result().seconds for s, f in self.futures.items()
                if f.done() and not f.cancelled() and f.exception() is None}


def selected_runs(items: list[pytest.Item], build: str) -> dict[Path, list[str] | None]:
    """Script -> the functions to run on `build`, or None for all of them."""
    picked: dict[Path, set[str]] = {}
    whole: set[Path] = set()
    for item in items:
        callspec = getattr(item, "callspec", None)
        if item.path != Path(__file__) or callspec is None:
            continue
        if callspec.params.get("build") != build:
            continue
        script = callspec.params.get("script")
        if getattr(item, "originalname", "") == "test_on_micropython":
            picked.setdefault(script, set()).add(callspec.params["name"])
        elif getattr(item, "originalname", "") == "test_mpy_reports_every_function":
            whole.add(script)
    wanted: dict[Path, list[str] | None] = {}
    for script in sorted(whole | set(picked)):
        names = picked.get(script, set())
        partial = script not in whole and names != set(FOUND[script][0])
        wanted[script] = sorted(names) if partial else None
    return wanted


@pytest.fixture(scope="session")
def mpy_runs(request: pytest.FixtureRequest):
    """build -> its MpyRuns, each started on first use (the wheel's first: they are first
    in the collection order), one build at a time so that timing tests run alone."""
    cache = getattr(request.config, "cache", None)
    started: dict[str, MpyRuns] = {}
    keys = {b: DURATIONS_KEY if b == "wheel" else f"{DURATIONS_KEY}-{b}" for b in BUILDS}

    def runs_for(build: str) -> MpyRuns:
        if build not in started:
            for other in list(started):  # the other build's scripts finish first
                started[other].pool.shutdown(wait=True)
            durations = (cache.get(keys[build], {}) if cache else {}) or {}
            started[build] = MpyRuns(build, selected_runs(request.session.items, build),
                                     durations)
        return started[build]

    try:
        yield runs_for
    finally:
        for build, runs in started.items():
            seconds = runs.close()
            if cache is not None and seconds:
                old = cache.get(keys[build], {}) or {}
                cache.set(keys[build], {**old, **seconds})


def test_there_are_micropython_tests():
    assert len(MPY_TESTS) >= 8, "tests/mpy/test_*.py went missing"


def test_every_agent_module_compiles_with_mpy_cross(tmp_path):
    made = compile_agent(tmp_path)
    assert {p.stem for p in made} == {p.stem for p in agent_sources()}
    assert all(p.stat().st_size > 0 for p in made)


@pytest.mark.parametrize(("build", "script", "name"), CASES,
                         ids=[case_id(*case) for case in CASES])
def test_on_micropython(mpy_runs, build: str, script: Path, name: str):
    run = mpy_runs(build).get(script)
    result = run.results.get(name)
    if result is not None and result.output:
        print(result.output)  # pytest shows it with -rP, or beside a failure
    failure = run.failure(name)
    if failure:
        pytest.fail(failure, pytrace=False)


@pytest.mark.parametrize(("build", "script"), SCRIPTS, ids=[case_id(*s) for s in SCRIPTS])
def test_mpy_reports_every_function(mpy_runs, build: str, script: Path):
    """The functions mpyunit ran and reported are exactly the `def test_*` in the source."""
    found, problems = FOUND[script]
    assert not problems, "\n".join(problems)
    assert found, f"{script.name} has no test_* functions"
    run = mpy_runs(build).get(script)
    if run.planned is None or not run.finished:
        pytest.fail(f"not to the end: {run.where_it_stopped()} ({run.how_it_ended()}): "
                    f"{run.last_words()}\n{script.name} under MicroPython:\n"
                    f"{run.output_tail()}", pytrace=False)
    unexpected = sorted(set(run.planned) - set(found))
    unseen = sorted(set(found) - set(run.planned))
    assert not unexpected and not unseen, (
        f"{script.name}: mpyunit ran {unexpected} that are not `def test_*` at the top of the "
        f"source, and did not run {unseen} that are")
    assert run.planned == found, f"{script.name}: mpyunit ran them in another order: {run.planned}"
    silent = [n for n in run.planned if n not in run.results]
    extra = sorted(set(run.results) - set(run.planned))
    assert not silent and not extra, (
        f"{script.name}: no result for {silent}; results for functions it did not announce: "
        f"{extra}")
    assert run.summary == {"ran": len(found), "failed": sum(
        not r.ok for r in run.results.values())}, f"{script.name}: summary {run.summary}"


def test_the_32bit_build_runs_the_frozen_agent():
    """On mp32 the agent and the virtual board import from `.frozen` (their __file__ is
    the bare name a frozen module has, not a path), nothing on MICROPYPATH comes before
    `.frozen`, and small ints are 31-bit as on an ESP32."""
    names = [p.stem for p in agent_sources()] + ["board", "machine", "network", "flash",
                                                  "asyncio"]
    code = ("import sys\nfor n in %r:\n    m = __import__(n)\n    print(n, m.__file__)\n"
            "print('path', ' '.join(sys.path))\nprint('maxsize', sys.maxsize)\n" % names)
    proc = subprocess.run([micropython32(), "-c", code], capture_output=True, text=True,
                          timeout=30, env=dict(os.environ, MICROPYPATH=mpy_path(frozen=True)))
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    for n in names:
        want = "asyncio/__init__.py" if n == "asyncio" else f"{n}.py"
        assert lines[n] == want, f"{n} was imported from {lines[n]}, not from .frozen"
    path = lines["path"].split(" ")
    assert path.index(".frozen") <= 1, f".frozen is not first on sys.path: {path}"
    assert lines["maxsize"] == str(2**31 - 1), "not a 32-bit build"


def test_the_32bit_manifest_freezes_the_agent_and_the_virtual_board():
    """Every agent module but main.py and every virtual board module, its boot script
    run.py included, is frozen into the mp32 build: a new one missing from
    manifest_unix32.py would not import there."""
    from testing.mp32 import frozen_sources
    vboard = firmware_dir() / "boards" / "virtual"
    want = {p.resolve() for p in agent_sources()}
    want |= {p.resolve() for p in vboard.glob("*.py")}
    frozen = set(frozen_sources())
    assert not want - frozen, f"add to wanwitness/firmware/manifest_unix32.py: {sorted(want - frozen)}"
    assert all(p.is_file() for p in frozen), sorted(p for p in frozen if not p.is_file())


def test_a_frozen_virtual_board_boots_with_nothing_compiled_on_the_heap(tmp_path):
    """VirtualBoard(frozen=True) on mp32 boots run.py frozen (`-m run`), so the virtual
    board and the agent import from `.frozen`. Booted as a file, the compiled virtual
    board beside run.py came first on sys.path: its bytecode sat on the heap (~7 KB more
    than on an ESP32, charged to the agent's budget in test_agent_heap_mp32)."""
    import io

    from wanwitness.virtual.supervisor import VirtualBoard
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text(
        "import sys\nimport app\nimport network\n"
        "for n in ('board', 'machine', 'flash', 'network', 'app'):\n"
        "    print('loaded', n, sys.modules[n].__file__)\n")
    log = io.StringIO()
    board = VirtualBoard(None, tmp_path / "b.flash", heap="128K", log=log,
                         micropython=micropython32(), extra_path=[tmp_path / "app"],
                         frozen=True)
    assert board.run(max_restarts=0) == 0, log.getvalue()
    loaded = dict(ln.split(" loaded ", 1)[1].split(" ", 1) for ln in log.getvalue().splitlines()
                  if " loaded " in ln)
    assert loaded == {n: f"{n}.py" for n in ("board", "machine", "flash", "network", "app")}, (
        log.getvalue())
