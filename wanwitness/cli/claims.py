"""`wanwitness ticket ...` and `wanwitness claim`: support tickets and the refund claim.

Thin wrappers: the work is in wanwitness/claims/ (tickets, link, build, files, bundle,
csvout, render); see docs/claims.md.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import click

from wanwitness.config import LANGS
from wanwitness.errors import UserError

if TYPE_CHECKING:
    from wanwitness.claims.model import Ticket
    from wanwitness.cli.common import Ctx

from wanwitness.claims.make import FORMATS


def parse_option_args(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`--option key=value` strings -> {key: value}; the pack parses the values."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise UserError(f"--option {pair!r}: expected KEY=VALUE, e.g. partial_days=true")
        out[key.strip()] = value.strip()
    return out


def rule_pack_names() -> list[str]:
    from wanwitness.claims.rules import names
    return names()


def _db_option(f: Callable) -> Callable:
    from wanwitness.cli.common import db_option
    return db_option(f)


def _tz(obj: Ctx, line: str | None = None) -> ZoneInfo:
    """[tariff] timezone, of LINE when the config has lines and it is given (or the only one)."""
    conf = obj.config
    if conf.lines and (line or len(conf.lines) == 1):
        conf = conf.for_line(line or None)
    return ZoneInfo(conf.tariff.timezone)


def _line_option(f: Callable) -> Callable:
    return click.option("--line", "line", metavar="NAME",
                        help="The line ([lines.NAME] in the config); needed when it has several.")(f)


def _when(text: str, tz: ZoneInfo, option: str) -> datetime:
    from wanwitness.claims.tickets import parse_when
    try:
        return parse_when(text, tz, option)
    except ValueError as e:
        raise UserError(str(e)) from None


# --- ticket ---------------------------------------------------------------------------

@click.group()
def ticket() -> None:
    """Fault reports to the ISP: number, time, channel, operator, appointments.

    Times without an offset are local times in [tariff] timezone.
    """


@ticket.command("add")
@_db_option
@click.option("--number", required=True, help="The ticket number the ISP gave you.")
@click.option("--opened", required=True, metavar="WHEN",
              help='When the ISP received the report, e.g. "2026-11-03 09:12".')
@click.option("--closed", metavar="WHEN", help="When the ISP closed it (or later: ticket close).")
@click.option("--channel", metavar="|".join(("phone", "email", "app", "office")),
              help="How you reported it.")
@click.option("--operator", metavar="TEXT", help='Who took the report, e.g. "17 / Maria".')
@click.option("--promised", metavar="WHEN", help="When the ISP promised the fix.")
@click.option("--appointment", "appointments", multiple=True, metavar="WHEN",
              help="A technician appointment (repeatable; later: ticket appointment).")
@click.option("--missed", is_flag=True, help="The technician missed the appointment(s) given.")
@click.option("--declined-h", metavar="HOURS",
              help="Hours lost to repair slots you declined (counted against you by some rules).")
@click.option("--note", metavar="TEXT", help="Anything else worth citing.")
@_line_option
@click.pass_obj
def ticket_add(obj: Ctx, db: str | None, number: str, opened: str, closed: str | None,
               channel: str | None, operator: str | None, promised: str | None,
               appointments: tuple[str, ...], missed: bool, declined_h: str | None,
               note: str | None, line: str | None) -> None:
    """Record a fault report (it is linked to outages by time automatically)."""
    from wanwitness.claims import tickets as tk
    line = tk.check_line(obj.config, line)
    tz = _tz(obj, line)
    try:
        declined_s = float(Decimal(declined_h) * 3600) if declined_h else 0.0
    except InvalidOperation:
        raise UserError(f"--declined-h {declined_h!r}: expected hours, e.g. 4.5") from None
    try:
        t = tk.new_ticket(
            number, _when(opened, tz, "--opened"), tz=tz,
            closed=_when(closed, tz, "--closed") if closed else None,
            channel=tk.check_channel(channel), operator=operator,
            promised=_when(promised, tz, "--promised") if promised else None,
            appointments=tuple(_when(a, tz, "--appointment") for a in appointments),
            missed=missed, note=note, declined_s=declined_s, line=line)
    except ValueError as e:
        raise UserError(f"ticket {number.strip()}: {e}") from None
    tk.add(obj.store(db), t)
    click.echo(f"ticket {t.number} added" + (f" for line {line}" if line else "")
               + f": opened {tk.local_text(t.opened, tz)} {tz.key}"
               + (f", closed {tk.local_text(t.closed, tz)}" if t.closed else ", still open"))


@ticket.command("edit")
@_db_option
@click.argument("number")
@click.option("--channel", metavar="|".join(("phone", "email", "app", "office")),
              help='How you reported it ("" clears it).')
@click.option("--operator", metavar="TEXT", help='Who took the report ("" clears it).')
@click.option("--promised", metavar="WHEN", help='When the ISP promised the fix ("" clears it).')
@click.option("--note", metavar="TEXT", help='Anything else worth citing ("" clears it).')
@_line_option
@click.pass_obj
def ticket_edit(obj: Ctx, db: str | None, number: str, channel: str | None,
                operator: str | None, promised: str | None, note: str | None,
                line: str | None) -> None:
    """Change ticket NUMBER: its channel, operator, promised fix, note or line."""
    from wanwitness.claims import tickets as tk
    changes: dict[str, Any] = {}
    if line is not None:
        if not obj.config.lines:
            raise UserError(f"--line {line!r}: {obj.config.path} has no [lines.NAME] tables")
        changes["line"] = tk.check_line(obj.config, line)
    store = obj.store(db)
    tz = _tz(obj, changes.get("line") or tk.get(store, number).line)
    if channel is not None:
        changes["channel"] = channel or None
    if operator is not None:
        changes["operator"] = operator
    if promised is not None:
        changes["promised"] = _when(promised, tz, "--promised") if promised else None
    if note is not None:
        changes["note"] = note
    if not changes:
        raise UserError("nothing to change: give --channel, --operator, --promised, --note or --line")
    try:
        after = tk.update(store, number, tz, **changes)
    except ValueError as e:
        raise UserError(f"ticket {number.strip()}: {e}") from None
    click.echo(f"ticket {after.number} changed: " + ", ".join(sorted(changes)))


@ticket.command("close")
@_db_option
@click.argument("number")
@click.option("--at", "at", required=True, metavar="WHEN", help="When the ISP closed the ticket.")
@click.pass_obj
def ticket_close(obj: Ctx, db: str | None, number: str, at: str) -> None:
    """Set when ticket NUMBER was closed (again, to correct it)."""
    from wanwitness.claims import tickets as tk
    tz = _tz(obj)
    when = _when(at, tz, "--at")
    before = tk.close(obj.store(db), number, when, tz)
    was = f" (was {tk.local_text(before.closed, tz)})" if before.closed else ""
    click.echo(f"ticket {before.number} closed at {tk.local_text(when, tz)} {tz.key}{was}")


@ticket.command("appointment")
@_db_option
@click.argument("number")
@click.option("--at", "at", required=True, metavar="WHEN", help="When the technician was due.")
@click.option("--missed", is_flag=True, help="The technician did not come.")
@click.pass_obj
def ticket_appointment(obj: Ctx, db: str | None, number: str, at: str, missed: bool) -> None:
    """Add a technician appointment to ticket NUMBER."""
    from wanwitness.claims import tickets as tk
    tz = _tz(obj)
    when = _when(at, tz, "--at")
    tk.add_appointment(obj.store(db), number, when, missed)
    click.echo(f"ticket {number.strip()}: appointment {tk.local_text(when, tz)} {tz.key}"
               + (" (missed)" if missed else ""))


def _linked(obj: Ctx, store, tickets: list[Ticket]) -> list[Ticket]:
    from wanwitness.claims import link
    from wanwitness.claims import tickets as tk
    from wanwitness.claims.build import outage_from_timeline
    from wanwitness.collector import timeline
    outages = [outage_from_timeline(o) for o in timeline.query(store)]
    return link.link_lines(tickets, outages, tk.overrides(store), obj.config)


@ticket.command("list")
@_db_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON (times in UTC).")
@click.pass_obj
def ticket_list(obj: Ctx, db: str | None, as_json: bool) -> None:
    """List the tickets with the outages each is linked to."""
    from wanwitness.claims import tickets as tk
    from wanwitness.claims.build import ticket_dict
    store = obj.store(db, must_exist=True)
    tz = _tz(obj)
    rows = _linked(obj, store, tk.list_all(store))
    if as_json:
        click.echo(json.dumps([ticket_dict(t) for t in rows], indent=2, ensure_ascii=False))
        return
    if not rows:
        click.echo("no tickets (wanwitness ticket add --number N --opened WHEN)")
        return
    lines = bool(obj.config.lines)
    table = [("number", *(("line",) if lines else ()), f"opened ({tz.key})", "closed", "channel",
              "operator", "appointments", "outages")]
    for t in rows:
        appts = ", ".join(tk.local_text(a.at, tz) + (" missed" if a.missed else "")
                          for a in t.appointments)
        table.append((t.number, *((t.line or "-",) if lines else ()), tk.local_text(t.opened, tz),
                      tk.local_text(t.closed, tz) if t.closed else "open", t.channel or "",
                      t.operator or "", appts, " ".join(t.outage_ids) or "-"))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _set_link(obj: Ctx, db: str | None, number: str, outage: str, linked: bool) -> None:
    from wanwitness.claims import tickets as tk
    from wanwitness.collector import timeline
    agent, sep, when_text = outage.partition("@")
    if not sep or not agent or not when_text:
        raise UserError(f"outage {outage!r}: expected AGENT@WHEN, e.g. home@2026-11-03T08:00:00.000Z "
                        "(the id in the claim, or any time during the outage)")
    when = _when(when_text, _tz(obj), "outage time")
    store = obj.store(db)
    t = tk.get(store, number)
    at_ms = tk.to_ms(when)
    found = [o for o in timeline.query(store, agent=agent)
             if o.cls != timeline.UNKNOWN and o.start_ms <= at_ms
             and (o.end_ms is None or at_ms < o.end_ms or at_ms == o.start_ms)]
    if not found:
        raise UserError(f"no outage of {agent!r} at {outage.partition('@')[2]} "
                        f"(wanwitness outages --agent {agent})")
    o = found[-1]
    tk.set_link(store, t.number, agent, o.evidence["open_seq"], linked)
    verb = "linked to" if linked else "unlinked from"
    click.echo(f"ticket {t.number} {verb} outage {agent}@{timeline.iso(o.start_ms)} ({o.cls})")


@ticket.command("link")
@_db_option
@click.argument("number")
@click.argument("outage")
@click.pass_obj
def ticket_link(obj: Ctx, db: str | None, number: str, outage: str) -> None:
    """Link ticket NUMBER to OUTAGE (AGENT@WHEN: its id, or a time during it)."""
    _set_link(obj, db, number, outage, True)


@ticket.command("unlink")
@_db_option
@click.argument("number")
@click.argument("outage")
@click.pass_obj
def ticket_unlink(obj: Ctx, db: str | None, number: str, outage: str) -> None:
    """Unlink ticket NUMBER from OUTAGE, even where the times overlap."""
    _set_link(obj, db, number, outage, False)


# --- claim ------------------------------------------------------------------------------

def _pack_and_options(conf: Any, rules_name: str | None, option_args: tuple[str, ...]
                      ) -> tuple[Any, dict[str, Any]]:
    from wanwitness.claims.make import choose_pack
    return choose_pack(conf, rules_name, parse_option_args(option_args))


def _write(data: bytes, out: Path | None) -> None:
    if out is not None:
        try:
            out.write_bytes(data)
        except OSError as e:
            raise UserError(f"--out {out}: cannot write it: {e.strerror}") from None
        return
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


def _file_mode(outages: Path | None, tickets: Path | None, tariff: Path | None,
               evidence: Path | None) -> bool:
    """Whether the claim runs from files (no store); refuses half a file mode."""
    if not (outages or tickets or tariff):
        return False
    if not outages:
        raise UserError("--tickets and --tariff belong to the file mode: add --outages FILE")
    if not tariff:
        raise UserError("--outages needs --tariff FILE (in the file mode the tariff comes from it)")
    if evidence:
        raise UserError("--evidence needs the store (the bundle carries its ledger records); "
                        "drop --outages/--tickets/--tariff")
    return True


@click.command()
@_db_option
@click.option("--period", metavar="YYYY-MM",
              help="Billing period (default: the last complete one).")
@click.option("--rules", "rules_name", metavar="NAME",
              help=f"Rule pack: {', '.join(rule_pack_names())} (default: [claim] rules).")
@click.option("--option", "option_args", multiple=True, metavar="KEY=VALUE",
              help="A rule pack option (repeatable), e.g. partial_days=true.")
@click.option("--lang", metavar="|".join(LANGS), help="Letter language (default: [claim] lang, else en).")
@click.option("--format", "fmt", default="json", show_default=True, metavar="|".join(FORMATS),
              help="Output format: the claim as JSON or CSV, or the letter.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here (default: standard output; pdf needs --out or a redirect).")
@click.option("--evidence", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the evidence bundle (zip) here.")
@click.option("--outages", "outages_file", type=click.Path(dir_okay=False, path_type=Path),
              help="File mode, no store: outages as `wanwitness outages --csv` writes them.")
@click.option("--tickets", "tickets_file", type=click.Path(dir_okay=False, path_type=Path),
              help="File mode: tickets.csv (number,opened,closed,channel,operator,missed_appointments).")
@click.option("--tariff", "tariff_file", type=click.Path(dir_okay=False, path_type=Path),
              help="File mode: tariff.toml (monthly_fee, currency, period_start_day, timezone).")
@_line_option
@click.pass_obj
def claim(obj: Ctx, db: str | None, period: str | None, rules_name: str | None,
          option_args: tuple[str, ...], lang: str | None, fmt: str, out: Path | None,
          evidence: Path | None, outages_file: Path | None, tickets_file: Path | None,
          tariff_file: Path | None, line: str | None) -> None:
    """Compute the refund claim for a billing period and write it (JSON, CSV or a letter)."""
    from wanwitness.claims import build as b
    from wanwitness.claims.make import encode, missing_parties
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "pdf" and out is None and sys.stdout.isatty():
        raise UserError("--format pdf is binary: pass --out FILE (or redirect the output)")
    file_mode = _file_mode(outages_file, tickets_file, tariff_file, evidence)
    if file_mode and line:
        raise UserError("--line chooses a line of the store: drop it, or --outages/--tickets/--tariff")
    conf = obj.config if file_mode else obj.config.for_line(line)
    lang = lang or conf.claim.lang
    if lang not in LANGS:
        raise UserError(f"--lang {lang!r}: choose one of {', '.join(LANGS)}")
    pack, options = _pack_and_options(conf, rules_name, option_args)
    store = None
    try:
        if outages_file and tariff_file:
            inputs = b.from_files(outages_file, tickets_file, tariff_file, period)
        else:
            store = obj.store(db, must_exist=True)
            inputs = b.from_store(store, conf, period)
    except b.PeriodError as e:
        raise UserError(f"--period: {e}") from None
    for warning in inputs.warnings:
        click.echo(f"note: {warning}", err=True)
    result = b.build(inputs, pack, options, lang)
    if fmt in ("md", "html", "pdf"):
        missing = missing_parties(result)
        if missing:
            where = tariff_file if file_mode else conf.path
            also = (f" (or [lines.{conf.line.name}.customer] / [lines.{conf.line.name}.isp])"
                    if conf.line is not None else "")
            raise UserError(f"a letter needs {' and '.join(missing)}: set it in {where}{also}")
    data = encode(result, fmt, lang)
    if fmt != "json":
        # For the user, never the letter (the JSON carries them as "notes").
        for note in result["notes"]:
            click.echo(f"note: {note}", err=True)
    if evidence is not None and store is not None:
        # First: it checks the ledger, and a broken one should leave no claim behind.
        from wanwitness.claims.bundle import write_bundle
        write_bundle(evidence, store, result, inputs, conf.stamp.tsa_certs)
        led = result["ledger"]
        click.echo(f"evidence bundle written to {evidence} (ledger checkpoint {led['checkpoint']}, "
                   + ", ".join(f"{a} link {h['link']}" for a, h in led["heads"].items())
                   + "); check it with: python3 verify.py", err=True)
    _write(data, out)
    if out is not None:
        click.echo("claim " + (f"line {inputs.line}, " if inputs.line else "")
                   + f"{result['period']['label']} ({result['rules']['name']}): "
                   f"{result['total']} {result['currency']} in {len(result['items'])} item(s), "
                   f"written to {out}", err=True)


def register(cli: click.Group) -> None:
    cli.add_command(ticket)
    cli.add_command(claim)
