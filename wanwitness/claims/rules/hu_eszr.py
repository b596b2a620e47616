"""hu-eszr: Hungary, 22/2020. (XII. 21.) NMHH decree on the detailed rules of electronic
communications subscriber contracts (Eszr.), as NMHH's consumer guide ("Kisokos")
summarises it.

Sources (checked 2026-12):
- Kisokos item 120, "A szüneteltetés ideje alatt fizetendő díj": when the service is
  suspended (szünetelés) for a reason on the provider's side, or outside both parties'
  control, no fee is due for the time of the suspension; when the suspension exceeds
  48 hours in a calendar month, the provider must refund the fee for that month, unless
  the cause was force majeure and the provider proves it did everything that could be
  expected to end it in time. The guide's item 189 (planned maintenance, force majeure,
  security reasons as causes of suspension) was not found by this check.
- Kisokos item 28, "A kötbérre vonatkozó általános szabályok": the penalty (kötbér) runs
  from the day of the breach to its end and is paid within 30 days after the breach
  ended, without the subscriber having to ask for it.
- The 72-hour repair deadline and the declined repair slots: Eszr., as the consumer
  guide states it (entry 185, not re-checked here).
- The penalty's amount is not in the consumer guide: providers' terms (e.g. Nordtelekom's
  ÁSZF, section 11.3, read on lawinsider.com) set it per started day of delay at 8 times
  the average daily fee (the fees paid in the six months before the report, per day)
  while the service is unusable, and at half that, 4 times, while it works at a lower
  quality. This pack uses those multiples as defaults, and says so.

- Faults: the clock is the fault report (the ticket's `opened`), or the fault's start
  when it began after the report; deadline = clock + 72 h + the ticket's `declined_s`.
  The line back for longer than option `repaired_after_s` (default 24 h) ends the
  reported fault; a later outage linked by time only is not a reported fault, linked by
  hand it has a deadline of its own. After the deadline, each started 24 h block during
  which the reported fault still kept the service down or degraded is one day of delay;
  a block belongs to the billing period in which it starts. A block with any
  isp_down / dns_down time is a day of unusable service, one with degraded time only a
  day of degraded service (dns_down / degraded count if option `classes` names them).
- Penalty per day: `unusable_multiple` (8) or `degraded_multiple` (4) × the daily base,
  which is option `daily_base`, by default the monthly fee × 12 / 365 (the average daily
  fee of a constant monthly fee). Option `daily_penalty` sets the unusable day's amount
  directly (a degraded day then gets degraded_multiple / unusable_multiple of it).
- Suspension: wanwitness cannot tell a suspension (maintenance, force majeure, a
  security measure, announced by the provider) from a fault, so the user names them:
  option `suspended` (ticket numbers or outage ids). Only that time counts towards the
  48 h/month rule; it is not a fault (no penalty). Each calendar month (tariff zone) is
  assessed in the billing period in which it ends, with all its time (with
  `period_start_day` 15, November's suspensions before 15 November are assessed in the
  period 15 Nov - 15 Dec; claims/build.py reads the outages from the month's start).
  More than 48 h (172 800 s) -> the month's fee (month_fee); 48 h or less -> the fee for
  that time (downtime: monthly fee × seconds ÷ the month's seconds).
- Exclusions: faults on the subscriber's side, force majeure the provider proved it did
  all it could about: option `exclude`, shown in the notes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from ...errors import UserError
from ..catalogs import N_
from ..model import Outage, Ticket, iso, statement
from .base import EXCLUDE, REPAIRED, Option, PackRun, RulePack, classes_option
from .days import (
    add_months,
    clip,
    fmt_duration,
    length_s,
    local_date,
    local_midnight,
    merge,
    month_starts,
    overlap_s,
    utc,
)

CLASSES = frozenset({"isp_down", "dns_down", "degraded"})
REPAIR_DEADLINE = timedelta(hours=72)
SUSPENSION_LIMIT_S = 48 * 3600
DAY = timedelta(hours=24)
RATE_MULTIPLE = N_("%(multiple)s × the average daily fee of %(base_amount)s")
RATE_AMOUNT = N_("%(amount)s per started day")
WHY_SUSPENDED = "a suspension of the service, not a fault: assessed under the 48-hour rule"


class HuEszr(RulePack):
    name = "hu-eszr"
    title = "Hungary, Eszr. 22/2020 (XII. 21.) NMHH decree"
    country = "HU"
    source = ("22/2020. (XII. 21.) NMHH rendelet az elektronikus hírközlési előfizetői "
              "szerződések részletes szabályairól (Eszr.)")
    source_url = "https://njt.hu/jogszabaly/2020-22-20-3H"
    clock_start = "ticket"
    grace = "72 hours from the report, not counting time lost to repair slots the subscriber declined"
    unit = "hour"
    claimable_classes = CLASSES
    options = {
        "daily_base": Option(None, "decimal", "the average daily fee the penalty multiplies, in "
                             "the tariff's currency (default: monthly fee × 12 / 365)"),
        "unusable_multiple": Option(Decimal(8), "decimal", "penalty per started day of delay "
                                    "while the service is unusable, as a multiple of the daily base"),
        "degraded_multiple": Option(Decimal(4), "decimal", "penalty per started day of delay "
                                    "while the service is only degraded, as a multiple of the daily base"),
        "daily_penalty": Option(None, "decimal", "the penalty per started day of unusable service, "
                                "in the tariff's currency, instead of unusable_multiple × daily_base"),
        "suspended": Option((), "list", "ticket numbers or outage ids that were a suspension "
                            "(maintenance, force majeure, a security measure): only these count "
                            "towards the 48 h/month rule"),
        "classes": classes_option(CLASSES),
        "repaired_after_s": REPAIRED,
        "exclude": EXCLUDE,
    }
    not_counted = "repaired within 72 hours of the report"
    partly_counted = "before the report or within the 72 hour repair deadline"

    def milestones(self, ticket: Ticket, tz: ZoneInfo, options: Any = None) -> list[tuple[datetime, str]]:
        deadline = utc(ticket.opened) + REPAIR_DEADLINE + timedelta(seconds=ticket.declined_s)
        return [(deadline, "72 h after the report: the repair deadline; a penalty from here")]

    def count(self, run: PackRun) -> None:
        suspended = self._suspended(run)
        self._penalty_days(run, suspended)
        self._suspended_months(run, suspended)

    def _suspended(self, run: PackRun) -> set[str]:
        """The outage ids named by option suspended (directly or by their ticket)."""
        by_number = {t.number: t for t in run.tickets}
        ids = {o.id for o in run.outages}
        out: set[str] = set()
        for x in run.options["suspended"]:
            if x in by_number:
                out.update(by_number[x].outage_ids)
            elif x in ids:
                out.add(x)
            else:
                raise UserError(f"rule pack {self.name}: option suspended: {x!r} matches no outage "
                                "or ticket of this period")
        for oid in out:
            run.why(oid, WHY_SUSPENDED)
        return out

    def _rates(self, run: PackRun) -> dict[str, tuple[Decimal, str, dict[str, Any]]]:
        """Per service state: (amount, English rate, the rate for the letter)."""
        o, cur = run.options, run.tariff.currency
        base = o["daily_base"] if o["daily_base"] is not None else run.fee * 12 / 365
        out = {}
        for state, multiple in (("unusable", o["unusable_multiple"]), ("degraded", o["degraded_multiple"])):
            if o["daily_penalty"] is not None:
                amount = o["daily_penalty"] * (1 if state == "unusable"
                                               else o["degraded_multiple"] / o["unusable_multiple"])
                out[state] = (amount, f"{cur} {amount.normalize():f} per started day (option daily_penalty)",
                              statement(RATE_AMOUNT, amount=f"{amount.quantize(Decimal('0.01'))}"))
            else:
                shown = base.quantize(Decimal("0.01"))
                out[state] = (multiple * base, f"{multiple} × the average daily fee {cur} {shown}",
                              statement(RATE_MULTIPLE, multiple=f"{multiple.normalize():f}",
                                        base_amount=str(shown)))
        if o["daily_penalty"] is not None:
            run.note(f"the daily penalty {cur} {o['daily_penalty']} is configuration (option "
                     "daily_penalty), not an amount verified from the decree")
        else:
            run.note(f"the penalty is {o['unusable_multiple'].normalize():f} × (unusable) or "
                     f"{o['degraded_multiple'].normalize():f} × (degraded) the average daily fee "
                     f"{cur} {base.quantize(Decimal('0.01'))} per started day, as providers' terms set it "
                     "(not verified from the decree): check your provider's ÁSZF and set "
                     f"{self.name}.daily_base / unusable_multiple / degraded_multiple, or daily_penalty")
        return out

    def _penalty_days(self, run: PackRun, suspended: set[str]) -> None:
        p = run.period
        rates = self._rates(run)
        any_day = False
        for f in run.reports():
            t = f.ticket
            outs = [o for o in f.outages if o.id not in suspended]
            if not outs:
                continue
            deadline = f.clock + REPAIR_DEADLINE + timedelta(seconds=t.declined_s)
            if t.declined_s:
                run.note(f"ticket {t.number}: {fmt_duration(t.declined_s)} lost to repair slots "
                         "the subscriber declined do not count: the 72 h deadline moves to "
                         f"{deadline.astimezone(run.tz).isoformat(timespec='minutes')}")
                run.state(N_("Ticket %(ticket)s: the time lost to repair appointments that I "
                             "declined (%(duration)s) is not counted; the 72-hour repair deadline "
                             "ends on %(deadline_at)s."), ticket=t.number,
                          duration=str(t.declined_s), deadline_at=iso(deadline))
            merged = merge([run.span(o) for o in outs])
            down = merge([run.span(o) for o in outs if o.cls != "degraded"])
            fixed = min(merged[-1][1], utc(p.end))
            k = 0
            while (start := deadline + k * DAY) < fixed:
                block = (start, start + DAY)
                k += 1
                if start < utc(p.start) or not overlap_s(block, merged):
                    continue
                state = "unusable" if overlap_s(block, down) else "degraded"
                amount, rate, text = rates[state]
                any_day = True
                run.item("day", amount,
                         {"date": local_date(start, run.tz), "day_number": k, "rate": rate,
                          "rate_text": text, "service": state, "from": start, "to": block[1]},
                         run.pay(outs, clip(block, p.start, p.end) or block), [t.number],
                         f"started day {k} of delay beyond the 72 h repair deadline ({state})")
        if any_day:
            run.state(N_("Under the Eszr. the penalty for the delayed repair is due without a "
                         "claim and is to be credited within 30 days after the fault was repaired."))

    def _suspended_months(self, run: PackRun, suspended: set[str]) -> None:
        """Suspension: no fee for its time; more than 48 h in a calendar month -> that
        month's fee. Each month is assessed in the billing period in which it ends."""
        if not suspended:
            return
        p, tz = run.period, run.tz
        named = [o for o in run.claimable if o.id in suspended]
        merged = merge([run.span(o) for o in named])
        stated = False
        for first in month_starts(p.start, p.end, tz):
            month = local_midnight(first, tz), local_midnight(add_months(first, 1), tz)
            if month[1] > utc(p.end):
                continue        # ends in the next period: assessed there
            secs = overlap_s(month, merged)
            if not secs:
                continue
            label = f"{first.year:04d}-{first.month:02d}"
            if month[0] < utc(p.start):
                run.note(f"calendar month {label} ends in this billing period and is assessed "
                         "here with all its time, also that before the period")
                run.state(N_("The calendar month %(month)s ends in this billing period and is "
                             "assessed here with all its time."), month=label)
            ids = [o.id for o in named if clip(run.span(o), *month)]
            self._pay_month(run, named, month)
            if secs > SUSPENSION_LIMIT_S:
                run.item("month_fee", run.fee, {"month": label, "seconds": secs}, ids,
                         run.tickets_for(ids),
                         f"suspended {fmt_duration(secs)} in {label} (more than 48 h): the month's fee")
            else:
                month_s = length_s(month)
                run.item("downtime", run.fee * Decimal(repr(secs)) / Decimal(repr(month_s)),
                         {"seconds": secs, "monthly_fee": run.fee, "period_seconds": month_s,
                          "month": label}, ids, run.tickets_for(ids),
                         f"suspended {fmt_duration(secs)} in {label}: no fee for that time")
            if not stated:
                stated = True
                run.state(N_("The interruptions named as a suspension were a suspension of the "
                             "service for reasons on your side or outside both parties' control: "
                             "no fee is due for their time, and the month's fee is to be refunded "
                             "when they exceed 48 hours in a calendar month."))

    @staticmethod
    def _pay_month(run: PackRun, named: list[Outage], month: tuple[datetime, datetime]) -> None:
        """The suspended time of the month counts for the outages (inside the period)."""
        lo, hi = clip(month, run.period.start, run.period.end) or month
        run.pay(named, (lo, hi))
