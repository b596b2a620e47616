"""`wanwitness verify`, `outages`, `quarantine`: reading the ledger."""

from __future__ import annotations

import sys

import click

from wanwitness.cli.common import Ctx, db_option
from wanwitness.errors import UserError


def _verify(obj: Ctx, db: str | None) -> None:
    from wanwitness.collector.ledger import verify_and_record
    from wanwitness.collector.timeline import iso
    result = verify_and_record(obj.store(db, must_exist=True))
    if result.ok:
        cp = result.checkpoint
        click.echo(f"ok: {result.count} link(s) in {result.agents} agent chain(s); "
                   f"{result.checkpoints} checkpoint(s)"
                   + (f", the newest {cp.id} at {iso(cp.made_ms)} with root {cp.root}" if cp else "")
                   + f"; {result.stamps} stamp(s)"
                   + (f"; the old single chain's {result.legacy} link(s) too" if result.legacy else ""))
        return
    click.echo(f"BROKEN at {result.where}: {result.problem} "
               f"({result.count} link(s) in {result.agents} chain(s) verified before it)", err=True)
    sys.exit(1)


@click.command()
@db_option
@click.pass_obj
def verify(obj: Ctx, db: str | None) -> None:
    """Recompute every agent's hash chain and check the checkpoints and stamps; exit 1
    at the first break (the same as `wanwitness ledger verify`)."""
    _verify(obj, db)


@click.group()
def ledger() -> None:
    """The hash chains of the agents' records and their checkpoints."""


@ledger.command("verify")
@db_option
@click.pass_obj
def ledger_verify(obj: Ctx, db: str | None) -> None:
    """Recompute every agent's hash chain, check every checkpoint (its root, its heads
    against the chains) and every stamp's imprint; exit 1 naming the first break."""
    _verify(obj, db)


@ledger.command("checkpoint")
@db_option
@click.pass_obj
def ledger_checkpoint(obj: Ctx, db: str | None) -> None:
    """Commit every agent's chain head now in a checkpoint (a Merkle root), unless
    nothing changed since the newest one."""
    from wanwitness.collector.ledger import make_checkpoint
    from wanwitness.collector.timeline import iso
    cp, made = make_checkpoint(obj.store(db, must_exist=True))
    if cp is None:
        click.echo("the ledger is empty: nothing to commit yet")
        return
    verb = "made" if made else "unchanged since"
    click.echo(f"{verb} checkpoint {cp.id} at {iso(cp.made_ms)}: {cp.agents} agent(s), "
               f"{cp.links} link(s), root {cp.root}")


@click.command()
@db_option
@click.option("--agent", metavar="NAME", help="Only this agent.")
@click.option("--since", metavar="WHEN", help="From this time (ISO 8601; no offset = UTC).")
@click.option("--until", metavar="WHEN", help="Up to this time (ISO 8601; no offset = UTC).")
@click.option("--json", "fmt", flag_value="json", help="JSON list of objects.")
@click.option("--csv", "fmt", flag_value="csv", help="CSV: agent,class,start,end,start_uncertainty_s,evidence.")
@click.pass_obj
def outages(obj: Ctx, db: str | None, agent: str | None, since: str | None, until: str | None,
            fmt: str | None) -> None:
    """List outages and unknown spans, times in UTC."""
    from wanwitness.collector import timeline
    since_ms = timeline.parse_time(since, option="--since") if since else None
    until_ms = timeline.parse_time(until, option="--until") if until else None
    if since_ms is not None and until_ms is not None and until_ms <= since_ms:
        raise UserError("--until must be later than --since")
    notes: list[str] = []
    rows = timeline.query(obj.store(db, must_exist=True), agent=agent, since_ms=since_ms,
                          until_ms=until_ms, notes=notes)
    if fmt == "json":
        click.echo(timeline.to_json(rows))
    elif fmt == "csv":
        click.echo(timeline.to_csv(rows), nl=False)
    else:
        click.echo(timeline.to_table(rows))
    for note in notes:  # on stderr: the output stays valid JSON or CSV
        click.echo(f"note: {note}", err=True)


@click.group()
def quarantine() -> None:
    """Messages that were refused, with the reason."""


@quarantine.command("list")
@db_option
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100000))
@click.pass_obj
def quarantine_list(obj: Ctx, db: str | None, limit: int) -> None:
    """Show the newest quarantined messages, counts per agent and per reason."""
    from wanwitness.collector.quarantine import summary
    click.echo(summary(obj.store(db, must_exist=True), limit))


@quarantine.command("prune")
@db_option
@click.option("--before", required=True, metavar="WHEN",
              help="Delete what was last received before this time (ISO 8601; no offset = UTC).")
@click.pass_obj
def quarantine_prune(obj: Ctx, db: str | None, before: str) -> None:
    """Delete quarantined messages last seen before WHEN, and old over-quota counts."""
    from wanwitness.collector.quarantine import prune
    from wanwitness.collector.timeline import iso, parse_time
    before_ms = parse_time(before, option="--before")
    rows, copies = prune(obj.store(db, must_exist=True), before_ms)
    click.echo(f"pruned {rows} quarantine row(s) standing for {copies} refused message(s), "
               f"last seen before {iso(before_ms)}")
