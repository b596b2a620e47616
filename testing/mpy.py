"""Running code under the real `micropython` binary (unix port) from pytest."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def micropython32() -> str:
    """The 32-bit unix build with the agent, asyncio and the virtual board frozen in
    (testing/mp32.py, `./dev mp32`): $WANWITNESS_MICROPYTHON32, else built (or found
    up to date) under build/mp32."""
    named = os.environ.get("WANWITNESS_MICROPYTHON32")
    if named:
        return named
    from testing import mp32
    try:
        return str(mp32.build(quiet=True))
    except mp32.BuildError as e:
        pytest.fail(f"./dev mp32: {e}")


def mpy_cross_exe() -> str:
    try:
        return mpy_cross()
    except UserError as e:
        pytest.fail(str(e))


def compiled_agent() -> Path:
    """The agent compiled with mpy-cross, as it runs on a board."""
    compile_agent()
    return agent_build_dir()


def mpy_path(*extra: str | Path, frozen: bool = False) -> str:
    """MICROPYPATH: the compiled agent, the virtual board, the test helpers, and
    `.frozen` (where the unix port keeps asyncio).

    frozen=True for micropython32(): `.frozen` first (the agent and the virtual board
    are in it, as on a board running frozen firmware), then `extra` and the test helpers;
    no compiled agent, so nothing on the filesystem can shadow a frozen module."""
    parts = [str(p) for p in extra]
    if frozen:
        return ":".join([".frozen", *parts, str(MPY_TESTS)])
    parts += [str(compiled_agent()), str(firmware_dir() / "boards" / "virtual"),
              str(MPY_TESTS), ".frozen"]
    return ":".join(parts)


def run_mpy(script: Path, *args: str, heap: str = "128K", timeout: float = 300,
            env: dict[str, str] | None = None, cwd: Path | None = None,
            frozen: bool = False) -> subprocess.CompletedProcess[str]:
    """Runs a script on the 64-bit wheel's micropython (frozen=False) or on the 32-bit
    frozen build."""
    full_env = dict(os.environ, MICROPYPATH=mpy_path(frozen=frozen))
    full_env.update(env or {})
    exe = micropython32() if frozen else micropython()
    return subprocess.run([exe, "-X", f"heapsize={heap}", str(script), *args],
                          cwd=cwd or script.parent, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


# ------------------------------------------------------- tests/mpy scripts, one result per function
# tests/mpy/mpyunit.py, run with MPYUNIT_REPORT=1, prints one line per event, MPYUNIT_MARK
# followed by a JSON object (the protocol is described at the top of mpyunit.py).

MPYUNIT_MARK = "##mpyunit "


def find_mpyunit_tests(script: Path) -> tuple[list[str], list[str]]:
    """The test functions of a tests/mpy script, read from its source with CPython's `ast`
    (never imported: the agent runs under MicroPython only), in the order mpyunit runs
    them; and what makes that list untrustworthy (a syntax error, a function defined twice,
    an `async def` mpyunit would call without running)."""
    try:
        tree = ast.parse(script.read_text(encoding="utf-8"), filename=str(script))
    except SyntaxError as e:
        return [], [f"{script.name} does not parse: {e}"]
    seen: dict[str, int] = {}
    problems = []
    for node in tree.body:
        if not (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                and node.name.startswith("test_")):
            continue
        if node.name in seen:
            problems.append(f"{node.name} is defined twice (lines {seen[node.name]} and "
                            f"{node.lineno}): the first one never runs")
        if isinstance(node, ast.AsyncFunctionDef):
            problems.append(f"{node.name} (line {node.lineno}) is async: mpyunit would call "
                            "it and never run its body")
        seen[node.name] = node.lineno
    return sorted(seen), problems


@dataclass
class MpyUnitResult:
    name: str
    ok: bool
    error: str = ""
    traceback: str = ""
    output: str = ""  # what the function printed


@dataclass
class MpyUnitRun:
    """One run of a tests/mpy script under MicroPython, read back per function."""

    script: Path
    returncode: int | None  # None: killed after `timeout`
    timeout: float
    seconds: float
    stdout: str
    stderr: str
    planned: list[str] | None = None  # the functions mpyunit.main said it would run
    results: dict[str, MpyUnitResult] = field(default_factory=dict)
    running: str | None = None  # started and never reported
    running_output: str = ""
    summary: dict[str, Any] | None = None  # mpyunit.main's last line: it got to the end

    @property
    def finished(self) -> bool:
        return self.summary is not None and self.returncode is not None

    def how_it_ended(self) -> str:
        if self.returncode is None:
            return f"killed after the {self.timeout:g} s timeout"
        if self.returncode < 0:
            return f"killed by signal {-self.returncode}"
        return f"exit status {self.returncode} after {self.seconds:.1f} s"

    def where_it_stopped(self) -> str:
        if self.running:
            return f"the script stopped while running {self.running}"
        if self.planned is None:
            return "the script died before mpyunit.main began (at import?)"
        if self.summary is None:
            return "the script died between two functions"
        return "mpyunit.main got to its end"

    def last_words(self) -> str:
        """The last line the script printed: a crash's error, usually."""
        for text in (self.stderr, self.running_output, self.stdout):
            lines = [line for line in text.splitlines() if line.strip()]
            if lines:
                return lines[-1].strip()
        return "no output at all"

    def output_tail(self, lines: int = 40) -> str:
        parts = []
        if self.running_output:
            parts.append(f"--- what {self.running} printed ---\n{self.running_output}")
        if self.stderr.strip():
            parts.append(f"--- stderr ---\n{self.stderr.rstrip()}")
        out = self.stdout.rstrip().splitlines()
        if out:
            cut = "" if len(out) <= lines else f", last {lines} lines"
            parts.append(f"--- stdout (outside the test functions{cut}) ---\n"
                         + "\n".join(out[-lines:]))
        return "\n".join(parts) or "(no output at all)"

    def missing(self, name: str) -> str:
        """Why `name` has no result, with what the script left on stdout and stderr."""
        if self.running == name:
            why = "the script stopped while running it"
        elif self.planned is not None and name not in self.planned:
            why = "mpyunit.main did not run it"
        elif self.finished:
            why = "mpyunit.main finished without reporting it"
        else:
            why = self.where_it_stopped()
        return (f"no result: {why} ({self.how_it_ended()}): {self.last_words()}\n"
                f"{self.script.name}::{name} under MicroPython:\n{self.output_tail()}")

    def failure(self, name: str) -> str | None:
        """None when `name` passed, else the message to fail its test with."""
        res = self.results.get(name)
        if res is None:
            return self.missing(name)
        if res.ok:
            return None
        headline = (res.error.strip().splitlines() or ["failed, no error text"])[0]
        trace = res.traceback.rstrip() or "(no traceback: too little heap left to format it)"
        return f"{headline}\n{self.script.name}::{name} under MicroPython:\n{trace}"


