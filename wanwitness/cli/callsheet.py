"""`wanwitness callsheet`: what to tell the ISP's support line about an outage.

A thin wrapper over wanwitness/web/callsheet.py (the web UI shows the same sheet).
"""

from __future__ import annotations

import json
from zoneinfo import ZoneInfo

import click

from wanwitness.cli.common import Ctx, db_option
from wanwitness.config import LANGS
from wanwitness.errors import UserError


@click.command("callsheet")
@db_option
@click.option("--agent", metavar="NAME", help="Only this agent's outages (default: any agent).")
@click.option("--start", metavar="WHEN",
              help='A past outage: when it started, within 1 s, e.g. "2026-11-03 08:00:05" '
                   "(no offset = [tariff] timezone), 2026-11-03T07:00:05Z, or its id AGENT@TIME.")
@click.option("--lang", metavar="|".join(LANGS), help="Language (default: [claim] lang, else en).")
@click.option("--json", "as_json", is_flag=True, help="Print the sheet as JSON.")
@click.pass_obj
def callsheet(obj: Ctx, db: str | None, agent: str | None, start: str | None, lang: str | None,
              as_json: bool) -> None:
    """What to tell the ISP's support line: the outage going on now (or --start a past one),
    the router's lights, what answered, your customer number, and what to note."""
    from wanwitness.web import callsheet as cs
    lang = lang or obj.config.claim.lang
    if lang not in LANGS:
        raise UserError(f"--lang {lang!r}: choose one of {', '.join(LANGS)}")
    if start is not None:
        cs.parse_start(start, ZoneInfo(obj.config.tariff.timezone), "--start")  # names the option
    sheet = cs.build(obj.store(db, must_exist=True), obj.config, agent=agent, start=start, lang=lang)
    if as_json:
        click.echo(json.dumps(sheet, indent=2, ensure_ascii=False))
    else:
        click.echo(cs.render_text(sheet), nl=False)


def register(cli: click.Group) -> None:
    cli.add_command(callsheet)
