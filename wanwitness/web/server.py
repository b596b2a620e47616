"""The web UI's HTTP server: uvicorn in a thread of the collector's process.

The socket is bound here, before uvicorn starts, so a port that is taken is a clear
error at startup (as the broker's) instead of a log line from a thread.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time

import uvicorn

from wanwitness.errors import UserError

log = logging.getLogger("wanwitness.web")


class WebPortInUse(UserError):
    pass


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one), or a UserError that
    says what is wrong with the address."""
    where = _where(host, port)
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UserError(f"cannot serve the web UI on {where}: unknown host ({e.strerror})") from None
    family, _type, _proto, _name, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise WebPortInUse(f"cannot serve the web UI on {where}: the port is already in use; "
                               f"choose another with --web HOST:PORT ([web] listen) or "
                               f"turn it off with --no-web") from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise UserError(f"cannot serve the web UI on {where}: this machine has no such "
                            "address") from None
        if e.errno == errno.EACCES:
            raise UserError(f"cannot serve the web UI on {where}: permission denied (ports "
                            "below 1024 need privileges)") from None
        raise UserError(f"cannot serve the web UI on {where}: {e.strerror}") from None
    sock.set_inheritable(True)
    return sock


class WebServer:
    """uvicorn serving `app` on an already bound socket, in a daemon thread."""

    def __init__(self, app, sock: socket.socket, *, certfile: str = "", keyfile: str = "") -> None:
        self.sock = sock
        self.host, self.port = sock.getsockname()[:2]
        config = uvicorn.Config(app, log_level="warning", access_log=False,
                                ssl_certfile=certfile or None, ssl_keyfile=keyfile or None,
                                lifespan="off", server_header=False, timeout_keep_alive=15,
                                # open event streams end within 3 s of a stop
                                timeout_graceful_shutdown=3)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name="wanwitness-web", daemon=True)
        self.scheme = "https" if certfile else "http"

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else ("::1" if self.host == "::" else self.host)
        return f"{self.scheme}://{_where(host, self.port)}/"

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        except Exception:  # noqa: BLE001 - the collector goes on without its web UI
            log.exception("the web UI stopped")

    def start(self, timeout_s: float = 10.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
