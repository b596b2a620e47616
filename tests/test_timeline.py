"""Timeline: agent clocks to UTC, outages and unknown spans from state records."""

from __future__ import annotations

import csv
import io
import json
import random
import time

import pytest
import sqlalchemy as sa

from testing.records import HOUR, MIN, T0, Board, hb_message, ingest, rec_message
from wanwitness import store as s
from wanwitness.collector import timeline as tl
from wanwitness.collector.agents import add_agent
from wanwitness.collector.ingest import Ingestor
from wanwitness.collector.timeline import ClockMap, iso
from wanwitness.errors import UserError

SEC = 1000


# --- ClockMap ---------------------------------------------------------------------

def test_single_point_is_a_constant_offset():
    cm = ClockMap([(5_000, T0 + 5_000)])
    assert cm.to_utc(0) == T0
    assert cm.to_utc(5_000) == T0 + 5_000
    assert cm.to_utc(10 * HOUR) == T0 + 10 * HOUR


def test_no_points_is_an_error():
    with pytest.raises(ValueError):
        ClockMap([])


def test_duplicate_t_keeps_the_least_delayed_point():
    # Three messages stamped t=1000 arrived 300, 0 and 40 ms late: only the fastest counts.
    cm = ClockMap([(1_000, T0 + 1_300), (1_000, T0 + 1_000), (1_000, T0 + 1_040),
                   (9_000, T0 + 9_000), (9_000, T0 + 9_500)])
    assert cm.to_utc(1_000) == T0 + 1_000
    assert cm.to_utc(5_000) == T0 + 5_000
    assert cm.to_utc(9_000) == T0 + 9_000


def test_delayed_points_do_not_lift_the_envelope():
    cm = ClockMap([(0, T0), (10_000, T0 + 10_000 + 2_000), (20_000, T0 + 20_000)])
    # The 2 s late message in the middle says nothing about the clock.
    assert cm.to_utc(10_000) == T0 + 10_000
    assert cm.to_utc(15_000) == T0 + 15_000


def true_clock(ppm: float, boot_utc: int):
    """Agent ms <-> true UTC for a crystal running `ppm` fast."""
    rate = 1 + ppm / 1e6
    return (lambda true_ms: round((true_ms - boot_utc) * rate)), (lambda t: boot_utc + t / rate)


def test_hull_follows_drift_through_queueing_delays():
    rng = random.Random(7)
    agent_t, true_of = true_clock(40, T0)
    pts = []
    for k in range(400):
        t = agent_t(T0 + k * 30 * SEC)
        pts.append((t, round(true_of(t) + rng.expovariate(1 / 30))))
    cm = ClockMap(pts)
    end = pts[-1][0]
    for t in range(0, end, 7_777):
        err = abs(cm.to_utc(t) - true_of(t))
        # Near the ends only one side bounds the line; inside, the envelope is tight.
        assert err < (10 if HOUR < t < end - HOUR else 60), (t, err)
    # A constant offset (first point) would be 40 ppm * 3.3 h = 480 ms off by the end.
    assert abs(end + (pts[0][1] - pts[0][0]) - true_of(end)) > 400


def test_extrapolation_extends_the_end_slope():
    # 40 ppm slow, exact points: beyond the last point the same slope continues.
    cm = ClockMap([(0, T0), (1_000_000, T0 + 1_000_040)])
    assert cm.to_utc(2_000_000) == T0 + 2_000_080
    assert cm.to_utc(-1_000_000) == T0 - 1_000_040


def test_extrapolation_slope_is_clamped_to_200_ppm():
    # The last point arrived 1 s late: the end segment claims 1000 ppm, which no crystal does.
    cm = ClockMap([(0, T0), (1_000_000, T0 + 1_001_000)])
    assert cm.to_utc(1_000_000) == T0 + 1_001_000
    assert cm.to_utc(2_000_000) == T0 + 2_001_000 + 200
    assert cm.to_utc(-1_000_000) == T0 - 1_000_000 - 200


