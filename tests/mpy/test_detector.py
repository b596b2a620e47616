# Detector: probe rounds + LED transitions -> state records. Run by MicroPython.
# (Watches and streaks: test_detector_watch.py; the helpers: dethelp.py.)
import gc

import mpyunit
from mpyunit import eq
from waveforms import Rand
from detector import Detector
from dethelp import STEP, Run, fold, onset, summary, t_of


# --- debounce and retroactive times --------------------------------------------------

def test_three_bad_rounds_declare_with_retroactive_times():
    r = Run()
    eq(r.rounds("ggggg"), [])
    eq(r.rounds("ii"), [])
    out = r.rounds("i")                 # rounds 6, 7, 8 failed
    eq(summary(out), [("isp_down", t_of(6), t_of(5))])
    ev = out[0]["ev"]
    eq((ev["by"], ev["rounds"], ev["anc_ok"], ev["anc_n"], ev["gw_fail"]),
       ("probe", 3, 0, 9, 0))
    eq(out[0]["from"], "up")
    eq(r.d.state, "isp_down")


def test_two_good_rounds_clear_with_retroactive_times():
    r = Run()
    r.rounds("gggiiiii")                # down from round 4, last bad round 8
    eq(r.rounds("g"), [])
    out = r.rounds("g")
    eq(summary(out), [("up", t_of(9), t_of(8))])
    eq(out[0]["from"], "isp_down")
    eq(r.d.state, "up")
    eq(fold(r.recs), [("isp_down", t_of(4), t_of(9))])


def test_a_single_bad_round_is_a_flap():
    r = Run()
    eq(r.rounds("gggiggglgggdggggiiggg" + "gggggi" * 20), [])
    eq(r.d.state, "up")


def test_every_other_round_dead_is_degraded():
    # No 3 bad rounds in a row, but half the rounds dead: the loss window says it.
    r = Run()
    out = r.rounds("gggggggggg" + "ig" * 20)
    eq([x["s"] for x in out], ["degraded"])
    eq(out[0]["at"], t_of(11))
    out = r.rounds("g" * 20)
    eq([x["s"] for x in out], ["up"])
    eq(out[0]["at"], t_of(50))          # the round after the last dead one (49)


def test_a_long_outage_leaves_no_degraded_behind():
    # 30 dead rounds fill the loss window; the clean rounds after them are just up.
    r = Run()
    out = r.rounds("ggg" + "i" * 30 + "g" * 40)
    eq([(x["s"], x["at"]) for x in out], [("isp_down", t_of(4)), ("up", t_of(34))])


def test_a_good_round_inside_an_outage_does_not_end_it():
    r = Run()
    r.rounds("ggiii")
    eq(r.rounds("igiigiiiig"), [])
    eq(r.d.state, "isp_down")


def test_debounce_settings():
    r = Run(down_rounds=5, up_rounds=3)
    eq(r.rounds("giiii"), [])
    eq(summary(r.rounds("i")), [("isp_down", t_of(2), t_of(1))])
    eq(r.rounds("gg"), [])
    eq(summary(r.rounds("g")), [("up", t_of(7), t_of(6))])


# --- classes ----------------------------------------------------------------------------

def test_dns_only_is_dns_down():
    r = Run()
    out = r.rounds("gggddd")
    eq(summary(out), [("dns_down", t_of(4), t_of(3))])
    eq(out[0]["ev"]["dns_fail"], 3)
    eq(out[0]["ev"]["anc_ok"], 9)
    eq(summary(r.rounds("gg")), [("up", t_of(7), t_of(6))])


def test_gateway_down_is_local_down():
    r = Run()
    out = r.rounds("ggglll")
    eq(summary(out), [("local_down", t_of(4), t_of(3))])
    eq(out[0]["ev"]["gw_fail"], 3)


def test_isp_down_switches_to_local_down_at_the_same_instant():
    # The WAN dies at round 3; at round 8 the user restarts the router.
    r = Run()
    out = r.rounds("ggiiiiilllllgg")
    eq([(x["s"], x["at"], x["from"]) for x in out],
       [("isp_down", t_of(3), "up"), ("local_down", t_of(8), "isp_down"),
        ("up", t_of(13), "local_down")])
    eq(fold(r.recs), [("isp_down", t_of(3), t_of(8)), ("local_down", t_of(8), t_of(13))])


