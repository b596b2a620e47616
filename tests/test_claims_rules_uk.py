"""uk-ofcom worked examples, after the scheme's rules: a total loss of service reported
and not fixed by 23:59 of the 2nd full working day -> the daily amount for each calendar
day after that, up to the day of the fix (that day only with option pay_fix_day: issue
17 corrected the pack, which paid it by default); a missed engineer appointment -> a flat
amount. Amounts from Ofcom's dated table: 1 Apr 2025 - 31 Mar 2026 GBP 9.98 / 31.19;
from 1 Apr 2026 GBP 10.34 / 32.31 (not confirmed on Ofcom's site).
"""

from __future__ import annotations

from tests.test_claims_rules import at, days, has_note, outage, run, tariff, ticket
from wanwitness.claims.model import Ticket

TZ = "Europe/London"
GBP = tariff("30.00", "GBP", TZ)


def _claim(report: str, end: str, start: str | None = None, tar=GBP, label: str = "2025-06",
           **options):
    o = outage(start or report, end, TZ)
    return o, run("uk-ofcom", [o], [ticket("R1", report, TZ, [o])], tar, label, **options)


def test_report_on_monday_fixed_on_wednesday_night_pays_nothing():
    # Mon 2 Jun 2025: the report day is not a full working day; Tue 3 and Wed 4 are.
    o, r = _claim("2025-06-02 10:00", "2025-06-04 23:00")
    assert r.items == []
    assert r.why_not[o.id] == "fixed by the end of the 2nd full working day after the report"


def test_the_day_of_the_fix_counts_only_with_pay_fix_day():
    # Fixed Thu 5 Jun 08:00: Thursday is after the 2nd full working day, but it is the day
    # of the fix, which providers' published examples leave out (issue 17): 0 by default
    o, r0 = _claim("2025-06-02 10:00", "2025-06-05 08:00")
    assert r0.items == [] and has_note(r0, "pay_fix_day=true")
    assert r0.why_not[o.id] == "only on the day the fault was fixed, which the scheme does not pay"
    assert [st["msgid"] for st in r0.statements] == [
        "The day on which the service was restored (%(dates)s) is not claimed."]
    # with option pay_fix_day (the pack's reading before issue 17): 9.98
    o, r = _claim("2025-06-02 10:00", "2025-06-05 08:00", pay_fix_day="true")
    assert days(r) == [("2025-06-05", 1, "9.98")]
    assert r.items[0].basis["grace_end"] == "2025-06-04"
    assert r.items[0].basis["rate"] == "GBP 9.98 per calendar day (Ofcom, from 2025-04-01)"
    assert r.counted_s[o.id] == 8 * 3600


def test_report_on_friday_skips_the_weekend():
    # Fri 6 Jun: full working days Mon 9, Tue 10; fixed Thu 12 10:00 -> Wed 11 (Thu 12 is
    # the fix day, not paid since issue 17; it was 2 × 9.98 = 19.96): 9.98
    o, r = _claim("2025-06-06 15:00", "2025-06-12 10:00")
    assert days(r) == [("2025-06-11", 1, "9.98")]
    assert str(r.total) == "9.98"


def test_report_on_saturday_counts_from_monday():
    # Sat 7 Jun: full working days Mon 9, Tue 10; down until Wed 11 00:30: Wed 11 is the
    # fix day (issue 17: not paid by default; it was 9.98) -> 0; with pay_fix_day: 9.98
    o, r0 = _claim("2025-06-07 11:00", "2025-06-11 00:30")
    assert r0.items == []
    o, r = _claim("2025-06-07 11:00", "2025-06-11 00:30", pay_fix_day="true")
    assert days(r) == [("2025-06-11", 1, "9.98")] and r.counted_s[o.id] == 30 * 60


