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
    # period ends 1 Dec 2026 (exclusive): + 6 months = 1 Jun 2027, the day before = 31 May
    # filed 2 Dec 2026 + 30 days = 1 Jan 2027
    assert {k: str(v) for k, v in r.dates.items()} == {"file_by": "2027-05-31",
                                                       "answer_due": "2027-01-01"}
    # the safer reading: six months from 3 Nov 2026, the first day without service -> 2 May 2027
    assert has_note(r, "to be safe, file by 2027-05-02")
    assert has_note(r, "answers within 30 days", "filing on 2026-12-02")


def test_six_months_after_august_end_in_february():
    # period 2026-08 ends 1 Sep 2026: + 6 months = 1 Mar 2027, the day before = 28 Feb 2027
    r = run("ru-telematics", [], [], RUB, "2026-08", filed_on="2026-09-10")
    assert str(r.dates["file_by"]) == "2027-02-28" and str(r.dates["answer_due"]) == "2026-10-10"
    assert r.items == [] and has_note(r, "no claimable downtime in the period")


def test_a_late_filing_is_pointed_out():
    o = outage("2026-11-03 08:00", "2026-11-03 18:00", TZ)
    r = run("ru-telematics", [o], [], RUB, "2026-11", filed_on="2027-06-01")
    assert has_note(r, "filed on 2027-06-01, after the six-month deadline 2027-05-31")
    assert str(r.dates["answer_due"]) == "2027-07-01"


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