def test_many_points_in_any_order_with_duplicates():
    rng = random.Random(11)
    agent_t, true_of = true_clock(-25, T0)
    pts = []
    for k in range(100_000):
        t = agent_t(T0 + k * 1_000)
        for _ in range(2):  # every t twice
            pts.append((t, round(true_of(t) + rng.expovariate(1 / 50))))
    rng.shuffle(pts)
    started = time.perf_counter()
    cm = ClockMap(pts)
    assert time.perf_counter() - started < 5  # O(n log n); a quadratic hull would take hours
    assert len(cm.hull) < 1_000
    for t in range(5_000_000, 95_000_000, 999_983):  # inside: both sides bound the line
        assert abs(cm.to_utc(t) - true_of(t)) < 10


# --- acceptance: records buffered through a LAN outage get their true times ----------

def test_buffered_records_get_true_times(store):
    """40 ppm crystal, 30 s heartbeats with exponential delays (mean 30 ms) and 2 s
    spikes, a 10-minute LAN outage whose records arrive in one late batch: every
    buffered record's reconstructed time is within 50 ms of the truth."""
    rng = random.Random(20261103)
    add_agent(store, "lab", hb_s=30)
    ing = Ingestor(store)
    boot = 3_735_928_559
    agent_t, true_of = true_clock(40, T0)
    lan_down, lan_up = T0 + 70 * MIN, T0 + 80 * MIN

    def delay() -> float:
        return rng.expovariate(1 / 30) + (2_000 if rng.random() < 0.05 else 0)

    def in_outage(t: int) -> bool:
        return lan_down <= true_of(t) < lan_up

    msgs = []  # (recv_ms, message)
    buffered: list[dict] = []
    seq = 0

    def record(t: int, **fields) -> dict:
        nonlocal seq
        seq += 1
        return {"seq": seq, "t": t, "utc": None, **fields}

    # Every 30 s of agent time: a heartbeat and a probe record; every 10 s during the outage.
    t, last_ok, down_at, up_at = 0, 0, None, None
    while true_of(t) < T0 + 2 * HOUR:
        if in_outage(t):
            buffered.append(record(t, k="probe", tg="gw", ok=False))
            if down_at is None:
                down_at = t
                buffered.append(record(t + 6_000, k="state", s="local_down", at=t,
                                       bound=last_ok, ev={"gateway": "timeout"}))
            t += 10_000
            continue
        if down_at is not None and up_at is None:
            up_at = t
            buffered.append(record(t, k="state", s="up", at=t, bound=None, ev={}))
            send_t = t + 2_000  # the outbox drains once MQTT reconnects
            late = rec_message("lab", boot, buffered, round(true_of(send_t) + delay()),
                               sent_t=send_t)
            msgs.append((late.recv_ms, late))
        last_ok = t
        hb = hb_message("lab", boot, t, round(true_of(t) + delay()))
        msgs.append((hb.recv_ms, hb))
        batch = rec_message("lab", boot, [record(t, k="probe", tg="gw", ok=True)],
                            round(true_of(t) + delay()), sent_t=t)
        msgs.append((batch.recv_ms, batch))
        t += 30_000
    for _, msg in sorted(msgs, key=lambda m: m[0]):
        ingest(ing, msg)

    cm = tl.clock_map(store, "lab", boot)
    late_seqs = [r["seq"] for r in buffered]
    errors = [abs(cm.to_utc(r["t"]) - true_of(r["t"])) for r in buffered]
    assert len(buffered) >= 60 and max(errors) < 50, max(errors)

    # The naive time, when the batch arrived, is minutes off for the same records.
    with store.engine.connect() as conn:
        naive = dict(conn.execute(sa.select(s.records.c.seq, s.records.c.recv_ms)
                                  .where(s.records.c.seq.in_(late_seqs))).all())
    naive_err = [abs(naive[r["seq"]] - true_of(r["t"])) for r in buffered]
    assert max(naive_err) > 9 * MIN and min(naive_err) < 10 * SEC

    # And so the outage itself has its true start and end.
    [out] = tl.derive(store, "lab", now_ms=round(true_of(t)))
    assert out.cls == "local_down"
    assert abs(out.start_ms - true_of(down_at)) < 50
    assert abs(out.end_ms - true_of(up_at)) < 50
    # The true start lies inside the stated uncertainty.
    assert out.start_ms - out.start_uncertainty_ms - 50 <= lan_down <= out.start_ms + 50


