"""`wanwitness web password`: the password of the web UI (needed off loopback)."""

from __future__ import annotations

import sys

import click

from wanwitness.cli.common import Ctx, db_option
from wanwitness.errors import UserError


@click.group()
def web() -> None:
    """The web UI that `wanwitness collect` serves."""


@web.command("password")
@db_option
@click.option("--stdin", "from_stdin", is_flag=True,
              help="Read the password from the first line of standard input (for scripts).")
@click.option("--remove", is_flag=True,
              help="Remove the password: the web UI is then served on loopback only.")
@click.pass_obj
def web_password(obj: Ctx, db: str | None, from_stdin: bool, remove: bool) -> None:
    """Set the web UI's password (stored hashed); every open session ends."""
    from wanwitness.web import auth
    store = obj.store(db)
    if remove:
        if from_stdin:
            raise UserError("--remove and --stdin: choose one")
        store.set_setting(auth.PASSWORD_KEY, "")
        auth.new_session_secret(store)
        click.echo("web password removed: the web UI is served on loopback addresses only")
        return
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("New web password", hide_input=True, confirmation_prompt=True)
    auth.set_password(store, password)
    click.echo("web password set; sessions logged in before are logged out")


def register(cli: click.Group) -> None:
    cli.add_command(web)
