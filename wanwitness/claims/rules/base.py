"""What every rule pack is: its legal source and counting rules, its options, and the
bookkeeping that makes every claimed minute traceable to ledger outages.

A pack subclasses `RulePack`, fills the class attributes and writes `count(run)`: it
reads `run` (the claimable outages, the fault reports, the tariff, the period, the
parsed options), and calls `run.pay()` for time it claims, `run.item()` for money and
`run.note()` for what the reader must see. `PackRun.finish()` then works out, per
outage, the seconds counted inside the period and, where none are, why not.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from ...errors import UserError
from ..catalogs import N_
from ..model import (
    CLAIMABLE_ALWAYS,
    ITEM_KINDS,
    Item,
    Outage,
    Period,
    RuleResult,
    Tariff,
    Ticket,
    iso,
    money,
    statement,
)
from .days import Span, clip, fmt_duration, length_s, local_date, merge, outage_span, overlap_s, total_s, utc

# Why an outage of a class that no pack claims is not claimed (the claim's "why_not").
NEVER_WHY = {
    "local_down": "local_down: the customer's own equipment",
    "unknown": "unknown: no agent reporting",
}
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}
# why_not of an outage linked to a still-open ticket by time only, after the fault that
# ticket reported had been repaired (PackRun.reports).
WHY_AFTER_REPAIR = "not covered by the fault report: it began after the reported fault had been repaired"


@dataclass
class Fault:
    """One reported fault: the ticket, when its clock starts (UTC: the later of the
    report and the fault's start) and its claimable outages. `anew`: a fault that came
    back after the reported one was repaired and that the user linked to the ticket by
    hand: it runs on a clock of its own, grace period included."""
    ticket: Ticket
    clock: datetime
    outages: list[Outage]
    anew: bool = False


@dataclass
class PackResult(RuleResult):
    """RuleResult plus, per outage id with nothing counted, the reason (the claim's
    "why_not"): the builder may use it instead of guessing."""
    why_not: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Option:
    """One pack option. Values come as strings (`--option key=value`) or typed (TOML)."""
    default: Any
    type: str                     # bool | int | decimal | date | list | dates
    help: str
    choices: tuple[str, ...] = ()  # list: the allowed items

    def parse(self, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()
                             and self.type not in ("list", "dates")):
            if self.default is None:
                return None
            raise ValueError("a value is required")
        return getattr(self, "_" + self.type)(value)

    def _bool(self, v: Any) -> bool:
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip().lower() in _TRUE | _FALSE:
            return v.strip().lower() in _TRUE
        raise ValueError(f"expected true or false, got {v!r}")

    def _int(self, v: Any) -> int:
        try:
            if isinstance(v, bool) or not isinstance(v, (int, str)):
                raise ValueError
            n = int(v)
        except ValueError:
            raise ValueError(f"expected a whole number, got {v!r}") from None
        if n < 0:
            raise ValueError(f"must be 0 or more, got {n}")
        return n

    def _decimal(self, v: Any) -> Decimal:
        try:
            if isinstance(v, bool) or not isinstance(v, (int, float, str, Decimal)):
                raise InvalidOperation
            d = Decimal(str(v).strip())
        except InvalidOperation:
            raise ValueError(f"expected a number, got {v!r}") from None
        if not d.is_finite() or d < 0:
            raise ValueError(f"expected a number of 0 or more, got {v!r}")
        return d

    def _date(self, v: Any) -> date:
        if isinstance(v, date) and not isinstance(v, datetime):
            return v
        try:
            return date.fromisoformat(str(v).strip())
        except ValueError:
            raise ValueError(f"expected a date YYYY-MM-DD, got {v!r}") from None

    def _list(self, v: Any) -> tuple[str, ...]:
        raw = v.split(",") if isinstance(v, str) else v
        if not isinstance(raw, (list, tuple)):
            raise ValueError(f"expected a comma-separated list, got {v!r}")
        items = tuple(s for s in (str(x).strip() for x in raw) if s)
        for s in items:
            if s in NEVER_WHY:
                raise ValueError(f"{s} is never claimable ({NEVER_WHY[s]})")
            if self.choices and s not in self.choices:
                raise ValueError(f"{s!r} is not one of {', '.join(self.choices)}")
        return items

    def _dates(self, v: Any) -> tuple[date, ...]:
        raw = v.split(",") if isinstance(v, str) else v
        if not isinstance(raw, (list, tuple)):
            raise ValueError(f"expected a comma-separated list of dates, got {v!r}")
        return tuple(self._date(x) for x in raw if str(x).strip())


EXCLUDE = Option((), "list", "ticket numbers or outage ids to leave out, e.g. a fault the "
                 "customer caused or force majeure; each one is named in the notes")


REPAIRED = Option(86400, "int", "the line back for longer than this many seconds means the "
                  "reported fault was repaired: a later outage is a new fault, which the old "
                  "report covers only if you link it to the ticket by hand (then with a new "
                  "grace period from its start)")


def classes_option(allowed: frozenset[str]) -> Option:
    return Option(("isp_down",), "list", "outage classes that count (isp_down always): "
                  + ", ".join(sorted(allowed)), choices=tuple(sorted(allowed)))


def jsonable(v: Any) -> Any:
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, datetime):
        return iso(v)
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    return v


class RulePack:
    name: ClassVar[str]
    title: ClassVar[str]
    country: ClassVar[str | None]
    source: ClassVar[str]
    source_url: ClassVar[str | None]
    clock_start: ClassVar[str]            # outage | ticket
    grace: ClassVar[str]                  # human text
    unit: ClassVar[str]                   # second | hour | calendar_day | working_day
    claimable_classes: ClassVar[frozenset[str]] = CLAIMABLE_ALWAYS
    options: ClassVar[dict[str, Option]] = {"exclude": EXCLUDE}
    currency: ClassVar[str | None] = None  # the law fixes amounts in this currency
    # why_not of a claimable outage in the period of which nothing was counted, and the
    # note's reason when only part of it was.
    not_counted: ClassVar[str] = "not counted under this rule"
    partly_counted: ClassVar[str] = "not counted under this rule"

    def milestones(self, ticket: Ticket, tz: ZoneInfo, options: Mapping[str, Any] | None = None
                   ) -> list[tuple[datetime, str]]:
        """The rule's deadlines for a reported fault, as (UTC instant, what happens from
        then): what the web UI's calendar marks. None for a rule whose clock is the outage."""
        return []

    def parse_options(self, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults overlaid with `given` (strings or typed values), validated."""
        out = {k: o.default for k, o in self.options.items()}
        for key, value in (given or {}).items():
            k = key.removeprefix(self.name + ".")
            if k not in self.options:
                known = ", ".join(self.options)
                raise UserError(f"rule pack {self.name}: unknown option {key!r} (known: {known})")
            try:
                out[k] = self.options[k].parse(value)
            except ValueError as e:
                raise UserError(f"rule pack {self.name}: option {k}: {e}") from None
        if "classes" in out and "isp_down" not in out["classes"]:
            raise UserError(f"rule pack {self.name}: option classes: must include isp_down "
                            "(it always counts)")
        return out

    def describe(self, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The claim JSON's "rules" object, with the options in effect."""
        opts = self.parse_options(options)
        return {"name": self.name, "title": self.title, "country": self.country,
                "source": self.source, "source_url": self.source_url,
                "clock_start": self.clock_start, "grace": self.grace, "unit": self.unit,
                "claimable_classes": sorted(self.claimable_classes),
                "options": {k: jsonable(v) for k, v in opts.items()}}

    def compute(self, outages: Iterable[Outage], tickets: Iterable[Ticket], tariff: Tariff,
                period: Period, options: Mapping[str, Any] | None = None) -> PackResult:
        opts = self.parse_options(options)
        if self.currency and tariff.currency != self.currency:
            raise UserError(f"rule pack {self.name}: the tariff's currency is "
                            f"{tariff.currency}, but this rule's amounts are in {self.currency}")
        run = PackRun(self, list(outages), list(tickets), tariff, period, opts)
        self.count(run)
        return run.finish()

    def count(self, run: PackRun) -> None:
        raise NotImplementedError


class PackRun:
    """One computation: inputs, options, and what has been paid so far."""

    def __init__(self, pack: RulePack, outages: list[Outage], tickets: list[Ticket],
                 tariff: Tariff, period: Period, options: dict[str, Any]):
        self.pack, self.outages, self.tickets = pack, outages, tickets
        self.tariff, self.period, self.options = tariff, period, options
        self.tz = tariff.tz
        self.fee = Decimal(tariff.monthly_fee)
        self.classes = frozenset(options.get("classes") or pack.claimable_classes)
        self.result = PackResult(items=[])
        self._paid: dict[str, list[Span]] = {}
        self._why: dict[str, str] = {}
        self._reports: list[Fault] | None = None
        self.note("options in effect: " + ", ".join(
            f"{k}={_show(v)}" for k, v in options.items()))
        self._apply_exclude(options["exclude"])

    # -- inputs ------------------------------------------------------------------
    def _apply_exclude(self, exclude: tuple[str, ...]) -> None:
        by_number = {t.number: t for t in self.tickets}
        ids = {o.id for o in self.outages}
        self.excluded_tickets = {x for x in exclude if x in by_number}
        self.excluded = {x for x in exclude if x in ids}
        for x in exclude:
            if x in by_number:
                self.excluded.update(by_number[x].outage_ids)
                self.note(f"ticket {x} and its outages are excluded by option exclude "
                          "(the user's statement, e.g. a fault the customer caused or force majeure)")
                self.state(N_("I do not claim compensation for ticket %(ticket)s or for the "
                              "interruptions it reports."), ticket=x)
            elif x in ids:
                self.note(f"outage {x} is excluded by option exclude (the user's statement)")
                start = next(o.start for o in self.outages if o.id == x)
                self.state(N_("I do not claim compensation for the interruption that began on "
                              "%(start_at)s."), start_at=iso(start))
            else:
                self.note(f"option exclude: {x!r} matches no outage or ticket of this period")

    @property
    def claimable(self) -> list[Outage]:
        return [o for o in self.outages if o.cls in self.classes and o.id not in self.excluded]

    def span(self, o: Outage) -> Span:
        return outage_span(o, self.period.end)

    def reports(self) -> list[Fault]:
        """The reported faults (tickets not excluded, in order of receipt), each with
        its claimable outages; an outage linked to several tickets runs from the first
        report that covers it.

        A ticket's outages are grouped into faults: the line back for longer than
        option `repaired_after_s` (where the pack has it) ends one. The fault going on
        at the report, or starting within that time after it, is the reported one; its
        clock starts at the later of the report and its start. A later fault is covered
        only where the user linked it to the ticket by hand, and then runs on a clock of
        its own from its start; linked by the time rule alone, it is not claimed under
        this ticket (a still-open ticket does not report every fault that follows)."""
        if self._reports is not None:
            return self._reports
        taken: set[str] = set()
        uncovered: dict[str, str] = {}
        out: list[Fault] = []
        claimable = self.claimable
        for t in sorted((t for t in self.tickets if t.number not in self.excluded_tickets),
                        key=lambda t: t.opened):
            ids = set(t.outage_ids)
            linked = [o for o in claimable if o.id in ids and o.id not in taken]
            again = [oid for oid in t.outage_ids if oid in taken]
            if again:
                first = next(f.ticket.number for f in out if again[0] in {o.id for o in f.outages})
                self.note(f"ticket {t.number} reports an outage already reported earlier; "
                          "the clock runs from the first report")
                self.state(N_("Ticket %(ticket)s reports an interruption already reported under "
                              "ticket %(first)s; the time limits run from the first report."),
                           ticket=t.number, first=first)
            faults, later = self._faults(t, linked)
            for f in faults:
                taken.update(o.id for o in f.outages)
            for o in later:
                uncovered.setdefault(o.id, t.number)
            out += faults
        # One note per ticket (a ticket left open for months meets hundreds of outages;
        # each is marked in the outage list by its why_not).
        per_ticket: dict[str, list[str]] = {}
        for oid, number in uncovered.items():
            if oid in taken:
                continue
            self.why(oid, WHY_AFTER_REPAIR)
            per_ticket.setdefault(number, []).append(oid)
        repaired = f"(the line back for more than {self.options.get('repaired_after_s')} s, " \
                   "option repaired_after_s)"
        for number, oids in per_ticket.items():
            if len(oids) == 1:
                self.note(f"{oids[0]}: began after the fault reported under ticket {number} had "
                          f"been repaired {repaired}: not claimed; report it anew, or link it to "
                          f"the ticket by hand (wanwitness ticket link {number} {oids[0]}) if the "
                          "provider treats it as the same fault")
            else:
                self.note(f"ticket {number}: {len(oids)} outages, {oids[0]} to {oids[-1]}, began "
                          f"after the fault it reported had been repaired {repaired}: not "
                          "claimed (marked in the outage list); report them anew, or link one to "
                          f"the ticket by hand (wanwitness ticket link {number} AGENT@START) if "
                          "the provider treats it as the same fault")
        self._reports = out
        return out

    def _faults(self, t: Ticket, linked: list[Outage]) -> tuple[list[Fault], list[Outage]]:
        """Ticket t's faults, and its outages that came after the repair linked by time only."""
        opened = utc(t.opened)
        if not linked:
            return [Fault(t, opened, [])], []
        repaired = self.options.get("repaired_after_s")
        gap = timedelta(seconds=repaired) if repaired is not None else timedelta.max
        groups: list[tuple[datetime, datetime, list[Outage]]] = []
        for o in sorted(linked, key=lambda o: self.span(o)[0]):
            s, e = self.span(o)
            if groups and s - groups[-1][1] <= gap:
                gs, ge, members = groups[-1]
                groups[-1] = (gs, max(ge, e), members + [o])
            else:
                groups.append((s, e, [o]))
        faults: list[Fault] = []
        later: list[Outage] = []
        reported = False
        by_time = set(t.auto_linked)
        for gs, ge, members in groups:
            if ge <= opened:                 # over before the report: nothing runs
                faults.append(Fault(t, opened, members))
            elif not reported and gs - opened <= gap:
                reported = True
                faults.append(Fault(t, max(opened, gs), members))
            elif any(o.id not in by_time for o in members):
                faults.append(Fault(t, gs, members, anew=True))
                self.note(f"ticket {t.number}: the outage from {iso(gs)} came after the reported "
                          "fault had been repaired; linked by hand, it counts as a new fault with "
                          "its own grace period from its start")
                self.state(N_("Ticket %(ticket)s: the interruption that began on %(start_at)s came "
                              "after the reported fault had been repaired; it is counted as a new "
                              "fault, with the time limits running from its start."),
                           ticket=t.number, start_at=iso(gs))
            else:
                later += members
        return faults, later
    def tickets_for(self, outage_ids: Iterable[str]) -> list[str]:
        """Numbers of the (not excluded) tickets that report any of these outages."""
        ids = set(outage_ids)
        return [t.number for t in sorted(self.tickets, key=lambda t: t.opened)
                if t.number not in self.excluded_tickets and ids & set(t.outage_ids)]

    def missed_appointments(self, t: Ticket) -> list[date]:
        """Local dates of the ticket's missed appointments that fall inside the period
        (one outside it belongs to another period's claim)."""
        p = self.period
        return [local_date(a.at, self.tz) for a in t.appointments
                if a.missed and p.start <= a.at < p.end]

    # -- output ------------------------------------------------------------------
    def pay(self, outages: Iterable[Outage], span: Span) -> list[str]:
        """Claim `span` for those of `outages` that overlap it; returns their ids."""
        ids = []
        for o in outages:
            if clip(self.span(o), span[0], span[1]) is not None:
                self._paid.setdefault(o.id, []).append(span)
                ids.append(o.id)
        return ids

    def item(self, kind: str, amount: Decimal, basis: dict[str, Any], outages: list[str],
             tickets: list[str], description: str) -> None:
        missing = [k for k in ITEM_KINDS[kind] if k not in basis]
        if missing:
            raise ValueError(f"{self.pack.name}: item {kind} lacks basis {missing}")
        self.result.items.append(Item(kind, money(amount), {k: jsonable(v) for k, v in basis.items()},
                                      sorted(set(outages)), tickets, description))

    def note(self, text: str) -> None:
        """For the user (JSON, preview, CLI), never the letter."""
        if text not in self.result.notes:
            self.result.notes.append(text)

    def state(self, msgid: str, **args: str) -> None:
        """For the ISP: a sentence of the letter, translated there (model.statement)."""
        made = statement(msgid, **args)
        if made not in self.result.statements:
            self.result.statements.append(made)

    def why(self, outage_id: str, reason: str) -> None:
        self._why.setdefault(outage_id, reason)

    def finish(self) -> PackResult:
        p, res = self.period, self.result
        linked = {o.id for f in self.reports() for o in f.outages}
        pieces: list[Span] = []
        claimable_ids = {o.id for o in self.claimable}
        for o in self.outages:
            inside = clip(self.span(o), p.start, p.end)
            paid = merge(self._paid.get(o.id, []))
            counted = overlap_s(inside, paid) if inside else 0.0
            res.counted_s[o.id] = float(counted)
            pieces += [c for s in paid if inside and (c := clip(s, *inside))]
            if counted == 0:
                res.why_not[o.id] = self._why_not(o, inside, o.id in linked)
            elif o.id in claimable_ids and inside and counted < length_s(inside):
                self.note(f"{o.id}: {fmt_duration(length_s(inside) - counted)} of "
                          f"{fmt_duration(length_s(inside))} in the period not counted "
                          f"({self._why.get(o.id, self.pack.partly_counted)})")
        twice = sum(res.counted_s.values()) - total_s(merge(pieces))
        if twice > 0.5:
            self.note(f"{fmt_duration(twice)} were seen by more than one agent; that time is "
                      "counted once in the amounts")
            self.state(N_("Interruptions recorded by more than one measuring device at the same "
                          "time are counted once."))
        self._class_summary()
        return res

    def _why_not(self, o: Outage, inside: Span | None, linked: bool) -> str:
        if o.cls in NEVER_WHY:
            return NEVER_WHY[o.cls]
        if o.cls not in self.classes:
            return f"{o.cls} not claimable under this rule"
        if o.id in self.excluded:
            return "excluded by option exclude"
        if inside is None:
            return "outside the period"
        if o.id in self._why:
            return self._why[o.id]
        if self.pack.clock_start == "ticket":
            if not linked:
                return "no fault report (ticket) linked to this outage"
            first = min(t.opened for t in self.tickets if o.id in t.outage_ids
                        and t.number not in self.excluded_tickets)
            if inside[1] <= utc(first):
                return "before the report"
        return self.pack.not_counted

    def _class_summary(self) -> None:
        p = self.period
        left = Counter(o.cls for o in self.outages if o.cls not in self.classes
                       and clip(self.span(o), p.start, p.end) is not None)
        if left:
            parts = [f"{n} × {NEVER_WHY.get(c, f'{c} (not claimable under this rule)')}"
                     for c, n in sorted(left.items())]
            self.note("listed but not claimed: " + "; ".join(parts))


def _show(v: Any) -> str:
    v = jsonable(v)
    if isinstance(v, list):
        return ",".join(str(x) for x in v) or "(none)"
    if v is None:
        return "(not set)"
    return str(v).lower() if isinstance(v, bool) else str(v)
