"""Undo actions for the benchmarks: whatever a run started is stopped, even on Ctrl-C."""

from __future__ import annotations

import sys
from collections.abc import Callable


class Cleanup:
    """LIFO of undo actions, run once: from `finally`, atexit or a signal handler."""

    def __init__(self) -> None:
        self._actions: list[tuple[str, Callable[[], None]]] = []

    def push(self, what: str, fn: Callable[[], None]) -> None:
        self._actions.append((what, fn))

    def run(self) -> None:
        while self._actions:
            what, fn = self._actions.pop()
            try:
                fn()
            except Exception as e:  # keep undoing the rest
                print(f"cleanup: {what}: {type(e).__name__}: {e}", file=sys.stderr)
