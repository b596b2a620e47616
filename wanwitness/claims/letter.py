"""The claim letter's content: built once from a claim dict in one language.

`build_letter(claim, lang)` returns a `Letter`: already translated, already formatted
(money and dates per locale with Babel, times in the billing period's time zone), and
free of markup. The Markdown, HTML and PDF writers only lay it out, so the three
formats cannot say different things.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale
from babel.dates import format_date, format_skeleton, get_datetime_format
from babel.units import format_unit

from ..errors import UserError
from .catalogs import LANGUAGES, N_, check_language, translations

# Words for the claim's codes (wanwitness.collector.timeline classes, ticket channels, rule units).
OUTAGE_CLASSES = {
    "isp_down": N_("complete outage (provider side)"),
    "dns_down": N_("name resolution (DNS) failure"),
    "degraded": N_("degraded service"),
    "local_down": N_("customer's own equipment"),
    "unknown": N_("no data (device not reporting)"),
}
CHANNELS = {
    "phone": N_("phone"),
    "email": N_("email"),
    "app": N_("app"),
    "office": N_("in person"),
    "web": N_("web form"),
    "letter": N_("letter"),
}
UNITS = {
    "calendar_day": N_("calendar days"),
    "working_day": N_("working days"),
    "second": N_("seconds (pro rata)"),
    "hour": N_("hours"),
    "month": N_("calendar months"),
}
CLOCK_STARTS = {
    "ticket": N_("on receipt of the fault report"),
    "outage": N_("at the start of the outage"),
}
# English texts that the claim builder and the rule packs write into "why_not", "grace"
# and the rules' "title" and "source" (claim schema; wanwitness/claims/build.py,
# rules/*.py): translated when the catalog has them, shown as written otherwise (so a new
# text is never lost, only English). A source written in the law's own language (TKG,
# Eszr., the Russian decree) is not listed: the reader must find that law under its name.
KNOWN_RULE_TEXTS = (
    # The packs' titles (rules/*.py, `title`).
    N_("Pro-rata refund of the monthly fee for downtime"),
    N_("Germany, TKG 2021 §58(3)/(4)"),
    N_("United Kingdom, Ofcom automatic compensation"),
    N_("Hungary, Eszr. 22/2020 (XII. 21.) NMHH decree"),
    N_("Russia, telematic services: Decree 2607 of 31.12.2021"),
    N_("Kenya, outage credit under the provider's approved policy"),
    # The packs' sources that are written in English (`source`).
    N_("Reduction of the price for the time the service was not provided (contract / general law)"),
    N_("Ofcom automatic compensation scheme (voluntary code agreed with Ofcom, in force since 1 April 2019)"),
    N_("Kenya Information and Communications (Consumer Protection) Regulations, 2026 (in force since "
       "1 July 2026), outage credit; the provider's outage-credit system approved by the Communications "
       "Authority of Kenya"),
    # why_not and grace.
    N_("local_down: the customer's own equipment"),
    N_("unknown: no agent reporting"),
    N_("dns_down not claimable under this rule"),
    N_("degraded not claimable under this rule"),
    N_("before the report"),
    N_("2 calendar days after receipt of the report"),
    N_("72 hours from the report, not counting time lost to repair slots the subscriber declined"),
    N_("none in the regulations; the provider's approved system may set one"),
    N_("none"),
    N_("until 23:59 of the 2nd full working day after the report"),
    N_("on the day of the report or the 2 calendar days after it, or on no day of complete outage"),
    N_("repaired within 72 hours of the report"),
    N_("not counted"),
    N_("fixed by the end of the 2nd full working day after the report"),
    N_("no fault report (ticket) linked to this outage"),
    N_("not counted under this rule"),
    N_("excluded by option exclude"),
    N_("outside the period"),
    N_("not covered by the fault report: it began after the reported fault had been repaired"),
    N_("on days on which the provider supplied a replacement service"),
    N_("only on the day the fault was fixed, which the scheme does not pay"),
    N_("a suspension of the service, not a fault: assessed under the 48-hour rule"),
    N_("shorter than the minimum length of an outage that counts"),
)


def format_args(args: dict[str, Any], fmt: Fmt) -> dict[str, str]:
    """A statement's arguments (model.statement) formatted for the letter, by name:
    *_date a date, dates a list of dates, *_at a time, *_amount money, duration seconds,
    month 'YYYY-MM'; anything else as written (ticket numbers, percentages)."""
    out = {}
    for key, value in args.items():
        text = str(value)
        try:
            if key.endswith("_date"):
                text = fmt.long_day(parse_day(text, key))
            elif key == "dates":
                text = ", ".join(fmt.day(parse_day(d, key)) for d in text.split(",") if d)
            elif key.endswith("_at"):
                text = fmt.moment(parse_time(text, key))
            elif key.endswith("_amount"):
                text = fmt.money(text)
            elif key == "duration":
                text = fmt.duration(float(text))
            elif key == "month":
                text = fmt.month(parse_day(f"{text}-01", key))
        except (UserError, ValueError):
            pass
        out[key] = text
    return out


def say(st: dict[str, Any], fmt: Fmt, _: Callable[[str], str]) -> str:
    """A statement (model.statement) in the letter's language; its English text when the
    catalog lacks it or the fields do not fit (tests/test_claims_letters.py finds that)."""
    msgid, args = st.get("msgid"), st.get("args") or {}
    if not isinstance(msgid, str) or not isinstance(args, dict):
        return str(st.get("text") or "")
    try:
        return _(msgid) % format_args(args, fmt)
    except (KeyError, TypeError, ValueError):
        return str(st.get("text") or msgid)



@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    footer: list[str] | None = None   # e.g. the total
    numeric: tuple[int, ...] = ()     # right-aligned columns


NBSP = "\xa0"
# A value that ends in an abbreviation's period ("2026 г.") before the sentence's own.
_DOUBLE_STOP = re.compile(r"(?<!\.)\.\.(?!\.)")


def tidy(sentence: str) -> str:
    return _DOUBLE_STOP.sub(".", sentence)


@dataclass
class Section:
    heading: str
    paragraphs: list[str] = field(default_factory=list)
    bullets: list[str] = field(default_factory=list)
    table: Table | None = None
    after: list[str] = field(default_factory=list)   # paragraphs after the table

    def __post_init__(self) -> None:
        self.paragraphs = [tidy(p) for p in self.paragraphs]
        self.after = [tidy(p) for p in self.after]


@dataclass
class Letter:
    lang: str
    title: str
    sender: list[str]
    recipient: list[str]
    date_line: str
    subject: str
    salutation: str
    sections: list[Section]
    closing: str
    signer: str
    attachments: list[str]
    page_label: str                   # "Page %(page)s of %(pages)s", translated


def _get(claim: dict[str, Any], *path: str) -> Any:
    """claim['a']['b'] with a UserError naming the field when it is missing or empty."""
    cur: Any = claim
    for i, key in enumerate(path):
        if not isinstance(cur, dict) or cur.get(key) in (None, ""):
            raise UserError(f"claim: missing field {'.'.join(path[:i + 1])}")
        cur = cur[key]
    return cur


@dataclass
class Fmt:
    """Locale formatting for one letter: money, dates, times, durations."""
    lang: str
    tz: ZoneInfo
    currency: str

    def money(self, amount: Any) -> str:
        """The amount with exactly the decimals the claim wrote ("11387.33" -> two,
        "8990" -> none), in the locale's currency pattern. Never the currency's digits
        from the installed Babel's locale data: those change between releases (Babel
        2.19 shows HUF with none, 2.17 with two), and a letter must show the same total
        as the claim's JSON, CSV and evidence bundle."""
        try:
            value = Decimal(str(amount))
        except InvalidOperation:
            raise UserError(f"claim: amount {amount!r} is not a number") from None
        if not value.is_finite():
            raise UserError(f"claim: amount {amount!r} is not a number")
        exponent = value.as_tuple().exponent
        places = max(0, -exponent) if isinstance(exponent, int) else 0
        pattern = copy.copy(Locale.parse(self.lang).currency_formats["standard"])
        pattern.frac_prec = (places, places)
        return str(pattern.apply(value, self.lang, currency=self.currency, currency_digits=False))

    def day(self, value: date | datetime) -> str:
        """'4 Nov 2026' style: month as a word, so no reader mixes up day and month.
        Unbreakable: a date is never split over two lines of a table cell."""
        if isinstance(value, datetime):
            value = value.astimezone(self.tz)
        return _unbreakable(format_skeleton("yMMMd", value, locale=self.lang))

    def long_day(self, value: date) -> str:
        return _unbreakable(format_date(value, format="long", locale=self.lang))

    def moment(self, value: datetime) -> str:
        local = value.astimezone(self.tz)
        d = self.day(local)
        t = _unbreakable(format_skeleton("Hm", local, locale=self.lang))
        # Date and time may go on two lines; each stays whole.
        return str(get_datetime_format("medium", locale=self.lang)).replace("{1}", d).replace("{0}", t)

    def month(self, value: date) -> str:
        return _unbreakable(format_skeleton("yMMMM", value, locale=self.lang))

    def duration(self, seconds: float) -> str:
        minutes = int(round(float(seconds) / 60))
        d, rest = divmod(minutes, 24 * 60)
        h, m = divmod(rest, 60)
        parts = [(d, "duration-day"), (h, "duration-hour"), (m, "duration-minute")]
        shown = [_unbreakable(format_unit(n, unit, length="short", locale=self.lang)) for n, unit in parts if n]
        return " ".join(shown) or _unbreakable(format_unit(0, "duration-minute", length="short", locale=self.lang))


