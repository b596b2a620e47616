"""`wanwitness deploy | calibrate | console`: the agent onto a board, its sensors, its log."""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    pass
