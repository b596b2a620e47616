"""ke-outage-credit worked examples: an outage credit for the time the service did not
operate for reasons not caused by the subscriber, at the rate of the provider's approved
policy (configuration), capped by option cap_pct.
"""

from __future__ import annotations

import pytest

from tests.test_claims_rules import days, has_note, outage, run, tariff
from wanwitness.errors import UserError

TZ = "Africa/Nairobi"
KES = tariff("3000", "KES", TZ)


def test_without_a_configured_rate_the_days_are_listed_at_zero():
    o = outage("2026-11-03 08:00", "2026-11-03 13:00", TZ)
    r = run("ke-outage-credit", [o], [], KES, "2026-11")
    assert days(r) == [("2026-11-03", 1, "0.00")] and r.counted_s[o.id] == 5 * 3600
    assert has_note(r, "configure ke-outage-credit.credit_per_hour")


def test_credit_per_hour_and_an_outage_across_midnight():
    five = outage("2026-11-03 08:00", "2026-11-03 13:00", TZ)              # 5 h × 10 = 50.00
    night = outage("2026-11-05 22:00", "2026-11-06 02:00", TZ)             # 2 h + 2 h
    r = run("ke-outage-credit", [five, night], [], KES, "2026-11", credit_per_hour="10")
    assert days(r) == [("2026-11-03", 1, "50.00"), ("2026-11-05", 2, "20.00"),
                       ("2026-11-06", 3, "20.00")]
    assert str(r.total) == "90.00"
    assert has_note(r, "is configuration from the provider's policy")


def test_percent_of_the_fee_per_day_pro_rata_for_part_of_a_day():
    full = outage("2026-11-04 00:00", "2026-11-05 00:00", TZ)
    half = outage("2026-11-05 06:00", "2026-11-05 18:00", TZ)
    # 5 % of 3000 = 150.00 for the full day; 12 h of 24 h = 75.00
    r = run("ke-outage-credit", [full, half], [], KES, "2026-11", credit_pct_per_day="5")
    assert days(r) == [("2026-11-04", 1, "150.00"), ("2026-11-05", 2, "75.00")]


def test_the_cap_cuts_the_day_that_reaches_it():
    outs = [outage(f"2026-11-0{d} 08:00", f"2026-11-0{d} 13:00", TZ) for d in (3, 4, 5, 6)]
    # 5 h × 100 = 500 a day; cap 40 % of 3000 = 1200: 500 + 500 + 200 (cut) + 0
    r = run("ke-outage-credit", outs, [], KES, "2026-11", credit_per_hour="100", cap_pct="40")
    assert [a for _, _, a in days(r)] == ["500.00", "500.00", "200.00", "0.00"]
    assert str(r.total) == "1200.00" and [i.basis["capped"] for i in r.items] == [
        False, False, True, True]
    assert has_note(r, "cap reached", "40 % of the monthly fee")
    # the default cap is 100 %: 4 × 500 = 2000 stays below 3000
    uncapped = run("ke-outage-credit", outs, [], KES, "2026-11", credit_per_hour="100")
    assert str(uncapped.total) == "2000.00"


def test_minimum_outage_length_and_two_agents_counted_once():
    short = outage("2026-11-03 08:00", "2026-11-03 08:59", TZ)              # 59 min
    home = outage("2026-11-04 08:00", "2026-11-04 10:00", TZ, agent="home")
    attic = outage("2026-11-04 09:00", "2026-11-04 11:00", TZ, agent="attic")
    r = run("ke-outage-credit", [short, home, attic], [], KES, "2026-11",
            credit_per_hour="10", min_outage_s="3600")
    # short: not counted; home ∪ attic = 08:00-11:00 = 3 h × 10 = 30.00
    assert days(r) == [("2026-11-04", 1, "30.00")]
    # (the reason is a sentence the letter translates since issue 17; the note keeps the number)
    assert r.counted_s[short.id] == 0
    assert r.why_not[short.id] == "shorter than the minimum length of an outage that counts"
    assert has_note(r, "shorter than min_outage_s=3600 s not counted")


def test_only_one_rate_may_be_set():
    with pytest.raises(UserError, match="only one of the options credit_per_hour and credit_pct_per_day"):
        run("ke-outage-credit", [], [], KES, "2026-11", credit_per_hour="1", credit_pct_per_day="1")
