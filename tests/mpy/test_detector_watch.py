# Detector: watches between rounds and probe streaks (detector.py STREAKS). Run by
# MicroPython.
import mpyunit
from mpyunit import eq
from waveforms import Rand
from dethelp import KINDS, STEP, Run, fold, noisy, onset


# --- watches and streaks: sharper times, early confirmation -------------------------------

def watched(r, letters, every=500, tries=5, watch=None):
    """Rounds as Run.rounds, each followed by watches every `every` ms until the next
    round: watch(t) -> (anchor_ok, dns_ok), by default what the round itself saw. A
    round whose resolver fails sent `tries` queries."""
    out = []
    for ch in letters:
        r.t += STEP
        gw, ok, n, dns = KINDS[ch]
        out += r.check(r.d.round(r.t, gw, ok, n, dns, 0, 1 if dns else tries), r.t)
        for w in range(r.t + every, r.t + STEP, every):
            a, q = watch(w) if watch is not None else (ok > 0, dns)
            r.d.watch(w, a, q)
    return out


def test_a_watch_dates_the_start_and_the_end_of_a_probe_outage():
    # Anchors lost from 10 800 to 17 300: the watch at 11 000 is the first to see it and
    # the one at 17 500 the first answer, not the rounds at 12 000 and 18 000.
    def line(t):
        up = not 10800 <= t < 17300
        return up, True
    r = Run()
    watched(r, "ggggg", watch=line)         # rounds to 10 000, watches to 11 500
    watched(r, "iii", watch=line)           # 12 000 .. 16 000
    watched(r, "gg", watch=line)            # 18 000, 20 000
    isp = [x for x in r.recs if x["s"] == "isp_down"][0]
    end = [x for x in r.recs if x["s"] == "up"][0]
    eq((isp["at"], isp["bound"]), (11000, 10500))
    eq((end["at"], end["bound"]), (17500, 17000))
    eq(fold(r.recs), [("isp_down", 11000, 17500)])


def test_a_dns_outage_of_five_seconds_is_confirmed_by_its_failed_queries():
    # Two rounds of five unanswered queries and the watches around them: fifteen failed
    # queries in a row, more than the nine (three rounds of three anchors) a clean
    # line needs; three rounds would take 6 s. Dated to the watch that saw it first.
    def line(t):
        return True, not 10800 <= t < 15800
    r = Run()
    watched(r, "ggggg", watch=line)
    out = watched(r, "dd", watch=line)      # 12 000, 14 000
    eq([(x["s"], x["at"], x["bound"]) for x in out], [("dns_down", 11000, 10500)])
    eq((out[0]["ev"]["streak"], out[0]["ev"]["need_p"]), (15, 9))
    watched(r, "gg", watch=line)
    eq(fold(r.recs), [("dns_down", 11000, 16000)])


def test_one_failed_round_and_watches_are_not_enough_on_a_clean_line():
    # A round whose anchors all failed and two failed watches: five failed probes, not
    # nine. Without watches, three failed rounds declare as before.
    r = Run()
    watched(r, "ggggg")
    eq(watched(r, "ig"), [])
    eq(r.d.state, "up")


def test_an_answer_in_an_led_gap_splits_the_outage_though_a_round_in_it_failed():
    # The LED lags the line: the round begun at 13 800 failed (the line went down again
    # at 13 700), 100 ms before the LED's ms. An anchor answered a watch in the gap, so
    # the gap was real: two outages, the second from the failed round.
    r = Run()
    r.rounds("ggggg")
    r.led(10300, "internet", "off", now=11000)
    r.rounds("i")                           # 12 000: confirmed
    r.led(12500, "internet", "on", now=13000)
    r.d.watch(12600, True, True)
    r.t = 11800
    r.rounds("i")                           # 13 800
    r.led(13900, "internet", "off", now=14500)
    r.rounds("i")                           # 15 800
    r.led(16500, "internet", "on", now=17000)
    r.rounds("gg")
    eq(fold(r.recs), [("isp_down", 10300, 12500), ("isp_down", 13800, 16500)])


def test_eighty_percent_loss_is_degraded_not_a_dns_outage():
    # Queries are lost as often as echoes: a failed query on a lossy round is the loss.
    # (Before: a dns_down at the onset in the lab's loss-80, 20 s long.)
    for seed in range(1, 31):
        rand = Rand(seed)
        r = Run()
        noisy(r, rand, 0, 30)
        out = noisy(r, rand, 80, 60)
        out += noisy(r, rand, 0, 30)
        eq([x["s"] for x in out if x["s"] == "dns_down"], [], "seed %d" % seed)
        eq("degraded" in [o[0] for o in fold(r.recs)], True, "seed %d: %r" % (seed, fold(r.recs)))


def test_eighty_percent_loss_is_called_within_fifteen_seconds_with_watches():
    # The watches' anchor probes feed the CUSUM too (FAST DEGRADED): over 20 onsets the
    # median call comes in the 5th lossy round (within 10 s), none after the 9th (the
    # rounds' probes alone: a median of 10, up to 15).
    called = sorted(onset(seed)[0] for seed in range(1, 21))
    eq(called[10] <= 5 and called[-1] <= 9, True, called)


def test_an_isp_down_at_the_onset_of_heavy_loss_is_withdrawn_within_a_few_rounds():
    # These onsets begin with dead rounds: isp_down, then withdrawn as degraded from its
    # start once the probes after the dead run say 80 % loss (HINDSIGHT: the CUSUM goes
    # on from its value before the run). The loss window alone took 12-15 rounds.
    for seed in (4, 5, 6, 7, 15):
        n, r = onset(seed)
        recs = r.recs
        eq([(x["s"], x.get("retract", False)) for x in recs],
           [("isp_down", False), ("degraded", True)], "seed %d" % seed)
        eq(recs[1]["at"], recs[0]["at"])
        eq(n <= 8, True, "seed %d: called after %d rounds" % (seed, n))


def test_thirty_percent_loss_with_watches_and_retried_queries_is_no_outage():
    # Every probe and every query lost at random (30 % and 51 %: a packet each way at
    # 30 %), rounds of three anchors and up to five queries, three watches between them.
    for pct in (30, 51):
        for seed in (1, 2):
            out = noisy(Run(), Rand(seed), pct, 1500)
            eq([x["s"] for x in out if x["s"] in ("isp_down", "dns_down")], [],
               "loss %d%% seed %d" % (pct, seed))


mpyunit.main(globals())