def _unbreakable(text: str) -> str:
    return re.sub(r"\s", NBSP, text)


def parse_time(value: Any, where: str) -> datetime:
    try:
        dt = datetime.fromisoformat(str(value))
    except ValueError:
        raise UserError(f"claim: {where}: {value!r} is not an ISO 8601 time") from None
    if dt.tzinfo is None:
        raise UserError(f"claim: {where}: {value!r} has no time zone")
    return dt


def parse_day(value: Any, where: str) -> date:
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        raise UserError(f"claim: {where}: {value!r} is not a date (YYYY-MM-DD)") from None


def _lines(text: Any) -> list[str]:
    return [ln.strip() for ln in str(text or "").splitlines() if ln.strip()]


def _place(address_lines: list[str]) -> str:
    """The town for the date line: the last address line without its postcode."""
    for line in reversed(address_lines):
        town = re.sub(r"^(?:\S*\d\S*\s+)+", "", line).strip()
        if town and not any(c.isdigit() for c in town):
            return town
    return ""


def _check_shape(claim: Any) -> None:
    """The parts the letter walks through must be objects and lists of objects."""
    if not isinstance(claim, dict):
        raise UserError("claim: expected a JSON object")
    for key in ("rules", "period", "customer", "isp"):
        if not isinstance(claim.get(key), dict):
            raise UserError(f"claim: missing field {key} (an object)")
    for key in ("outages", "tickets", "items"):
        _objects(claim.get(key), key)
    for o in claim.get("outages") or []:
        _objects(o.get("records"), f"outage {o.get('id')}: records")
    for t in claim.get("tickets") or []:
        _objects(t.get("appointments"), f"ticket {t.get('number')}: appointments")


