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

Sources: the text of §58 as consolidated on buzer.de and gesetze-im-internet.de (TKG of
23 June 2021, in force 1 December 2021), checked 2026-12; sentence 2 says the percentages
are of the monthly fees "bei Verträgen mit gleichbleibendem monatlichem Entgelt".

- Clock: the fault report (the ticket's `opened` = receipt), or the fault's start when it
  began after the report. Days are counted as §187(1) BGB does for a period that starts
  with an event: the day of receipt does not count; day 1 and day 2 are the two calendar
  days after it (the grace), day 3 is the first that can be paid. Calendar days are
  local days in the tariff's zone (23 h / 25 h on DST change days).
- A repaired fault ends the report: the line back for longer than option
  `repaired_after_s` (default 24 h) repairs the reported fault. An outage after that,
  linked to a still-open ticket by time only, is not a reported fault (0); linked by hand
  (`wanwitness ticket link`, or a new ticket) it runs with a new grace from its start.
- Unit: calendar day of complete outage: the outages linked to the ticket (isp_down
  only: a DNS failure or a slow line is not a complete outage) cover the whole local
  day. Whether the day on which the service came back (partly restored) counts is not
  settled: option `partial_days` (default false) decides, and the letter says so.
- Replacement: the Bundesnetzagentur's reading (teltarif.de, "Internet-Ausfall: BNetzA
  zur Entschädigung", June 2022) is that no compensation is due for days on which the
  provider supplied a replacement (e.g. an LTE stick) the customer could use: option
  `replacement_days` names those dates; they are not paid, and the letter says so.
- "Complete outage" of the "Dienst": OLG Braunschweig, judgment of 20.03.2024, 9 U
  54/23 (overturning LG Göttingen, 01.09.2023, 4 O 78/23), read "Dienst" as all the
  telecommunications services of the contract together: where a bundle's telephone line
  kept working while the internet was down, a provider may refuse. A note says so; the
  pack cannot see the other services.
- Amounts: fixed by the law in EUR (tariff currency must be EUR); no cap. The
  percentages apply to contracts with a constant monthly fee: with a fee that varies
  from month to month, the EUR 5 / 10 floors are the safe claim (a note says so).
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

from ..catalogs import N_
from ..model import Ticket, statement
from .base import EXCLUDE, REPAIRED, Option, PackRun, RulePack
from .days import clip, day_span, days_with_outage, length_s, local_date, local_midnight, merge

GRACE_DAYS = 2                 # §58(3): "innerhalb von zwei Kalendertagen"
WHY_REPLACED = "on days on which the provider supplied a replacement service"


RATE = N_("%(floor_amount)s or %(pct)s %% of the monthly fee of %(fee_amount)s, whichever is higher")


def day_rate(day_number: int, fee: Decimal) -> tuple[Decimal, str]:
    """§58(3) sentence 2: days 3-4 max(EUR 5, 10 %), from day 5 max(EUR 10, 20 %)."""
    floor, pct = (Decimal(5), Decimal(10)) if day_number <= 4 else (Decimal(10), Decimal(20))
    return max(floor, fee * pct / 100), f"max(EUR {floor}, {pct} % of {fee})"


def rate_text(day_number: int, fee: Decimal) -> dict[str, Any]:
    """The rate for the letter (model.statement): translated there."""
    floor, pct = ("5", "10") if day_number <= 4 else ("10", "20")
    return statement(RATE, floor_amount=floor, pct=pct, fee_amount=str(fee))


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
        "replacement_days": Option((), "dates", "days (YYYY-MM-DD, comma-separated) on which "
                                   "the provider supplied a replacement you could use (e.g. an "
                                   "LTE stick): not paid (Bundesnetzagentur)"),
        "repaired_after_s": REPAIRED,
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
        replaced = set(run.options["replacement_days"])
        paid: dict[date, str] = {}
        not_whole: list[date] = []
        partial_paid: list[date] = []
        replaced_hit: list[date] = []
        appointments_done: set[str] = set()
        for f in run.reports():
            t = f.ticket
            if t.number not in appointments_done:
                appointments_done.add(t.number)
                self._appointments(run, t)
            if not f.outages:
                continue
            received = local_date(f.clock, tz)
            # §187(1) BGB: the day of receipt is not counted; days 1-2 are the grace.
            first_paid = received + timedelta(days=GRACE_DAYS + 1)
            lo = max(p.start, local_midnight(first_paid, tz))
            merged = merge([run.span(o) for o in f.outages])
            for d, dspan, secs in days_with_outage(merged, lo, p.end, tz):
                complete = secs >= length_s(dspan)
                if d in replaced:
                    replaced_hit.append(d)
                    for o in f.outages:
                        if clip(run.span(o), *dspan):
                            run.why(o.id, WHY_REPLACED)
                    continue
                if not complete and not partial:
                    not_whole.append(d)
                    run.note(f"{d}: service partly restored that day ({secs / 3600:.1f} h of "
                             "outage): not paid; set option partial_days=true to count such days")
                    continue
                if d in paid:
                    run.note(f"{d} is already paid under ticket {paid[d]}")
                    continue
                paid[d] = t.number
                if not complete:
                    partial_paid.append(d)
                n = (d - received).days
                amount, rate = day_rate(n, run.fee)
                kind = "complete" if complete else "partial"
                run.item("day", amount, {"date": d, "day_number": n, "rate": rate,
                                         "rate_text": rate_text(n, run.fee),
                                         "complete": complete, "seconds": secs},
                         run.pay(f.outages, day_span(d, tz)), [t.number],
                         f"day {n} of {kind} outage after the report")
        if replaced_hit:
            run.note("days with a replacement (option replacement_days) not paid: "
                     + ", ".join(str(d) for d in sorted(set(replaced_hit))))
            run.state(N_("No compensation is claimed for %(dates)s: on these days you provided a "
                         "replacement service."), dates=_dates(replaced_hit))
        if not_whole:
            run.state(N_("Days on which the service was restored during the day (%(dates)s) are "
                         "not claimed as days of complete outage."), dates=_dates(not_whole))
        if partial_paid:
            run.state(N_("Days on which the service was out for only part of the day are claimed "
                         "as well: %(dates)s."), dates=_dates(partial_paid))
        if paid:
            run.state(N_("Under §58(3) TKG no compensation is due if I am responsible for the "
                         "fault or its continuation, or if the outage rests on statutory measures, "
                         "official orders or force majeure; to my knowledge none of these applies."))
            run.state(N_("A reduction of the fee under §57(4) TKG for the same time is to be set "
                         "off against this compensation."))
        run.note("§58(3) TKG: no compensation if the consumer is responsible for the fault, "
                 "or for statutory measures, official orders or force majeure; wanwitness "
                 "cannot tell: name such tickets or outages with option exclude")
        run.note("§58(3) TKG: a reduction of the fee under §57(4) for the same time is set off "
                 "against this compensation")
        run.note("'complete outage' may mean all the services of the contract together (OLG "
                 "Braunschweig, 20.03.2024, 9 U 54/23): if a bundle's telephone kept working "
                 "while the internet was down, the provider may refuse")
        run.note("the percentages apply to a constant monthly fee (§58(3) sentence 2); with a "
                 "fee that varies, the EUR 5 / EUR 10 floors are the safe claim")

    def _appointments(self, run: PackRun, t: Ticket) -> None:
        """§58(4): each missed technician appointment in the period."""
        for d in run.missed_appointments(t):
            run.item("appointment", max(Decimal(10), run.fee * Decimal(20) / 100),
                     {"date": d, "ticket": t.number, "rate": f"max(EUR 10, 20 % of {run.fee})",
                      "rate_text": statement(RATE, floor_amount="10", pct="20", fee_amount=str(run.fee))},
                     [], [t.number], "missed technician appointment (§58(4) TKG)")
            run.note("§58(4) TKG: no compensation if the consumer is responsible for the "
                     "missed appointment; 'missed' is the user's statement")


def _dates(days: list[date]) -> str:
    """ISO dates, comma-separated (the letter formats each: letter.format_args)."""
    return ",".join(d.isoformat() for d in sorted(set(days)))
