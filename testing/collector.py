"""`wanwitness collect` as a real process that tests can SIGKILL and restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


class CollectorProcess:
    def __init__(self, workdir: Path, db_url: str, *, broker: str | None = None,
                 listen: tuple[str, int] | None = None, username: str = "", password: str = "",
                 extra_env: dict[str, str] | None = None, collector_conf: str = "",
                 new_session: bool = False, web: tuple[str, int] | None = None,
                 extra_args: tuple[str, ...] = ()):
        # new_session: Ctrl-C at the terminal reaches only the harness, which then stops
        # the collector in order (the benchmarks).
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db_url = db_url
        self.broker = broker
        self.listen = listen
        self.web = web  # None: --no-web
        self.extra_args = extra_args  # more options of `collect`, e.g. ("--shared", "G")
        self.config = self.workdir / "config.toml"
        lines = ["[broker]"]
        if broker:
            lines += [f'url = "{broker}"', f'username = "{username}"', f'password = "{password}"']
        self.config.write_text("\n".join(lines) + "\n[collector]\nlog_level = \"info\"\n"
                               + collector_conf)
        self.log_path = self.workdir / "collector.log"
        self.env = dict(os.environ, WANWITNESS_CONFIG=str(self.config), PYTHONUNBUFFERED="1")
        self.env.update(extra_env or {})
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.new_session = new_session

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "wanwitness", "collect", "--db", self.db_url]
        cmd += ["--web", f"{self.web[0]}:{self.web[1]}"] if self.web else ["--no-web"]
        if self.listen:
            cmd += ["--listen", f"{self.listen[0]}:{self.listen[1]}"]
        return cmd + list(self.extra_args)

    def start(self, wait: bool = True) -> None:
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(f"--- start {self.starts}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(self.command(), env=self.env, stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL, start_new_session=self.new_session)
        log.close()
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 30) -> None:
        """Until the collector says it is connected to its broker."""
        assert self.proc is not None
        # Its log, not a probe of the port (the broker would log a client that left
        # before CONNECT): "connected to" comes after the embedded broker listens.
        deadline = time.monotonic() + timeout
        marker = f"--- start {self.starts}\n"
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            if "connected to" in text.rsplit(marker, 1)[-1]:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"collector exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.02)
        raise TimeoutError(f"collector did not connect within {timeout} s:\n{self.log()}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20) -> int:
        if not self.proc:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, n: int = 3000) -> str:
        return self.log()[-n:]

    @property
    def port(self) -> int:
        assert self.listen is not None
        return self.listen[1]