# --- outages ------------------------------------------------------------------------

NOW = T0 + 6 * HOUR


@pytest.fixture
def ing(store):
    add_agent(store, "home", hb_s=30)
    return Ingestor(store)


@pytest.fixture
def board(ing):
    b = Board(ing, "home")
    b.start(101, T0)
    return b


def spans(outs):
    return [(o.cls, o.start_ms - T0, None if o.end_ms is None else o.end_ms - T0) for o in outs]


def test_outage_opens_at_first_failure_and_closes_at_first_success(store, board):
    opened = board.state("isp_down", T0 + HOUR, t=T0 + HOUR + 6 * SEC, bound=T0 + HOUR - 2_500,
                         ev={"anchors": {"ok": 0, "of": 3}, "gateway": "ok"})
    closed = board.state("up", T0 + 2 * HOUR, t=T0 + 2 * HOUR + 4 * SEC)
    board.hb(NOW)
    [out] = tl.derive(store, "home", now_ms=NOW)
    assert spans([out]) == [("isp_down", HOUR, 2 * HOUR)]
    assert out.start_uncertainty_ms == 2_500
    assert out.evidence == {"boot": 101, "open_seq": opened, "close_seq": closed,
                            "ev": {"anchors": {"ok": 0, "of": 3}, "gateway": "ok"}}


def test_class_change_ends_one_outage_and_starts_the_next(store, board):
    board.state("dns_down", T0 + HOUR, bound=T0 + HOUR - SEC)
    change = board.state("isp_down", T0 + HOUR + 10 * MIN, bound=T0 + HOUR + 10 * MIN - 2 * SEC)
    up = board.state("up", T0 + HOUR + 30 * MIN)
    board.hb(NOW)
    outs = tl.derive(store, "home", now_ms=NOW)
    assert spans(outs) == [("dns_down", HOUR, HOUR + 10 * MIN),
                           ("isp_down", HOUR + 10 * MIN, HOUR + 30 * MIN)]
    assert outs[0].evidence["close_seq"] == change == outs[1].evidence["open_seq"]
    assert outs[1].evidence["close_seq"] == up


def test_repeated_state_continues_the_open_outage(store, board):
    board.state("isp_down", T0 + HOUR)
    again = board.state("isp_down", T0 + HOUR + 5 * MIN)
    board.state("up", T0 + 2 * HOUR)
    board.hb(NOW)
    [out] = tl.derive(store, "home", now_ms=NOW)
    assert spans([out]) == [("isp_down", HOUR, 2 * HOUR)]
    assert out.evidence["cont_seqs"] == [again]


def test_retracted_outage_is_dropped(store, board):
    board.state("isp_down", T0 + HOUR, ev={"led": {"internet": "off"}})
    retract = board.state("up", T0 + HOUR + 20 * SEC, retract=True, ev={"probes": "ok"})
    board.state("dns_down", T0 + 2 * HOUR)
    board.state("up", T0 + 2 * HOUR + MIN)
    board.hb(NOW)
    assert spans(tl.derive(store, "home", now_ms=NOW)) == [("dns_down", 2 * HOUR, 2 * HOUR + MIN)]
    with_retracted = tl.derive(store, "home", now_ms=NOW, include_retracted=True)
    assert spans(with_retracted) == [("isp_down", HOUR, HOUR + 20 * SEC),
                                     ("dns_down", 2 * HOUR, 2 * HOUR + MIN)]
    assert with_retracted[0].evidence["retracted"] is True
    assert with_retracted[0].evidence["close_seq"] == retract
    # The ledger view never shows it.
    assert [o.cls for o in tl.query(store, agent="home", now_ms=NOW)] == ["dns_down"]


def test_retract_can_hand_over_to_a_confirmed_class(store, board):
    board.state("isp_down", T0 + HOUR)
    board.state("dns_down", T0 + HOUR + 30 * SEC, retract=True)
    board.state("up", T0 + HOUR + 5 * MIN)
    board.hb(NOW)
    assert spans(tl.derive(store, "home", now_ms=NOW)) == [
        ("dns_down", HOUR + 30 * SEC, HOUR + 5 * MIN)]


