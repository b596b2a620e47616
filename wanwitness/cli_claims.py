"""`wanwitness ticket ...` and `wanwitness claim`: support tickets and the refund claim."""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    pass
