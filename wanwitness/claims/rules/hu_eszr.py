"""hu-eszr: Hungary, 22/2020. (XII. 21.) NMHH decree on the detailed rules of electronic
communications subscriber contracts (Eszr.), as summarised by NMHH's consumer guide
("Kisokos", entries 28, 120, 185).

Paraphrased: the provider must repair a reported fault within 72 hours of the report;
time lost because the subscriber declined an offered repair slot does not count. Beyond
that deadline the provider owes a penalty (kötbér) for each started day of delay, which
it must credit automatically within 30 days. If the service is suspended for more than
48 hours in a calendar month for reasons on the provider's side, that month's fee is
not due.

- Clock: the fault report (the ticket's `opened`); deadline = report + 72 h + the
  ticket's `declined_s`. Unit: hours; after the deadline, each started 24 h block during
  which the reported fault still kept the line down is one day of delay. A block belongs
  to the billing period in which it starts.
- Claimable: isp_down always; dns_down / degraded (a fault report also covers a worse
  service) if option `classes` names them. The month rule counts isp_down only (a
  suspension is no service at all), all of it, reported or not.
- Month rule: every calendar month (tariff zone) that ends inside the billing period is
  assessed here, with all its time, also days before the period when the period does not
  start on the 1st. More than 48 h (172 800 s) of isp_down -> one month_fee item.
- Amounts: the penalty's daily amount is NOT verified from the decree: it is
  configuration (option `daily_penalty`, no default); without it the days are listed
  with amount 0 and a note. The month's fee is the tariff's monthly fee. No cap known.
- Exclusions: faults on the subscriber's side: option `exclude`, shown in the notes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from ..model import Ticket
from .base import EXCLUDE, Option, PackRun, RulePack, classes_option
from .days import add_months, clip, fmt_duration, local_date, local_midnight, merge, month_starts, overlap_s, utc

CLASSES = frozenset({"isp_down", "dns_down", "degraded"})
REPAIR_DEADLINE = timedelta(hours=72)
SUSPENSION_LIMIT_S = 48 * 3600
DAY = timedelta(hours=24)


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
        "daily_penalty": Option(None, "decimal", "penalty (kötbér) per started day beyond the "
                                "72 h deadline, in the tariff's currency; not verified from "
                                "the decree, so it must be configured"),
        "classes": classes_option(CLASSES),
        "exclude": EXCLUDE,
    }
    not_counted = "repaired within 72 hours of the report"
    partly_counted = "before the report or within the 72 hour repair deadline"

    def milestones(self, ticket: Ticket, tz: ZoneInfo, options: Any = None) -> list[tuple[datetime, str]]:
        deadline = utc(ticket.opened) + REPAIR_DEADLINE + timedelta(seconds=ticket.declined_s)
        return [(deadline, "72 h after the report: the repair deadline; a penalty from here")]

    def count(self, run: PackRun) -> None:
        self._penalty_days(run)
        self._suspended_months(run)
        run.note("the provider must credit the penalty automatically within 30 days "
                 "(NMHH consumer guide)")

    def _penalty_days(self, run: PackRun) -> None:
        p, penalty, cur = run.period, run.options["daily_penalty"], run.tariff.currency
        if penalty is None:
            rate = f"not configured: configure {self.name}.daily_penalty"
            run.note(f"the daily penalty (kötbér) is not verified from the decree: configure "
                     f"{self.name}.daily_penalty; the days of delay are listed with amount 0")
        else:
            rate = f"{cur} {penalty} per started day (option daily_penalty)"
            run.note(f"the daily penalty {cur} {penalty} is configuration (option daily_penalty), "
                     "not an amount verified from the decree")
        for t, outs in run.reports():
            if not outs:
                continue
            deadline = utc(t.opened) + REPAIR_DEADLINE + timedelta(seconds=t.declined_s)
            if t.declined_s:
                run.note(f"ticket {t.number}: {fmt_duration(t.declined_s)} lost to repair slots "
                         "the subscriber declined do not count: the 72 h deadline moves to "
                         f"{deadline.astimezone(run.tz).isoformat(timespec='minutes')}")
            merged = merge([run.span(o) for o in outs])
            fixed = min(merged[-1][1], utc(p.end))
            k = 0
            while (start := deadline + k * DAY) < fixed:
                block = (start, start + DAY)
                k += 1
                if start < utc(p.start) or not overlap_s(block, merged):
                    continue
                run.item("day", penalty or Decimal(0),
                         {"date": local_date(start, run.tz), "day_number": k, "rate": rate,
                          "from": start, "to": block[1]},
                         run.pay(outs, clip(block, p.start, p.end) or block), [t.number],
                         f"started day {k} of delay beyond the 72 h repair deadline")

    def _suspended_months(self, run: PackRun) -> None:
        """More than 48 h of suspension in a calendar month -> that month's fee."""
        p, tz = run.period, run.tz
        down = [o for o in run.claimable if o.cls == "isp_down"]
        merged = merge([run.span(o) for o in down])
        for first in month_starts(p.start, p.end, tz):
            month = local_midnight(first, tz), local_midnight(add_months(first, 1), tz)
            if month[1] > utc(p.end):
                continue        # ends in the next period: assessed there
            secs = overlap_s(month, merged)
            if secs <= SUSPENSION_LIMIT_S:
                continue
            label = f"{first.year:04d}-{first.month:02d}"
            if month[0] < utc(p.start):
                run.note(f"calendar month {label} ends in this billing period and is assessed "
                         "here with all its time, also that before the period")
            ids = [o.id for o in down if clip(run.span(o), *month)]
            run.pay(down, clip(month, p.start, p.end) or month)
            run.item("month_fee", run.fee, {"month": label, "seconds": secs}, ids,
                     run.tickets_for(ids),
                     f"suspended {fmt_duration(secs)} in {label} (more than 48 h): the month's fee")
