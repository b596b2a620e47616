# Detector: the router switched off, its LEDs and the agent's own link (detector.py
# LEDS and LINK). Run by MicroPython.
import mpyunit
from mpyunit import eq
from dethelp import Run, fold, summary


# --- the router switched off: both LEDs dark, the access point gone -----------------

def router_off(link_calls):
    """Rounds good to 10 000; at 10 500 both LEDs go dark and (link_calls) the agent's
    Wi-Fi goes with the access point; no round for 15 s; the router comes back at
    25 500: the link first, a good round at 26 000 handled before the power LED's
    report (an LED reports up to 1.5 s after its ms), the internet LED 8 s later."""
    r = Run()
    r.rounds("ggggg")
    r.led(10500, "internet", "off", now=11900)
    r.led(10500, "power", "off", now=11900)
    if link_calls:
        out = r.check(r.d.link(10600, False), 11900)
        eq([(x["s"], x["at"], x["ev"]["by"], x["ev"]["confirmed"]) for x in out],
           [("local_down", 10500, "led+link", True)])
        eq(r.check(r.d.link(25700, True), 25700), [])
    r.t = 24000
    out = r.rounds("g")                     # 26 000: the router and the line are fine
    out += r.led(25500, "power", "on", now=26500)
    out += r.led(33500, "internet", "on", now=34000)
    out += r.rounds("ggg")
    return r, out


def test_a_router_switched_off_is_local_down_until_its_power_led_comes_back():
    for link_calls in (False, True):
        r, out = router_off(link_calls)
        eq([x.get("retract") for x in r.recs], [None] * len(r.recs), link_calls)
        # (the internet LED's isp_down at the same ms is replaced at once: the
        # collector's timeline keeps no zero-length piece of it)
        eq([o for o in fold(r.recs) if o[1] != o[2]], [("local_down", 10500, 25500)], link_calls)
        eq([x["s"] for x in out], ["up"], link_calls)
        eq(out[0]["ev"]["by"], "led+probe")


def router_off_wan_down(roles=None):
    """The WAN goes down at 10 300 (the internet LED dark, rounds fail), the router is
    switched off at 16 500 (power LED dark, the access point gone: no rounds) and on
    again at 29 500 with the WAN still down; the WAN comes back at 40 300."""
    r = Run(led_roles=roles)
    r.rounds("ggggg")
    r.led(10300, "internet", "off", now=11000)
    r.rounds("iii")                         # 12 000 .. 16 000: confirmed
    r.led(16500, "power", "off", now=17900)
    r.check(r.d.link(16600, False), 17900)
    r.check(r.d.link(29800, True), 29800)
    r.t = 28000
    r.rounds("i")                           # 30 000, before the power LED's report
    r.led(29500, "power", "on", now=30900)
    r.rounds("iiii")                        # 32 000 .. 38 000
    r.led(40300, "internet", "on", now=41000)
    r.rounds("gg")
    return r


def test_a_router_back_with_its_wan_led_dark_is_isp_down_from_the_power_leds_ms():
    r = router_off_wan_down()
    eq(fold(r.recs), [("isp_down", 10300, 16500), ("local_down", 16500, 29500),
                      ("isp_down", 29500, 40300)])
    sw = [x for x in r.recs if x["from"] == "local_down" and x["s"] == "isp_down"][0]
    eq((sw["s"], sw["at"], sw["ev"]["by"], sw["ev"]["role"]),
       ("isp_down", 29500, "led+probe", "internet"))
    eq([x for x in r.recs if x.get("retract")], [])


def test_a_round_that_confirms_after_the_led_came_back_leaves_its_end_pending():
    # The LED's reports come a window late: the internet LED went dark at 10 300 and was
    # back at 12 500 before the round begun at 12 000 (a failure, handled at 13 500)
    # confirmed the outage. It ends at the LED's ms on the next good round.
    r = Run()
    r.rounds("ggggg")
    r.led(10300, "internet", "off", now=11800)
    r.led(12500, "internet", "on", now=12600)
    r.rounds("i")                           # 12 000: confirms
    r.rounds("g")                           # 14 000: the line is back
    eq(fold(r.recs), [("isp_down", 10300, 12500)])
    eq([x.get("retract") for x in r.recs], [None, None, None])


def test_a_switch_counts_only_rounds_begun_since_the_outage_did():
    # No WAN LED: the probes alone switch back to isp_down, from the first failed round
    # after the router came back, never from the failed rounds before it was switched
    # off (that would leave the local_down no length at all).
    r = router_off_wan_down(roles={"power": "power"})
    got = fold(r.recs)
    eq([o[0] for o in got], ["isp_down", "local_down", "isp_down"])
    eq(got[1], ("local_down", 16500, 30000))
    eq(got[2][1], 30000)