def _objects(value: Any, where: str) -> None:
    if value is not None and not (isinstance(value, list) and all(isinstance(x, dict) for x in value)):
        raise UserError(f"claim: {where} must be a list of objects")


def build_letter(claim: dict[str, Any], lang: str) -> Letter:
    check_language(lang)
    _check_shape(claim)
    tr = translations(lang)
    _: Callable[[str], str] = tr.gettext
    tz_name = _get(claim, "period", "timezone")
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UserError(f"claim: period.timezone {tz_name!r} is not an IANA time zone") from None
    fmt = Fmt(lang, tz, str(_get(claim, "currency")))
    customer, isp = claim["customer"], claim["isp"]
    _get(claim, "customer", "name"), _get(claim, "isp", "name")
    period = _period_words(claim, fmt)
    total = fmt.money(_get(claim, "total"))
    outage_no = {o.get("id"): i for i, o in enumerate(claim.get("outages") or [], 1)}

    sender = [str(_get(claim, "customer", "name")), *_lines(customer.get("address"))]
    for label, key in ((N_("Customer number: %(value)s"), "customer_number"),
                       (N_("Contract: %(value)s"), "contract"),
                       (N_("Email: %(value)s"), "email"), (N_("Phone: %(value)s"), "phone")):
        if customer.get(key):
            sender.append(_(label) % {"value": customer[key]})
    # The department goes on the envelope unless the configured address already names
    # it (in any of the letter's languages: the address is the ISP's, the letter the user's).
    address = _lines(isp.get("address"))
    billing_names = {translations(lg).gettext("Billing department").casefold() for lg in LANGUAGES}
    recipient = [str(_get(claim, "isp", "name"))]
    if not any(ln.casefold() in billing_names for ln in address):
        recipient.append(_("Billing department"))
    recipient += address
    if isp.get("email"):
        recipient.append(_("Email: %(value)s") % {"value": isp["email"]})

    written = parse_time(_get(claim, "generated"), "generated").astimezone(tz).date()
    place = _place(_lines(customer.get("address")))
    date_line = (_("%(place)s, %(date)s") % {"place": place, "date": fmt.long_day(written)}
                 if place else fmt.long_day(written))
    if customer.get("customer_number"):
        subject = _("Claim for compensation for internet service outages, billing period %(period)s, "
                    "customer number %(number)s") % {"period": period, "number": customer["customer_number"]}
    else:
        subject = _("Claim for compensation for internet service outages, billing period %(period)s") % {
            "period": period}

    sections = [
        Section("", paragraphs=[
            _("I hereby claim compensation for the interruptions of my internet access in the "
              "billing period %(period)s.") % {"period": period},
            _("The interruptions were recorded by an independent measuring device (wanwitness) "
              "installed next to my router. It watches the router's status lights, tests the "
              "connection to the internet every few seconds and logs every interruption with "
              "its start and end time."),
        ]),
        _rule_section(claim, _),
        _outage_section(claim, fmt, _, outage_no),
        _ticket_section(claim, fmt, _),
        _items_section(claim, fmt, _, total),
        _request_section(claim, fmt, _, total),
    ]
    # The claim's "notes" are the user's (options, how to change them, input-file
    # remarks): never in the letter. Its "statements" are what the ISP must read.
    said = [say(st, fmt, _) for st in claim.get("statements") or [] if isinstance(st, dict)]
    if said:
        sections.append(Section(_("Conditions and limits of this claim"), bullets=said))
    sections.append(_evidence_section(claim, _, outage_no))

    attachments = [_("Attachment: evidence bundle")] if claim.get("ledger") else []
    return Letter(
        lang=lang, title=_("Claim for compensation"), sender=sender, recipient=recipient,
        date_line=date_line, subject=subject, salutation=_("Dear Sir or Madam,"),
        sections=sections, closing=_("Yours faithfully,"), signer=sender[0],
        attachments=attachments, page_label=_("Page %(page)s of %(pages)s"),
    )


