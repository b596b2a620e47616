# Drive the real Detector through every order of a small event alphabet and print the
# state records of each sequence, for tests/test_timeline_sequences.py to ingest.
# Usage: micropython detector_sequences.py MAX_LEN DOWN_ROUNDS UP_ROUNDS LED_OFFSET_MS
#
# Events (one letter each):
#   W / w   the "internet" (wan) LED goes off / comes back on
#   P / p   the "power" LED goes off / comes back on
#   g i l   a probe round: good / every anchor failed / the gateway failed too
#   X / x   the board's Wi-Fi link is lost / back (only when the Detector has link())
# Pruning, as the agent would behave: an LED or the link only toggles (both LEDs start
# on, the link up); no probe round while the link is down.
#
# Time: round k (1-based) begins at k * STEP. An LED change is dated LED_OFFSET_MS
# after the newest round began (negative: before it, reported late), a link change
# likewise; changes of different things between two rounds share one ms (a router
# switched off: all its LEDs at once); the same thing changing twice between two rounds
# is one LED sample (20 ms) later each time.
#
# Output: one JSON line per distinct record list: {"seq": letters, "recs": [[t, rec]..]}
# where t is the agent ms the record was written (never before its `at`). Sequences
# whose records repeat an earlier sequence's (same s, at, bound, retract, in order) are
# left out. The last line is {"done": sequences tried, "distinct": lines printed,
# "link": whether link events were in the alphabet}.
import json
import sys

from detector import Detector

STEP = 2000
SAMPLE = 20
ROUNDS = {"g": (True, 3, 3, True), "i": (True, 0, 3, False), "l": (False, 0, 3, False)}
TOGGLES = {"W": ("internet", "off"), "w": ("internet", "on"),
           "P": ("power", "off"), "p": ("power", "on")}

max_len = int(sys.argv[1])
down, up, offset = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
has_link = hasattr(Detector, "link")


def allowed(seq):
    """Letters that may follow `seq`."""
    wan = seq.count("W") > seq.count("w")
    power = seq.count("P") > seq.count("p")
    link_down = seq.count("X") > seq.count("x")
    out = ["w" if wan else "W", "p" if power else "P"]
    if has_link:
        out.append("x" if link_down else "X")
    if not link_down:
        out += ["g", "i", "l"]
    return out


def run(seq):
    d = Detector(down_rounds=down, up_rounds=up)
    d.led(0, "internet", "on")      # what the LED channels report at boot
    d.led(0, "power", "on")
    recs = []
    rounds = 0
    last = 0                        # ms of the newest event
    since = {}                      # thing -> how often it changed since the newest round
    for ch in seq:
        if ch in ROUNDS:
            rounds += 1
            t = rounds * STEP
            since = {}
            gw, ok, n, dns = ROUNDS[ch]
            got = d.round(t, gw, ok, n, dns, 0)
        else:
            thing = ch.upper()
            k = since.get(thing, 0)
            since[thing] = k + 1
            t = rounds * STEP + offset + k * SAMPLE
            if t < 0:
                t = k * SAMPLE
            if t < last:
                t = last
            if thing == "X":
                got = d.link(t, ch == "x")
            else:
                role, st = TOGGLES[ch]
                got = d.led(t, role, st)
        if t > last:
            last = t
        for r in got:
            made = last if last > r["at"] else r["at"]
            recs.append([made, r])
    return recs


def key(recs):
    return json.dumps([[r["s"], r["at"], r["bound"], r.get("retract", False)]
                       for _, r in recs])


seen = set()
tried = 0
stack = [""]
while stack:
    seq = stack.pop()
    if seq:
        tried += 1
        recs = run(seq)
        k = key(recs)
        if recs and k not in seen:
            seen.add(k)
            print(json.dumps({"seq": seq, "recs": recs}))
    if len(seq) < max_len:
        for ch in allowed(seq):
            stack.append(seq + ch)
print(json.dumps({"done": tried, "distinct": len(seen), "link": has_link}))
