"""de-tkg58 worked examples, each after the sentence of TKG 2021 §58 it checks.

§58(3): fault not fixed within 2 calendar days after receipt of the report -> from the
following day, per day of complete outage: days 3 and 4 max(EUR 5, 10 % of the monthly
fee), from day 5 max(EUR 10, 20 %). §187(1) BGB: the day of receipt does not count.
§58(4): each missed appointment max(EUR 10, 20 %).
"""

from __future__ import annotations

import pytest

from tests.test_claims_rules import days, has_note, outage, run, tariff, ticket
from wanwitness.errors import UserError

TZ = "Europe/Berlin"
CHEAP = tariff("39.99", "EUR", TZ)    # 10 % = 4.00 < 5 -> EUR 5; 20 % = 8.00 < 10 -> EUR 10
DEAR = tariff("80.00", "EUR", TZ)     # 10 % = 8.00 > 5; 20 % = 16.00 > 10


def test_report_at_2359_counts_from_the_next_day_but_at_0001_a_day_later():
    # "innerhalb von zwei Kalendertagen nach Eingang der Störungsmeldung" with §187(1) BGB.
    o = outage("2026-11-03 08:00", "2026-11-07 00:00", TZ)      # down until the end of 6 Nov
    late = ticket("A", "2026-11-03 23:59", TZ, [o])
    # received 3 Nov: day 1 = 4 Nov, day 2 = 5 Nov, day 3 = 6 Nov (complete): EUR 5
    r = run("de-tkg58", [o], [late], CHEAP, "2026-11")
    assert days(r) == [("2026-11-06", 3, "5.00")] and str(r.total) == "5.00"
    assert r.counted_s[o.id] == 86400
    # received 4 Nov 00:01: day 3 = 7 Nov, when the line was already back: nothing
    early = ticket("B", "2026-11-04 00:01", TZ, [o])
    r2 = run("de-tkg58", [o], [early], CHEAP, "2026-11")
    assert r2.items == [] and r2.counted_s[o.id] == 0
    assert "2 calendar days after it" in r2.why_not[o.id]


def test_fault_fixed_on_day_2_pays_nothing():
    # "Wird die Störung nicht innerhalb von zwei Kalendertagen ... beseitigt": fixed in time.
    o = outage("2026-11-03 09:00", "2026-11-05 23:30", TZ)
    r = run("de-tkg58", [o], [ticket("A", "2026-11-03 10:00", TZ, [o])], CHEAP, "2026-11")
    assert r.total == 0 and r.items == []


def test_fault_fixed_during_day_3_pays_only_with_partial_days():
    # "für jeden Tag des vollständigen Ausfalls": 6 Nov is day 3 but only partly out.
    o = outage("2026-11-03 09:00", "2026-11-06 14:00", TZ)
    t = ticket("A", "2026-11-03 10:00", TZ, [o])
    off = run("de-tkg58", [o], [t], CHEAP, "2026-11")
    assert off.total == 0
    assert has_note(off, "2026-11-06: service partly restored", "partial_days=true")
    assert has_note(off, "options in effect: partial_days=false")
    on = run("de-tkg58", [o], [t], CHEAP, "2026-11", partial_days="true")
    # day 3, 00:00-14:00 = 14 h: EUR 5
    assert days(on) == [("2026-11-06", 3, "5.00")] and on.counted_s[o.id] == 14 * 3600
    assert on.items[0].basis["complete"] is False


def test_long_outage_reaches_the_higher_rate_on_day_5():
    # "am dritten und vierten Tag 5 Euro oder 10 Prozent und ab dem fünften Tag 10 Euro
    # oder 20 Prozent ..., je nachdem, welcher Betrag höher ist"
    o = outage("2026-11-02 11:00", "2026-11-10 00:00", TZ)
    r = run("de-tkg58", [o], [ticket("A", "2026-11-02 12:00", TZ, [o])], DEAR, "2026-11")
    # received 2 Nov: day 3 = 5 Nov ... day 7 = 9 Nov; 8 + 8 + 16 + 16 + 16 = 64.00
    assert days(r) == [("2026-11-05", 3, "8.00"), ("2026-11-06", 4, "8.00"),
                       ("2026-11-07", 5, "16.00"), ("2026-11-08", 6, "16.00"),
                       ("2026-11-09", 7, "16.00")]
    assert str(r.total) == "64.00"
    assert r.items[2].basis["rate"] == "max(EUR 10, 20 % of 80.00)"


def test_no_cap_and_an_outage_reported_in_the_previous_period():
    # §58(3) sets no upper limit; days are numbered from the report, even in October.
    o = outage("2026-10-31 09:00", None, TZ)                      # still down at the period end
    r = run("de-tkg58", [o], [ticket("A", "2026-10-31 10:00", TZ, [o])], DEAR, "2026-11")
    # day 1 = 1 Nov, day 2 = 2 Nov, days 3-4 = 3-4 Nov: 2 × 8.00; days 5-30 = 5-30 Nov: 26 × 16.00
    # 16.00 + 416.00 = 432.00, more than the monthly fee of 80.00
    assert len(days(r)) == 28 and days(r)[-1] == ("2026-11-30", 30, "16.00")
    assert str(r.total) == "432.00"
    assert r.counted_s[o.id] == 28 * 86400