def _period_words(claim: dict[str, Any], fmt: Fmt) -> str:
    """'November 2026' for a calendar month; 'start – last day' for other periods."""
    start = parse_time(_get(claim, "period", "start"), "period.start").astimezone(fmt.tz)
    end = parse_time(_get(claim, "period", "end"), "period.end").astimezone(fmt.tz)
    if start.day == 1 and end.day == 1 and (end.year * 12 + end.month) - (start.year * 12 + start.month) == 1:
        return fmt.month(start.date())
    last = date.fromordinal(end.date().toordinal() - 1)
    return f"{fmt.day(start.date())} – {fmt.day(last)}"


def _rule_section(claim: dict[str, Any], _: Callable[[str], str]) -> Section:
    rules = _get(claim, "rules")
    title = _(str(_get(claim, "rules", "title")))
    source = _(str(rules["source"])) if rules.get("source") else ""
    basis = (_("This claim is based on %(title)s (%(source)s).") % {"title": title, "source": source}
             if source else _("This claim is based on %(title)s.") % {"title": title})
    clock = rules.get("clock_start")
    unit = rules.get("unit")
    grace = rules.get("grace")
    bullets = [
        _("Counting starts: %(value)s") % {"value": _(CLOCK_STARTS[clock]) if clock in CLOCK_STARTS else clock or "—"},
        _("Grace period: %(value)s") % {"value": _(str(grace)) if grace else _("none")},
        _("Counted in: %(value)s") % {"value": _(UNITS[unit]) if unit in UNITS else unit or "—"},
    ]
    after = [_("Source: %(url)s") % {"url": rules["source_url"]}] if rules.get("source_url") else []
    return Section(_("Legal basis"), paragraphs=[basis, _("The rule counts as follows:")],
                   bullets=bullets, after=after)