def test_a_switch_at_the_same_instant_leaves_no_empty_outage(store, board):
    # The router switched off: the internet LED and the power LED go dark in one sample.
    board.state("isp_down", T0 + HOUR, ev={"by": "led", "role": "internet"})
    local = board.state("local_down", T0 + HOUR, ev={"by": "led", "role": "power"})
    board.state("up", T0 + HOUR + 15 * SEC)
    board.hb(NOW)
    [out] = tl.derive(store, "home", now_ms=NOW)
    assert spans([out]) == [("local_down", HOUR, HOUR + 15 * SEC)]
    assert out.evidence["open_seq"] == local
    assert [o.cls for o in tl.query(store, agent="home", now_ms=NOW)] == ["local_down"]


def test_retracting_back_to_the_outage_before_restores_it_from_its_own_start(store, board):
    isp = board.state("isp_down", T0 + HOUR, ev={"by": "led", "role": "internet"})
    local = board.state("local_down", T0 + HOUR + 10 * SEC, ev={"by": "led", "role": "power"})
    back = board.state("isp_down", T0 + HOUR + 10 * SEC, t=T0 + HOUR + 16 * SEC, retract=True)
    up = board.state("up", T0 + HOUR + MIN)
    board.hb(NOW)
    [out] = tl.derive(store, "home", now_ms=NOW)
    # one isp_down, not a piece up to the power LED and a new one after the retraction
    assert spans([out]) == [("isp_down", HOUR, HOUR + MIN)]
    assert (out.evidence["open_seq"], out.evidence["cont_seqs"], out.evidence["close_seq"]) == (
        isp, [back], up)
    assert out.evidence["withdrawn"] == [
        {"class": "local_down", "open_seq": local, "retract_seq": back}]
    # The withdrawn one is listed on request, for as long as the agent held it.
    listed = tl.derive(store, "home", now_ms=NOW, include_retracted=True)
    assert spans(listed) == [("isp_down", HOUR, HOUR + MIN),
                             ("local_down", HOUR + 10 * SEC, HOUR + 16 * SEC)]
    assert listed[1].evidence["retracted"] is True


def test_retracting_a_same_instant_switch_restores_the_first_outage(store, board):
    isp = board.state("isp_down", T0 + HOUR)
    board.state("local_down", T0 + HOUR)
    board.state("isp_down", T0 + HOUR, retract=True)
    board.hb(NOW)
    [out] = tl.derive(store, "home", now_ms=NOW)
    assert spans([out]) == [("isp_down", HOUR, None)]
    assert out.evidence["open_seq"] == isp


def test_retracting_a_same_instant_switch_back_to_up_leaves_nothing(store, board):
    """The lab's router switched off for 15 s: both LEDs dark at one instant, and the
    power LED's outage retracted back to up: no zero-length isp_down is left behind."""
    board.state("isp_down", T0 + HOUR)
    board.state("local_down", T0 + HOUR)
    board.state("up", T0 + HOUR, t=T0 + HOUR + 17 * SEC, retract=True)
    board.hb(NOW)
    assert tl.derive(store, "home", now_ms=NOW) == []
    listed = tl.derive(store, "home", now_ms=NOW, include_retracted=True)
    assert spans(listed) == [("local_down", HOUR, HOUR + 17 * SEC)]
    assert listed[0].evidence["retracted"] is True


def test_retractions_nest(store, board):
    board.state("degraded", T0 + HOUR)
    board.state("isp_down", T0 + HOUR + MIN)
    board.state("local_down", T0 + HOUR + 2 * MIN)
    board.state("isp_down", T0 + HOUR + 2 * MIN, retract=True)   # the power LED was wrong
    board.state("degraded", T0 + HOUR + 2 * MIN, retract=True)   # so were the dead rounds
    board.state("up", T0 + 2 * HOUR)
    board.hb(NOW)
    [out] = tl.derive(store, "home", now_ms=NOW)
    assert spans([out]) == [("degraded", HOUR, 2 * HOUR)]
    assert [w["class"] for w in out.evidence["withdrawn"]] == ["isp_down"]


