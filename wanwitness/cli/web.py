"""`wanwitness web password`: the password of the web UI (needed off loopback);
`wanwitness web metrics-token`: the bearer token Prometheus scrapes /metrics with."""

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


@web.command("metrics-token")
@db_option
@click.option("--stdin", "from_stdin", is_flag=True,
              help="Read the token from the first line of standard input instead of making one.")
@click.option("--remove", is_flag=True,
              help="Remove the token: /metrics is then served only to whoever may read the UI.")
@click.pass_obj
def web_metrics_token(obj: Ctx, db: str | None, from_stdin: bool, remove: bool) -> None:
    """Make the token Prometheus sends to /metrics (stored hashed; printed once)."""
    from wanwitness.web import auth
    store = obj.store(db)
    if remove:
        if from_stdin:
            raise UserError("--remove and --stdin: choose one")
        auth.remove_metrics_token(store)
        click.echo("metrics token removed", err=True)
        return
    given = sys.stdin.readline().strip() if from_stdin else None
    token = auth.set_metrics_token(store, given)
    if given is None:
        click.echo(token)
        click.echo("the metrics token (shown only now): put it in the file Prometheus's "
                   "`authorization: credentials_file` names; the token before no longer works",
                   err=True)
    else:
        click.echo("metrics token set; the token before no longer works", err=True)


def register(cli: click.Group) -> None:
    cli.add_command(web)