def _outage_section(claim: dict[str, Any], fmt: Fmt, _: Callable[[str], str],
                    outage_no: dict[Any, int]) -> Section:
    outages = claim.get("outages") or []
    heading = _("Interruptions")
    if not outages:
        return Section(heading, paragraphs=[_("No interruption was recorded in the billing period.")])
    rows = []
    for o in outages:
        where = f"outage {o.get('id')}"
        start = parse_time(o.get("start"), f"{where} start")
        end = fmt.moment(parse_time(o["end"], f"{where} end")) if o.get("end") else _("ongoing")
        cls = o.get("class")
        kind = _(OUTAGE_CLASSES[cls]) if cls in OUTAGE_CLASSES else str(cls)
        if o.get("claimed"):
            claimed, counted = _("yes"), fmt.duration(o.get("counted_s") or 0)
        else:
            reason = o.get("why_not")
            claimed = _("no (%(reason)s)") % {"reason": _(str(reason))} if reason else _("no")
            counted = "—"
        rows.append([str(outage_no[o.get("id")]), fmt.moment(start), end,
                     fmt.duration(o.get("duration_s") or 0), kind, counted, claimed])
    table = Table([_("No."), _("Start"), _("End"), _("Duration"), _("Type"), _("Counted"), _("Claimed")],
                  rows)
    intro = _("The following interruptions were recorded in the billing period (local time, %(tz)s):")
    return Section(heading, paragraphs=[intro % {"tz": fmt.tz.key}], table=table)


def _ticket_section(claim: dict[str, Any], fmt: Fmt, _: Callable[[str], str]) -> Section:
    tickets = claim.get("tickets") or []
    heading = _("Fault reports")
    if not tickets:
        return Section(heading, paragraphs=[_("No fault report is on record for this period.")])
    rows, remarks = [], []
    for t in tickets:
        number = str(t.get("number") or "—")
        where = f"ticket {number}"
        visits = []
        for a in t.get("appointments") or []:
            when = fmt.moment(parse_time(a.get("at"), f"{where} appointment"))
            visits.append((_("%(when)s (missed)") if a.get("missed") else _("%(when)s (kept)")) % {"when": when})
        channel = t.get("channel")
        rows.append([
            number, fmt.moment(parse_time(t.get("opened"), f"{where} opened")),
            _(CHANNELS[channel]) if channel in CHANNELS else str(channel or "—"),
            str(t.get("operator") or "—"),
            fmt.moment(parse_time(t["closed"], f"{where} closed")) if t.get("closed") else _("still open"),
            "; ".join(visits) or "—",
        ])
        if t.get("promised"):
            remarks.append(_("Ticket %(number)s: repair promised by %(when)s.")
                           % {"number": number, "when": fmt.moment(parse_time(t["promised"], f"{where} promised"))})
        if t.get("note"):
            remarks.append(_("Ticket %(number)s: %(note)s") % {"number": number, "note": t["note"]})
    table = Table([_("Ticket"), _("Reported"), _("Channel"), _("Operator"), _("Closed"),
                   _("Technician appointments")], rows)
    return Section(heading, paragraphs=[_("I reported the fault to you as follows:")],
                   table=table, after=remarks)