def test_report_before_a_bank_holiday_skips_it():
    # Fri 22 Aug 2025, Mon 25 Aug is the Summer bank holiday: full working days Tue 26,
    # Wed 27; fixed Fri 29 12:00 -> Thu 28 (Fri 29 is the fix day: issue 17, it was 2 × 9.98)
    o, r = _claim("2025-08-22 16:00", "2025-08-29 12:00", label="2025-08")
    assert days(r) == [("2025-08-28", 1, "9.98")]
    # a Scottish holiday on Tue 26 as well (option extra_holidays): Wed 27, Thu 28 -> Fri 29
    # only, the fix day: paid with pay_fix_day
    o, r2 = _claim("2025-08-22 16:00", "2025-08-29 12:00", label="2025-08",
                   extra_holidays="2025-08-26", pay_fix_day="true")
    assert days(r2) == [("2025-08-29", 1, "9.98")]


def test_missed_appointment_pays_the_flat_amount_of_its_date():
    o = outage("2025-06-02 09:00", "2025-06-03 12:00", TZ)          # fixed in time
    t = ticket("R1", "2025-06-02 10:00", TZ, [o], missed=("2025-06-03 08:00",),
               kept=("2025-06-04 08:00",))
    r = run("uk-ofcom", [o], [t], GBP, "2025-06")
    (item,) = r.items
    assert item.kind == "appointment" and str(item.amount) == "31.19"
    assert item.basis["date"] == "2025-06-03" and item.basis["ticket"] == "R1"


def test_april_2026_amounts_are_used_with_a_visible_note():
    # Mon 13 Apr 2026: full working days Tue 14, Wed 15; fixed Fri 17 09:00 -> Thu 16
    # (Fri 17 is the fix day: issue 17, it was 2 × 10.34 = 20.68): 10.34
    o, r = _claim("2026-04-13 10:00", "2026-04-17 09:00", label="2026-04")
    assert days(r) == [("2026-04-16", 1, "10.34")]
    assert str(r.total) == "10.34"
    assert has_note(r, "from 2026-04-01", "not confirmed on Ofcom's own site")


def test_a_date_without_a_known_amount_asks_for_configuration():
    # Mon 7 Mar 2022: no sourced row -> Thu 10 Mar listed with 0 and a note (Thu 10 is the
    # fix day: pay_fix_day keeps this example about the amount table)
    o, r = _claim("2022-03-07 10:00", "2022-03-10 12:00", label="2022-03", pay_fix_day="true")
    assert days(r) == [("2022-03-10", 1, "0.00")]
    assert has_note(r, "no daily amount known for 2022-03-10: configure uk-ofcom.daily_amount")
    o, r2 = _claim("2022-03-07 10:00", "2022-03-10 12:00", label="2022-03", daily_amount="9.00",
                   pay_fix_day="true")
    assert days(r2) == [("2022-03-10", 1, "9.00")]
    assert has_note(r2, "GBP 9.00 is configuration (option daily_amount)")
    # Mon 3 Jan 2028: beyond the bank holiday list too: only weekends are skipped, and said so
    o, r3 = _claim("2028-01-03 10:00", "2028-01-06 12:00", label="2028-01", daily_amount="9.00",
                   pay_fix_day="true")
    assert days(r3) == [("2028-01-06", 1, "9.00")]
    assert has_note(r3, "no bank holiday list for 2028")


def test_outage_spanning_two_billing_periods_pays_each_day_once():
    tar = tariff("30.00", "GBP", TZ, start_day=15)
    # Wed 11 Jun 2025: full working days Thu 12, Fri 13; down until Tue 17 12:00:
    # Sat 14 (day 1) is in period 2025-05 (15 May - 15 Jun); Sun 15, Mon 16, Tue 17 in 2025-06
    o, may = _claim("2025-06-11 10:00", "2025-06-17 12:00", tar=tar, label="2025-05")
    assert days(may) == [("2025-06-14", 1, "9.98")]
    # Tue 17 is the fix day (issue 17: not paid by default; June was 3 × 9.98 = 29.94)
    o, june = _claim("2025-06-11 10:00", "2025-06-17 12:00", tar=tar, label="2025-06")
    assert days(june) == [("2025-06-15", 2, "9.98"), ("2025-06-16", 3, "9.98")]
    assert str(june.total) == "19.96" and june.counted_s[o.id] == 2 * 86400


def test_the_25_hour_day_when_bst_ends_is_one_calendar_day():
    # Wed 22 Oct 2025: full working days Thu 23, Fri 24; Sat 25 and Sun 26 (25 h) count: 19.96
    o, r = _claim("2025-10-22 10:00", "2025-10-27 00:00", label="2025-10")
    assert days(r) == [("2025-10-25", 1, "9.98"), ("2025-10-26", 2, "9.98")]
    assert r.counted_s[o.id] == 49 * 3600


