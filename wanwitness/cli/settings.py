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
            elif isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int):
                value = f"{value[0]}:{value[1]}"   # a listener (host, port)
            elif isinstance(value, tuple):
                value = [_no_userinfo(v) for v in value]   # e.g. [stamp] tsa_urls
            elif value is None:  # a listener that is "off"
                value = "off"
            click.echo(f"{key} = {value!r}")
        click.echo()
    for line in conf.lines:
        click.echo(f"[lines.{line.name}]")
        click.echo(f"agents = {list(line.agents)!r}")
        for section, keys in line.overrides.items():
            for key, value in keys.items():
                click.echo(f"{section}.{key} = {value!r}")
        click.echo()


def _no_userinfo(v: object) -> object:
    """A URL's user:password@ masked (a TSA may want basic auth); anything else as it is."""
    if isinstance(v, str) and "@" in v and "://" in v:
        scheme, rest = v.split("://", 1)
        if "@" in rest.split("/", 1)[0]:
            return f"{scheme}://****@{rest.split('@', 1)[1]}"
    return v


@config_group.command("example")
def config_example() -> None:
    """Print a commented config file with every key."""
    click.echo(cfg.example())
