"""uk-ofcom: United Kingdom, Ofcom's automatic compensation scheme (since 1 April 2019).

A voluntary scheme agreed between Ofcom and the providers that signed it (it binds only
them). Paraphrased: when a landline or broadband service stops working completely and
the fault, once reported, is not fixed by 23:59 of the second full working day after the
report, the customer gets a fixed daily amount for each calendar day after that until
the service is fixed; when an engineer does not turn up for an appointment (or cancels
it with less than 24 hours' notice), a fixed amount per missed appointment. The amounts
are uprated each April.

Sources (checked 2026-12): Ofcom's statement "Automatic Compensation: Protecting
consumers from service quality problems", 10 November 2017 (the launch amounts, GBP 8 a
day, GBP 25 an appointment, GBP 5 a day of delayed provision), as reported by The Inquirer
and TechRadar (1 April 2019); current amounts from providers' and third parties' pages
(data/uk-ofcom-amounts.json names each row's basis and whether it is confirmed).

- Not modelled: delayed provision (a new service that starts late: a daily amount
  including the missed start date). wanwitness watches a line that exists; the letter
  claims delayed repairs and missed appointments only, and the notes say so.
- Clock: the fault report (the ticket's `opened`), or the fault's start when it began
  after the report. The day of the report is not a full working day, so the grace is the
  first two working days after it; working days skip Saturdays, Sundays and England and
  Wales bank holidays (data/uk-bank-holidays.json, from gov.uk; option `extra_holidays`
  for Scotland / Northern Ireland or a new one).
- A repaired fault ends the report (option `repaired_after_s`, as de-tkg58): a later
  outage linked to a still-open ticket by time only is not claimed; linked by hand it
  runs with a new grace from its start.
- The clock stops while the customer declined or missed an engineer slot: the ticket's
  `declined_s` (`--declined-h`) moves the end of the grace by that time, rounded up to
  whole calendar days (the scheme pays calendar days).
- Unit: calendar day (local, in the tariff's zone). Every calendar day after the grace
  on which the reported loss of service lasted counts, except the day on which it was
  fixed: providers' published examples count the days up to the fix, not the fix day.
  Option `pay_fix_day` (default false) pays that day too.
- Claimable: isp_down only (total loss of service; a slow line or DNS failure is not).
- Amounts: data/uk-ofcom-amounts.json, a dated table: the amount in force on the day
  (or on the appointment's date). Rows not confirmed on Ofcom's site, and options
  `daily_amount` / `appointment_amount` that override the table, are shown in the notes;
  for a date no row covers (e.g. April 2020 - March 2023: no amount could be sourced for
  those years), the day is listed with amount 0 and a note asking to configure the
  amount. No cap.
- Exclusions: option `exclude` (ticket numbers / outage ids), shown in the notes.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from ..catalogs import N_
from ..model import Ticket, statement
from .base import EXCLUDE, REPAIRED, Option, PackRun, RulePack
from .days import (
    day_span,
    days_with_outage,
    fmt_duration,
    local_date,
    local_midnight,
    merge,
    nth_working_day_after,
    utc,
)

DATA = Path(__file__).parent / "data"
WHY_FIX_DAY = "only on the day the fault was fixed, which the scheme does not pay"
FULL_WORKING_DAYS = 2          # "not fixed by 23:59 of the 2nd full working day"
WHAT = {"daily": "per calendar day", "appointment": "per missed appointment"}
RATE_TABLE = {"daily": N_("%(amount)s per calendar day (Ofcom scheme, amount from %(from_date)s)"),
              "appointment": N_("%(amount)s per missed appointment (Ofcom scheme, amount from "
                                "%(from_date)s)")}
RATE_SET = {"daily": N_("%(amount)s per calendar day"),
            "appointment": N_("%(amount)s per missed appointment")}
NO_RATE = N_("amount not known")
DAY = 86400


@cache
def bank_holidays() -> tuple[frozenset[date], int, int]:
    """England and Wales bank holidays, and the first and last year the list covers."""
    data = json.loads((DATA / "uk-bank-holidays.json").read_text(encoding="utf-8"))
    days = frozenset(date.fromisoformat(e["date"]) for e in data["events"])
    return days, data["first_year"], data["last_year"]


@cache
def amount_table() -> tuple[dict[str, Any], ...]:
    data = json.loads((DATA / "uk-ofcom-amounts.json").read_text(encoding="utf-8"))
    return tuple(data["amounts"])


def amount_row(d: date) -> dict[str, Any] | None:
    for row in amount_table():
        if date.fromisoformat(row["from"]) <= d <= date.fromisoformat(row["until"]):
            return row
    return None


class UkOfcom(RulePack):
    name = "uk-ofcom"
    title = "United Kingdom, Ofcom automatic compensation"
    country = "GB"
    source = ("Ofcom automatic compensation scheme (voluntary code agreed with Ofcom, "
              "in force since 1 April 2019)")
    source_url = ("https://www.ofcom.org.uk/phones-and-broadband/service-quality/"
                  "automatic-compensation-need-know")
    clock_start = "ticket"
    grace = "until 23:59 of the 2nd full working day after the report"
    unit = "calendar_day"
    currency = "GBP"
    options = {
        "daily_amount": Option(None, "decimal", "GBP per calendar day, instead of Ofcom's table"),
        "appointment_amount": Option(None, "decimal",
                                     "GBP per missed appointment, instead of Ofcom's table"),
        "extra_holidays": Option((), "dates", "more non-working days (YYYY-MM-DD, comma-separated), "
                                 "e.g. Scottish or Northern Irish bank holidays"),
        "pay_fix_day": Option(False, "bool", "also pay the day on which the fault was fixed "
                              "(providers' published examples leave it out)"),
        "repaired_after_s": REPAIRED,
        "exclude": EXCLUDE,
    }
    not_counted = "fixed by the end of the 2nd full working day after the report"
    partly_counted = ("before the report or within the 2 full working days after the day "
                      "of the report")

    def milestones(self, ticket: Ticket, tz: ZoneInfo, options: Any = None) -> list[tuple[datetime, str]]:
        known, _first, _last = bank_holidays()
        extra = self.parse_options(options)["extra_holidays"]
        last_grace = nth_working_day_after(local_date(ticket.opened, tz), FULL_WORKING_DAYS,
                                           known | frozenset(extra))
        return [(local_midnight(last_grace + timedelta(days=1), tz),
                 "after the 2nd full working day: a daily amount from here")]

    def count(self, run: PackRun) -> None:
        p, tz = run.period, run.tz
        known, first_year, last_year = bank_holidays()
        holidays = known | frozenset(run.options["extra_holidays"])
        fix_day = run.options["pay_fix_day"]
        paid: dict[date, str] = {}
        fixed_days: list[date] = []
        appointments_done: set[str] = set()
        for f in run.reports():
            t = f.ticket
            if t.number not in appointments_done:
                appointments_done.add(t.number)
                for d in run.missed_appointments(t):
                    amount, rate, text = self._amount(run, "appointment", d)
                    run.item("appointment", amount, {"date": d, "ticket": t.number, "rate": rate,
                                                     "rate_text": text},
                             [], [t.number], "missed engineer appointment (Ofcom scheme)")
            if not f.outages:
                continue
            reported = local_date(f.clock, tz)
            last_grace = nth_working_day_after(reported, FULL_WORKING_DAYS, holidays)
            if reported.year < first_year or last_grace.year > last_year:
                run.note(f"ticket {t.number}: no bank holiday list for {reported.year}: only "
                         "weekends (and option extra_holidays) were skipped")
            if t.declined_s:
                stopped = -(-int(t.declined_s) // DAY)          # whole days, rounded up
                last_grace += timedelta(days=stopped)
                run.note(f"ticket {t.number}: {fmt_duration(t.declined_s)} lost to engineer slots "
                         f"the customer declined or missed: the clock stops for {stopped} day(s); "
                         f"days are paid from {last_grace + timedelta(days=1)}")
                run.state(N_("Ticket %(ticket)s: the time lost to engineer appointments that I "
                             "declined or missed (%(duration)s) is not counted; compensation is "
                             "claimed from %(from_date)s."), ticket=t.number,
                          duration=str(t.declined_s),
                          from_date=(last_grace + timedelta(days=1)).isoformat())
            merged = merge([run.span(o) for o in f.outages])
            fixed = None if merged[-1][1] >= utc(p.end) else local_date(merged[-1][1], tz)
            if fixed is not None and local_midnight(fixed, tz) == merged[-1][1]:
                fixed = None                                  # back at midnight: no fix day
            lo = max(p.start, local_midnight(last_grace + timedelta(days=1), tz))
            for d, _, secs in days_with_outage(merged, lo, p.end, tz):
                if d == fixed and not fix_day:
                    fixed_days.append(d)
                    for o in f.outages:
                        run.why(o.id, WHY_FIX_DAY)
                    continue
                if d in paid:
                    run.note(f"{d} is already paid under ticket {paid[d]}")
                    continue
                paid[d] = t.number
                n = (d - last_grace).days
                amount, rate, text = self._amount(run, "daily", d)
                run.item("day", amount, {"date": d, "day_number": n, "rate": rate, "rate_text": text,
                                         "grace_end": last_grace, "seconds": secs},
                         run.pay(f.outages, day_span(d, tz)), [t.number],
                         f"day {n} without service after the 2nd full working day ({last_grace})")
        if fixed_days:
            run.note("the day the fault was fixed is not paid ("
                     + ", ".join(str(d) for d in sorted(set(fixed_days)))
                     + "); set option pay_fix_day=true to claim it")
            run.state(N_("The day on which the service was restored (%(dates)s) is not claimed."),
                      dates=",".join(d.isoformat() for d in sorted(set(fixed_days))))
        run.note("Ofcom's scheme is voluntary: it binds the providers that signed up to it; "
                 "it covers total loss of service only")
        run.note("delayed provision (a new line that starts late) is not modelled: claim it "
                 "yourself from the provider's records (a daily amount from the missed start date)")

    def _amount(self, run: PackRun, kind: str, d: date) -> tuple[Decimal, str, dict[str, Any]]:
        """The amount for `kind` on date `d`: the option, else Ofcom's dated table; with
        the rate in English (the JSON's) and for the letter (model.statement)."""
        configured = run.options[f"{kind}_amount"]
        if configured is not None:
            run.note(f"the {kind} amount GBP {configured} is configuration "
                     f"(option {kind}_amount), not Ofcom's table")
            return (configured, f"GBP {configured} {WHAT[kind]} (option {kind}_amount)",
                    statement(RATE_SET[kind], amount=str(configured)))
        row = amount_row(d)
        if row is None:
            run.note(f"no {kind} amount known for {d}: configure {self.name}.{kind}_amount")
            return (Decimal(0), f"no amount known for {d}: configure {self.name}.{kind}_amount",
                    statement(NO_RATE))
        if not row["confirmed"]:
            run.note(f"the Ofcom amounts from {row['from']} (GBP {row['daily']} per day, "
                     f"GBP {row['appointment']} per appointment) are not confirmed on Ofcom's "
                     f"own site: check them or set {self.name}.daily_amount / appointment_amount")
        return (Decimal(row[kind]), f"GBP {row[kind]} {WHAT[kind]} (Ofcom, from {row['from']})",
                statement(RATE_TABLE[kind], amount=row[kind], from_date=row["from"]))
