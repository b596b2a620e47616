"""`wanwitness service`: run the collector as a systemd service (thin wrappers over
`wanwitness.service.systemd`)."""

from __future__ import annotations

from pathlib import Path

import click

from wanwitness.service import systemd

user_option = click.option(
    "--user", "user_mode", is_flag=True,
    help="A service of your own account (systemctl --user) instead of the system service.")
unit_dir_option = click.option(
    "--unit-dir", type=click.Path(file_okay=False, path_type=Path), hidden=True,
    help="Directory of the unit file instead of systemd's (for tests).")


@click.group("service")
def service() -> None:
    """Run the collector as a systemd service on this machine."""


@service.command("install")
@user_option
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Config file the service reads (default: the global --config; system "
                   "service: none; --user: your default config).")
@click.option("--db", "db", metavar="URL",
              help="Database URL (default: the config's [store] url, else SQLite in the "
                   "service's data dir).")
@click.option("--force", is_flag=True, help="Replace a unit file that this command did not write.")
@unit_dir_option
@click.pass_context
def install(ctx: click.Context, user_mode: bool, config_path: Path | None, db: str | None,
            force: bool, unit_dir: Path | None) -> None:
    """Write the collector's systemd unit; print the commands that start it."""
    if config_path is None:  # `wanwitness --config FILE service install` means that file too
        config_path = getattr(ctx.find_root().obj, "config_path", None)
    result = systemd.install(user_mode=user_mode, config=config_path, db=db, force=force,
                             unit_dir=unit_dir)
    click.echo(f"wrote {result.path}")
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo("next, run:" if user_mode else "next, run as root:")
    for command in result.commands:
        click.echo(f"  {command}")


@service.command("uninstall")
@user_option
@unit_dir_option
def uninstall(user_mode: bool, unit_dir: Path | None) -> None:
    """Remove the unit written by `service install`; print the commands that stop it."""
    result = systemd.uninstall(user_mode=user_mode, unit_dir=unit_dir)
    click.echo(f"removed {result.path}")
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo("next, run:" if user_mode else "next, run as root:")
    for command in result.commands:
        click.echo(f"  {command}")


def register(cli: click.Group) -> None:
    """Add the `service` group to the top-level command (as the other cli modules do)."""
    cli.add_command(service)
