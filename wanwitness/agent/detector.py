# Line state from probe rounds and router LEDs: pure logic, no I/O, no clock.
#
# The caller passes every observation with its time t (agent ms) and writes the
# `state` record bodies it gets back ({"k": "state", "s", "at", "bound", "ev", "from"},
# plus "retract": true on a retraction; protocol v1). `ev` holds counts over the
# deciding rounds (rounds, gw_fail, anc_ok, anc_n, dns_fail, mean loss), the LED
# states, what decided ("by": probe | led | led+probe) and, where the debounce was
# stretched, "need".
#
# ROUND CLASSES (probes only, worst first). A round's loss is the larger of loss_pct
# and the share of anchors that failed.
#   local_down  the gateway did not answer (the household's own equipment); or it was
#               not probed, the "power" LED is off and no anchor answered
#   isp_down    every anchor failed (the gateway answered or was not probed)
#   dns_down    the DNS query failed, and the anchors answered: all of them, or with
#               less than heavy loss on a window that is not lossy (a query lost on a
#               lossy round is loss: degraded)
#   degraded    loss >= degraded_loss_pct ("heavy"), or some loss while the window is
#               lossy: the mean loss of the last LOSS_WINDOW rounds (this one
#               included, at least LOSS_MIN of them; while up, none from before the
#               last outage ended) >= degraded_loss_pct
#   up          anything else
#
# DECLARING (debounce). From `up`, an outage is declared when the newest rounds are a
# run of its class: down_rounds local_down or dns_down rounds. degraded: down_rounds
# rounds in a row with a lossy window, whatever their own loss (a lossy line has dead
# rounds and clean ones). isp_down: down_rounds all-failed rounds on a clean line;
# more on a line that was losing probes before the run - enough that the run would
# have less than ISP_EPS_PPM (1e-5) chance at the anchor failure rate seen before it
# (its upper 2-sigma bound, over the loss window and over the last RECENT rounds), at
# most ISP_MAX_ROUNDS (16, the need at 80 % loss with 3 anchors). So random loss
# makes `degraded`, not a string of short isp_downs. Bad rounds of mixed classes
# declare after 2 x down_rounds: the class among them claiming least against the
# ISP (local_down, degraded, dns_down, isp_down in that order).
# An outage ends after up_rounds `up` rounds in a row (degraded: and a window no
# longer lossy). A run of another outage class (the same needs) switches: one record
# closes the old and opens the new at the same instant (`from` names the old).
#
# TIMES are retroactive. An outage's `at` is the t of its first bad round (degraded:
# the earliest lossy round from which the running mean loss stays >= the threshold),
# `bound` the t of the round before it (the last good observation). An end's `at` is
# the t of its first good round (degraded: the round after the last heavy round),
# `bound` the t of the last bad round. A switch's `at` is the first round of the new
# class. Records never go back in time: an `at` is never before the previous one's.
#
# FAST DEGRADED. While up, a CUSUM over every anchor probe (the rounds' and the
# watches') weighs "p1 of probes lost" against "p0 lost" (p0 = 3/5, p1 = 8/5 of
# degraded_loss_pct: 30 % and 80 % by default):
# S = max(0, S + ln(p1/p0) per lost probe + ln((1-p1)/(1-p0)) per answer).
# S >= ln(1e5) makes the round lossy and declares degraded at once (dated back as
# above). At 80 % loss S climbs ~0.53 a probe, ~3 a round with 3 anchors and 3 watches:
# called in a median of 5 rounds (20 simulated onsets; 10 with the rounds' probes
# alone, the window's 10 + down_rounds). At 30 % loss the drift is negative: by Wald's
# bound the mean run to a false alarm is over 1e5 probes (over 9 hours at 3 probes a
# second); 100 simulated hours at 30 % loss gave 12 false degraded with or without it
# (all the window's), at 10 % none.
#
# STREAKS. Between rounds the agent sends watches (watch(): one anchor in turn and one
# DNS query, one try each, every probe.watch_ms), and a round sends a silent resolver
# its query again (up to 5 tries in the round). Per kind (anchors, DNS queries) the
# detector keeps the streak the newest observation is part of: failures in a row
# (a round whose anchors all failed counts each of them, a failed DNS round each
# query), or answers, with the ms the streak began. Two uses:
# - Times: an outage's `at` is the first observation of the streak of failures its
#   first round belongs to, when a watch saw it after the round before (`bound`: the
#   last answer before it); an end's `at` the first answer of its streak (a query
#   answered only when sent again: when the answer came).
# - Early confirmation: from up (or as a switch), on a line that lost no probe of the
#   kind in the RECENT rounds before, one round of isp_down / dns_down declares when
#   the failures in a row since the state began reach
#   3 x down_rounds (what down_rounds rounds of three anchors are) on a clean line, or
#   on a lossy one the streak with less than ISP_EPS_PPM chance at the probe failure
#   rate seen before the run (upper 2-sigma bound, window and RECENT, as for rounds;
#   at most 3 x ISP_MAX_ROUNDS). ev.streak and ev.need_p say so.
#
# HINDSIGHT. The onset of a lossy line often starts with a few dead rounds, taken for
# an isp_down while the window still looked clean. When anchors answer again during
# a probe-opened isp_down, the window is lossy by now, and the outage's longest
# all-failed run is shorter than the failure rate now measured would need, it is
# withdrawn: {"s": "degraded", "retract": true, "at": <its at>} - the line was
# degraded from then on, not down. (An isp_down that already ended stays.) The CUSUM
# says "lossy now" sooner than the window: in a probe-opened isp_down it goes on from
# its value before the dead run that opened it, counting probes from the first answer
# after it (the run itself says nothing: a cut would look the same), and the failure
# rate is also measured over the answered rounds since the newest dead one, whichever
# needs more. Onsets
# that began with dead rounds were withdrawn after 5-8 lossy rounds (12-15 before).
#
# LEDS. led_roles maps a role to what its LED means; blinking counts as on:
#   "wan"   off => WAN down (isp_down)       "alarm"  on/blink => WAN down (LOS LED)
#   "power" off => router off (local_down)   anything else: evidence only
# - The power LED dark within LED_SKEW_MS (1 s) after a WAN LED that opened an isp_down
#   (confirmed or not: the access point outlives the router by its beacon timeout, so
#   rounds still run and fail meanwhile): one event, the router switched off; local_down
#   from the WAN LED's ms (the isp_down is left with no length).
# - An LED saying "down" opens the outage at once, at the LED's transition ms, bound
#   = that ms - LED_BOUND_MS (its previous sample still said "up"): isp_down from up /
#   dns_down / degraded, local_down from any state but itself. If the newest rounds
#   already failed, `at` is the first of them when earlier (routers notice late).
#   A first report of "down" (at boot) counts as a change.
# - It is confirmed by the first round failing the same way (isp_down: an isp_down or
#   local_down round; local_down: a local_down round): a record with the same s and
#   at and ev.confirmed, and from then on it is an ordinary outage. It is retracted
#   when retract_rounds (default down_rounds) rounds contradict it before one
#   confirms it, or when its LED comes back after a contradicting round:
#   {"s": <the state before>, "retract": true, "at": <its at>} - it never happened.
# - When the LED matching the current outage comes back (wan on, power on), the next
#   round begun after the LED's ms decides: good -> the outage ends at the LED's ms (one round, not up_rounds:
#   LED and probe agree; if it came back before any round contradicted an unconfirmed
#   outage, that outage stays, seen by the LED alone); bad -> the probes decide.
#   Only rounds begun before the LED's ms contradict: its report comes up to a window
#   after that ms, when a good round begun after it may already be in.
# - The LED back, then down again before a round decided, and an anchor answered in
#   between (or no round begun in between failed): the outage ends at the first ms and
#   a new one opens at the second (a line flapping faster than the rounds is as many
#   outages as the LED saw).
# - The power LED back while a WAN LED still says down (or an alarm LED on), and the
#   first round begun after it fails every anchor: the local_down switches to isp_down
#   at the power LED's ms (ev.by "led+probe", ev.role the WAN LED).
# - A retraction names what contradicted it: ev.contra [[round ms, class], ...] and,
#   if its LED came back after them, ev.led_back [role, ms].
# LINK. link(t, up) is the board's own Wi-Fi. Down means no rounds (blind, never an
# outage by itself); down while an unconfirmed local_down is open (power LED dark), or a
# power LED going dark while it is down, confirms the local_down: ev.by "led+link".
# The chip notices a lost access point only after its beacon timeout (~6 s): rounds fail
# meanwhile. A probe-opened outage that began at most LINK_LAG_MS before the link went,
# while the router's LEDs are lit and none says down, was our link: it is withdrawn from
# its start (ev.by "link", ev.link_down the ms). Without such an LED it stands (the
# router may have gone off with its access point).
# An outage ends, or switches to another class, only on rounds begun at or after its
# `at`.
import math
from micropython import const

