"""`wanwitness config ...`: where the config file is, what it holds, an example."""

from __future__ import annotations

import click

from wanwitness import config as cfg
from wanwitness.cli.common import Ctx


@click.group("config")
def config_group() -> None:
    """The collector's config file."""


@config_group.command("path")
@click.pass_obj
def config_path(obj: Ctx) -> None:
    """Print the config file's path."""
    click.echo(str(obj.config_path or cfg.default_config_path()))


@config_group.command("show")
@click.pass_obj
def config_show(obj: Ctx) -> None:
    """Print the effective configuration (file, environment, defaults)."""
    conf = obj.config
    for section, keys in conf.values.items():
        click.echo(f"[{section}]")
        for key, value in keys.items():
            if key == "password" and value:
                value = "********"
            if section == "notify":  # URLs in privacy form, quiet hours as written
                from wanwitness.collector.notify import shown_setting
                value = shown_setting(key, value)
            elif isinstance(value, tuple):
                value = f"{value[0]}:{value[1]}"
            elif value is None:  # a listener that is "off"
                value = "off"
            click.echo(f"{key} = {value!r}")
        click.echo()


@config_group.command("example")
def config_example() -> None:
    """Print a commented config file with every key."""
    click.echo(cfg.example())