def test_degraded_line_is_not_a_total_loss():
    o = outage("2025-06-02 09:00", "2025-06-10 09:00", TZ, "degraded")
    r = run("uk-ofcom", [o], [ticket("R1", "2025-06-02 10:00", TZ, [o])], GBP, "2025-06")
    assert r.total == 0 and r.why_not[o.id] == "degraded not claimable under this rule"


# -- issue 17 ----------------------------------------------------------------------------
def test_a_fault_after_the_repair_is_not_paid_from_the_old_report():
    # Report Mon 2 Jun 2025 10:00 of a fault fixed Tue 3 Jun 12:00 (in the grace); the ticket
    # stays open; a new outage Mon 16 Jun 08:00 - Fri 20 Jun 12:00.
    first = outage("2025-06-02 09:00", "2025-06-03 12:00", TZ)
    again = outage("2025-06-16 08:00", "2025-06-20 12:00", TZ)
    ids = (first.id, again.id)
    # Linked by time only: the old reading paid 16-20 Jun (5 × 9.98 = 49.90) from the
    # 2 Jun report; the line was back for 12 days (> repaired_after_s): not reported: 0
    auto = Ticket("R1", at("2025-06-02 10:00", TZ), outage_ids=ids, auto_linked=ids)
    r = run("uk-ofcom", [first, again], [auto], GBP, "2025-06")
    assert r.items == [] and r.why_not[again.id].startswith("not covered by the fault report")
    # Linked by hand: its own clock from Mon 16 Jun 08:00: full working days Tue 17, Wed 18;
    # Thu 19 is day 1; Fri 20 is the fix day (not paid): 9.98
    by_hand = Ticket("R1", at("2025-06-02 10:00", TZ), outage_ids=ids, auto_linked=(first.id,))
    r = run("uk-ofcom", [first, again], [by_hand], GBP, "2025-06")
    assert days(r) == [("2025-06-19", 1, "9.98")]


def test_declined_engineer_slots_stop_the_clock():
    # Report Mon 2 Jun 10:00, down until Mon 9 Jun 00:00 (back at midnight: no fix day).
    # Grace: Tue 3, Wed 4; paid Thu 5 - Sun 8: 4 × 9.98 = 39.92
    o = outage("2025-06-02 09:00", "2025-06-09 00:00", TZ)
    r = run("uk-ofcom", [o], [ticket("R1", "2025-06-02 10:00", TZ, [o])], GBP, "2025-06")
    assert str(r.total) == "39.92"
    # 6 h lost to a slot the customer declined: rounded up to 1 calendar day: the grace
    # ends Thu 5; Fri 6, Sat 7, Sun 8 = days 1-3: 3 × 9.98 = 29.94
    r = run("uk-ofcom", [o], [ticket("R1", "2025-06-02 10:00", TZ, [o], declined_s=6 * 3600)],
            GBP, "2025-06")
    assert days(r) == [("2025-06-06", 1, "9.98"), ("2025-06-07", 2, "9.98"), ("2025-06-08", 3, "9.98")]
    (st,) = [st for st in r.statements if "declined or missed" in st["msgid"]]
    assert st["args"]["from_date"] == "2025-06-06"
    # 25 h: 2 days: Sat 7, Sun 8: 19.96
    r = run("uk-ofcom", [o], [ticket("R1", "2025-06-02 10:00", TZ, [o], declined_s=25 * 3600)],
            GBP, "2025-06")
    assert str(r.total) == "19.96"


def test_april_2023_amounts_are_marked_unconfirmed():
    # Mon 5 Jun 2023: full working days Tue 6, Wed 7; back Fri 9 Jun 00:00: Thu 8 = 9.33
    o, r = _claim("2023-06-05 10:00", "2023-06-09 00:00", label="2023-06")
    assert days(r) == [("2023-06-08", 1, "9.33")]
    assert has_note(r, "from 2023-04-01", "not confirmed on Ofcom's own site")
    assert has_note(r, "delayed provision", "not modelled")
