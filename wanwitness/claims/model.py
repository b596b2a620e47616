"""The claim's data model: what a rule pack reads and what it returns.

Shared by the rule packs (`wanwitness/claims/rules/`), the claim builder
(`wanwitness/claims/build.py`: store or files -> these objects -> a claim dict) and
the letter renderer (`wanwitness/claims/render.py`: claim dict -> md/html/pdf).

Times are timezone-aware `datetime`s (UTC from the store; rule packs convert to the
tariff's time zone when they count calendar or working days). Money is `Decimal`,
rounded to cents only when an item is made (`money()`), never in between.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo

# Outage classes (wanwitness.collector.timeline): which ones a pack may claim is the pack's call,
# but local_down (the user's own equipment) and unknown (no agent reporting) never are.
CLAIMABLE_ALWAYS = frozenset({"isp_down"})
NEVER_CLAIMABLE = frozenset({"local_down", "unknown"})


def money(x: Decimal) -> Decimal:
    """Round to cents, half up (as a bill is rounded)."""
    return Decimal(x).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class Outage:
    """One row of `wanwitness outages` (store or outages.csv)."""
    agent: str
    cls: str                      # isp_down | dns_down | degraded | local_down | unknown
    start: datetime               # aware, UTC
    end: datetime | None          # None: still ongoing (counted up to the period's end)
    start_uncertainty_s: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)  # boot, open_seq, close_seq, ...

    @cached_property
    def id(self) -> str:
        """Stable reference used by items and tickets: 'agent@2026-11-03T09:12:00.123Z'
        (cached: a claim over a year of outages asks it some 100,000 times)."""
        return f"{self.agent}@{iso(self.start)}"


@dataclass(frozen=True)
class Appointment:
    at: datetime                  # aware
    missed: bool = False


@dataclass(frozen=True)
class Ticket:
    number: str
    opened: datetime              # aware: when the fault report was received
    closed: datetime | None = None
    channel: str | None = None    # phone | email | app | office
    operator: str | None = None   # "17 / Maria"
    promised: datetime | None = None
    appointments: tuple[Appointment, ...] = ()
    note: str | None = None
    outage_ids: tuple[str, ...] = ()   # linked outages (Outage.id); empty = link by time
    declined_s: float = 0.0       # time lost to repair slots the customer declined or missed
    # The outage ids of outage_ids that link.link() added by the time rule alone (not the
    # user's choice): one that comes back after the reported fault was repaired is a new
    # fault, which this report does not cover.
    auto_linked: tuple[str, ...] = ()
    line: str | None = None       # [lines.NAME] it was reported for; None: the only line

    @property
    def missed_appointments(self) -> int:
        return sum(1 for a in self.appointments if a.missed)


@dataclass(frozen=True)
class Tariff:
    monthly_fee: Decimal
    currency: str                 # ISO 4217: EUR, GBP, HUF, RUB, KES
    period_start_day: int = 1     # billing period starts on this day of the month (1..28)
    timezone: str = "UTC"         # IANA name; days are counted in this zone

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def period(self, label: str) -> Period:
        """'2026-11' -> the billing period starting on period_start_day of that month
        (local midnight in the tariff's zone) and ending where the next one starts."""
        try:
            y, m = (int(x) for x in label.split("-"))
            if not 1 <= m <= 12 or not 1970 <= y <= 9998:
                raise ValueError
        except ValueError:
            raise ValueError(f"period {label!r}: expected YYYY-MM, e.g. 2026-11") from None
        ny, nm = (y + 1, 1) if m == 12 else (y, m + 1)
        start = datetime(y, m, self.period_start_day, tzinfo=self.tz)
        end = datetime(ny, nm, self.period_start_day, tzinfo=self.tz)
        return Period(start, end, f"{y:04d}-{m:02d}")


@dataclass(frozen=True)
class Period:
    """A billing period [start, end) in the tariff's zone; label '2026-11'."""
    start: datetime               # aware, tariff zone, local midnight
    end: datetime                 # exclusive
    label: str

    @property
    def seconds(self) -> float:
        return (self.end.astimezone(UTC) - self.start.astimezone(UTC)).total_seconds()

    def days(self) -> list[date]:
        out, d = [], self.start.date()
        while d < self.end.date():
            out.append(d)
            d = date.fromordinal(d.toordinal() + 1)
        return out


# Item kinds: the renderer writes one sentence per kind in every language from `basis`,
# so a pack must use these kinds and fill these basis keys (more keys are fine).
ITEM_KINDS = {
    # pro-rata style: amount = monthly_fee * seconds / period_seconds
    "downtime": ("seconds", "monthly_fee", "period_seconds"),
    # one calendar/working day of outage paid at a daily rate (de-tkg58, uk-ofcom, hu-eszr, ke)
    "day": ("date", "day_number", "rate"),           # rate: human formula, "max(EUR 5, 10 %)"
    # a missed technician appointment
    "appointment": ("date", "ticket", "rate"),
    # a whole month's fee (hu-eszr: suspension > 48 h in a calendar month)
    "month_fee": ("month", "seconds"),
}


@dataclass
class Item:
    kind: str                     # one of ITEM_KINDS
    amount: Decimal               # already money()-rounded, in the tariff's currency
    basis: dict[str, Any]         # JSON-able: what the amount was computed from
    outages: list[str] = field(default_factory=list)   # Outage.id
    tickets: list[str] = field(default_factory=list)   # Ticket.number
    description: str = ""         # one English line (the JSON's; the letter translates by kind)


def statement(msgid: str, **args: str) -> dict[str, Any]:
    """What the ISP must read, for the letter: `msgid` (English, %(name)s fields, in the
    letter's catalogs) and its `args` (strings; the letter formats them by name: see
    letter.format_args), plus `text`, the English sentence for the JSON and the CLI."""
    return {"msgid": msgid, "args": dict(args), "text": msgid % args}


@dataclass
class RuleResult:
    items: list[Item]
    # Notes for the user, never the letter: options in effect, how to change them,
    # amounts that are configuration, time left out and why. English; JSON, preview, CLI.
    notes: list[str] = field(default_factory=list)
    # What the ISP must read, in the letter's language (statement()): the legal
    # conditions relied on, what was deliberately not claimed and why.
    statements: list[dict[str, Any]] = field(default_factory=list)
    # Dates the claim must show: e.g. {"file_by": date, "answer_due": date} (ru-telematics)
    dates: dict[str, date] = field(default_factory=dict)
    # Seconds counted per outage id (the claimable time after grace / exclusions).
    counted_s: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> Decimal:
        return money(sum((i.amount for i in self.items), Decimal(0)))


def iso(dt: datetime) -> str:
    """Aware datetime -> '2026-11-03T09:12:00.123Z' (the format of `outages --json`)."""
    u = dt.astimezone(UTC)
    return u.strftime("%Y-%m-%dT%H:%M:%S") + f".{u.microsecond // 1000:03d}Z"