def test_an_led_gap_between_rounds_splits_the_outage_in_two():
    # The line flaps faster than the rounds: the internet LED is back for 1.3 s between
    # two failed rounds, and no round was begun in the gap: two outages, as the LED saw.
    r = Run()
    r.rounds("ggggg")
    r.led(10300, "internet", "off", now=11000)
    r.rounds("i")                           # 12 000: confirmed
    r.led(12500, "internet", "on", now=13000)
    r.led(13800, "internet", "off", now=14500)
    r.t = 12000
    r.rounds("i")                           # 14 000
    r.led(15000, "internet", "on", now=15500)
    r.rounds("gg")
    eq(fold(r.recs), [("isp_down", 10300, 12500), ("isp_down", 13800, 15000)])
    # A round begun in the gap failed: the LED's gap is not believed, one outage.
    r = Run()
    r.rounds("ggggg")
    r.led(10300, "internet", "off", now=11000)
    r.rounds("i")                           # 12 000
    r.led(11500, "internet", "on", now=12900)
    r.led(12800, "internet", "off", now=13900)
    r.led(15000, "internet", "on", now=15500)
    r.t = 14000
    r.rounds("ggg")
    eq(fold(r.recs), [("isp_down", 10300, 15000)])


def test_the_wan_led_dark_just_before_the_power_led_is_the_router_going_off():
    # Both LEDs go dark as the router is switched off; the internet LED's ms came out
    # 120 ms before the power LED's. No isp_down of 120 ms: local_down from 10 400.
    r = Run()
    r.rounds("ggggg")
    r.led(10400, "internet", "off", now=11900)
    out = r.led(10520, "power", "off", now=11950)
    eq([(x["s"], x["at"], x["from"]) for x in out], [("local_down", 10400, "isp_down")])
    r.check(r.d.link(10600, False), 11950)
    eq([o for o in fold(r.recs) if o[1] != o[2]], [("local_down", 10400, None)])
    # The same with a round failing in between (the access point outlives the router by
    # its beacon timeout): it confirmed the isp_down, still one event (lab router-off-15s
    # on the faithful board: a 50 ms isp_down before the local_down)
    r = Run()
    r.rounds("ggggg")
    r.led(10400, "internet", "off", now=10410)
    r.t = 10420 - 2000
    out = r.rounds("l")
    eq([x["ev"].get("confirmed") for x in out], [True])
    out = r.led(10450, "power", "off", now=11950)
    eq([(x["s"], x["at"], x["from"]) for x in out], [("local_down", 10400, "isp_down")])
    eq([o for o in fold(r.recs) if o[1] != o[2]], [("local_down", 10400, None)])
    # 1.5 s apart, the WAN first: two events (the line, then the router)
    r = Run()
    r.rounds("ggggg")
    r.led(10400, "internet", "off", now=11900)
    r.led(11900, "power", "off", now=12500)
    eq([o for o in fold(r.recs) if o[1] != o[2]], [("isp_down", 10400, 11900), ("local_down", 11900, None)])


def test_losing_the_access_point_while_the_leds_are_lit_is_no_outage():
    r = Run()
    r.rounds("ggggg")
    r.led(9000, "power", "on")
    r.led(9000, "internet", "on")
    eq(r.d.link(10500, False), [])          # our own Wi-Fi: blind, not down
    eq(r.d.link(30500, True), [])
    r.t = 30000
    eq(r.rounds("gggg"), [])
    eq(fold(r.recs), [])


def test_the_access_point_lost_before_the_power_leds_report_confirms_it():
    r = Run()
    r.rounds("ggggg")
    eq(r.d.link(10520, False), [])          # the link goes first ...
    out = r.led(10500, "power", "off", now=11900)   # ... then the LED's report comes in
    eq([(x["s"], x["at"], x["ev"].get("confirmed")) for x in out],
       [("local_down", 10500, None), ("local_down", 10500, True)])
    eq(out[1]["ev"]["link_down"], 10520)
    # Confirmed: good rounds while the LED stays dark (a sensor fault?) end it the
    # ordinary way, from the probes; nothing is retracted.
    r.d.link(12000, True)
    r.t = 12000
    out = r.rounds("gg")
    eq([(x["s"], x["at"], x.get("retract")) for x in out], [("up", 14000, None)])


def test_alarm_led_and_unknown_roles():
    r = Run(led_roles={"los": "alarm", "lan": "info"})
    r.rounds("ggggg")
    eq(r.led(10100, "lan", "off"), [])
    eq(r.led(10200, "los", "off"), [])      # first report: an alarm LED that is off
    out = r.led(10300, "los", "blink")
    eq(summary(out), [("isp_down", 10300, 10280)])
    eq(out[0]["ev"]["led"], {"lan": "off", "los": "blink"})


