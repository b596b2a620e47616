# Helpers for the detector's MicroPython tests: a Run that feeds a Detector and checks
# every record, and how the collector's timeline folds the records into outages.
import json

from mpyunit import eq
from detector import Detector

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
