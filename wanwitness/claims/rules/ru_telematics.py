"""ru-telematics: Russia, Rules for telematic communication services (Government Decree
No. 2607 of 31.12.2021) and Federal Law No. 126-FZ "On Communications", art. 55.

Paraphrased: when the operator does not provide the paid service, the subscriber may
demand a proportional reduction of the price (Decree 2607; point 77 as a Rospotrebnadzor
regional office reads it). No statutory per-day rate was found, so the reduction is the
plain proportion. A claim (pretenziya) about a service not provided is filed in writing
within six months (126-FZ art. 55); the operator registers it no later than the next
working day and answers within 30 days of registration (art. 55 p. 7).

Sources (checked 2026-12): art. 55 p. 7 of 126-FZ as worded by Federal Law No. 42-FZ of
02.03.2016 (text on lawmix.ru): "Претензия подлежит регистрации оператором связи не
позднее рабочего дня, следующего за днем ее поступления. Оператор связи в течение
тридцати дней со дня регистрации претензии обязан рассмотреть ее ..."; the six months of
art. 55 p. 5 for claims about a service not provided run, on the safe reading, from the
day the service was not provided.

- Clock: the outage itself; no grace. Unit: seconds.
  amount = monthly fee × downtime in the period ÷ length of the period.
- Claimable: isp_down always; dns_down / degraded if option `classes` names them;
  option `min_outage_s` (default 0) drops shorter outages.
- Dates on the claim: file_by = the safe deadline: six months from the first day
  without service in the period (first day 3 Nov 2026 -> 2 May 2027: the day before the
  same date six months later, a day earlier than counting from the next day would give);
  with no downtime, from the period's first day. answer_due = 30 days from the
  registration of the claim, which is due by the working day after it is received
  (option `filed_on`, default: the day the claim is made). Working days skip Saturdays,
  Sundays and the fixed public holidays of the Labour Code art. 112 (1-8 January,
  23 February, 8 March, 1 and 9 May, 12 June, 4 November); the days off that the
  government moves each year are not known: option `extra_holidays`.
- No cap needed (downtime ≤ period); exclusions: option `exclude`.
No amount here is configuration.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from ..catalogs import N_
from .base import Option, PackRun
from .days import add_months, local_date, nth_working_day_after
from .pro_rata import ProRata, downtime_item

CLAIM_MONTHS = 6               # 126-FZ art. 55: claim within six months
ANSWER_DAYS = 30               # 126-FZ art. 55 p. 7: answer within 30 days of registration
# Labour Code of the Russian Federation, art. 112: the fixed non-working public holidays.
FIXED_HOLIDAYS = ((1, 1), (1, 2), (1, 3), (1, 4), (1, 5), (1, 6), (1, 7), (1, 8),
                  (2, 23), (3, 8), (5, 1), (5, 9), (6, 12), (11, 4))


def holidays(years: range, extra: tuple[date, ...] = ()) -> frozenset[date]:
    return frozenset(date(y, m, d) for y in years for m, d in FIXED_HOLIDAYS) | frozenset(extra)


class RuTelematics(ProRata):
    name = "ru-telematics"
    title = "Russia, telematic services: Decree 2607 of 31.12.2021"
    country = "RU"
    source = ("Правила оказания телематических услуг связи (постановление Правительства РФ "
              "от 31.12.2021 № 2607); Федеральный закон от 07.07.2003 № 126-ФЗ «О связи», ст. 55")
    source_url = None
    options = {**ProRata.options,
               "filed_on": Option(None, "date", "the day the operator receives the claim "
                                  "(YYYY-MM-DD; default: today); answer_due counts from its "
                                  "registration, by the next working day"),
               "extra_holidays": Option((), "dates", "more non-working days (YYYY-MM-DD, "
                                        "comma-separated): the days off the government moves")}

    def count(self, run: PackRun) -> None:
        spans = downtime_item(run)
        p, tz = run.period, run.tz
        first = local_date(spans[0][0], tz) if spans else local_date(p.start, tz)
        file_by = add_months(first, CLAIM_MONTHS) - timedelta(days=1)
        filed = run.options["filed_on"] or datetime.now(tz).date()
        off = holidays(range(filed.year, filed.year + 2), run.options["extra_holidays"])
        registered = nth_working_day_after(filed, 1, off)
        answer_due = registered + timedelta(days=ANSWER_DAYS)
        run.result.dates.update(file_by=file_by, answer_due=answer_due)
        what = "the first day without service" if spans else "the period's first day"
        run.note(f"126-FZ art. 55: file the claim in writing by {file_by}: six months from "
                 f"{what} ({first}), the safe reading; a reading from the end of the period "
                 "would give a later date, which an operator may dispute")
        run.note(f"the operator registers the claim by the next working day ({registered} if "
                 f"received on {filed}; option filed_on) and answers within {ANSWER_DAYS} days "
                 f"of registration: by {answer_due}; public holidays moved by decree are not "
                 "known (option extra_holidays)")
        run.state(N_("Under art. 55 of Federal Law No. 126-FZ this claim is to be registered no "
                     "later than the working day after it is received and answered within 30 days "
                     "of its registration."))
        if filed > file_by:
            run.note(f"filed on {filed}, after the six-month deadline {file_by}")
