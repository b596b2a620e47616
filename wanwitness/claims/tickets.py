"""Support tickets in the store: add, list, close, appointments, manual outage links.

A ticket is the fault report the ISP received: most compensation rules start their
clock there (TKG §58(3): "nach Eingang der Störungsmeldung"), so its opening time,
channel and operator are what the letter cites. Times typed by the user without an
offset are local times in the tariff's zone ([tariff] timezone); an ISO time with an
offset (2026-11-03T09:12+01:00, ...Z) is taken as it is. The store keeps UTC ms.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from .. import store as s
from ..config import Config
from ..errors import UserError
from .model import Appointment, Ticket

CHANNELS = ("phone", "email", "app", "office")
NUMBER_MAX = 64      # tickets.number column
OPERATOR_MAX = 200   # tickets.operator column
UTC = UTC
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TIME_HELP = "use e.g. 2026-11-03 09:12 (local time) or 2026-11-03T09:12+01:00"


# --- times ------------------------------------------------------------------------

def parse_when(text: str, tz: ZoneInfo, what: str) -> datetime:
    """'2026-11-03 09:12' (local in `tz`) or ISO 8601 with an offset -> aware UTC datetime.

    A local time that the clocks skip (spring forward) does not exist and one they pass
    twice (fall back) is ambiguous: both are refused rather than guessed, because an
    hour's error moves a ticket across a day boundary in a day-counting rule.
    """
    raw = text.strip()
    try:
        dt = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"{what} {text!r}: not a date/time ({_TIME_HELP})") from None
    if dt.tzinfo is not None:
        return dt.astimezone(UTC)
    first, second = dt.replace(tzinfo=tz, fold=0), dt.replace(tzinfo=tz, fold=1)
    if first.utcoffset() != second.utcoffset():
        if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != dt:
            raise ValueError(f"{what} {raw}: that local time does not exist in {tz.key} "
                             "(the clocks jumped forward)")
        raise ValueError(f"{what} {raw}: that local time happened twice in {tz.key} "
                         f"(the clocks went back); add the offset, e.g. "
                         f"{dt.isoformat(timespec='minutes')}{_offset(first)}")
    # Kept in UTC: two datetimes sharing a ZoneInfo compare and subtract as wall-clock
    # times, which is wrong across a DST change.
    return first.astimezone(UTC)


def _offset(dt: datetime) -> str:
    off = dt.utcoffset() or timedelta(0)
    sign = "-" if off < timedelta(0) else "+"
    minutes = abs(off) // timedelta(minutes=1)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def local_text(dt: datetime, tz: ZoneInfo) -> str:
    """Aware datetime -> '2026-11-03 09:12' in `tz` (seconds only when there are some)."""
    local = dt.astimezone(tz)
    return local.strftime("%Y-%m-%d %H:%M:%S" if local.second else "%Y-%m-%d %H:%M")


def to_ms(dt: datetime) -> int:
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _opt_ms(dt: datetime | None) -> int | None:
    return None if dt is None else to_ms(dt)


def _opt_dt(ms: int | None) -> datetime | None:
    return None if ms is None else from_ms(ms)


# --- validation ---------------------------------------------------------------------

def check_number(number: str) -> str:
    num = number.strip()
    if not num:
        raise ValueError("the ticket number is empty")
    if len(num) > NUMBER_MAX or any(ord(c) < 32 for c in num):
        raise ValueError(f"ticket number {num!r}: at most {NUMBER_MAX} printable characters")
    return num


def check_channel(channel: str | None) -> str | None:
    if channel in (None, ""):
        return None
    if channel not in CHANNELS:
        raise ValueError(f"channel {channel!r}: expected one of {', '.join(CHANNELS)}")
    return channel


def validate(ticket: Ticket, tz: ZoneInfo) -> None:
    """Raise ValueError(why) for a ticket that cannot be right; callers say where."""
    check_number(ticket.number)
    check_channel(ticket.channel)
    if ticket.operator is not None and len(ticket.operator) > OPERATOR_MAX:
        raise ValueError(f"operator: at most {OPERATOR_MAX} characters")
    for name, when in (("closed", ticket.closed), ("promised", ticket.promised)):
        if when is not None and when < ticket.opened:
            raise ValueError(f"{name} {local_text(when, tz)} is before opened "
                             f"{local_text(ticket.opened, tz)}")
    if not 0 <= ticket.declined_s < float("inf"):  # also refuses NaN
        raise ValueError(f"declined time: expected hours of 0 or more, got {ticket.declined_s / 3600}")


def new_ticket(number: str, opened: datetime, *, tz: ZoneInfo, closed: datetime | None = None,
               channel: str | None = None, operator: str | None = None,
               promised: datetime | None = None, appointments: tuple[datetime, ...] = (),
               missed: bool = False, note: str | None = None, declined_s: float = 0.0,
               line: str | None = None) -> Ticket:
    """A validated Ticket; `missed` marks the given appointments as missed by the ISP."""
    if missed and not appointments:
        raise ValueError("--missed needs the appointment it refers to (--appointment WHEN)")
    ticket = Ticket(number=number.strip(), opened=opened, closed=closed, channel=channel or None,
                    operator=(operator or "").strip() or None, promised=promised,
                    appointments=tuple(Appointment(a, missed) for a in sorted(appointments)),
                    note=(note or "").strip() or None, declined_s=declined_s, line=line)
    validate(ticket, tz)
    return ticket


# --- the store ------------------------------------------------------------------------

T, A, L = s.tickets, s.ticket_appointments, s.ticket_links


def add(store: s.Store, ticket: Ticket) -> None:
    """Insert a validated ticket; a number that exists already is refused."""
    with store.engine.begin() as conn:
        if conn.execute(sa.select(T.c.number).where(T.c.number == ticket.number)).first():
            raise UserError(f"ticket {ticket.number} already exists (wanwitness ticket list)")
        conn.execute(T.insert().values(
            number=ticket.number, opened_ms=to_ms(ticket.opened),
            closed_ms=_opt_ms(ticket.closed),
            channel=ticket.channel, operator=ticket.operator,
            promised_ms=_opt_ms(ticket.promised),
            note=ticket.note, declined_s=round(ticket.declined_s), created_ms=s.now_ms(),
            line=ticket.line))
        for a in ticket.appointments:
            conn.execute(A.insert().values(ticket=ticket.number, at_ms=to_ms(a.at), missed=a.missed))


def _load(conn: sa.Connection, number: str | None = None) -> list[Ticket]:
    q, qa = sa.select(T), sa.select(A.c.ticket, A.c.at_ms, A.c.missed).order_by(A.c.at_ms, A.c.id)
    if number is not None:
        q, qa = q.where(T.c.number == number), qa.where(A.c.ticket == number)
    appts: dict[str, list[Appointment]] = {}
    for ticket, at_ms, missed in conn.execute(qa):
        appts.setdefault(ticket, []).append(Appointment(from_ms(at_ms), bool(missed)))
    rows = sorted(conn.execute(q).all(), key=lambda r: (r.opened_ms, r.number))
    return [Ticket(number=r.number, opened=from_ms(r.opened_ms), closed=_opt_dt(r.closed_ms),
                   channel=r.channel, operator=r.operator, promised=_opt_dt(r.promised_ms),
                   appointments=tuple(appts.get(r.number, ())), note=r.note,
                   declined_s=float(r.declined_s), line=r.line) for r in rows]


def list_all(store: s.Store) -> list[Ticket]:
    """Every ticket, oldest report first."""
    with store.engine.connect() as conn:
        return _load(conn)


def of_line(tickets: list[Ticket], conf: Config) -> tuple[list[Ticket], list[str]]:
    """The tickets of the line `conf` is for (Config.for_line), and notes on tickets that
    belong to no line: without a line of their own they count for the only line; with
    several lines configured, a ticket must name one."""
    if not conf.lines:
        return tickets, []
    line = conf.line or conf.lines[0]
    names = conf.line_names()
    mine, notes = [], []
    for t in tickets:
        if t.line == line.name or (t.line is None and len(names) == 1):
            mine.append(t)
        elif t.line is None:
            notes.append(f"ticket {t.number} names no line and counts for none of {', '.join(names)}: "
                         f"wanwitness ticket edit {t.number} --line NAME")
        elif t.line not in names:
            notes.append(f"ticket {t.number} is for line {t.line!r}, which is not in {conf.path} "
                         f"(lines: {', '.join(names)}): wanwitness ticket edit {t.number} --line NAME")
    return mine, notes


def check_line(conf: Config, line: str | None, how: str = "--line NAME") -> str | None:
    """The line a new ticket is for: `line` checked against the config's lines; None when
    the config has none. With several lines one must be named."""
    if not conf.lines:
        if line:
            raise UserError(f"no line {line!r}: {conf.path} has no [lines.NAME] tables "
                            "(one line: leave --line out)")
        return None
    chosen = conf.for_line(line or None, how=how).line
    assert chosen is not None   # a config with lines always chooses one (or raises)
    return chosen.name


def get(store: s.Store, number: str) -> Ticket:
    num = number.strip()
    with store.engine.connect() as conn:
        found = _load(conn, num)
    if not found:
        raise UserError(f"no ticket {num!r} (wanwitness ticket list)")
    return found[0]


def close(store: s.Store, number: str, at: datetime, tz: ZoneInfo) -> Ticket:
    """Set the ticket's closing time (again, to correct it); returns the ticket as it was."""
    before = get(store, number)
    try:
        validate(Ticket(before.number, before.opened, closed=at), tz)
    except ValueError as e:
        raise UserError(f"ticket {before.number}: {e}") from None
    with store.engine.begin() as conn:
        conn.execute(T.update().where(T.c.number == before.number).values(closed_ms=to_ms(at)))
    return before


