"""`wanwitness notify`: try a notification URL, see the queue of notifications.

A thin wrapper over wanwitness/collector/notify.py (`collect` sends what is queued).
"""

from __future__ import annotations

import json
import socket
from zoneinfo import ZoneInfo

import click

from wanwitness.cli.common import Ctx, checked, db_option
from wanwitness.errors import UserError

STATES = ("pending", "sent", "failed")


@click.group("notify")
def notify() -> None:
    """Notifications through Apprise ([notify] in the config; README "Notifications")."""


@notify.command("test")
@click.option("--url", "urls", metavar="URL", multiple=True,
              help="An Apprise URL to try (repeatable; default: every URL in [notify]).")
@click.pass_obj
def test(obj: Ctx, urls: tuple[str, ...]) -> None:
    """Send a test message now, to --url or to every configured URL (nothing is queued)."""
    from wanwitness.collector import notify as nt
    conf = obj.config
    given = [checked(nt.check_url, u, "--url") for u in urls]
    targets = given or nt.all_urls(conf)
    if not targets:
        raise UserError(f"no notification URL: set [notify] urls in {conf.path} or pass --url URL "
                        "(README, \"Notifications\")")
    title = "wanwitness: test notification"
    body = (f"A test from the wanwitness collector on {socket.gethostname()}: notifications "
            "reach you here. The next message will be when your line is back after an outage.")
    failed = 0
    for url in targets:
        ok, why = nt.send(url, title, body)
        if ok:
            click.echo(f"sent to {nt.display(url)}")
        else:
            failed += 1
            click.echo(f"NOT sent to {nt.display(url)}: {why}", err=True)
    if failed:
        raise UserError(f"{failed} of {len(targets)} test notification(s) not sent", exit_code=1)


@notify.command("list")
@db_option
@click.option("--state", type=click.Choice(STATES), help="Only these.")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True,
              help="The newest this many.")
@click.option("--json", "as_json", is_flag=True, help="As JSON (with each message's text).")
@click.pass_obj
def list_queue(obj: Ctx, db: str | None, state: str | None, limit: int, as_json: bool) -> None:
    """The queue of notifications: pending, sent or failed, with the last error."""
    from wanwitness.collector import notify as nt
    from wanwitness.collector.timeline import iso
    conf = obj.config
    store = obj.store(db, must_exist=True)
    names = {nt.target_id(u): nt.display(u) for u in nt.all_urls(conf)}
    tz = ZoneInfo(conf.tariff.timezone)
    found = nt.rows(store, state=state, limit=limit)
    if as_json:
        click.echo(json.dumps([{
            "event": r.event, "kind": r.kind, "agent": r.agent, "to": names.get(r.target),
            "target": r.target, "state": r.state, "attempts": r.attempts, "created": iso(r.created_ms),
            "sent": None if r.sent_ms is None else iso(r.sent_ms),
            "next_try": iso(r.next_ms) if r.state == "pending" else None,
            "last_error": r.last_error, "title": r.title, "body": r.body} for r in found],
            indent=2, ensure_ascii=False))
        return
    if not found:
        click.echo("no notifications" + (f" {state}" if state else "") + " yet")
        return
    table = [("event", "to", "state", "tries", f"created ({tz.key})", "sent / next try", "last error")]
    for r in found:
        when = (r.sent_ms if r.state == "sent" else r.next_ms if r.state == "pending" else None)
        table.append((r.event, names.get(r.target, f"(no longer configured: {r.target})"), r.state,
                      str(r.attempts), nt.local(r.created_ms, tz), "" if when is None else nt.local(when, tz),
                      r.last_error or ""))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    counts = {st: sum(1 for r in found if r.state == st) for st in STATES}
    click.echo(", ".join(f"{n} {st}" for st, n in counts.items()))


def register(cli: click.Group) -> None:
    cli.add_command(notify)

