# Helpers for the detector's MicroPython tests: a Run that feeds a Detector and checks
# every record, and how the collector's timeline folds the records into outages.
import json

from mpyunit import eq
from detector import Detector
from waveforms import Rand

STATES = ("up", "isp_down", "dns_down", "degraded", "local_down")
STEP = 2000                 # ms between rounds (the default probe interval)

# One round by letter: g good, i every anchor failed, l gateway down, d DNS failed,
# h heavy loss (2 of 3 anchors failed), p partly (1 of 3 failed).
KINDS = {
    "g": (True, 3, 3, True),
    "i": (True, 0, 3, False),
    "l": (False, 0, 3, False),
    "d": (True, 3, 3, False),
    "h": (True, 1, 3, True),
    "p": (True, 2, 3, True),
}


class Run:
    """Feeds a Detector and checks every record it returns."""

    def __init__(self, **kw):
        self.d = Detector(**kw)
        self.t = 0
        self.recs = []

    def check(self, recs, now):
        for r in recs:
            eq(sorted(r.keys()) in (sorted(["k", "s", "at", "bound", "ev", "from"]),
                                     sorted(["k", "s", "at", "bound", "ev", "from", "retract"])),
               True, r)
            eq(r["k"], "state")
            eq(r["s"] in STATES, True, r)
            eq(r["from"] in STATES, True, r)
            eq(isinstance(r["at"], int) and r["at"] <= now, True, r)
            eq(r["bound"] is None or (isinstance(r["bound"], int) and 0 <= r["bound"] <= r["at"]),
               True, r)
            eq(isinstance(r["ev"], dict), True, r)
            eq(r.get("retract", True), True, r)
            json.dumps(r)
        self.recs += recs
        return recs

    def rounds(self, letters):
        out = []
        for ch in letters:
            self.t += STEP
            gw, ok, n, dns = KINDS[ch]
            out += self.check(self.d.round(self.t, gw, ok, n, dns), self.t)
        return out

    def led(self, at, role, state, now=None):
        # An LED channel reports a change up to a window (1.5 s) after its ms.
        return self.check(self.d.led(at, role, state), at + 1500 if now is None else now)


def t_of(i):
    """ms of the i-th round (1-based) fed by Run.rounds."""
    return i * STEP


def fold(recs):
    """Outages (class, start, end) from records, as the collector's timeline reads them."""
    out = []
    cur = None
    for r in recs:
        if r.get("retract") and cur is not None:
            # a retraction back to the outage the withdrawn one switched from restores
            # it: it goes on from its own start (docs/protocol.md § Timeline)
            if out and out[-1][0] == r["s"] and out[-1][2] == cur[1]:
                cur = out.pop()[:2]
                continue
            cur = None
        if cur is not None and r["s"] == cur[0]:
            continue
        if cur is not None:
            out.append((cur[0], cur[1], r["at"]))
            cur = None
        if r["s"] != "up":
            cur = (r["s"], r["at"])
    if cur is not None:
        out.append((cur[0], cur[1], None))
    return out


def summary(recs):
    return [(r["s"], r["at"], r["bound"]) for r in recs]


# --- a line losing a share of its probes (test_detector_watch, bench.degraded_onsets) ------

def noisy(r, rand, pct, rounds):
    # Rounds and watches on a line losing pct % of round trips: each anchor probe, each
    # query (up to five a round) and each watch probe on its own.
    out = []
    for _ in range(rounds):
        ok = sum(1 for _ in range(3) if rand.below(100) >= pct)
        tries = 1
        while tries < 5 and rand.below(100) < pct:
            tries += 1
        dns = tries < 5 or rand.below(100) >= pct
        r.t += STEP
        out += r.check(r.d.round(r.t, True, ok, 3, dns, (3 - ok) * 100 // 3, tries), r.t)
        for w in (500, 1000, 1500):
            r.d.watch(r.t + w, rand.below(100) >= pct, rand.below(100) >= pct)
    return out


def onset(seed, line=noisy, limit=30):
    # 30 clean rounds, then 80 % loss until degraded is called (at most `limit` rounds),
    # rounds and probes as line(r, rand, pct, rounds) sends them: how many lossy rounds
    # that took, and the Run.
    r = Run()
    rand = Rand(seed)
    line(r, rand, 0, 30)
    n = 0
    while n < limit and not any(x["s"] == "degraded" for x in r.recs):
        line(r, rand, 80, 1)
        n += 1
    return n, r
