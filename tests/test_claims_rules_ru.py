"""ru-telematics worked examples: Decree 2607 (proportional price reduction for the time
the service was not provided) and 126-FZ art. 55 (claim within six months; answer within
30 days), shown as dates on the claim.
"""

from __future__ import annotations

from tests.test_claims_rules import has_note, outage, run, tariff

TZ = "Europe/Moscow"                  # no DST: every month is days × 24 h
RUB = tariff("900", "RUB", TZ)


def test_proportional_reduction_for_ten_hours():
    # 900 × 36 000 s / 2 592 000 s (30 days) = 12.50
    o = outage("2026-11-03 08:00", "2026-11-03 18:00", TZ)
    r = run("ru-telematics", [o], [], RUB, "2026-11", filed_on="2026-12-02")
    (item,) = r.items
    assert item.kind == "downtime" and str(item.amount) == "12.50"
    assert r.counted_s[o.id] == 36000


def test_outage_across_the_billing_boundary_is_split_between_the_periods():
    o = outage("2026-10-31 20:00", "2026-11-01 04:00", TZ)
    # November: 4 h: 900 × 14 400 / 2 592 000 = 5.00
    nov = run("ru-telematics", [o], [], RUB, "2026-11", filed_on="2026-12-02")
    assert str(nov.total) == "5.00" and nov.counted_s[o.id] == 14400
    # October (31 days = 2 678 400 s): 4 h: 900 × 14 400 / 2 678 400 = 4.8387 -> 4.84
    octo = run("ru-telematics", [o], [], RUB, "2026-10", filed_on="2026-11-02")
    assert str(octo.total) == "4.84"


def test_claim_dates_six_months_and_thirty_days():
    # 126-FZ art. 55: the claim within six months; the answer within 30 days.
    o = outage("2026-11-03 08:00", "2026-11-03 18:00", TZ)
    r = run("ru-telematics", [o], [], RUB, "2026-11", filed_on="2026-12-02")
    # Issue 17: file_by is the safe date, six months from 3 Nov 2026, the first day without
    # service -> 2 May 2027 (it showed 31 May 2027, six months after the period's end).
    # Received Wed 2 Dec 2026 -> registered by Thu 3 Dec (the next working day) + 30 days =
    # 2 Jan 2027 (it counted from receipt: 1 Jan 2027)
    assert {k: str(v) for k, v in r.dates.items()} == {"file_by": "2027-05-02",
                                                       "answer_due": "2027-01-02"}
    assert has_note(r, "by 2027-05-02", "the first day without service (2026-11-03)")
    assert has_note(r, "2026-12-03 if received on 2026-12-02", "by 2027-01-02")


def test_registration_skips_weekends_and_public_holidays():
    o = outage("2026-11-03 08:00", "2026-11-03 18:00", TZ)
    # received Fri 6 Nov 2026 -> registered by Mon 9 Nov -> answer by 9 Dec 2026
    r = run("ru-telematics", [o], [], RUB, "2026-11", filed_on="2026-11-06")
    assert str(r.dates["answer_due"]) == "2026-12-09"
    # received Wed 30 Dec 2026: 31 Dec is a Thursday, a working day -> 30 Jan 2027
    r = run("ru-telematics", [o], [], RUB, "2026-11", filed_on="2026-12-30")
    assert str(r.dates["answer_due"]) == "2027-01-30"
    # received Thu 31 Dec 2026: 1-8 Jan holidays (art. 112), 9-10 Jan a weekend ->
    # registered by Mon 11 Jan 2027 -> 10 Feb 2027
    r = run("ru-telematics", [o], [], RUB, "2026-11", filed_on="2026-12-31")
    assert str(r.dates["answer_due"]) == "2027-02-10"
    # a day off moved by decree (option extra_holidays) on Mon 11 Jan: Tue 12 Jan -> 11 Feb
    r = run("ru-telematics", [o], [], RUB, "2026-11", filed_on="2026-12-31",
            extra_holidays="2027-01-11")
    assert str(r.dates["answer_due"]) == "2027-02-11"


def test_six_months_from_31_august_end_in_february():
    # Issue 17: from the first day without service, 31 Aug 2026: + 6 months = 28 Feb 2027
    # (clamped), the day before = 27 Feb 2027 (it was 28 Feb, counted from the period's end)
    o = outage("2026-08-31 10:00", "2026-08-31 11:00", TZ)
    r = run("ru-telematics", [o], [], RUB, "2026-08", filed_on="2026-09-10")
    assert str(r.dates["file_by"]) == "2027-02-27"
    # received Thu 10 Sep -> registered by Fri 11 Sep + 30 days = 11 Oct (it was 10 Oct)
    assert str(r.dates["answer_due"]) == "2026-10-11"


def test_without_downtime_the_period_start_dates_the_deadline():
    # no downtime: six months from 1 Aug 2026 -> 31 Jan 2027
    r = run("ru-telematics", [], [], RUB, "2026-08", filed_on="2026-09-10")
    assert str(r.dates["file_by"]) == "2027-01-31"
    assert r.items == [] and has_note(r, "no claimable downtime in the period")


def test_a_late_filing_is_pointed_out():
    o = outage("2026-11-03 08:00", "2026-11-03 18:00", TZ)
    r = run("ru-telematics", [o], [], RUB, "2026-11", filed_on="2027-06-01")
    # the deadline is the safe one, 2 May 2027 (issue 17; it was 31 May)
    assert has_note(r, "filed on 2027-06-01, after the six-month deadline 2027-05-02")
    # received Tue 1 Jun 2027 -> registered by Wed 2 Jun + 30 days = 2 Jul (it was 1 Jul)
    assert str(r.dates["answer_due"]) == "2027-07-02"


def test_dns_failure_counts_only_when_the_option_names_it():
    isp = outage("2026-11-03 08:00", "2026-11-03 12:00", TZ)               # 4 h
    dns = outage("2026-11-04 08:00", "2026-11-04 14:00", TZ, "dns_down")   # 6 h
    r = run("ru-telematics", [isp, dns], [], RUB, "2026-11", filed_on="2026-12-02")
    # 4 h only: 900 × 14 400 / 2 592 000 = 5.00
    assert str(r.total) == "5.00" and r.counted_s[dns.id] == 0
    r = run("ru-telematics", [isp, dns], [], RUB, "2026-11", filed_on="2026-12-02",
            classes="isp_down,dns_down")
    # 10 h: 900 × 36 000 / 2 592 000 = 12.50
    assert str(r.total) == "12.50" and r.counted_s[dns.id] == 21600