def parse_mpyunit(run: MpyUnitRun, stdout: str) -> None:
    """Fills `run` from mpyunit's report lines; other lines are output, kept per function."""
    other: list[str] = []
    current: list[str] = []
    for line in stdout.splitlines():
        at = line.find(MPYUNIT_MARK)
        msg = None
        if at >= 0:
            try:
                msg = json.loads(line[at + len(MPYUNIT_MARK):])
            except ValueError:
                msg = None
        if not isinstance(msg, dict):
            (current if run.running else other).append(line)
            continue
        if at > 0:  # printed without a newline just before the mark
            (current if run.running else other).append(line[:at])
        if "tests" in msg:
            run.planned = [str(n) for n in msg["tests"]]
        elif "start" in msg:
            run.running, current = str(msg["start"]), []
        elif "name" in msg:
            name = str(msg["name"])
            run.results[name] = MpyUnitResult(name, msg.get("ok") is True,
                                              str(msg.get("error", "")),
                                              str(msg.get("traceback", "")),
                                              "\n".join(current))
            run.running, current = None, []
        elif "ran" in msg:
            run.summary = msg
    run.stdout = "\n".join(other)
    run.running_output = "\n".join(current) if run.running else ""


def run_mpyunit(script: Path, names: Sequence[str] = (), *, heap: str = "128K",
                timeout: float = 300, env: dict[str, str] | None = None,
                exe: str | None = None, micropypath: str | None = None) -> MpyUnitRun:
    """Runs a tests/mpy script (only `names`, if given) with mpyunit's report on.

    Pass `exe` and `micropypath` when calling from several threads: working them out
    compiles the agent, which is not safe to do twice at once in one process."""
    full_env = dict(os.environ, MICROPYPATH=micropypath or mpy_path(), MPYUNIT_REPORT="1")
    full_env.update(env or {})
    cmd = [exe or micropython(), "-X", f"heapsize={heap}", str(script), *names]
    start = time.monotonic()
    with subprocess.Popen(cmd, cwd=script.parent, env=full_env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, encoding="utf-8",
                          errors="replace") as proc:
        returncode: int | None
        try:
            out, err = proc.communicate(timeout=timeout)
            returncode = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            returncode = None
    run = MpyUnitRun(script, returncode, timeout, time.monotonic() - start, "", err)
    parse_mpyunit(run, out)
    return run
