"""ke-outage-credit: Kenya, the provider's approved outage-credit system.

Kenya Information and Communications (Consumer Protection) Regulations, 2026, in force
since 1 July 2026, replacing the 2010 Regulations (L.N. 54 of 2010): every licensee must
run an outage-credit system that compensates subscribers, automatically or on request,
when the service fails for reasons not caused by the subscriber; the system needs the
Communications Authority of Kenya's approval before use and becomes part of the
subscriber agreement; force majeure is excluded. The 2010 Regulations defined an
"outage credit" (reg. 2) as a credit paid for a period when the service is not operating
for reasons not caused by the subscriber.

Sources (checked 2026-12): the 2026 Regulations' text itself was not found by this
check; their content as reported on 1 July 2026 by techweez.com ("Kenya ICT consumer
protection regulations 2026"), techinkenya.com and nyongesasande.com; the 2010
Regulations on new.kenyalaw.org (L.N. 54 of 2010, revised 31 December 2022). The
regulation numbers of the 2026 text are therefore not cited. No statutory rate was
found: the rate is the provider's approved system's, so it is configuration here and
the notes say so.

- Clock: the outage itself (a provider's policy may ask for a report first: check it).
  Unit: calendar day (local, tariff zone); each day with claimable downtime is one item.
- Rate (configuration, one of them required; without one the days are listed with
  amount 0 and a note):
  `credit_per_hour`: amount per hour of downtime (fractions of an hour count);
  `credit_pct_per_day`: percent of the monthly fee per full day of downtime, pro rata
  for a partial day (a full 23 h or 25 h DST day is one day).
- Option `min_outage_s` (default 0): shorter outages do not count (several agents'
  views of one outage count as one).
- Cap: option `cap_pct` (default 100): the credits of a period never exceed that
  percentage of the monthly fee; days beyond the cap are cut, with a note.
- Claimable: isp_down always; dns_down / degraded if option `classes` names them.
- Exclusions: force majeure or a cause on the subscriber's side: option `exclude`.
"""

from __future__ import annotations

from decimal import Decimal

from ...errors import UserError
from ..catalogs import N_
from ..model import money, statement
from .base import EXCLUDE, Option, PackRun, RulePack, classes_option
from .days import days_with_outage, length_s, merge
from .pro_rata import CLASSES, MIN_OUTAGE, counted_spans


class KeOutageCredit(RulePack):
    name = "ke-outage-credit"
    title = "Kenya, outage credit under the provider's approved policy"
    country = "KE"
    source = ("Kenya Information and Communications (Consumer Protection) Regulations, 2026 "
              "(in force since 1 July 2026), outage credit; the provider's outage-credit system "
              "approved by the Communications Authority of Kenya")
    source_url = None     # the 2026 text was not found online (see the docstring)
    clock_start = "outage"
    grace = "none in the regulations; the provider's approved system may set one"
    unit = "calendar_day"
    claimable_classes = CLASSES
    options = {
        "credit_per_hour": Option(None, "decimal", "credit per hour of downtime, in the "
                                  "tariff's currency (from the provider's policy)"),
        "credit_pct_per_day": Option(None, "decimal", "credit in percent of the monthly fee "
                                     "per day of downtime (from the provider's policy)"),
        "min_outage_s": MIN_OUTAGE,
        "cap_pct": Option(Decimal(100), "decimal", "the credits of a period never exceed "
                          "this percentage of the monthly fee"),
        "classes": classes_option(CLASSES),
        "exclude": EXCLUDE,
    }
    not_counted = "not counted"

    def count(self, run: PackRun) -> None:
        per_hour, pct = run.options["credit_per_hour"], run.options["credit_pct_per_day"]
        cur = run.tariff.currency
        if per_hour is not None and pct is not None:
            raise UserError(f"rule pack {self.name}: set only one of the options "
                            "credit_per_hour and credit_pct_per_day")
        if per_hour is not None:
            rate = f"{cur} {per_hour} per hour of downtime (option credit_per_hour)"
            text = statement(N_("%(amount)s per hour of downtime"), amount=str(per_hour))
        elif pct is not None:
            rate = f"{pct} % of {cur} {run.fee} per day of downtime (option credit_pct_per_day)"
            text = statement(N_("%(pct)s %% of the monthly fee of %(fee_amount)s per day of downtime"),
                             pct=f"{pct.normalize():f}", fee_amount=str(run.fee))
        else:
            rate = f"not configured: configure {self.name}.credit_per_hour or .credit_pct_per_day"
            text = statement(N_("rate not set"))
            run.note(f"no rate: configure {self.name}.credit_per_hour or "
                     f"{self.name}.credit_pct_per_day from the provider's approved outage-credit "
                     "policy; the days are listed with amount 0")
        if per_hour is not None or pct is not None:
            run.note(f"the rate ({rate}) is configuration from the provider's policy, not an "
                     "amount fixed by law")
        left = money(run.fee * run.options["cap_pct"] / 100)
        groups = counted_spans(run)
        outs = [o for _, members in groups for o in members]
        merged = merge([span for span, _ in groups])
        p = run.period
        for n, (d, dspan, secs) in enumerate(days_with_outage(merged, p.start, p.end, run.tz), 1):
            if per_hour is not None:
                amount = per_hour * Decimal(repr(secs)) / 3600
            elif pct is not None:
                amount = run.fee * pct / 100 * Decimal(repr(secs)) / Decimal(repr(length_s(dspan)))
            else:
                amount = Decimal(0)
            amount = money(amount)
            capped = amount > left
            if capped:
                run.note(f"cap reached: credits are limited to {run.options['cap_pct']} % of "
                         "the monthly fee (option cap_pct); the day that reaches it is cut "
                         "and later days get 0")
                run.state(N_("The credits are limited to %(pct)s %% of the monthly fee; the day "
                             "that reaches this limit is reduced and later days are listed "
                             "without an amount."), pct=f"{run.options['cap_pct'].normalize():f}")
                amount = left
            left -= amount
            ids = run.pay(outs, dspan)
            run.item("day", amount, {"date": d, "day_number": n, "rate": rate, "rate_text": text,
                                     "seconds": secs, "capped": capped},
                     ids, run.tickets_for(ids), f"{secs / 3600:.2f} h of downtime")
        run.note("outage credits do not apply to force majeure or to outages the subscriber "
                 "caused: name such tickets or outages with option exclude")
        if groups:
            run.state(N_("The credit is claimed for interruptions that I did not cause and that, "
                         "to my knowledge, were not due to force majeure."))
