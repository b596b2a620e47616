"""Counting helpers shared by the rule packs: spans, merging, local days, working days.

Every span is `[start, end)` in aware UTC. Arithmetic is only ever done in UTC: two
datetimes that share a ZoneInfo subtract as wall-clock times, so a 25 h October day in
Europe/Berlin would come out as 24 h. Calendar days are cut at local midnight in the
tariff's zone, which makes DST days 23 h or 25 h long, as they really are.
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from ..model import Outage

Span = tuple[datetime, datetime]
ONE_DAY = timedelta(days=1)


def utc(dt: datetime) -> datetime:
    if dt.tzinfo is None:
        raise ValueError(f"naive datetime {dt.isoformat()}: the claims code needs aware times")
    return dt.astimezone(UTC)


def outage_span(o: Outage, ongoing_until: datetime) -> Span:
    """The outage as a span; an ongoing one (end None) runs up to `ongoing_until`."""
    start = utc(o.start)
    end = utc(ongoing_until if o.end is None else o.end)
    return start, max(start, end)


def clip(span: Span, lo: datetime, hi: datetime) -> Span | None:
    s, e = max(span[0], utc(lo)), min(span[1], utc(hi))
    return (s, e) if s < e else None


def length_s(span: Span) -> float:
    return (span[1] - span[0]).total_seconds()


def merge_traced(spans: list[tuple[Span, str]]) -> list[tuple[Span, list[str]]]:
    """Merge overlapping (or touching) spans, keeping which ids each merged span holds:
    two agents that saw the same outage give one span, counted once."""
    out: list[tuple[Span, list[str]]] = []
    for (s, e), ident in sorted(spans, key=lambda x: x[0]):
        if out and s <= out[-1][0][1]:
            (ms, me), ids = out[-1]
            out[-1] = ((ms, max(me, e)), ids + [ident])
        else:
            out.append(((s, e), [ident]))
    return out


def merge(spans: list[Span]) -> list[Span]:
    return [span for span, _ in merge_traced([(s, "") for s in spans])]


def total_s(spans: list[Span]) -> float:
    return sum(length_s(s) for s in spans)


def overlap_s(span: Span, merged: list[Span]) -> float:
    """Seconds of `span` covered by `merged` (which must not overlap itself)."""
    return sum(length_s(c) for m in merged if (c := clip(m, span[0], span[1])) is not None)


def local_midnight(d: date, tz: ZoneInfo) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=tz).astimezone(UTC)


def day_span(d: date, tz: ZoneInfo) -> Span:
    """The local calendar day `d` as a UTC span (23 h / 25 h on DST change days)."""
    return local_midnight(d, tz), local_midnight(d + ONE_DAY, tz)


def local_date(dt: datetime, tz: ZoneInfo) -> date:
    return dt.astimezone(tz).date()


def days_with_outage(merged: list[Span], lo: datetime, hi: datetime,
                     tz: ZoneInfo) -> list[tuple[date, Span, float]]:
    """Each local day that `merged` touches inside [lo, hi): (date, the day's span,
    seconds of outage on that day)."""
    out: list[tuple[date, Span, float]] = []
    days: set[date] = set()
    for m in merged:
        c = clip(m, lo, hi)
        if c is None:
            continue
        d, last = local_date(c[0], tz), local_date(c[1] - timedelta(microseconds=1), tz)
        while d <= last:
            days.add(d)
            d += ONE_DAY
    for d in sorted(days):
        span = day_span(d, tz)
        inside = clip(span, lo, hi)
        out.append((d, span, overlap_s(inside, merged) if inside else 0.0))
    return out


def is_working_day(d: date, holidays: frozenset[date]) -> bool:
    return d.weekday() < 5 and d not in holidays


def nth_working_day_after(d: date, n: int, holidays: frozenset[date]) -> date:
    """The n-th working day strictly after `d` (the day itself never counts)."""
    found = 0
    while found < n:
        d += ONE_DAY
        if is_working_day(d, holidays):
            found += 1
    return d


def add_months(d: date, n: int) -> date:
    """Same day n months later, clamped to the month's last day (31 Aug + 6 -> 28 Feb)."""
    y, m = divmod(d.month - 1 + n, 12)
    year, month = d.year + y, m + 1
    return date(year, month, min(d.day, calendar.monthrange(year, month)[1]))


def month_starts(lo: datetime, hi: datetime, tz: ZoneInfo) -> list[date]:
    """First days of the calendar months (in `tz`) that overlap [lo, hi)."""
    d = local_date(lo, tz).replace(day=1)
    out = []
    while local_midnight(d, tz) < utc(hi):
        out.append(d)
        d = add_months(d, 1)
    return out


def fmt_duration(seconds: float) -> str:
    """'2 d 03 h 05 min' / '3 h 00 min' / '45 min': for notes."""
    minutes = int(round(seconds / 60))
    d, rest = divmod(minutes, 24 * 60)
    h, m = divmod(rest, 60)
    if d:
        return f"{d} d {h:02d} h {m:02d} min"
    if h:
        return f"{h} h {m:02d} min"
    return f"{m} min"
