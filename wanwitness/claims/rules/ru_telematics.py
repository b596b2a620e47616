"""ru-telematics: Russia, Rules for telematic communication services (Government Decree
No. 2607 of 31.12.2021) and Federal Law No. 126-FZ "On Communications", art. 55.

Paraphrased: when the operator does not provide the paid service, the subscriber may
demand a proportional reduction of the price (Decree 2607; point 77 as a Rospotrebnadzor
regional office reads it). No statutory per-day rate was found, so the reduction is the
plain proportion. A claim (pretenziya) about a service not provided is filed in writing
within six months (126-FZ art. 55); the operator registers it no later than the next
working day and answers within 30 days of registration (art. 55 p. 7).

- Clock: the outage itself; no grace. Unit: seconds.
  amount = monthly fee × downtime in the period ÷ length of the period.
- Claimable: isp_down always; dns_down / degraded if option `classes` names them;
  option `min_outage_s` (default 0) drops shorter outages.
- Dates on the claim: file_by = six months after the end of the billing period (the day
  before the same date six months after the period's exclusive end: period 2026-11 ->
  2027-05-31); answer_due = 30 days after filing (option `filed_on`, default: the day the
  claim is made). A note gives the safer deadline counted from the first day of claimed
  downtime, since the six months may run from the day the service was not provided.
- No cap needed (downtime ≤ period); exclusions: option `exclude`.
No amount here is configuration.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from .base import Option, PackRun
from .days import add_months, local_date
from .pro_rata import ProRata, downtime_item

CLAIM_MONTHS = 6               # 126-FZ art. 55: claim within six months
ANSWER_DAYS = 30               # 126-FZ art. 55 p. 7: answer within 30 days of registration


class RuTelematics(ProRata):
    name = "ru-telematics"
    title = "Russia, telematic services: Decree 2607 of 31.12.2021"
    country = "RU"
    source = ("Правила оказания телематических услуг связи (постановление Правительства РФ "
              "от 31.12.2021 № 2607); Федеральный закон от 07.07.2003 № 126-ФЗ «О связи», ст. 55")
    source_url = None
    options = {**ProRata.options,
               "filed_on": Option(None, "date", "the day the claim is filed (YYYY-MM-DD; "
                                  "default: today); answer_due counts from it")}

    def count(self, run: PackRun) -> None:
        spans = downtime_item(run)
        p, tz = run.period, run.tz
        file_by = add_months(local_date(p.end, tz), CLAIM_MONTHS) - timedelta(days=1)
        filed = run.options["filed_on"] or datetime.now(tz).date()
        run.result.dates.update(file_by=file_by, answer_due=filed + timedelta(days=ANSWER_DAYS))
        run.note(f"126-FZ art. 55: file the claim in writing by {file_by} (six months after "
                 f"the period); the operator registers it by the next working day and answers "
                 f"within {ANSWER_DAYS} days: counted from filing on {filed}")
        if spans:
            first = local_date(spans[0][0], tz)
            safe = add_months(first, CLAIM_MONTHS) - timedelta(days=1)
            run.note(f"to be safe, file by {safe}: the six months may also be read as running "
                     f"from the first day the service was not provided ({first})")
        if filed > file_by:
            run.note(f"filed on {filed}, after the six-month deadline {file_by}")