_UNSET: Any = object()


def update(store: s.Store, number: str, tz: ZoneInfo, *, closed: datetime | None = _UNSET,
           channel: str | None = _UNSET, operator: str | None = _UNSET,
           promised: datetime | None = _UNSET, note: str | None = _UNSET,
           line: str | None = _UNSET) -> Ticket:
    """Change the fields given (None clears one); the whole ticket is validated again
    before anything is written. Returns the ticket as it is now."""
    before = get(store, number)
    changes: dict[str, Any] = {}
    if closed is not _UNSET:
        changes["closed"] = closed
    if channel is not _UNSET:
        changes["channel"] = check_channel(channel)
    if operator is not _UNSET:
        changes["operator"] = (operator or "").strip() or None
    if promised is not _UNSET:
        changes["promised"] = promised
    if note is not _UNSET:
        changes["note"] = (note or "").strip() or None
    if line is not _UNSET:
        changes["line"] = line
    after = replace(before, **changes)
    try:
        validate(after, tz)
    except ValueError as e:
        raise UserError(f"ticket {before.number}: {e}") from None
    with store.engine.begin() as conn:
        conn.execute(T.update().where(T.c.number == before.number).values(
            closed_ms=_opt_ms(after.closed), channel=after.channel, operator=after.operator,
            promised_ms=_opt_ms(after.promised), note=after.note, line=after.line))
    return after


