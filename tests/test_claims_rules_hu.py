"""hu-eszr worked examples, after Eszr. (22/2020. (XII. 21.) NMHH rendelet) as NMHH's
consumer guide states it: repair within 72 h of the report (time lost to slots the
subscriber declined does not count); a penalty for each started day beyond it (8 × the
average daily fee while unusable, 4 × while degraded, as providers' terms set it);
suspension (not every outage: the ones option `suspended` names, issue 17) -> no fee for
its time, over 48 h in a calendar month that month's fee.
"""

from __future__ import annotations

from tests.test_claims_rules import at, days, has_note, outage, run, tariff, ticket
from wanwitness.claims.model import Ticket

TZ = "Europe/Budapest"
HUF = tariff("12000", "HUF", TZ)


def _repair(end: str, declined_s: float = 0.0, report: str = "2026-11-02 10:00", **options):
    o = outage(report[:11] + "09:00", end, TZ)
    t = ticket("H1", report, TZ, [o], declined_s=declined_s)
    return o, run("hu-eszr", [o], [t], HUF, "2026-11", **options)


# Reported Fri 30 Oct 10:00 (deadline Mon 2 Nov 10:00): the outage splits into < 48 h in
# October and < 48 h in November, so the month rule stays out of these two examples.
def test_repaired_within_72_hours_owes_nothing():
    o, r = _repair("2026-11-02 09:59", report="2026-10-30 10:00", daily_penalty="1000")
    assert r.items == [] and r.why_not[o.id] == "repaired within 72 hours of the report"


def test_a_penalty_day_started_in_the_period_after_a_report_in_the_previous_one():
    # fixed 10:01: 1 minute into the 1st day of delay -> 1 × 1000; only that minute counts
    o, r = _repair("2026-11-02 10:01", report="2026-10-30 10:00", daily_penalty="1000")
    assert days(r) == [("2026-11-02", 1, "1000.00")] and r.counted_s[o.id] == 60
    assert r.items[0].outages == [o.id] and r.items[0].tickets == ["H1"]
    assert has_note(r, "HUF 1000 is configuration (option daily_penalty)")


def test_each_started_day_beyond_the_deadline_is_one_penalty():
    # report Mon 2 Nov 10:00 -> deadline Thu 5 Nov 10:00; fixed exactly 24 h after it: 1 day
    o, r = _repair("2026-11-06 10:00", daily_penalty="1000")
    assert days(r) == [("2026-11-05", 1, "1000.00")]
    # one more minute starts day 2: 2 × 1000 = 2000
    o, r = _repair("2026-11-06 10:01", daily_penalty="1000")
    assert days(r) == [("2026-11-05", 1, "1000.00"), ("2026-11-06", 2, "1000.00")]
    # a reported fault is not a suspension (issue 17: Kisokos item 120 is about szünetelés):
    # no month's fee (it was 12000.00, total 14000.00): the two penalty days only
    assert [i for i in r.items if i.kind == "month_fee"] == []
    assert str(r.total) == "2000.00"


def test_declined_repair_slots_move_the_deadline():
    # 6 h declined: deadline Thu 5 Nov 16:00 instead of 10:00
    o, r = _repair("2026-11-05 15:00", declined_s=6 * 3600, daily_penalty="1000")
    assert days(r) == []
    assert has_note(r, "6 h 00 min lost to repair slots", "2026-11-05T16:00+01:00")
    o, r = _repair("2026-11-05 17:00", declined_s=6 * 3600, daily_penalty="1000")
    # 1 h into the 1st day of delay: 1 × 1000
    assert days(r) == [("2026-11-05", 1, "1000.00")]
    assert r.items[0].basis["from"] == "2026-11-05T15:00:00.000Z"


def test_without_a_configured_penalty_the_days_are_8_times_the_average_daily_fee():
    # Issue 17: the penalty is a multiple of a daily base (providers' terms), no longer 0:
    # base = 12000 × 12 / 365 = 394.5205...; 8 × 394.5205... = 3156.1643... -> 3156.16 a day
    o, r = _repair("2026-11-06 10:01")
    assert days(r) == [("2026-11-05", 1, "3156.16"), ("2026-11-06", 2, "3156.16")]
    assert r.items[0].basis["rate"] == "8 × the average daily fee HUF 394.52"
    assert r.items[0].basis["service"] == "unusable"
    assert has_note(r, "not verified from the decree", "hu-eszr.daily_base")
    assert any("credited within 30 days" in st["text"] for st in r.statements)