def test_a_retraction_to_another_class_keeps_the_outage_before(store, board):
    board.state("dns_down", T0 + HOUR)
    board.state("isp_down", T0 + HOUR + MIN)
    board.state("degraded", T0 + HOUR + MIN, retract=True)  # hindsight: a lossy line
    board.state("up", T0 + 2 * HOUR)
    board.hb(NOW)
    assert spans(tl.derive(store, "home", now_ms=NOW)) == [
        ("dns_down", HOUR, HOUR + MIN), ("degraded", HOUR + MIN, 2 * HOUR)]


def test_an_up_that_lasted_no_time_does_not_cut_an_outage_in_two(store, board):
    # A good round ends it at the instant the power LED goes dark again.
    local = board.state("local_down", T0 + HOUR)
    board.state("up", T0 + HOUR + 6 * SEC)
    again = board.state("local_down", T0 + HOUR + 6 * SEC)
    board.hb(NOW)
    [out] = tl.derive(store, "home", now_ms=NOW)
    assert spans([out]) == [("local_down", HOUR, None)]
    assert out.evidence["open_seq"] == local and out.evidence["cont_seqs"] == [again]


def test_an_outage_ending_where_it_began_is_left_out(store, board):
    # A record dated before the open outage (never sent by today's agent) and a boot
    # whose last word is the outage it opened: neither leaves an outage of no length.
    board.state("isp_down", T0 + HOUR)
    board.state("dns_down", T0 + 30 * MIN)
    board.state("up", T0 + 40 * MIN)
    board.state("local_down", T0 + 2 * HOUR)
    board.start(102, T0 + 2 * HOUR + 10 * SEC)
    board.hb(NOW)
    assert spans(tl.derive(store, "home", now_ms=NOW)) == [("dns_down", 30 * MIN, 40 * MIN)]


def test_reboot_mid_outage_ends_it_at_the_old_boots_last_time(store, board):
    board.state("degraded", T0 + HOUR)
    board.hb(T0 + HOUR + 5 * MIN)  # the last thing heard from boot 101
    board.start(102, T0 + HOUR + 20 * MIN, reset="WDT_RESET")
    board.state("isp_down", T0 + HOUR + 21 * MIN)
    board.state("up", T0 + HOUR + 40 * MIN)
    board.hb(NOW)
    outs = tl.derive(store, "home", now_ms=NOW)
    assert spans(outs) == [("degraded", HOUR, HOUR + 5 * MIN),
                           ("unknown", HOUR + 5 * MIN, HOUR + 20 * MIN),
                           ("isp_down", HOUR + 21 * MIN, HOUR + 40 * MIN)]
    assert outs[0].evidence["end"] == "agent restarted"
    assert outs[0].evidence["close_seq"] is None
    assert outs[1].evidence["prev_boot"] == 101 and outs[1].evidence["next_boot"] == 102


def test_reboot_is_noticed_without_a_state_record_in_the_new_boot(store, board):
    board.state("isp_down", T0 + HOUR)
    board.hb(T0 + HOUR + 10 * MIN)
    board.start(102, T0 + HOUR + 10 * MIN + 30 * SEC)  # quick reboot: no unknown span
    board.hb(NOW)
    outs = tl.derive(store, "home", now_ms=NOW)
    assert spans(outs) == [("isp_down", HOUR, HOUR + 10 * MIN)]
    assert outs[0].evidence["end"] == "agent restarted"


def test_open_outage_is_ongoing_while_the_agent_is_heard(store, board):
    board.state("isp_down", T0 + 5 * HOUR, bound=T0 + 5 * HOUR - SEC)
    board.hb(NOW - 20 * SEC)
    [out] = tl.derive(store, "home", now_ms=NOW)
    assert spans([out]) == [("isp_down", 5 * HOUR, None)]
    assert out.evidence["close_seq"] is None