UP = "up"
ISP = "isp_down"
DNS = "dns_down"
DEG = "degraded"
LOCAL = "local_down"

_T = const(0)       # fields of a round in the history
_C = const(1)       # class
_LOSS = const(2)    # loss %, 0..100 (r[_LOSS] & _PCT), + _LOSSY when the loss window
                    # was lossy at this round (12 fields, not 13: 48 bytes a round, not 64)
_OK = const(3)      # anchors that answered
_N = const(4)       # anchors probed
_GW = const(5)      # gateway_ok: True / False / None
_DNS = const(6)     # dns_ok: True / False / None
_DT = const(7)      # DNS queries sent (tries) in the round
_AM = const(8)      # anchors: when the streak this round is part of began (see STREAKS)
_AB = const(9)      # ... and the last observation the other way before it
_QM = const(10)     # the same for the DNS query
_QB = const(11)
_PCT = const(127)   # r[_LOSS] & _PCT: the loss %
_LOSSY = const(128)  # r[_LOSS] & _LOSSY: the window was lossy

DEFAULT_LED_ROLES = {"internet": "wan", "wan": "wan", "power": "power", "los": "alarm"}
# meaning -> (outage class, True if "off" says it, False if on/blink says it)
_MEANING = {"wan": (ISP, True), "alarm": (ISP, False), "power": (LOCAL, True)}
_ORDER = (LOCAL, ISP, DNS, DEG)           # severity, worst first
_MILD = (LOCAL, DEG, DNS, ISP)            # least claim against the ISP first
_CONFIRMS = {ISP: (ISP, LOCAL), LOCAL: (LOCAL,)}
_KIND = {ISP: 0, DNS: 1}                  # class -> its probe streak (anchors, DNS)
_OWN = (LOCAL, ISP, DNS)                  # what a link going away makes the rounds say