def test_more_than_48_hours_of_suspension_in_a_month_refunds_its_fee():
    a = outage("2026-11-10 00:00", "2026-11-11 06:00", TZ)              # 30 h
    b = outage("2026-11-20 00:00", "2026-11-20 18:00", TZ)              # 18 h
    b_seen_twice = outage("2026-11-20 00:00", "2026-11-20 18:00", TZ, agent="attic")
    dns = outage("2026-11-22 00:00", "2026-11-22 10:00", TZ, "dns_down")
    # Issue 17: only time named as a suspension counts (option suspended); without it: nothing
    r = run("hu-eszr", [a, b, b_seen_twice, dns], [], HUF, "2026-11", classes="isp_down,dns_down")
    assert r.items == []
    named = ",".join(o.id for o in (a, b, b_seen_twice))
    # 30 + 18 = 48 h, not more than 48 h (the attic's copy of b counts once): no refund of
    # the month, but no fee for those 48 h: 12000 × 172 800 / 2 592 000 (30 days) = 800.00
    r = run("hu-eszr", [a, b, b_seen_twice, dns], [], HUF, "2026-11", classes="isp_down,dns_down",
            suspended=named)
    assert [i for i in r.items if i.kind == "month_fee"] == []
    assert [(i.kind, str(i.amount)) for i in r.items] == [("downtime", "800.00")]
    # one more second: 172 801 s > 172 800 s -> the month's fee, 12 000.00
    c = outage("2026-11-25 12:00:00", "2026-11-25 12:00:01", TZ)
    r = run("hu-eszr", [a, b, c, dns], [], HUF, "2026-11", suspended=f"{a.id},{b.id},{c.id}")
    (item,) = [i for i in r.items if i.kind == "month_fee"]
    assert str(item.amount) == "12000.00"
    assert item.basis == {"month": "2026-11", "seconds": 172801.0}
    assert item.outages == sorted([a.id, b.id, c.id]) and dns.id not in item.outages


def test_an_outage_across_the_month_boundary_counts_in_each_month_only_its_part():
    # 31 Oct 12:00 - 3 Nov 00:00 (a suspension): 12 h in October, 48 h in November: not
    # more than 48 h; issue 17: no fee for the 48 h, 12000 × 172 800 / 2 592 000 = 800.00
    # (before, nothing)
    o = outage("2026-10-31 12:00", "2026-11-03 00:00", TZ)
    r = run("hu-eszr", [o], [], HUF, "2026-11", suspended=o.id)
    assert [(i.kind, str(i.amount)) for i in r.items] == [("downtime", "800.00")]
    # one more hour of suspension in November: 49 h -> the fee
    more = outage("2026-11-12 23:30", "2026-11-13 00:30", TZ)           # across midnight
    r = run("hu-eszr", [o, more], [], HUF, "2026-11", suspended=f"{o.id},{more.id}")
    assert [(i.kind, i.basis["seconds"]) for i in r.items] == [("month_fee", 49 * 3600.0)]
    assert r.counted_s == {o.id: 48 * 3600, more.id: 3600}


def test_with_periods_from_the_15th_the_month_is_assessed_in_the_period_where_it_ends():
    tar = tariff("12000", "HUF", TZ, start_day=15)
    o = outage("2026-11-03 00:00", "2026-11-06 00:00", TZ)              # 72 h in early November
    # period 2026-10 = 15 Oct - 15 Nov holds the outage but only October ends in it: no fee
    octo = run("hu-eszr", [o], [], tar, "2026-10", suspended=o.id)
    assert octo.items == []
    # period 2026-11 = 15 Nov - 15 Dec: November ends in it and is assessed with all its time
    nov = run("hu-eszr", [o], [], tar, "2026-11", suspended=o.id)
    (item,) = nov.items
    assert item.kind == "month_fee" and item.basis["month"] == "2026-11" and item.outages == [o.id]
    assert has_note(nov, "calendar month 2026-11 ends in this billing period")


# -- issue 17 ----------------------------------------------------------------------------
def test_a_fault_after_the_repair_is_not_paid_from_the_old_report():
    # Report Mon 2 Nov 10:00 of a fault 09:00 - 3 Nov 09:00 (repaired within 72 h); the
    # ticket stays open; a new outage 10 Nov 00:00 - 15 Nov 00:00.
    first = outage("2026-11-02 09:00", "2026-11-03 09:00", TZ)
    again = outage("2026-11-10 00:00", "2026-11-15 00:00", TZ)
    ids = (first.id, again.id)
    # By time only: the old reading ran 24 h blocks from the 5 Nov 10:00 deadline and paid
    # the six that touch 10-15 Nov (9 Nov 10:00 ... 14 Nov 10:00): 6 × 1000 = 6000. Now: 0
    auto = Ticket("H1", at("2026-11-02 10:00", TZ), outage_ids=ids, auto_linked=ids)
    r = run("hu-eszr", [first, again], [auto], HUF, "2026-11", daily_penalty="1000")
    assert r.items == []
    # By hand: its own deadline, 10 Nov 00:00 + 72 h = 13 Nov 00:00; blocks 13 Nov and
    # 14 Nov 00:00: 2 × 1000 = 2000
    by_hand = Ticket("H1", at("2026-11-02 10:00", TZ), outage_ids=ids, auto_linked=(first.id,))
    r = run("hu-eszr", [first, again], [by_hand], HUF, "2026-11", daily_penalty="1000")
    assert days(r) == [("2026-11-13", 1, "1000.00"), ("2026-11-14", 2, "1000.00")]


