"""Services on this machine: a free TCP port, and waiting until something listens.

Used by the demo (its collector, broker and pretend internet all live on 127.0.0.1)
and by the test and bench harnesses (`testing/`), so there is one of each.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

LOCALHOST = "127.0.0.1"


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port nobody listens on right now (the usual small race applies)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 10,
                  alive: Callable[[], bool] = lambda: True) -> None:
    """Return once something accepts TCP connections on host:port. RuntimeError when
    `alive()` says the process meant to listen has gone, TimeoutError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if not alive():
                raise RuntimeError(f"the process meant to listen on {host}:{port} exited") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s") from None
            time.sleep(0.02)