def _says(m, st):
    return st is not None and (st == "off") == m[1]


class Detector:
    LOSS_WINDOW = 20        # rounds averaged for degraded (40 s at the 2 s default)
    LOSS_MIN = 10           # rounds needed before the window may call the line lossy
    RECENT = 5              # rounds for the short-term failure rate (isp_down need)
    ISP_EPS_PPM = 10        # an all-failed run must be this unlikely by chance (1e-5)
    ISP_MAX_ROUNDS = 16     # ... but never needs more rounds than this
    LED_BOUND_MS = 20       # an LED transition is timed to one ~20 ms sample
    LED_SKEW_MS = 1000      # two LEDs going dark this close: one event (the router off)
    LINK_LAG_MS = 10000     # a link loss is noticed this late (beacon timeout 6 s + a round)
    CUSUM_H = 11513         # ln(1e5) in thousandths: the fast degraded alarm's bar

    def __init__(self, down_rounds=3, up_rounds=2, degraded_loss_pct=50, led_roles=None,
                 retract_rounds=None):
        self.down_rounds = down_rounds if down_rounds > 0 else 1
        self.up_rounds = up_rounds if up_rounds > 0 else 1
        self.degraded_loss_pct = degraded_loss_pct
        self.led_roles = DEFAULT_LED_ROLES if led_roles is None else led_roles
        self.retract_rounds = self.down_rounds if retract_rounds is None else retract_rounds
        self.state = UP
        self.since = None          # `at` of the current state
        self.leds = {}             # role -> 'off' | 'on' | 'blink'
        self._bound = None         # `bound` of the current state
        self._by = None            # what opened the current outage: 'probe' | 'led'
        self._hist = []            # rounds (12-item lists, fields above), newest last
        self._hmax = self.LOSS_WINDOW + self.ISP_MAX_ROUNDS + 2
        self._led_end = None       # ms the current outage's LED came back (pending end)
        self._unconf = False       # opened by an LED, not yet confirmed by a probe
        self._contra = 0           # rounds that contradicted it so far
        self._contra_t = []        # ... (ms, class) of each
        self._link = True          # the board's Wi-Fi link (link())
        self._link_down_t = None   # ms it was last lost
        self._prior = None         # (state, since, bound, by) before it, for a retraction
        self._from = None          # ... before a probe-opened outage, for link()
        self._chain = []           # unconfirmed LED outages it replaced, oldest first
        self._isp_run = 0
        self._isp_best = 0
        self._last_at = 0          # `at` of the newest record
        # Fast degraded (see FAST DEGRADED above): the CUSUM of the per-probe
        # log-likelihood ratio of "p1 lost" against "p0 lost", in thousandths.
        p0 = degraded_loss_pct * 3 // 5
        p1 = min(degraded_loss_pct * 8 // 5, 95)
        self._llr_fail = int(1000 * math.log(p1 / p0)) if 0 < p0 < p1 else 0
        self._llr_ok = int(1000 * math.log((100 - p1) / (100 - p0))) if 0 < p0 < p1 else 0
        self._cusum = 0
        self._cusum_ok = 0         # anchors that answered while it climbed
        self._cusum_pre = (0, 0)   # both after the newest answer (the start of a dead run)
        # STREAKS, per kind (0 anchors, 1 DNS): [failed probes in a row now (0: the
        # newest answered), ms the current streak (of failures or of answers) began,
        # ms of the last observation the other way before it, ms of the newest one,
        # the failures of the streak since the current state began, ms of the newest
        # answer]
        self._st = [[0, None, None, None, 0, None], [0, None, None, None, 0, None]]

    # --- LEDs ------------------------------------------------------------------------

    def led(self, t, role, state):
        # An LED transition ('off' | 'on' | 'blink' at ms t) -> state records.
        out = []
        prev = self.leds.get(role)
        self.leds[role] = state
        m = _MEANING.get(self.led_roles.get(role))
        if m is None or _says(m, state) == _says(m, prev):
            return out
        cls = m[0]
        s = self.state
        if _says(m, state):
            if s == cls:
                end = self._led_end
                self._led_end = None
                if end is not None and self._gap(end, t, cls):
                    # The LED saw the line back and then down again, and no round
                    # begun in between failed: two outages, not one (a line that flaps
                    # faster than the probe rounds).
                    self._end(end, None, out, True)
                    self._open_by_led(t, role, cls, out)
            elif s != LOCAL:
                self._open_by_led(t, role, cls, out)
        elif s == cls:
            if self._unconf and self._contra:
                self._led_back(t, role, out)
            else:
                self._led_end = t
                hist = self._hist
                if not self._unconf and hist and hist[-1][_T] >= t:
                    # a round begun after the LED's ms is in already: it decides now
                    self._led_decides(out)
        return out

    def _gap(self, t1, t2, cls):
        # True if an anchor answered since t1 (a round or a watch), or no round begun in
        # [t1, t2) failed the way cls does (the LED lags the line: a round begun just
        # before it went dark again may have failed).
        ok = self._st[0][5]
        if ok is not None and ok >= t1:
            return True
        for r in self._hist:
            if t1 <= r[_T] < t2 and r[_C] in _CONFIRMS[cls]:
                return False
        return True

    def _down_led(self, cls):
        # The role of an LED that now says the line is down in class cls, or None.
        for role, st in self.leds.items():
            m = _MEANING.get(self.led_roles.get(role))
            if m is not None and m[0] == cls and _says(m, st):
                return role
        return None

    def _led_back(self, t, role, out):
        # The LED of an unconfirmed outage came back after rounds that did not confirm
        # it. Only a round begun while the LED still said "down" contradicts it: an LED
        # report arrives up to a window after its ms, so rounds begun after the LED came
        # back may already be in (the router is back, the line fine: they agree with it).
        before = [c for c in self._contra_t if c[0] < t]
        if before:
            self._retract(out, led=(role, t))
            return
        after = [r for r in self._hist if r[_T] >= t]
        if after and all(r[_C] == UP for r in after):
            self._end(t, None, out, True)       # the LED saw it, and nothing contradicts it
        else:
            self._unconf = False                # the probes decide from here
            self._led_end = t

    # --- the agent's own link --------------------------------------------------------

    def link(self, t, up):
        # The board's Wi-Fi link went down or up at ms t -> state records. No link means
        # no probe round: the agent is blind, which is never an ISP fault. But losing the
        # access point while the "power" LED is dark says the router is off: that
        # confirms a local_down the LED opened, so later rounds cannot retract it.
        self._link = up
        out = []
        if not up:
            self._link_down_t = t
            if self.state == LOCAL and self._unconf:
                self._confirm(out, "led+link")
            elif (self._by == "probe" and self.state in _OWN and self.since is not None
                  and t - self.since <= self.LINK_LAG_MS):
                # The rounds failed because our link was going: the access point is lost
                # only after its beacon timeout. The router's LEDs say it and the line
                # are fine: withdrawn from its start (ev.by "link").
                ev = {"by": "link", "link_down": t}
                if self._router_fine():
                    self._retract(out, UP, ev)
                elif self._lit_router_says(self._from):
                    # During an outage the LEDs show (its WAN LED dark, the power LED
                    # lit): the rounds' local_down was our link, the outage before it
                    # goes on from its own start (the collector restores it).
                    s, since, bound, by = self._from
                    rec = self._rec(s, self.since, self._bound, ev)
                    rec["retract"] = True
                    out.append(rec)
                    self._set(s, since, bound, by)
                    self._from = None
        return out

    def _lit_router_says(self, prior):
        # prior (state, since, bound, by) is an outage an LED still says while the power
        # LED is read and lit (without one a router switched off looks the same).
        if prior is None or prior[0] not in (ISP, DNS, DEG) or prior[1] is None:
            return False
        lit = False
        for role, st in self.leds.items():
            m = _MEANING.get(self.led_roles.get(role))
            if m is not None and m[0] == LOCAL and st is not None:
                if _says(m, st):
                    return False
                lit = True
        return lit and self._down_led(prior[0]) is not None

    def _router_fine(self):
        # An LED that goes dark when the router or its WAN fails is lit, and none says down.
        fine = False
        for role, st in self.leds.items():
            m = _MEANING.get(self.led_roles.get(role))
            if m is None or st is None:
                continue
            if _says(m, st):
                return False
            fine = fine or m[1]
        return fine

    def _confirm(self, out, by, t=None):
        # t: ms of the confirming round. One begun before the LED came back leaves that
        # end pending: it says the line was down while the LED still said so.
        self._unconf = False
        if t is None or self._led_end is None or t >= self._led_end:
            self._led_end = None
        ev = {"by": by, "confirmed": True}
        if by != "led+link":
            self._evidence(ev, len(self._hist) - 1)
        else:
            ev["link_down"] = self._link_down_t
        out.append(self._rec(self.state, self.since, self._bound, ev))

    def _open_by_led(self, t, role, cls, out):
        if not self._unconf:
            # What a retraction goes back to.
            self._prior = (self.state, self.since, self._bound, self._by)
            self._chain = []
        else:
            # An unconfirmed LED outage replaced by another: a retraction withdraws both,
            # one record each (the collector restores, then withdraws, the first).
            self._chain.append(self.state)
        hist = self._hist
        k = self._tail(_CONFIRMS[cls], self.since)
        at = t
        bound = t - self.LED_BOUND_MS if t > self.LED_BOUND_MS else 0
        if (cls == LOCAL and (self._unconf or self._by == "led") and self.state == ISP
                and t - self.since <= self.LED_SKEW_MS):
            # The WAN LED went dark just before the power LED, and no round has seen the
            # line since: the router went off, from the first LED's ms.
            at = self.since
            bound = self._bound
        ev = {"by": "led", "role": role}
        if k:
            # The probes already fail: the outage began no later than their first failure.
            i = len(hist) - k
            if hist[i][_T] < at and (self.since is None or hist[i][_T] > self.since):
                at, bound = self._sharpen(i, 0)
            ev["by"] = "led+probe"
            self._evidence(ev, i)
        rec = self._rec(cls, at, bound, ev)
        out.append(rec)
        self._set(cls, rec["at"], rec["bound"], "led")
        if not k:
            self._unconf = True
            for r in hist:          # rounds already seen after the LED's ms: all good
                if r[_T] >= t:
                    self._contra += 1
                    self._contra_t.append((r[_T], r[_C]))
            if cls == LOCAL and not self._link:
                self._confirm(out, "led+link")  # the access point went with it
            elif self._contra >= self.retract_rounds:
                self._retract(out)

    def _retract(self, out, s=None, ev=None, led=None):
        # Withdraw the current outage: the line was `s` from its `at` on. Without s:
        # an LED-opened outage that probes contradicted, back to the state before it;
        # the record names the contradicting rounds (their ms and class) and, when its
        # LED came back after them, the LED (role, ms).
        restore = s is None
        by = "probe"
        if restore:
            s, psince, pbound, by = self._prior
            ev = {"by": "probe", "rounds": self._contra,
                  "contra": [list(c) for c in self._contra_t[:self.retract_rounds]]}
            if led is not None:
                ev["led_back"] = list(led)
        if restore:
            while self._chain:
                r = self._rec(self._chain.pop(), self.since, self._bound, dict(ev))
                r["retract"] = True
                out.append(r)
                self.state = r["s"]         # the next record's `from`
        rec = self._rec(s, self.since, self._bound, ev)
        rec["retract"] = True
        out.append(rec)
        if not restore or s == UP:
            psince = rec["at"]
            pbound = rec["bound"]
        # else the restored outage goes on from where it began
        self._set(s, psince, pbound, by if s != UP else None)

    # --- probe rounds ----------------------------------------------------------------

    def _obs(self, kind, t, ok, n):
        # n probes of one kind at ms t: all failed (ok False), or one answered (True).
        st = self._st[kind]
        if ok:
            if st[0] or st[1] is None:      # a streak of answers begins
                st[1] = t
                st[2] = st[3]
            st[0] = st[4] = 0
            st[5] = t
        else:
            if not st[0]:                   # a streak of failures begins
                st[1] = t
                st[2] = st[3]
            st[0] += n
            st[4] += n
        st[3] = t

    def watch(self, t, anchors_ok, dns_ok, anchors_total=1):
        # A watch between rounds at ms t (anchors_ok of anchors_total anchors answered,
        # True/False for one; one DNS query; one try each; None: not probed). No
        # records: it sharpens the times of the next ones and adds to the failure
        # streaks that confirm an outage early (STREAKS) and to the CUSUM.
        if anchors_ok is not None:
            n = anchors_total if anchors_total and anchors_total > 0 else 1
            ok = min(int(anchors_ok), n)
            self._obs(0, t, ok > 0, n)
            if self._cusum_on():
                self._cusum_add(n - ok, ok)
        if dns_ok is not None:
            self._obs(1, t, dns_ok, 1)

    def round(self, t, gateway_ok, anchors_ok, anchors_total, dns_ok, loss_pct=0, dns_tries=1,
              dns_ms=0):
        # One probe round at ms t -> state records. gateway_ok / dns_ok: True, False or
        # None (not probed); loss_pct: the round's packet loss when measured; dns_tries:
        # the queries sent (a resolver not answering is asked again within the round);
        # dns_ms: when a query sent again was answered, ms after t (the resolver was
        # silent until then).
        n = anchors_total if anchors_total and anchors_total > 0 else 0
        ok = min(anchors_ok, n) if anchors_ok and anchors_ok > 0 else 0
        dt = dns_tries if dns_tries and dns_tries > 0 else 1
        if n:
            self._obs(0, t, ok > 0, n)
        if dns_ok is not None:
            self._obs(1, t + (dns_ms if dns_ok and dt > 1 and dns_ms > 0 else 0), dns_ok, dt)
        a = self._st[0]
        q = self._st[1]
        loss = min(loss_pct, 100) if loss_pct and loss_pct > 0 else 0
        if n and (n - ok) * 100 // n > loss:
            loss = (n - ok) * 100 // n
        thr = self.degraded_loss_pct
        hist = self._hist
        # The loss window, this round included; while up, only since the last outage
        # ended (its dead rounds say nothing about the line now).
        # While degraded, only since it began (the clean rounds before it would end it
        # early), and without the minimum: the outage itself says the line is lossy.
        total = loss
        cnt = 1
        deg = self.state == DEG
        floor = self.since if self.state == UP or deg else None
        for r in hist[1 - self.LOSS_WINDOW:]:
            if floor is None or r[_T] >= floor:
                total += r[_LOSS] & _PCT
                cnt += 1
        lossy = (deg or cnt >= self.LOSS_MIN) and total >= thr * cnt
        if n and self._cusum_on():
            self._cusum_add(n - ok, ok)
            # Only a line that still answers is degraded: all-failed rounds are for
            # isp_down's debounce to judge.
            if self._cusum >= self.CUSUM_H and self._cusum_ok:
                lossy = True
        elif not n:
            self._cusum = self._cusum_ok = 0
        if gateway_ok is False or (gateway_ok is None and not ok and self._power_off()):
            cls = LOCAL
        elif n and not ok:
            cls = ISP
        elif dns_ok is False and (loss == 0 or (loss < thr and not lossy)):
            cls = DNS
        elif loss >= thr or (lossy and loss > 0):
            cls = DEG       # (a query lost on a lossy round is the loss, not the resolver)
        else:
            cls = UP
        # A full history recycles its oldest round's list: a new one every round (2 s),
        # each kept for over a minute, peppered a small heap with holes (fragmentation).
        if len(hist) >= self._hmax:
            r = hist.pop(0)
            r[_T] = t
            r[_C] = cls
            r[_LOSS] = loss | _LOSSY if lossy else loss
            r[_OK] = ok
            r[_N] = n
            r[_GW] = gateway_ok
            r[_DNS] = dns_ok
            r[_DT] = dt
            r[_AM] = a[1]
            r[_AB] = a[2]
            r[_QM] = q[1]
            r[_QB] = q[2]
            hist.append(r)
        else:
            hist.append([t, cls, loss | _LOSSY if lossy else loss, ok, n, gateway_ok, dns_ok,
                         dt, a[1], a[2], q[1], q[2]])
        out = []
        self._step(hist[-1], cls, out)
        return out

    def _cusum_on(self):
        # While up; during a probe-opened isp_down from its first answer on (HINDSIGHT).
        if not self._llr_fail:
            return False
        if self.state == UP:
            return True
        last = self._st[0][5]
        return self.state == ISP and self._by == "probe" and last is not None and \
            last >= self.since

    def _cusum_add(self, fails, oks):
        # fails lost and oks answered anchor probes into the CUSUM (FAST DEGRADED).
        c = self._cusum + fails * self._llr_fail + oks * self._llr_ok
        if c > 0:
            self._cusum = c
            self._cusum_ok += oks
        else:
            self._cusum = self._cusum_ok = 0
        if oks:
            self._cusum_pre = (self._cusum, self._cusum_ok)

    def _power_off(self):
        return self._down_led(LOCAL) is not None

    def _step(self, r, cls, out):
        hist = self._hist
        s = self.state
        if self._unconf:
            if cls in _CONFIRMS[s]:
                self._confirm(out, "led+probe", r[_T])
            else:
                self._contra += 1
                self._contra_t.append((r[_T], cls))
                if self._led_end is not None:
                    # The LED came back before any round contradicted it and the
                    # probes are fine now: a short outage only the LED saw.
                    self._end(self._led_end, None, out, True)
                elif self._contra >= self.retract_rounds:
                    self._retract(out)
                return
        if self._led_end is not None and r[_T] >= self._led_end and self._led_decides(out):
            return
        if s == UP:
            for c in _ORDER:
                k = self._run(c, UP)
                if k and (k >= self._need(c, k) or self._streak_ok(c, k)):
                    self._declare(c, self._start(c, k), out)
                    return
            # Bad rounds of mixed classes: declare the class among them that claims
            # least against the ISP.
            k = 0
            while k < len(hist) and _bad(hist[-1 - k]):
                k += 1
            if k >= 2 * self.down_rounds:
                cs = [x[_C] for x in hist[-k:]]
                for c in _MILD:
                    if c in cs:
                        self._declare(c, len(hist) - k, out)
                        return
            return
        if s == ISP:
            self._isp_run = self._isp_run + 1 if cls == ISP else 0
            if self._isp_run > self._isp_best:
                self._isp_best = self._isp_run
            if cls == DEG and r[_LOSS] & _LOSSY and self._by == "probe":
                # Hindsight: anchors answer again on a lossy line. Was this isp_down
                # only the dead rounds such a line has anyway? Its longest all-failed
                # run against what the failure rate measured now needs: over the
                # window and, once the CUSUM says lossy, over the answered rounds since
                # the newest dead one (the window still holds the clean rounds before
                # the onset).
                need = self._need_q(len(hist) - self.LOSS_WINDOW, len(hist))
                if self._cusum >= self.CUSUM_H and self._cusum_ok:
                    j = len(hist) - 1
                    while j > 0 and hist[j - 1][_T] >= self.since and hist[j - 1][_OK]:
                        j -= 1
                    need = max(need, self._need_q(j, len(hist)))
                if self._isp_best < need:
                    ev = {"by": "probe", "hindsight": True, "isp_run": self._isp_best,
                          "need": need}
                    self._evidence(ev, len(hist) - 1)
                    self._retract(out, DEG, ev)
                    return
        k = self._tail((UP,))
        # Only rounds begun after the outage did can end it: one an LED or the link
        # opened and confirmed had no failed round, and the good rounds before it say
        # nothing about now.
        while k and hist[len(hist) - k][_T] < self.since:
            k -= 1
        if k >= self.up_rounds and not (s == DEG and r[_LOSS] & _LOSSY):
            i = len(hist) - k
            while s == DEG and i > 0 and hist[i - 1][_LOSS] & _PCT < self.degraded_loss_pct and \
                    hist[i - 1][_T] > self.since:
                i -= 1      # degraded: recovered at the round after the last heavy one
            self._end(hist[i][_T], i, out)
            return
        for c in _ORDER:
            k = self._run(c, s)
            # (a switch, like an end, counts only rounds begun since the outage did)
            while k and hist[len(hist) - k][_T] < self.since:
                k -= 1
            if c != s and k and (k >= self._need(c, k) or self._streak_ok(c, k)):
                self._declare(c, len(hist) - k, out)
                return

    def _led_decides(self, out):
        # The LED of the current outage came back at _led_end, and the newest round was
        # begun after it (one begun before says nothing about after it). Good: the
        # outage ends at the LED's ms (or at this round's, if one failed after the LED's
        # ms). The router back (power LED lit), its WAN LED still dark and the anchors
        # unreachable: the ISP's line is down from the power LED's ms. Anything else:
        # the probes decide. True if it wrote a record.
        hist = self._hist
        r = hist[-1]
        at = self._led_end
        self._led_end = None
        if r[_C] == UP:
            for x in hist[:-1]:
                if x[_C] != UP and x[_T] >= at:
                    at = r[_T]  # a round failed after the LED came back: not its ms
            self._end(at, None, out, True)
            return True
        ok = self._st[0][5]
        if ok is not None and ok >= at:
            # An anchor answered after the LED came back, and this round failed: the line
            # went down again before the LED says so (it lags). Still pending: the LED
            # going dark again splits the outage, a good round ends it.
            self._led_end = at
            return False
        role = self._down_led(ISP)
        if self.state == LOCAL and r[_C] == ISP and role is not None:
            ev = {"by": "led+probe", "role": role}
            self._evidence(ev, len(hist) - 1)
            rec = self._rec(ISP, at, max(at - self.LED_BOUND_MS, 0), ev)
            out.append(rec)
            self._set(ISP, rec["at"], rec["bound"], "led")
            return True
        return False

    def _tail(self, cs, since=None):
        # How many of the newest rounds in a row have a class in cs (and, with since,
        # were begun at or after it).
        hist = self._hist
        k = 0
        while k < len(hist) and hist[-1 - k][_C] in cs and \
                (since is None or hist[-1 - k][_T] >= since):
            k += 1
        return k

    def _run(self, c, cur):
        # The newest rounds in a row that count toward declaring c in state cur.
        if c != DEG:
            return self._tail((c,))
        hist = self._hist
        k = 0
        while k < len(hist):
            r = hist[-1 - k]
            if not r[_LOSS] & _LOSSY or r[_C] == LOCAL or r[_C] == DNS or \
                    (r[_C] == ISP and (cur == ISP or cur == LOCAL)):
                break
            k += 1
        return k

    def _start(self, c, k):
        # Index of the first round of an outage declared from `up` after a run of k
        # (never at or before the end of the previous outage): the first of the newest
        # bad rounds; for degraded maybe earlier: the earliest lossy round in the
        # history from which the running mean loss stays >= the threshold.
        hist = self._hist
        floor = 0
        while self.since is not None and floor < len(hist) - 1 and \
                hist[floor][_T] <= self.since:
            floor += 1
        i = max(min(len(hist) - self._tail((LOCAL, ISP, DNS, DEG)), len(hist) - k), floor)
        if c != DEG:
            return i
        thr = self.degraded_loss_pct
        for j in range(floor, i):
            if hist[j][_LOSS] & _PCT > 0:
                total = 0
                m = j
                while m < len(hist) and total + (hist[m][_LOSS] & _PCT) >= thr * (m - j + 1):
                    total += hist[m][_LOSS] & _PCT
                    m += 1
                if m == len(hist):
                    return j
        return i

    def _need(self, c, k):
        if c == DEG and self.state == UP and self._cusum >= self.CUSUM_H and self._cusum_ok:
            return 1            # the CUSUM is its own debounce (FAST DEGRADED)
        if c != ISP or self.state == LOCAL:
            # (after local_down the rounds before the run are the router's own dead
            # ones: they say nothing about random loss on the line)
            return self.down_rounds
        # The anchor failure rate before this run of k, over the loss window and over
        # the last few rounds (a line that just turned lossy), whichever needs more.
        end = len(self._hist) - k
        return max(self._need_q(end - self.LOSS_WINDOW, end),
                   self._need_q(end - self.RECENT, end))

    def _need_q(self, start, end):
        # All-failed rounds needed in a row, given the anchor failures in hist[start:end].
        n = self._hist[-1][_N]
        q = self._rate(start, end, 0)
        if not q or not n:
            return self.down_rounds
        p = 1000000
        m = 0
        while m < self.ISP_MAX_ROUNDS and (m < self.down_rounds or p >= self.ISP_EPS_PPM):
            m += 1
            for _ in range(n):
                p = p * q // 1000000
        return m if m > self.down_rounds else self.down_rounds

    def _rate(self, start, end, kind):
        # Upper bound (ppm) of the share of probes of a kind (0 anchors, 1 DNS queries)
        # that failed in hist[start:end]; 0 if none did.
        fail = tot = 0
        for r in self._hist[max(start, 0):end]:
            if kind == 0:
                fail += r[_N] - r[_OK]
                tot += r[_N]
            elif r[_DNS] is not None:
                fail += r[_DT] - (1 if r[_DNS] else 0)
                tot += r[_DT]
        if not fail:
            return 0
        q = fail * 1000000 // tot
        # Upper confidence bound (+2 standard errors): a rate measured over a few
        # dozen probes is uncertain, and underestimating it makes false outages.
        return min(q + 2 * _isqrt(q * (1000000 - q) // tot), 999999)

    def _streak_ok(self, c, k):
        # Fast confirmation (STREAKS): the failed probes in a row of c's kind, watches
        # and re-sent DNS queries included, are enough to declare c.
        # Only on a line that lost no probe of that kind in the RECENT rounds before the
        # run: on one already losing them (the onset of heavy loss), the rounds decide.
        kind = _KIND.get(c)
        if kind is None:
            return False
        end = len(self._hist) - k
        if self._rate(end - self.RECENT, end, kind):
            return False
        return self._st[kind][4] >= self._need_p(kind, k)

    def _need_p(self, kind, k):
        # Failed probes of a kind needed in a row: what down_rounds rounds of three
        # anchors are on a clean line; after losses in the loss window before the run of
        # k rounds (the RECENT rounds are clean: _streak_ok), enough that the streak has
        # less than ISP_EPS_PPM chance at that failure rate.
        m0 = 3 * self.down_rounds
        if self.state == LOCAL:
            return m0
        end = len(self._hist) - k
        q = self._rate(end - self.LOSS_WINDOW, end, kind)
        p = 1000000
        m = 0
        while q and m < 3 * self.ISP_MAX_ROUNDS and (m < m0 or p >= self.ISP_EPS_PPM):
            m += 1
            p = p * q // 1000000
        return m if m > m0 else m0

    def _sharpen(self, i, kind):
        # (at, bound) for round i, sharpened by the streak of a kind it belongs to when
        # that streak began after the round before it (a watch saw it first) or, for a
        # query answered only when sent again, when the answer came.
        hist = self._hist
        r = hist[i]
        prev = hist[i - 1][_T] if i else None
        m = r[_AM + 2 * kind]
        if m is None or (prev is not None and m <= prev) or \
                (self.since is not None and m <= self.since):
            return r[_T], prev
        b = r[_AB + 2 * kind]
        if b is None or (prev is not None and b < prev):
            b = prev
        return m, b

    # --- records ---------------------------------------------------------------------

    def _declare(self, c, i, out):
        hist = self._hist
        at = hist[i][_T]
        bound = hist[i - 1][_T] if i else None
        kind = _KIND.get(c)
        if kind is not None:
            at, bound = self._sharpen(i, kind)
        ev = {"by": "probe", "rounds": 0}       # (the counts: _evidence)
        self._evidence(ev, i)
        k = self._run(c, self.state)
        need = self._need(c, k)
        if need > self.down_rounds:
            ev["need"] = need
        if kind is not None and k < need:
            ev["streak"] = self._st[kind][4]     # confirmed by the streak, early
            ev["need_p"] = self._need_p(kind, k)
        rec = self._rec(c, at, bound, ev)
        out.append(rec)
        self._set(c, rec["at"], rec["bound"], "probe")
        self._isp_run = self._isp_best = self._tail((ISP,))

    def _end(self, at, i, out, led=False):
        # The outage ends at `at`; i: index of its first good round (None: the newest).
        hist = self._hist
        ev = {"by": "led+probe" if led else "probe"}
        self._evidence(ev, len(hist) - 1 if i is None else i)
        bound = hist[i - 1][_T] if i else None
        kind = _KIND.get(self.state)
        if not led and i is not None and kind is not None:
            at, bound = self._sharpen(i, kind)  # the first answer, if a watch had it
        if led:
            # The LED's previous sample still said "down"; so did the newest bad round
            # at or before `at`, if later.
            bound = max(at - self.LED_BOUND_MS, 0)
            for r in hist:
                if r[_C] != UP and bound < r[_T] <= at:
                    bound = r[_T]
        if bound is not None and bound < self.since:
            bound = self.since
        rec = self._rec(UP, at, bound, ev)
        out.append(rec)
        self._set(UP, rec["at"], rec["bound"], None)

    def _evidence(self, ev, i):
        # Counts over the deciding rounds hist[i:]: what failed and what answered.
        rs = self._hist[i:]
        ev["rounds"] = len(rs)
        ev["gw_fail"] = sum(1 for r in rs if r[_GW] is False)
        ev["dns_fail"] = sum(1 for r in rs if r[_DNS] is False)
        ev["anc_ok"] = sum(r[_OK] for r in rs)
        ev["anc_n"] = sum(r[_N] for r in rs)
        ev["loss"] = sum(r[_LOSS] & _PCT for r in rs) // len(rs) if rs else 0

    def _rec(self, s, at, bound, ev):
        # Records never go back in time: a new `at` is at least the previous one's
        # (after a retraction to an earlier outage, say, its end cannot precede it).
        if at < self._last_at:
            at = self._last_at
        self._last_at = at
        if self.leds:
            ev["led"] = dict(self.leds)
        if bound is not None and bound > at:
            bound = at
        return {"k": "state", "s": s, "at": at, "bound": bound, "ev": ev, "from": self.state}

    def _set(self, s, at, bound, by):
        # The CUSUM starts again with each state, but a probe-opened isp_down keeps its
        # value from before the dead run that opened it (HINDSIGHT).
        if s == ISP and by == "probe" and self.state == UP:
            self._cusum, self._cusum_ok = self._cusum_pre
        else:
            self._cusum = self._cusum_ok = 0
        # What a probe-opened outage switched from, for link(): (state, since, bound, by)
        self._from = (self.state, self.since, self._bound, self._by) if by == "probe" else None
        self.state = s
        self.since = at
        self._bound = bound
        self._by = by
        self._unconf = False
        self._led_end = None
        self._contra = 0
        self._contra_t = []
        self._isp_run = 0           # all-failed rounds in a row during an isp_down
        self._isp_best = 0          # ... the longest such run
        for st in self._st:
            st[4] = 0               # streaks count toward a state from its start


def _bad(r):
    # A round that counts against `up` (heavy rounds before the window is lossy don't).
    c = r[_C]
    return c == LOCAL or c == ISP or c == DNS or (c == DEG and r[_LOSS] & _LOSSY)


def _isqrt(n):
    # Integer square root (Newton), n >= 0.
    if n < 2:
        return n
    x = n
    y = (x + 1) >> 1
    while y < x:
        x = y
        y = (x + n // x) >> 1
    return x
