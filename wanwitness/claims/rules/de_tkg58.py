"""de-tkg58: Germany, Telekommunikationsgesetz (TKG) 2021 §58 Abs. 3 and 4.

§58(3), paraphrased: if a fault is not fixed within two calendar days after the
provider received the fault report, the consumer may, from the following day, claim
compensation for each day of complete outage of the service, unless the consumer is
responsible for the fault or its continuation, or the complete outage rests on
statutory measures, official orders or force majeure. The compensation is, on the
third and fourth day, EUR 5 or 10 % and, from the fifth day, EUR 10 or 20 % of the
contractually agreed monthly fee, whichever is higher. A reduction under §57(4) for the
same time is set off against it.
§58(4), paraphrased: for each technician or installation appointment the provider
does not keep, EUR 10 or 20 % of the monthly fee, whichever is higher, unless the
consumer is responsible for the missed appointment.

- Clock: the fault report (the ticket's `opened` = receipt). Days are counted as §187(1)
  BGB does for a period that starts with an event: the day of receipt does not count;
  day 1 and day 2 are the two calendar days after it (the grace), day 3 is the first
  that can be paid. Calendar days are local days in the tariff's zone (23 h / 25 h on DST
  change days).
- Unit: calendar day of complete outage: the outages linked to the ticket (isp_down
  only: a DNS failure or a slow line is not a complete outage) cover the whole local
  day. Whether the day on which the service came back (partly restored) counts is not
  settled: option `partial_days` (default false) decides, and the notes say so.
- Amounts: fixed by the law in EUR (tariff currency must be EUR); no cap.
- Exclusions: the consumer's responsibility, statutory measures, official orders, force
  majeure: wanwitness cannot know them, so nothing is guessed: option `exclude` names the
  tickets or outages they apply to, and the notes show them.
No amount here is configuration.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from ..model import Ticket
from .base import EXCLUDE, Option, PackRun, RulePack
from .days import day_span, days_with_outage, length_s, local_date, local_midnight, merge

GRACE_DAYS = 2                 # §58(3): "innerhalb von zwei Kalendertagen"


def day_rate(day_number: int, fee: Decimal) -> tuple[Decimal, str]:
    """§58(3) sentence 2: days 3-4 max(EUR 5, 10 %), from day 5 max(EUR 10, 20 %)."""
    floor, pct = (Decimal(5), Decimal(10)) if day_number <= 4 else (Decimal(10), Decimal(20))
    return max(floor, fee * pct / 100), f"max(EUR {floor}, {pct} % of {fee})"


class DeTkg58(RulePack):
    name = "de-tkg58"
    title = "Germany, TKG 2021 §58(3)/(4)"
    country = "DE"
    source = "Telekommunikationsgesetz (TKG) 2021 §58 Abs. 3 und 4"
    source_url = "https://www.gesetze-im-internet.de/tkg_2021/__58.html"
    clock_start = "ticket"
    grace = "2 calendar days after receipt of the report"
    unit = "calendar_day"
    currency = "EUR"
    options = {
        "partial_days": Option(False, "bool", "also pay a day on which the service was only "
                               "partly out (e.g. restored that day); not settled in law"),
        "exclude": EXCLUDE,
    }
    not_counted = ("on the day of the report or the 2 calendar days after it, or on no day "
                   "of complete outage")
    partly_counted = ("before the report, on the day of the report or the 2 calendar days "
                      "after it, or on days without complete outage")

    def milestones(self, ticket: Ticket, tz: ZoneInfo, options: Any = None) -> list[tuple[datetime, str]]:
        received = local_date(ticket.opened, tz)
        return [(local_midnight(received + timedelta(days=GRACE_DAYS + 1), tz),
                 "day 3: EUR 5 or 10 % of the fee a day from here"),
                (local_midnight(received + timedelta(days=GRACE_DAYS + 3), tz),
                 "day 5: EUR 10 or 20 % a day from here")]

    def count(self, run: PackRun) -> None:
        p, tz, partial = run.period, run.tz, run.options["partial_days"]
        paid: dict[date, str] = {}
        for t, outs in run.reports():
            self._appointments(run, t)
            if not outs:
                continue
            received = local_date(t.opened, tz)
            # §187(1) BGB: the day of receipt is not counted; days 1-2 are the grace.
            first_paid = received + timedelta(days=GRACE_DAYS + 1)
            lo = max(p.start, local_midnight(first_paid, tz))
            merged = merge([run.span(o) for o in outs])
            for d, dspan, secs in days_with_outage(merged, lo, p.end, tz):
                complete = secs >= length_s(dspan)
                if not complete and not partial:
                    run.note(f"{d}: service partly restored that day ({secs / 3600:.1f} h of "
                             "outage): not paid; set option partial_days=true to count such days")
                    continue
                if d in paid:
                    run.note(f"{d} is already paid under ticket {paid[d]}")
                    continue
                paid[d] = t.number
                n = (d - received).days
                amount, rate = day_rate(n, run.fee)
                kind = "complete" if complete else "partial"
                run.item("day", amount, {"date": d, "day_number": n, "rate": rate,
                                         "complete": complete, "seconds": secs},
                         run.pay(outs, day_span(d, tz)), [t.number],
                         f"day {n} of {kind} outage after the report")
        run.note("§58(3) TKG: no compensation if the consumer is responsible for the fault, "
                 "or for statutory measures, official orders or force majeure; wanwitness "
                 "cannot tell: name such tickets or outages with option exclude")
        run.note("§58(3) TKG: a reduction of the fee under §57(4) for the same time is set off "
                 "against this compensation")

    def _appointments(self, run: PackRun, t: Ticket) -> None:
        """§58(4): each missed technician appointment in the period."""
        for d in run.missed_appointments(t):
            run.item("appointment", max(Decimal(10), run.fee * Decimal(20) / 100),
                     {"date": d, "ticket": t.number, "rate": f"max(EUR 10, 20 % of {run.fee})"},
                     [], [t.number], "missed technician appointment (§58(4) TKG)")
            run.note("§58(4) TKG: no compensation if the consumer is responsible for the "
                     "missed appointment; 'missed' is the user's statement")
