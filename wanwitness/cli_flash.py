"""`wanwitness flash`: erase a board and write MicroPython onto it with esptool."""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    pass