def test_silent_agent_ends_its_outage_where_coverage_ends(store, board):
    # Last heard 10 minutes before now (3 heartbeats = 90 s): nothing witnessed after.
    board.state("isp_down", T0 + 5 * HOUR)
    board.hb(NOW - 10 * MIN)
    outs = tl.derive(store, "home", now_ms=NOW)
    assert spans(outs) == [("isp_down", 5 * HOUR, 6 * HOUR - 10 * MIN),
                           ("unknown", 6 * HOUR - 10 * MIN, None)]
    assert outs[0].evidence["end"] == "agent silent"


def test_trailing_unknown_needs_three_missed_heartbeats(store, board):
    board.hb(NOW - 89 * SEC)
    assert tl.derive(store, "home", now_ms=NOW) == []
    assert spans(tl.derive(store, "home", now_ms=NOW + 2 * SEC)) == [
        ("unknown", 6 * HOUR - 89 * SEC, None)]


def test_lan_outage_within_one_boot_is_not_unknown(store, board):
    # No heartbeats for 20 minutes, but the same boot kept recording: a witness was there.
    board.hb(T0 + HOUR)
    board.state("local_down", T0 + HOUR + 10 * SEC, t=T0 + HOUR + 16 * SEC,
                bound=T0 + HOUR + 8 * SEC, deliver=False)
    board.state("up", T0 + HOUR + 20 * MIN, deliver=False)
    board.flush(T0 + HOUR + 20 * MIN + 3 * SEC)
    board.hb(NOW)
    assert spans(tl.derive(store, "home", now_ms=NOW)) == [
        ("local_down", HOUR + 10 * SEC, HOUR + 20 * MIN)]


def test_start_uncertainty_is_null_without_a_bound(store, board):
    board.state("dns_down", T0 + HOUR, bound=None)
    board.state("up", T0 + 2 * HOUR)
    board.hb(NOW)
    [out] = tl.query(store, now_ms=NOW)
    assert out.start_uncertainty_ms is None
    assert json.loads(tl.to_json([out]))[0]["start_uncertainty_s"] is None


def test_rebuild_replaces_rows(store, board):
    board.state("isp_down", T0 + HOUR)
    board.hb(NOW)
    assert tl.rebuild(store, now_ms=NOW) == 1
    assert tl.rebuild(store, "home", now_ms=NOW) == 1
    board.state("up", T0 + 2 * HOUR)
    board.hb(NOW)
    assert tl.rebuild(store, now_ms=NOW) == 1
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(s.outages.c.start_ms, s.outages.c.end_ms)).all()
    assert [tuple(r) for r in rows] == [(T0 + HOUR, T0 + 2 * HOUR)]


def test_unknown_agent_is_a_user_error(store):
    with pytest.raises(UserError, match="no agent named 'nobody'"):
        tl.query(store, agent="nobody")


def test_since_until_select_overlapping_spans(store, board):
    board.state("isp_down", T0 + HOUR)
    board.state("up", T0 + HOUR + 30 * MIN)
    board.state("dns_down", T0 + 3 * HOUR)
    board.hb(NOW)

    def classes(**kw):
        return [(o.cls, o.start_ms - T0) for o in tl.query(store, now_ms=NOW, **kw)]

    assert classes() == [("isp_down", HOUR), ("dns_down", 3 * HOUR)]
    # [since, until) is half-open: touching an end is not overlapping.
    assert classes(since_ms=T0 + HOUR + 30 * MIN) == [("dns_down", 3 * HOUR)]
    assert classes(since_ms=T0 + HOUR + 29 * MIN) == [("isp_down", HOUR), ("dns_down", 3 * HOUR)]
    assert classes(until_ms=T0 + 3 * HOUR) == [("isp_down", HOUR)]
    assert classes(until_ms=T0 + HOUR) == []
    assert classes(since_ms=T0 + HOUR + 40 * MIN, until_ms=T0 + 2 * HOUR) == []
    assert classes(since_ms=NOW + 365 * 24 * HOUR) == [("dns_down", 3 * HOUR)]  # ongoing