def test_activity_blink_counts_as_on():
    r = Run()
    r.rounds("ggggg")
    eq(r.led(10000, "internet", "on"), [])
    eq(r.led(10500, "internet", "blink"), [])
    eq(r.led(11000, "internet", "on"), [])
    eq(r.d.state, "up")


def wifi_lost_late(leds):
    """Good rounds; at 10 100 the agent's Wi-Fi goes (the LEDs as given), but the chip
    notices only at its beacon timeout, 6 s later: three rounds fail every probe, the
    gateway's too, first. Back at 30 000."""
    r = Run()
    r.rounds("ggggg")
    for role, st in leds:
        r.led(9000, role, st)
    out = r.rounds("lll")                   # 12 000, 14 000, 16 000
    out += r.check(r.d.link(16100, False), 16100)
    eq(r.d.link(30000, True), [])
    r.t = 30000
    out += r.rounds("ggg")
    return r, out


def test_rounds_failing_before_a_late_noticed_wifi_loss_are_withdrawn_when_the_leds_are_lit():
    for leds in ([("power", "on"), ("internet", "on")], [("internet", "blink")]):
        r, out = wifi_lost_late(leds)
        eq([x["s"] for x in out], ["local_down", "up"], leds)
        eq(out[0]["at"], 12000)
        ev = out[1]["ev"]
        eq((out[1]["retract"], out[1]["at"], ev["by"], ev["link_down"]), (True, 12000, "link", 16100))
        eq(ev["led"], dict(leds))           # what contradicted it: the LEDs lit
        eq([o for o in fold(r.recs) if o[1] != o[2]], [], leds)


def test_a_late_noticed_wifi_loss_withdraws_nothing_when_an_led_says_down_or_none_is_read():
    # The WAN LED dark: the line is down too (the LED opened an isp_down before the
    # rounds failed); no LED at all: the router may have gone off with its access point.
    r, out = wifi_lost_late([("internet", "off")])
    eq([x.get("retract") for x in r.recs], [None] * len(r.recs))
    r, out = wifi_lost_late([])
    eq([(x["s"], x.get("retract")) for x in out][:1], [("local_down", None)])
    eq([x.get("retract") for x in r.recs], [None] * len(r.recs))


def test_an_outage_older_than_the_beacon_timeout_is_not_the_links():
    r = Run()
    r.rounds("ggggg")
    r.led(9000, "internet", "on")
    out = r.rounds("lllllll")               # 12 000 .. 24 000: local_down from 12 000
    out += r.check(r.d.link(24100, False), 24100)
    eq([(x["s"], x.get("retract")) for x in out], [("local_down", None)])


def test_a_late_noticed_wifi_loss_during_a_wan_outage_the_leds_show_restores_it():
    # The WAN down at 10 300 (the internet LED dark, rounds confirm the isp_down); the
    # agent's Wi-Fi goes at 18 100 while the router stays on (its power LED lit). Until
    # the beacon timeout the rounds fail at the gateway too: local_down from 20 000. The
    # link lost at 24 100 says that was our link: the isp_down goes on from 10 300.
    r = Run()
    r.rounds("ggggg")
    r.led(9000, "power", "on")
    r.led(10300, "internet", "off", now=11000)
    r.rounds("iiii")                        # 12 000 .. 18 000
    out = r.rounds("lll")                   # 20 000 .. 24 000
    out += r.check(r.d.link(24100, False), 24100)
    eq([(x["s"], x.get("retract")) for x in out], [("local_down", None), ("isp_down", True)])
    ev = out[1]["ev"]
    eq((out[1]["at"], ev["by"], ev["link_down"]), (20000, "link", 24100))
    eq(r.d.state, "isp_down")
    eq(r.d.link(38000, True), [])
    r.t = 36000
    r.rounds("ii")                          # 40 000, 42 000: still down
    r.led(43300, "internet", "on", now=44000)
    r.rounds("ggg")
    # one isp_down, from the LED's ms to its return: nothing of our own Wi-Fi in it
    eq([o for o in fold(r.recs) if o[1] != o[2]], [("isp_down", 10300, 43300)])


def test_without_a_lit_power_led_a_late_noticed_wifi_loss_keeps_the_local_down():
    # The same with no power LED read, or the power LED dark: the router may be off.
    for power in (None, "off"):
        r = Run()
        r.rounds("ggggg")
        if power:
            r.led(9000, "power", "on")
        r.led(10300, "internet", "off", now=11000)
        r.rounds("iiii")
        if power:
            r.led(19000, "power", power, now=20500)
        r.rounds("lll")
        out = r.check(r.d.link(24100, False), 24100)
        eq([x.get("retract") for x in out], [None] * len(out), power)
        eq(r.d.state, "local_down", power)


mpyunit.main(globals())