def test_mixed_bad_rounds_declare_the_mildest_class():
    # Dead and DNS-failing rounds alternating: no class has 3 in a row, but the line
    # is clearly not up: after 6 bad rounds the class claiming least is declared.
    r = Run()
    out = r.rounds("ggididid")
    eq(summary(out), [("dns_down", t_of(3), t_of(2))])


def test_no_gateway_probe_and_power_led_off_is_local_down():
    r = Run()
    d = r.d
    r.rounds("gg")
    out = r.led(5000, "power", "off")       # opens local_down at once
    eq(summary(out), [("local_down", 5000, 4980)])
    r.t = 6000
    out = r.check(d.round(6000, None, 0, 3, None), 6000)
    eq(out[0]["ev"]["confirmed"], True)
    eq(d.state, "local_down")


# --- random loss ------------------------------------------------------------------------------

def lossy(r, rand, pct, rounds, anchors=3):
    out = []
    for _ in range(rounds):
        ok = 0
        for _ in range(anchors):
            if rand.below(100) >= pct:
                ok += 1
        r.t += STEP
        out += r.check(r.d.round(r.t, True, ok, anchors, True), r.t)
    return out


def test_ten_and_thirty_percent_random_loss_is_no_outage():
    for pct in (10, 30):
        for seed in (1, 2, 3):
            r = Run()
            eq(lossy(r, Rand(seed), pct, 1000), [], "loss %d%% seed %d" % (pct, seed))


def test_eighty_percent_loss_is_degraded():
    # 30 clean rounds, 300 rounds with 80 % of probes lost, 30 clean rounds.
    for seed in range(1, 11):
        r = Run()
        rand = Rand(seed)
        lossy(r, rand, 0, 30)
        lossy(r, rand, 80, 300)
        lossy(r, rand, 0, 30)
        got = fold(r.recs)
        eq(len(got), 1, "seed %d: %r" % (seed, got))
        cls, start, end = got[0]
        eq(cls, "degraded", seed)
        eq(t_of(31) <= start <= t_of(34), True, "seed %d start %d" % (seed, start))
        eq(t_of(330) <= end <= t_of(332), True, "seed %d end %r" % (seed, end))
        eq(r.d.state, "up")