def _item_sentence(item: dict[str, Any], fmt: Fmt, _: Callable[[str], str]) -> str:
    """One sentence per item kind (wanwitness.claims.model.ITEM_KINDS) from its basis;
    an unknown kind or an incomplete basis falls back to the item's English description."""
    b = item.get("basis") or {}
    kind = item.get("kind")
    try:
        if kind == "downtime":
            return _("Pro-rata reduction of the monthly fee of %(fee)s for %(duration)s without "
                     "service out of %(period)s") % {
                "fee": fmt.money(b["monthly_fee"]), "duration": fmt.duration(float(b["seconds"])),
                "period": fmt.duration(float(b["period_seconds"]))}
        rate = say(b["rate_text"], fmt, _) if isinstance(b.get("rate_text"), dict) else b.get("rate")
        if kind == "day" and b.get("service") in ("unusable", "degraded"):
            words = (_("Started day %(number)s of delay beyond the repair deadline, from %(date)s, "
                       "service unusable (rate: %(rate)s)") if b["service"] == "unusable" else
                     _("Started day %(number)s of delay beyond the repair deadline, from %(date)s, "
                       "service degraded (rate: %(rate)s)"))
            return words % {"number": int(b["day_number"]),
                            "date": fmt.day(parse_day(b["date"], "item date")), "rate": rate}
        if kind == "day" and b.get("complete") is False:
            return _("Day %(number)s after the report, outage for part of the day, %(date)s "
                     "(rate: %(rate)s)") % {
                "number": int(b["day_number"]), "date": fmt.day(parse_day(b["date"], "item date")),
                "rate": rate}
        if kind == "day":
            return _("Day %(number)s of the complete outage, %(date)s (rate: %(rate)s)") % {
                "number": int(b["day_number"]), "date": fmt.day(parse_day(b["date"], "item date")),
                "rate": rate}
        if kind == "appointment":
            return _("Missed technician appointment on %(date)s, ticket %(ticket)s (rate: %(rate)s)") % {
                "date": fmt.day(parse_day(b["date"], "item date")), "ticket": b["ticket"], "rate": rate}
        if kind == "month_fee":
            return _("Refund of the monthly fee for %(month)s: the service was suspended for "
                     "%(duration)s in that month") % {
                "month": fmt.month(parse_day(f"{b['month']}-01", "item month")),
                "duration": fmt.duration(float(b["seconds"]))}
    except (KeyError, TypeError, ValueError, UserError):
        pass
    return str(item.get("description") or kind or "—")


def _items_section(claim: dict[str, Any], fmt: Fmt, _: Callable[[str], str], total: str) -> Section:
    items = claim.get("items") or []
    heading = _("Calculation")
    if not items:
        return Section(heading, paragraphs=[_("Under this rule no amount is due for this period.")])
    rows = [[_item_sentence(i, fmt, _), fmt.money(i.get("amount"))] for i in items]
    table = Table([_("Item"), _("Amount")], rows, footer=[_("Total"), total], numeric=(1,))
    return Section(heading, table=table)


def _request_section(claim: dict[str, Any], fmt: Fmt, _: Callable[[str], str], total: str) -> Section:
    paragraphs = [_("I ask you to credit the total of %(total)s to my customer account or to refund "
                    "it to me, and to confirm this to me in writing.") % {"total": total}]
    dates = claim.get("dates") or {}
    if dates.get("answer_due"):
        paragraphs.append(_("Please answer by %(date)s at the latest.")
                          % {"date": fmt.long_day(parse_day(dates["answer_due"], "dates.answer_due"))})
    if dates.get("file_by"):
        paragraphs.append(_("This claim is made within the time limit for claims, which ends on %(date)s.")
                          % {"date": fmt.long_day(parse_day(dates["file_by"], "dates.file_by"))})
    return Section(_("My request"), paragraphs=paragraphs)


def _evidence_section(claim: dict[str, Any], _: Callable[[str], str], outage_no: dict[Any, int]) -> Section:
    led = claim.get("ledger")
    heading = _("Evidence")
    if not led:
        return Section(heading, paragraphs=[
            _("The times above come from exported outage records; they are not backed by the "
              "collector's ledger, so no evidence bundle is attached.")])
    checkpoint, digest = _get(claim, "ledger", "checkpoint"), _get(claim, "ledger", "root")
    bullets = []
    for o in claim.get("outages") or []:
        positions = [str(r["link"]) for r in o.get("records") or [] if r.get("link") is not None]
        if positions:
            bullets.append(_("No. %(no)s: ledger entries %(positions)s")
                           % {"no": outage_no[o.get("id")], "positions": ", ".join(positions)})
    paragraphs = [
        _("The times above come from a tamper-evident ledger in which the records of each "
          "monitoring device are chained to one another by SHA-256 hashes. Checkpoint "
          "%(checkpoint)s of the ledger commits these chains in the root hash %(hash)s.")
        % {"checkpoint": checkpoint, "hash": digest},
    ]
    if bullets:
        paragraphs.append(_("The interruptions listed above rest on these ledger entries:"))
    return Section(heading, paragraphs=paragraphs, bullets=bullets, after=[_("An evidence bundle that anyone can verify with Python is attached.")])