def test_missed_appointments_in_the_period_each_pay():
    # §58(4): "für jeden versäumten Termin ... 10 Euro oder 20 Prozent"
    o = outage("2026-11-03 09:00", "2026-11-04 09:00", TZ)          # fixed in time: no days
    t = ticket("A", "2026-11-03 10:00", TZ, [o],
               missed=("2026-11-04 08:00", "2026-12-01 09:00"), kept=("2026-11-20 08:00",))
    r = run("de-tkg58", [o], [t], DEAR, "2026-11")
    # 4 Nov missed: max(10, 16.00) = 16.00; 1 Dec belongs to December's claim; 20 Nov was kept
    (item,) = r.items
    assert item.kind == "appointment" and str(item.amount) == "16.00"
    # (rate_text: the same rate for the letter, translated there: issue 17 item 5)
    assert {k: v for k, v in item.basis.items() if k != "rate_text"} == {
        "date": "2026-11-04", "ticket": "A", "rate": "max(EUR 10, 20 % of 80.00)"}
    assert item.tickets == ["A"]
    cheap = run("de-tkg58", [o], [t], CHEAP, "2026-11")
    assert str(cheap.total) == "10.00"                             # max(10, 8.00)


def test_25_hour_day_when_dst_ends_counts_as_one_complete_day():
    o = outage("2026-10-21 09:00", "2026-10-26 00:00", TZ)
    r = run("de-tkg58", [o], [ticket("A", "2026-10-21 10:00", TZ, [o])], CHEAP, "2026-10")
    # day 3 = 24 Oct (24 h), day 4 = 25 Oct (25 h): 5 + 5 = 10.00; counted 49 h
    assert days(r) == [("2026-10-24", 3, "5.00"), ("2026-10-25", 4, "5.00")]
    assert r.counted_s[o.id] == 49 * 3600


def test_23_hour_day_when_dst_starts_counts_as_one_complete_day():
    o = outage("2026-03-25 09:00", "2026-03-30 00:00", TZ)
    r = run("de-tkg58", [o], [ticket("A", "2026-03-25 10:00", TZ, [o])], CHEAP, "2026-03")
    # day 3 = 28 Mar (24 h), day 4 = 29 Mar (23 h, clocks go forward): 5 + 5 = 10.00; 47 h
    assert days(r) == [("2026-03-28", 3, "5.00"), ("2026-03-29", 4, "5.00")]
    assert r.counted_s[o.id] == 47 * 3600


def test_two_agents_together_make_a_complete_day_counted_once():
    home = outage("2026-11-03 08:00", "2026-11-06 12:00", TZ, agent="home")
    attic = outage("2026-11-06 10:00", "2026-11-08 00:00", TZ, agent="attic")
    t = ticket("A", "2026-11-03 09:00", TZ, [home, attic])
    r = run("de-tkg58", [home, attic], [t], CHEAP, "2026-11")
    # 6 Nov (day 3) is complete only with both agents; 7 Nov (day 4) by the attic: 5 + 5
    assert days(r) == [("2026-11-06", 3, "5.00"), ("2026-11-07", 4, "5.00")]
    assert r.items[0].outages == sorted([home.id, attic.id])
    assert r.counted_s == {home.id: 12 * 3600, attic.id: 14 * 3600 + 86400}


def test_dns_down_is_no_complete_outage_and_an_excluded_ticket_pays_nothing():
    dns = outage("2026-11-03 08:00", "2026-11-10 00:00", TZ, "dns_down")
    r = run("de-tkg58", [dns], [ticket("A", "2026-11-03 09:00", TZ, [dns])], CHEAP, "2026-11")
    assert r.total == 0 and r.why_not[dns.id] == "dns_down not claimable under this rule"
    # force majeure / the consumer's fault: the user names the ticket, nothing is guessed
    o = outage("2026-11-03 08:00", "2026-11-10 00:00", TZ)
    t = ticket("A", "2026-11-03 09:00", TZ, [o], missed=("2026-11-04 08:00",))
    r2 = run("de-tkg58", [o], [t], CHEAP, "2026-11", exclude="A")
    assert r2.total == 0 and r2.why_not[o.id] == "excluded by option exclude"
    assert has_note(r2, "ticket A and its outages are excluded")


def test_outage_without_a_report_is_not_claimed_and_a_non_eur_tariff_is_refused():
    o = outage("2026-11-03 08:00", "2026-11-10 00:00", TZ)
    r = run("de-tkg58", [o], [], CHEAP, "2026-11")
    assert r.total == 0 and r.why_not[o.id] == "no fault report (ticket) linked to this outage"
    gone = outage("2026-11-03 08:00", "2026-11-03 09:00", TZ)      # over before the call
    r = run("de-tkg58", [gone], [ticket("A", "2026-11-03 10:00", TZ, [gone])], CHEAP, "2026-11")
    assert r.why_not[gone.id] == "before the report"
    with pytest.raises(UserError, match="currency is GBP, but this rule's amounts are in EUR"):
        run("de-tkg58", [o], [], tariff("30", "GBP", TZ), "2026-11")


def test_a_second_report_of_the_same_outage_does_not_restart_or_double_the_days():
    o = outage("2026-11-03 08:00", "2026-11-08 00:00", TZ)
    first = ticket("A", "2026-11-03 09:00", TZ, [o])
    again = ticket("B", "2026-11-05 09:00", TZ, [o])
    r = run("de-tkg58", [o], [again, first], CHEAP, "2026-11")
    # clock from A (3 Nov): days 3-4 = 6, 7 Nov: 5 + 5 = 10.00, all under ticket A
    assert days(r) == [("2026-11-06", 3, "5.00"), ("2026-11-07", 4, "5.00")]
    assert all(i.tickets == ["A"] for i in r.items)
    assert has_note(r, "ticket B reports an outage already reported earlier")