def add_appointment(store: s.Store, number: str, at: datetime, missed: bool) -> None:
    ticket = get(store, number)
    with store.engine.begin() as conn:
        conn.execute(A.insert().values(ticket=ticket.number, at_ms=to_ms(at), missed=missed))


# --- manual links -------------------------------------------------------------------------

@dataclass(frozen=True)
class Override:
    """A manual link (linked=True) or unlink (False) of a ticket and one outage,
    the outage named by its opening record (agent, open_seq)."""
    ticket: str
    agent: str
    open_seq: int
    linked: bool


def set_link(store: s.Store, number: str, agent: str, open_seq: int, linked: bool) -> None:
    ticket = get(store, number)
    with store.engine.begin() as conn:
        conn.execute(L.delete().where(L.c.ticket == ticket.number, L.c.agent == agent,
                                      L.c.open_seq == open_seq))
        conn.execute(L.insert().values(ticket=ticket.number, agent=agent, open_seq=open_seq,
                                       linked=linked))


def overrides(store: s.Store) -> list[Override]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(L.c.ticket, L.c.agent, L.c.open_seq, L.c.linked)
                            .order_by(L.c.ticket, L.c.agent, L.c.open_seq)).all()
    return [Override(r.ticket, r.agent, r.open_seq, bool(r.linked)) for r in rows]
