"""`wanwitness stamp`: a trusted timestamp (RFC 3161) of a ledger checkpoint, now.

A thin wrapper over wanwitness/collector/stamp.py (`collect` stamps daily when
[stamp] tsa_urls is set).
"""

from __future__ import annotations

import click

from wanwitness.cli.common import Ctx, checked, db_option
from wanwitness.errors import UserError


@click.command("stamp")
@db_option
@click.option("--tsa", "urls", metavar="URL", multiple=True,
              help="A time-stamping authority's URL (repeatable; default: [stamp] tsa_urls).")
@click.pass_obj
def stamp(obj: Ctx, db: str | None, urls: tuple[str, ...]) -> None:
    """Stamp a checkpoint of every agent's chain with each TSA and keep the tokens (exit 1
    if one failed)."""
    from wanwitness.collector import stamp as st
    from wanwitness.collector.timeline import iso
    conf = obj.config
    targets = [checked(st.check_url, u, "--tsa") for u in urls] or list(conf.stamp.tsa_urls)
    cas = st.load_cas(conf.stamp.tsa_certs)
    done, errors = st.stamp(obj.store(db, must_exist=True), targets, cas, conf.stamp.timeout_s)
    for s in done:
        click.echo(f"stamped checkpoint {s.pos} (root {s.hash}) by {s.tsa} at {iso(s.gen_ms)}")
    for line in errors:
        click.echo(f"NOT stamped: {line}", err=True)
    if errors:
        raise UserError(f"{len(errors)} of {len(targets)} TSA(s) gave no token"
                        + ("" if done else "; nothing stored"), exit_code=1)


def register(cli: click.Group) -> None:
    cli.add_command(stamp)