def test_query_orders_by_start_then_agent(store, ing):
    add_agent(store, "attic", hb_s=30)
    home, attic = Board(ing, "home"), Board(ing, "attic")
    home.start(1, T0)
    attic.start(2, T0)
    home.state("isp_down", T0 + HOUR)
    attic.state("isp_down", T0 + HOUR)
    attic.state("dns_down", T0 + 3 * HOUR)  # stored before home's rows, listed after them
    home.hb(NOW)
    attic.hb(NOW)
    got = [(o.agent, o.cls, o.start_ms - T0) for o in tl.query(store, now_ms=NOW)]
    assert got == [("attic", "isp_down", HOUR), ("home", "isp_down", HOUR),
                   ("attic", "dns_down", 3 * HOUR)]
    assert [o.agent for o in tl.query(store, agent="home", now_ms=NOW)] == ["home"]


# --- output formats -------------------------------------------------------------------

def sample() -> list[tl.Outage]:
    return [
        tl.Outage("home", "isp_down", T0 + 123, T0 + HOUR, 2_500,
                  {"open_seq": 4, "boot": 7, "close_seq": 9, "ev": {"b": 1, "a": [2, {"d": 0, "c": 1}]}}),
        tl.Outage("home", "unknown", T0 + 2 * HOUR, None, None, {"reason": "agent not heard from"}),
    ]


def test_json_format():
    doc = json.loads(tl.to_json(sample()))
    assert list(doc[0]) == ["agent", "class", "start", "end", "start_uncertainty_s", "evidence"]
    assert doc[0]["start"] == "2026-11-03T06:00:00.123Z"
    assert doc[0]["end"] == "2026-11-03T07:00:00.000Z"
    assert doc[0]["start_uncertainty_s"] == 2.5
    assert list(doc[0]["evidence"]) == ["boot", "close_seq", "ev", "open_seq"]
    assert list(doc[0]["evidence"]["ev"]["a"][1]) == ["c", "d"]
    assert doc[1]["end"] is None and doc[1]["class"] == "unknown"
    assert tl.to_json([]) == "[]"


def test_csv_header_and_empty_end():
    text = tl.to_csv(sample())
    lines = text.split("\n")
    assert lines[0] == "agent,class,start,end,start_uncertainty_s,evidence"
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[1][:5] == ["home", "isp_down", "2026-11-03T06:00:00.123Z",
                           "2026-11-03T07:00:00.000Z", "2.5"]
    assert rows[1][5] == '{"boot":7,"close_seq":9,"ev":{"a":[2,{"c":1,"d":0}],"b":1},"open_seq":4}'
    assert rows[2][3] == "" and rows[2][4] == ""
    assert text.endswith("\n") and tl.to_csv([]) == lines[0] + "\n"


def test_table_shows_duration_and_ongoing():
    text = tl.to_table(sample(), now_ms=T0 + 2 * HOUR + 90 * SEC)
    assert "59m 59s" in text and "2.5s" in text
    line = [ln for ln in text.splitlines() if "unknown" in ln][0]
    assert "ongoing" in line and "1m 30s+" in line
    assert text.splitlines()[-1] == "1 outage(s), 1 unknown span(s)"
    assert tl.to_table([]) == "no outages or unknown spans"


def test_iso_keeps_milliseconds():
    assert iso(T0 + 7) == "2026-11-03T06:00:00.007Z"
    assert iso(0) == "1970-01-01T00:00:00.000Z"


@pytest.mark.parametrize("text, expected", [
    ("2026-11-03", T0 - 6 * HOUR),
    ("2026-11-03T06:00:00Z", T0),
    ("2026-11-03T06:00:00.250Z", T0 + 250),
    ("2026-11-03T06:00", T0),                   # naive = UTC
    ("2026-11-03 06:00:00", T0),
    ("2026-11-03T08:00:00+02:00", T0),
    (" 2026-11-03T01:00:00-05:00 ", T0),
])
def test_parse_time_accepts_iso_8601(text, expected):
    assert tl.parse_time(text, option="--since") == expected


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01", "03/11/2026", "2026-11-03T25:00",
                                  "1793685600000"])
def test_parse_time_rejects_other_text(text):
    with pytest.raises(UserError) as e:
        tl.parse_time(text, option="--until")
    assert str(e.value) == (f"--until {text!r}: not a date/time "
                            "(use e.g. 2026-11-03 or 2026-11-03T09:12:00Z)")
