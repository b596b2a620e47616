"""Claims from files, with no store: outages.csv, tickets.csv, tariff.toml.

So that anyone (the ISP, a consumer advice centre, a court expert) can recompute a
claim. Every error names the file and the line: `tickets.csv line 3: closed
2026-11-02 09:00 is before opened 2026-11-03 09:12`.

- outages.csv: exactly what `wanwitness outages --csv` writes (timeline.CSV_HEADER);
  times ISO 8601, no offset = UTC, `end` empty = ongoing.
- tickets.csv: number,opened,closed,channel,operator,missed_appointments (required:
  number, opened), optional promised, note, declined_h, outages. Times without an
  offset are local in the tariff's zone. missed_appointments is a count or the missed
  times separated by ';'. outages (ids separated by ';') replaces the automatic
  linking for that ticket.
- tariff.toml: monthly_fee, currency, period_start_day, timezone; optional [customer]
  and [isp] tables with the keys of the collector config's sections of those names.

The writers produce the same formats; the evidence bundle ships the claim's inputs
in them.
"""

from __future__ import annotations

import csv
import io
import json
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from wanwitness.collector import protocol, timeline
from wanwitness.csvsafe import restore, text

from .. import config as cfg
from ..errors import UserError
from .model import Appointment, Outage, Tariff, Ticket
from .tickets import check_channel, check_number, local_text, parse_when, to_ms, validate

UTC = UTC
OUTAGE_CLASSES = frozenset(protocol.OUTAGE_STATES) | {timeline.UNKNOWN}
OUTAGES_REQUIRED = ("agent", "class", "start", "end")
TICKETS_REQUIRED = ("number", "opened")
TICKETS_COLUMNS = ("number", "opened", "closed", "channel", "operator", "missed_appointments",
                   "promised", "note", "declined_h", "outages")
TARIFF_REQUIRED = ("monthly_fee", "currency")


def _read_text(path: Path) -> str:
    try:
        # utf-8-sig: a spreadsheet's byte order mark is not part of the first column name.
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read it: {e.strerror}") from None