def test_a_degraded_day_gets_half_the_unusable_rate():
    # Report Mon 2 Nov 10:00: down 09:00 - 5 Nov 12:00, then degraded until 7 Nov 09:00.
    # Deadline 5 Nov 10:00. Block 1 (5 Nov 10:00 - 6 Nov 10:00) holds down time: unusable,
    # 8 × 394.5205... = 3156.16; block 2 (6 Nov 10:00 - 7 Nov 10:00) only degraded:
    # 4 × 394.5205... = 1578.0821... -> 1578.08. Before issue 17 both were one rate.
    down = outage("2026-11-02 09:00", "2026-11-05 12:00", TZ)
    slow = outage("2026-11-05 12:00", "2026-11-07 09:00", TZ, "degraded")
    t = ticket("H1", "2026-11-02 10:00", TZ, [down, slow])
    r = run("hu-eszr", [down, slow], [t], HUF, "2026-11", classes="isp_down,degraded")
    assert days(r) == [("2026-11-05", 1, "3156.16"), ("2026-11-06", 2, "1578.08")]
    assert [i.basis["service"] for i in r.items] == ["unusable", "degraded"]
    assert r.items[1].basis["rate"] == "4 × the average daily fee HUF 394.52"
    # with daily_penalty = 1000 for an unusable day, a degraded day gets 4/8 of it: 500
    r = run("hu-eszr", [down, slow], [t], HUF, "2026-11", classes="isp_down,degraded",
            daily_penalty="1000")
    assert days(r) == [("2026-11-05", 1, "1000.00"), ("2026-11-06", 2, "500.00")]


def test_an_unannounced_outage_is_not_a_suspension():
    # 4 days of isp_down with no report and not named in option suspended: the month rule
    # does not apply (before issue 17 it refunded the month's fee, 12000.00): nothing
    o = outage("2026-11-10 00:00", "2026-11-14 00:00", TZ)
    r = run("hu-eszr", [o], [], HUF, "2026-11")
    assert r.items == []


def test_with_periods_from_the_15th_the_builder_keeps_the_months_first_half(tmp_path):
    """Issue 17: claims/build.py dropped outages that end before the period's start, so a
    suspension on 2-7 Nov with periods from the 15th was never assessed: period 2026-10
    does not hold November's end, and period 2026-11 (15 Nov - 15 Dec) did not read it."""
    from datetime import UTC, datetime

    from wanwitness.claims import build as b
    from wanwitness.claims import rules
    (tmp_path / "outages.csv").write_text(
        "agent,class,start,end,start_uncertainty_s,evidence\n"
        "home,isp_down,2026-11-01T23:00:00Z,2026-11-06T23:00:00Z,,{}\n"      # 2-7 Nov, Budapest
        "home,isp_down,2026-11-20T09:00:00Z,2026-11-20T10:00:00Z,,{}\n",     # in the period
        encoding="utf-8")
    (tmp_path / "tariff.toml").write_text(
        'monthly_fee = "12000"\ncurrency = "HUF"\nperiod_start_day = 15\n'
        'timezone = "Europe/Budapest"\n', encoding="utf-8")
    inputs = b.from_files(tmp_path / "outages.csv", None, tmp_path / "tariff.toml", "2026-11",
                          now=datetime(2026, 12, 20, tzinfo=UTC))
    suspension = "home@2026-11-01T23:00:00.000Z"
    assert suspension in {o.id for o in inputs.outages}
    pack = rules.get("hu-eszr")
    claim = b.build(inputs, pack, pack.parse_options({"suspended": suspension}))
    # November (ends 1 Dec, inside 15 Nov - 15 Dec) had 5 days = 120 h of suspension,
    # more than 48 h: the month's fee, 12000.00
    assert [(i["kind"], i["amount"], i["basis"]["month"]) for i in claim["items"]] == [
        ("month_fee", "12000.00", "2026-11")]
    assert claim["total"] == "12000.00"
    assert any("assessed here with all its time" in st["text"] for st in claim["statements"])
