"""`wanwitness` as the user meets it, in the test process: click's CliRunner around `main()`.

`run_cli` calls `wanwitness.cli.app.main(argv)`, the real entry point with its mapping of
UserError to one line on stderr and exit 2, under `CliRunner.isolation()` (stdin, stdout,
stderr and os.environ swapped for the call) and catches its SystemExit. The result has
`.returncode`, `.stdout` and `.stderr` like `subprocess.CompletedProcess`.

Both helpers are hermetic: every WANWITNESS_* variable of the test process is removed
(WANWITNESS_CONFIG and WANWITNESS_DB would pick a config and a store, WANWITNESS_DEBUG
would turn the one-line internal error into a traceback), HOME and the XDG base
directories point into `home` (a command that falls back to the default config, store or
cache never touches the user's), and the command runs in `cwd`, by default `home`.

What only a separate process gives, and `run_process` is for: signals and signal
handlers, `logging.basicConfig`, os.environ read at import time, a real terminal or pipe
on stdout (here stdout is a BytesIO, never a tty), threads or sockets that outlive the
command, `python -m wanwitness` itself.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

# The interpreter's own warning filters (no -W, no PYTHONWARNINGS): what a user running
# `wanwitness` sees on stderr, where pytest would otherwise collect them.
_STARTUP_WARNING_FILTERS = (("default", DeprecationWarning, "__main__"), ("ignore", DeprecationWarning, ""),
                            ("ignore", PendingDeprecationWarning, ""), ("ignore", ImportWarning, ""),
                            ("ignore", ResourceWarning, ""))


def hermetic_env(home: Path, env: Mapping[str, str | None] | None = None) -> dict[str, str | None]:
    """Overrides of os.environ (None: remove) for a `wanwitness` run in `home`."""
    out: dict[str, str | None] = {k: None for k in os.environ if k.startswith("WANWITNESS_")}
    out.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_DATA_HOME=str(home / ".local/share"),
               XDG_CACHE_HOME=str(home / ".cache"), XDG_STATE_HOME=str(home / ".local/state"))
    out.update(env or {})
    return out


@dataclass
class CliResult:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    stdout_bytes: bytes
    stderr_bytes: bytes


def _text(data: bytes) -> str:
    # as subprocess.run(text=True) decodes: universal newlines
    return data.decode().replace("\r\n", "\n").replace("\r", "\n")


def _exit_status(code: object) -> tuple[int, str]:
    """What the interpreter makes of SystemExit(code): the exit status, and text for stderr."""
    if code is None:
        return 0, ""
    if isinstance(code, int):
        return code & 0xFF, ""
    return 1, f"{code}\n"


def _warning_to_stderr(message, category, filename, lineno, file=None, line=None) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def run_cli(*args: str, home: Path, env: Mapping[str, str | None] | None = None,
            cwd: Path | str | None = None) -> CliResult:
    """`wanwitness ARGS...` in this process; `env` overrides os.environ (None removes)."""
    from wanwitness.cli.app import main

    old_cwd = os.getcwd()
    root = logging.getLogger()
    status, extra_err = 0, ""
    with CliRunner().isolation(env=hermetic_env(home, env)) as (out, err, _mixed):
        # Like a fresh process: WARNING and above of an unconfigured logging go to stderr
        # (pytest's handlers would otherwise take them), and so do the warnings the
        # interpreter shows by default.
        handler = logging.StreamHandler(sys.stderr)
        handler.setLevel(logging.WARNING)
        root.addHandler(handler)
        try:
            with warnings.catch_warnings():
                warnings.resetwarnings()
                for action, category, module in reversed(_STARTUP_WARNING_FILTERS):
                    warnings.filterwarnings(action, category=category, module=module)
                warnings.showwarning = _warning_to_stderr
                os.chdir(cwd if cwd is not None else home)
                try:
                    main(list(args))
                except SystemExit as e:
                    status, extra_err = _exit_status(e.code)
        finally:
            os.chdir(old_cwd)
            root.removeHandler(handler)
            sys.stdout.flush()
            sys.stderr.write(extra_err)
            sys.stderr.flush()
            stdout, stderr = out.getvalue(), err.getvalue()
    return CliResult(args, status, _text(stdout), _text(stderr), stdout, stderr)


def run_process(*args: str, home: Path, env: Mapping[str, str | None] | None = None,
                cwd: Path | str | None = None, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """`python -m wanwitness ARGS...` as a separate process, with the environment of `run_cli`.

    Output as text unless `kw` says otherwise (e.g. `stdout=fd`, `text=False`)."""
    full = dict(os.environ)
    for key, value in hermetic_env(home, env).items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("text", True)
    return subprocess.run([sys.executable, "-m", "wanwitness", *args], env=full,
                          cwd=cwd if cwd is not None else home, timeout=timeout, **kw)


class Cli:
    """`run_cli` (calling it) and `run_process` bound to one home directory."""

    def __init__(self, home: Path):
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)

    def __call__(self, *args: str, env: Mapping[str, str | None] | None = None,
                 cwd: Path | str | None = None) -> CliResult:
        return run_cli(*args, home=self.home, env=env, cwd=cwd)

    def process(self, *args: str, env: Mapping[str, str | None] | None = None,
                cwd: Path | str | None = None, **kw) -> subprocess.CompletedProcess:
        return run_process(*args, home=self.home, env=env, cwd=cwd, **kw)


def one_clear_line(proc) -> str:
    """The one line on stderr (and no traceback anywhere) of a failed run."""
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def one_line_error(proc) -> str:
    """A user error as the user sees it: exit 2 and one line `wanwitness: ...`."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    line = one_clear_line(proc)
    assert line.startswith("wanwitness: "), line
    return line