def _rows(path: Path, required: tuple[str, ...], known: tuple[str, ...]
          ) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, {column: text}) for every non-blank data row, after checking the header."""
    reader = csv.reader(io.StringIO(_read_text(path), newline=""), strict=True)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise UserError(f"{path}: empty file (expected a header line {','.join(known)})") from None
    except csv.Error as e:
        raise UserError(f"{path} line 1: {e}") from None
    for name in header:
        if name not in known:
            raise UserError(f"{path} line 1: unknown column {name!r} (expected {','.join(known)})")
    for name in required:
        if name not in header:
            raise UserError(f"{path} line 1: column {name!r} is missing (expected {','.join(known)})")
    if len(set(header)) != len(header):
        raise UserError(f"{path} line 1: a column appears twice")
    while True:
        line = reader.line_num + 1  # where the row starts (a quoted field may span lines)
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise UserError(f"{path} line {line}: {e}") from None
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise UserError(f"{path} line {line}: expected {len(header)} fields "
                            f"({','.join(header)}), got {len(row)}")
        yield line, dict(zip(header, row))


# --- outages.csv ------------------------------------------------------------------

def _utc_time(text: str, what: str) -> datetime:
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{what} {text!r}: not an ISO 8601 time such as 2026-11-03T08:00:00.000Z") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC)


def _outage(row: dict[str, str]) -> Outage:
    agent, cls = restore(row["agent"].strip()), restore(row["class"].strip())
    if not agent:
        raise ValueError("agent is empty")
    if cls not in OUTAGE_CLASSES:
        raise ValueError(f"class {cls!r}: expected one of {', '.join(sorted(OUTAGE_CLASSES))}")
    start = _utc_time(row["start"], "start")
    end = _utc_time(row["end"], "end") if row["end"].strip() else None
    if end is not None and end < start:
        raise ValueError(f"end {row['end'].strip()} is before start {row['start'].strip()}")
    unc_text = row.get("start_uncertainty_s", "").strip()
    unc = None
    if unc_text:
        try:
            unc = float(unc_text)
        except ValueError:
            unc = -1.0
        if not unc >= 0:  # also catches nan
            raise ValueError(f"start_uncertainty_s {unc_text!r}: expected seconds >= 0")
    evidence: dict[str, Any] = {}
    ev_text = restore(row.get("evidence", "").strip())
    if ev_text:
        try:
            evidence = json.loads(ev_text)
        except ValueError:
            raise ValueError("evidence: not JSON") from None
        if not isinstance(evidence, dict):
            raise ValueError("evidence: expected a JSON object")
    return Outage(agent, cls, start, end, unc, evidence)


def read_outages(path: Path) -> list[Outage]:
    out = []
    for line, row in _rows(path, OUTAGES_REQUIRED, timeline.CSV_HEADER):
        try:
            out.append(_outage(row))
        except ValueError as e:
            raise UserError(f"{path} line {line}: {e}") from None
    return out


def write_outages(outages: list[Outage]) -> str:
    """The outages in `wanwitness outages --csv` form (that module's writer)."""
    return timeline.to_csv([timeline.Outage(
        o.agent, o.cls, to_ms(o.start), None if o.end is None else to_ms(o.end),
        None if o.start_uncertainty_s is None else round(o.start_uncertainty_s * 1000),
        o.evidence) for o in outages])


# --- tickets.csv --------------------------------------------------------------------

def _appointments(text: str, opened: datetime, tz: ZoneInfo) -> tuple[tuple[Appointment, ...], bool]:
    """missed_appointments: '' | count | 'time;time'. Returns (appointments, undated)."""
    text = text.strip()
    if not text:
        return (), False
    if text.isdigit():
        # A count says nothing about when: dated at the report, and said so in the notes.
        return tuple(Appointment(opened, True) for _ in range(int(text))), int(text) > 0
    times = [parse_when(p, tz, "missed appointment") for p in text.split(";") if p.strip()]
    return tuple(Appointment(t, True) for t in sorted(times)), False


def _ticket(row: dict[str, str], tz: ZoneInfo) -> tuple[Ticket, bool]:
    def when(name: str) -> datetime | None:
        text = row.get(name, "").strip()
        return parse_when(text, tz, name) if text else None

    number = check_number(restore(row["number"]))
    opened = when("opened")
    if opened is None:
        raise ValueError("opened is empty")
    appointments, undated = _appointments(row.get("missed_appointments", ""), opened, tz)
    declined = row.get("declined_h", "").strip()
    try:
        declined_s = float(Decimal(declined) * 3600) if declined else 0.0
    except ArithmeticError:
        raise ValueError(f"declined_h {declined!r}: expected hours, e.g. 4.5") from None
    ids = tuple(restore(i.strip()) for i in row.get("outages", "").split(";") if i.strip())
    ticket = Ticket(number=number, opened=opened, closed=when("closed"),
                    channel=check_channel(restore(row.get("channel", "").strip())),
                    operator=restore(row.get("operator", "").strip()) or None,
                    promised=when("promised"), appointments=appointments,
                    note=restore(row.get("note", "").strip()) or None,
                    outage_ids=ids, declined_s=declined_s)
    validate(ticket, tz)
    return ticket, undated


def read_tickets(path: Path, tz: ZoneInfo, outage_ids: set[str] | None = None
                 ) -> tuple[list[Ticket], list[str]]:
    """Tickets and notes (e.g. missed appointments given as a bare count)."""
    tickets: list[Ticket] = []
    notes: list[str] = []
    seen: dict[str, int] = {}
    for line, row in _rows(path, TICKETS_REQUIRED, TICKETS_COLUMNS):
        try:
            ticket, undated = _ticket(row, tz)
            if ticket.number in seen:
                raise ValueError(f"ticket {ticket.number} appears twice (also line {seen[ticket.number]})")
            if outage_ids is not None:
                for oid in ticket.outage_ids:
                    if oid not in outage_ids:
                        raise ValueError(f"outage {oid!r} is not in the outages file")
        except ValueError as e:
            raise UserError(f"{path} line {line}: {e}") from None
        seen[ticket.number] = line
        tickets.append(ticket)
        if undated:
            notes.append(f"{path.name} line {line}: ticket {ticket.number}'s "
                         f"{ticket.missed_appointments} missed appointment(s) have no date; "
                         f"dated at the report ({local_text(ticket.opened, tz)})")
    return tickets, notes


def write_tickets(tickets: list[Ticket], tz: ZoneInfo) -> str:
    """tickets.csv with every column; times with their offset so no zone is needed."""
    def when(dt: datetime | None) -> str:
        return "" if dt is None else dt.astimezone(tz).isoformat()

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(TICKETS_COLUMNS)
    for t in tickets:
        # Text cells neutralised against spreadsheet formulas (csvsafe); _ticket restores them.
        w.writerow([text(t.number), when(t.opened), when(t.closed), text(t.channel or ""),
                    text(t.operator or ""),
                    ";".join(when(a.at) for a in t.appointments if a.missed), when(t.promised),
                    text(t.note or ""), repr(t.declined_s / 3600) if t.declined_s else "",
                    ";".join(text(i) for i in t.outage_ids)])
    return buf.getvalue()


# --- tariff.toml --------------------------------------------------------------------

@dataclass
class TariffFile:
    tariff: Tariff
    customer: dict[str, str] = field(default_factory=dict)
    isp: dict[str, str] = field(default_factory=dict)


def _line_of(text: str, section: str | None, key: str) -> int | None:
    """The line where `key =` is set (inside [section] when given); None if not found."""
    current = None
    for n, line in enumerate(text.splitlines(), 1):
        head = re.match(r"\s*\[\s*([^\]\s]+)\s*\]", line)
        if head:
            current = head.group(1)
        elif current == section and re.match(rf"\s*\"?{re.escape(key)}\"?\s*=", line):
            return n
    return None


def _where(path: Path, text: str, section: str | None, key: str) -> str:
    line = _line_of(text, section, key)
    return f"{path} line {line}" if line else str(path)


def read_tariff(path: Path) -> TariffFile:
    text = _read_text(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: {e}") from None  # tomllib says "(at line N, column M)"
    tables = {"customer": cfg.SCHEMA["customer"], "isp": cfg.SCHEMA["isp"]}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in tables:
            continue
        if key not in cfg.SCHEMA["tariff"]:
            raise UserError(f"{_where(path, text, None, key)}: unknown key {key!r} "
                            f"(known: {', '.join(cfg.SCHEMA['tariff'])}, [customer], [isp])")
        try:
            values[key] = cfg.SCHEMA["tariff"][key][0](value)
        except ValueError as e:
            raise UserError(f"{_where(path, text, None, key)}: {key}: {e}") from None
    for key in TARIFF_REQUIRED:
        if not values.get(key):
            raise UserError(f"{path}: {key} is missing (e.g. monthly_fee = \"39.99\", currency = \"EUR\")")
    parties: dict[str, dict[str, str]] = {}
    for section, schema in tables.items():
        body = raw.get(section, {})
        if not isinstance(body, dict):
            raise UserError(f"{_where(path, text, None, section)}: {section} must be a [{section}] table")
        parties[section] = {k: "" for k in schema}
        for key, value in body.items():
            if key not in schema:
                raise UserError(f"{_where(path, text, section, key)}: unknown key [{section}] {key} "
                                f"(known: {', '.join(schema)})")
            try:
                parties[section][key] = schema[key][0](value)
            except ValueError as e:
                raise UserError(f"{_where(path, text, section, key)}: [{section}] {key}: {e}") from None
    tariff = Tariff(Decimal(values["monthly_fee"]), values["currency"],
                    values.get("period_start_day", 1), values.get("timezone", "UTC"))
    return TariffFile(tariff, parties["customer"], parties["isp"])


def write_tariff(tf: TariffFile) -> str:
    def q(value: str) -> str:
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string

    t = tf.tariff
    lines = [f"monthly_fee = {q(str(t.monthly_fee))}", f"currency = {q(t.currency)}",
             f"period_start_day = {t.period_start_day}", f"timezone = {q(t.timezone)}"]
    for section, body in (("customer", tf.customer), ("isp", tf.isp)):
        lines += ["", f"[{section}]"] + [f"{k} = {q(v)}" for k, v in body.items() if v]
    return "\n".join(lines) + "\n"
