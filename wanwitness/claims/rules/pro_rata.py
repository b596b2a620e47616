"""pro-rata: the monthly fee, reduced in proportion to the time the service was down.

Source: no single statute. It is the plain reduction of the price for a service not
delivered, as many contracts and consumer laws provide it; use it where no stricter
rule applies, or to compare with one.

- Clock: the outage itself (no fault report needed); no grace.
- Unit: seconds. amount = monthly fee × claimable downtime ÷ length of the billing
  period, where the length is the real one (a 745 h October in Europe/Berlin).
- Claimable: isp_down always; dns_down and degraded only if option `classes` names them.
- Option `min_outage_s` (default 0): an outage shorter than that is not counted; the
  length is that of the whole outage (also outside the period), and outages that
  several agents saw at the same time count as one.
- Cap: none needed: the downtime cannot exceed the period, so the refund cannot exceed
  the fee.
- Exclusions: option `exclude` (ticket numbers / outage ids), named in the notes.
No amount here is configuration: the fee is the tariff's.
"""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

from ..model import Outage
from .base import EXCLUDE, Option, PackRun, RulePack, classes_option
from .days import Span, clip, fmt_duration, length_s, merge_traced

CLASSES = frozenset({"isp_down", "dns_down", "degraded"})
WHY_SHORT = "shorter than the minimum length of an outage that counts"
MIN_OUTAGE = Option(0, "int", "outages shorter than this many seconds are not counted")


def counted_spans(run: PackRun) -> list[tuple[Span, list[Outage]]]:
    """The claimable downtime inside the period: overlapping outages merged (each second
    once), spans shorter than min_outage_s dropped (with a note), clipped to the period."""
    p, min_s = run.period, run.options["min_outage_s"]
    by_id = {o.id: o for o in run.claimable}
    out, short = [], []
    for span, ids in merge_traced([(run.span(o), o.id) for o in by_id.values()]):
        inside = clip(span, p.start, p.end)
        if inside is None:
            continue
        if length_s(span) < min_s:
            short.append(inside)
            for oid in ids:
                run.why(oid, WHY_SHORT)
            continue
        out.append((inside, [by_id[i] for i in ids]))
    if short:
        run.note(f"{len(short)} outage(s) shorter than min_outage_s={min_s} s not counted "
                 f"({fmt_duration(sum(length_s(s) for s in short))} in all)")
    return out


def downtime_item(run: PackRun) -> list[Span]:
    """One `downtime` item for all counted time (rounded once, not per outage); returns
    the counted spans in time order."""
    seconds, ids, spans = 0.0, [], []
    for span, outs in counted_spans(run):
        seconds += length_s(span)
        ids += run.pay(outs, span)
        spans.append(span)
    if not seconds:
        run.note("no claimable downtime in the period")
        return spans
    p = run.period
    amount = run.fee * Decimal(repr(seconds)) / Decimal(repr(p.seconds))
    run.item("downtime", amount,
             {"seconds": seconds, "monthly_fee": run.fee, "period_seconds": p.seconds},
             ids, run.tickets_for(ids),
             f"{fmt_duration(seconds)} of downtime in a period of {fmt_duration(p.seconds)}"
             f" × monthly fee {run.tariff.currency} {run.fee}")
    return spans


class ProRata(RulePack):
    name = "pro-rata"
    title = "Pro-rata refund of the monthly fee for downtime"
    country: ClassVar[str | None] = None
    source = ("Reduction of the price for the time the service was not provided "
              "(contract / general law)")
    source_url: ClassVar[str | None] = None
    clock_start = "outage"
    grace = "none"
    unit = "second"
    claimable_classes = CLASSES
    options = {"classes": classes_option(CLASSES), "min_outage_s": MIN_OUTAGE,
               "exclude": EXCLUDE}
    not_counted = "not counted"

    def count(self, run: PackRun) -> None:
        downtime_item(run)