def test_eighty_percent_loss_is_called_within_fifteen_seconds():
    # The CUSUM (detector.py "FAST DEGRADED"): over 20 seeds the median call comes 7
    # rounds (14 s) after the onset; the window alone needed 13-17 rounds.
    called = []
    for seed in range(1, 21):
        n, r = onset(seed, lossy, 40)
        called.append(n)
        deg = [x for x in r.recs if x["s"] == "degraded"][0]
        eq(t_of(31) <= deg["at"] <= t_of(34), True, "seed %d at %d" % (seed, deg["at"]))
    called.sort()
    eq(called[len(called) // 2] <= 7, True, called)


def test_onset_dead_rounds_are_reclassified_degraded():
    # Seed 3 starts its lossy stretch with three dead rounds: isp_down at first, then
    # withdrawn in hindsight as the start of the degraded stretch.
    r = Run()
    rand = Rand(3)
    lossy(r, rand, 0, 30)
    lossy(r, rand, 80, 100)
    kinds = [(x["s"], x.get("retract", False)) for x in r.recs]
    eq(kinds, [("isp_down", False), ("degraded", True)])
    eq(r.recs[1]["at"], r.recs[0]["at"])
    eq(r.recs[1]["ev"]["hindsight"], True)
    eq(r.recs[1]["from"], "isp_down")


def test_a_real_outage_on_a_lossy_line_is_still_isp_down():
    r = Run()
    rand = Rand(5)
    lossy(r, rand, 0, 30)
    lossy(r, rand, 80, 100)
    eq(r.d.state, "degraded")
    n = len(r.recs)
    lossy(r, rand, 100, 40)                 # the line dies
    out = r.recs[n:]
    eq([x["s"] for x in out], ["isp_down"])
    eq(t_of(125) <= out[0]["at"] <= t_of(131), True, out[0]["at"])
    eq(out[0]["ev"]["need"] > 3, True, out[0]["ev"])
    eq(out[0]["from"], "degraded")


# --- LEDs ------------------------------------------------------------------------------------------

def test_led_opened_outage_is_confirmed_and_ended_at_the_led_ms():
    r = Run()
    r.rounds("ggggg")                       # up to 10 000
    out = r.led(10530, "internet", "off", now=12000)
    eq(summary(out), [("isp_down", 10530, 10510)])
    eq(out[0]["ev"]["by"], "led")
    eq(out[0]["ev"]["led"], {"internet": "off"})
    out = r.rounds("i")                     # 12 000: the probes agree
    eq(summary(out), [("isp_down", 10530, 10510)])
    eq(out[0]["ev"]["confirmed"], True)
    eq(out[0]["from"], "isp_down")
    eq(r.rounds("iiii"), [])                # to 20 000
    eq(r.led(21010, "internet", "on", now=22500), [])
    out = r.rounds("g")                     # 22 000: the next round is good
    eq(summary(out), [("up", 21010, 20990)])
    eq(out[0]["ev"]["by"], "led+probe")
    eq(fold(r.recs), [("isp_down", 10530, 21010)])


def test_led_opened_outage_is_retracted_by_good_rounds():
    r = Run()
    r.rounds("ggggg")
    eq(len(r.led(10530, "internet", "off", now=11000)), 1)
    eq(r.rounds("gg"), [])
    out = r.rounds("g")                     # the third contradicting round
    eq(len(out), 1)
    x = out[0]
    eq((x["s"], x["retract"], x["at"], x["from"]), ("up", True, 10530, "isp_down"))
    eq(x["ev"]["rounds"], 3)
    eq(r.d.state, "up")
    eq(fold(r.recs), [])
    # The LED stays off: nothing more; later probe failures are ordinary outages.
    eq(r.rounds("gggg"), [])
    eq(r.led(30000, "internet", "on"), [])
    eq(summary(r.rounds("iii")), [("isp_down", t_of(13), t_of(12))])


def test_led_back_after_a_contradiction_retracts_at_once():
    r = Run()
    r.rounds("ggggg")
    r.led(10530, "internet", "off")
    r.rounds("g")
    out = r.led(12500, "internet", "on")
    eq([(x["s"], x.get("retract")) for x in out], [("up", True)])
    eq(fold(r.recs), [])


def test_led_blip_between_rounds_is_a_short_outage():
    r = Run()
    r.rounds("ggggg")                       # 10 000
    r.led(10200, "internet", "off", now=11700)
    eq(r.led(11300, "internet", "on", now=11900), [])
    out = r.rounds("g")                     # 12 000
    eq(summary(out), [("up", 11300, 11280)])
    eq(fold(r.recs), [("isp_down", 10200, 11300)])


def test_led_end_of_a_probe_declared_outage():
    # Probes see the WAN die first; the router notices later (its LED goes off);
    # the LED coming back times the end to the sample.
    r = Run()
    out = r.rounds("gggiii")
    eq(summary(out), [("isp_down", t_of(4), t_of(3))])
    eq(r.led(13000, "internet", "off"), [])
    r.rounds("iiiii")                       # to 22 000
    eq(r.led(22770, "internet", "on", now=23500), [])
    out = r.rounds("g")                     # 24 000
    eq(summary(out), [("up", 22770, 22750)])


def test_led_back_but_the_next_round_still_fails():
    r = Run()
    r.rounds("gggiii")
    r.led(13000, "internet", "off")
    r.rounds("ii")                          # to 16 000
    r.led(16500, "internet", "on")
    eq(r.rounds("i"), [])                   # 18 000: still dead - the LED lied
    out = r.rounds("gg")                    # probes decide: first good round
    eq(summary(out), [("up", t_of(10), t_of(9))])


def test_a_round_begun_before_the_led_came_back_does_not_decide():
    # The lab's 45 s cut: the round at 14 000 was sent while the WAN was still down and
    # failed; its result arrived after the LED had come back at 14 600. The first round
    # begun after the LED (16 000) is good: the outage ends at the LED's ms, not at a
    # probe round up to 2 s later.
    r = Run()
    r.rounds("gggiii")                      # to 12 000
    r.led(13000, "internet", "off")
    eq(r.led(14600, "internet", "on", now=16100), [])
    eq(r.rounds("i"), [])                   # 14 000, begun before 14 600: no verdict
    out = r.rounds("g")                     # 16 000
    eq(summary(out), [("up", 14600, 14580)])
    eq(fold(r.recs), [("isp_down", t_of(4), 14600)])


def test_led_off_after_probes_already_failed_starts_at_the_first_failure():
    r = Run()
    r.rounds("gggi")                        # round 4 (8 000) failed
    out = r.led(8900, "internet", "off")    # the router noticed 900 ms later
    eq(summary(out), [("isp_down", t_of(4), t_of(3))])
    eq(out[0]["ev"]["by"], "led+probe")
    eq(r.rounds("i"), [])                   # already confirmed: no second record


def test_power_led_off_switches_isp_down_to_local_down():
    r = Run()
    r.rounds("ggiii")                       # isp_down from 6 000
    out = r.led(11345, "power", "off")      # the router is switched off
    eq([(x["s"], x["at"], x["from"]) for x in out], [("local_down", 11345, "isp_down")])
    out = r.rounds("l")
    eq(out[0]["ev"]["confirmed"], True)
    eq(fold(r.recs), [("isp_down", t_of(3), 11345), ("local_down", 11345, None)])


def test_a_retraction_names_the_rounds_that_contradicted_it():
    r = Run()
    r.rounds("ggggg")
    r.led(10530, "internet", "off", now=11000)
    out = r.rounds("ggg")
    eq(out[0]["ev"]["contra"], [[t_of(6), "up"], [t_of(7), "up"], [t_of(8), "up"]])
    r = Run()
    r.rounds("ggggg")
    r.led(10530, "internet", "off")
    r.rounds("g")                           # 12 000, while the LED still said down
    out = r.led(12500, "internet", "on")
    eq((out[0]["retract"], out[0]["ev"]["contra"], out[0]["ev"]["led_back"]),
       (True, [[12000, "up"]], ["internet", 12500]))


def test_a_retraction_withdraws_every_unconfirmed_led_outage_it_replaced():
    # The internet LED goes dark (a good round contradicts it), then the power LED:
    # rounds failing the anchors contradict local_down. Both LED outages are withdrawn,
    # the newest first (the collector restores, then withdraws, the isp_down); then the
    # failing rounds declare an isp_down of their own.
    r = Run(down_rounds=2, up_rounds=2)
    r.rounds("g")                           # 2 000
    r.led(2500, "internet", "off", now=3900)
    r.rounds("g")                           # 4 000: contradicts isp_down
    r.led(4500, "power", "off", now=5900)
    out = r.rounds("ii")                    # 6 000, 8 000: not the router
    eq([(x["s"], x["at"], x.get("retract"), x["from"]) for x in out],
       [("isp_down", 4500, True, "local_down"), ("up", 4500, True, "isp_down")])
    eq(r.d.state, "up")
    out = r.rounds("i")                     # 10 000: three failed rounds
    eq(summary(out), [("isp_down", 6000, 4000)])


# --- invariants under random input -------------------------------------------------------

def test_random_rounds_and_leds_keep_the_record_stream_consistent():
    # Whatever comes in: records are valid, `at` never goes back, `from` is always the
    # state before, and a repeated state is only ever a confirmation.
    for seed in range(1, 41):
        rnd = Rand(seed)
        r = Run()
        d = r.d
        prev_s = "up"
        prev_at = 0
        mode = 0
        for _ in range(300):
            r.t += 500 + rnd.below(2500)
            if rnd.below(10) == 0:
                mode = rnd.below(6)
            if rnd.below(12) == 0:
                out = r.check(d.led(max(r.t - rnd.below(1500), 0),
                                    ("internet", "power", "los", "lan")[rnd.below(4)],
                                    ("off", "on", "blink")[rnd.below(3)]), r.t)
            else:
                gw, ok, dns = ((True, 3, True), (True, 0, False), (False, 0, False),
                               (True, 3, False), (True, rnd.below(4), True),
                               ((True, False, None)[rnd.below(3)], rnd.below(4),
                                (True, False, None)[rnd.below(3)]))[mode]
                out = r.check(d.round(r.t, gw, ok, 3, dns, rnd.below(3) * 20), r.t)
            for x in out:
                eq(x["from"], prev_s, (seed, x))
                eq(x["at"] >= prev_at, True, (seed, x))
                eq(x["s"] != x["from"] or x["ev"].get("confirmed") is True, True, (seed, x))
                prev_s = x["s"]
                prev_at = x["at"]
            eq(d.state, prev_s)


# --- memory ---------------------------------------------------------------------------------------

def test_history_is_bounded():
    r = Run()
    rand = Rand(9)
    lossy(r, rand, 20, 200)
    gc.collect()
    before = gc.mem_alloc()
    lossy(r, rand, 20, 2000)
    gc.collect()
    after = gc.mem_alloc()
    n = len(r.d._hist)
    print("detector: %d rounds kept, heap %+d bytes over 2000 more rounds" % (n, after - before))
    eq(n <= Detector.LOSS_WINDOW + Detector.ISP_MAX_ROUNDS + 2, True)
    eq(after - before < 512, True)


mpyunit.main(globals())
