# The agent: asyncio tasks wiring clock, LEDs, probes, detector, outbox and MQTT.
#
# Tasks: sampler (LEDs, every 20 ms), prober (a round every probe.interval_s), sender
# (drains the outbox to the broker, resends what the collector has not acked),
# flusher (writes the records queued in RAM to flash, FLUSH_MS after the first of a
# burst), heartbeat, clock (SNTP), net (Wi-Fi), watchdog. Each task stamps `alive` as it
# loops; the watchdog task feeds the hardware WDT only while every task stamped
# within its budget, so one hung task resets the board (and the next `boot` record
# says WDT_RESET). Safe mode (after a crash loop) runs only what reports: net, MQTT,
# sender, heartbeat, watchdog.
import asyncio
import gc
import json
import machine
import sys
import time
from micropython import const

import probe
from clock import Clock, sntp
from mqtt import Client, publish_room, tls_context
from net import Net
from outbox import Outbox
from version import VERSION as FW

SAMPLE_MS = 20
STALL_MS = 60         # a gap between two LED sample turns longer than this is said (console)
FLUSH_MS = 40         # records wait at most this long in RAM: one flash append per burst
Q_SOFT = 768          # queued bytes past which the sampler flushes at its next turn (record)
Q_HARD = 2048         # ... past which the outbox flushes inside queue(), all steps at once
STEP_SLACK_MS = 5     # outbox steps without an LED turn between them (App.work): the gap
                      # stays within this plus one erase
LED_EVERY_MS = 60000  # on<->blink changes of one LED: at most one record a minute (led.LedLog)
ANNOUNCE = ("state", "boot", "error", "gap")  # kinds the console shows as `record N KIND`
OPEN_WAIT = ("isp_down", "dns_down", "local_down")  # states whose rounds wait less (prober)
RESEND_MS = 15000     # a batch PUBACKed but not acked by the collector is sent again
BATCH_RECS = 900      # record bytes per batch: with its head a batch stays within 1 KiB
BATCH_BUF = 1088      # the sender's buffer: a batch of up to 1 KiB with its PUBLISH header
STATS_MS = 3600000
# The tasks App.main runs, in its order: MemoryErrors are counted per task (oom_by)
TASKS = ("mqtt", "net", "sender", "flusher", "heartbeat", "clock", "stats", "sampler",
         "prober", "watchdog")
_SAMPLER = const(7)   # its index in TASKS
RESERVE = 512         # bytes kept back for a record that finds no block (App.record)
KEEP = ("state", "link", "gap", "boot")  # kinds that may fill the reserve; others half (App._queue_again)
HB_WAIT_MS = 5000     # a heartbeat waits this long for the buffer the sender shares
NTP_EVERY_MS = 3600000
CRASH_FILE = "crashes.json"
CRASH_WINDOW_MS = 600000  # 3 crashes within 10 minutes of uptime -> safe mode
_next_due = None      # led.next_due once the sampler runs (led is not imported in safe mode)

RESET_NAMES = ("PWRON_RESET", "HARD_RESET", "WDT_RESET", "DEEPSLEEP_RESET", "SOFT_RESET",
               "BROWNOUT_RESET")  # machine's constants, read once (reset_cause)


def hardware():
    # The board and chip as MicroPython names them ("Generic ESP32 module with ESP32",
    # os.uname().machine; sys.implementation._machine on every port since 1.20): the
    # boot record's `hw`, the model a dashboard shows.
    hw = getattr(sys.implementation, "_machine", None)
    return hw[:64] if isinstance(hw, str) else None


def reset_cause():
    try:
        cause = machine.reset_cause()
    except (AttributeError, OSError):
        return "UNKNOWN"
    for name in RESET_NAMES:
        if getattr(machine, name, None) == cause:
            return name
    return "UNKNOWN"


# --- crash bookkeeping (main.py calls these) ------------------------------------------

def read_crashes():
    try:
        with open(CRASH_FILE) as f:
            crashes = json.load(f)
        return crashes if isinstance(crashes, list) else []
    except (OSError, ValueError):
        return []


def write_crashes(crashes):
    try:
        with open(CRASH_FILE + ".tmp", "w") as f:
            json.dump(crashes[-5:], f)
        import os
        os.rename(CRASH_FILE + ".tmp", CRASH_FILE)
    except OSError:
        pass


def note_crash(uptime_ms, why):
    crashes = read_crashes()
    crashes.append({"up": uptime_ms, "why": why[:120]})
    write_crashes(crashes)


def crash_loop(crashes):
    # Three crashes whose boots together lasted less than 10 minutes.
    if len(crashes) < 3:
        return False
    return sum(c.get("up", 0) for c in crashes[-3:]) < CRASH_WINDOW_MS


def _rtc_uptime(value=None):
    # RTC memory survives a WDT reset (not a power cut): the uptime at the last stamp.
    try:
        rtc = machine.RTC()
        if value is None:
            raw = rtc.memory()
            return int(raw) if raw else None
        rtc.memory(str(value).encode())
    except (AttributeError, OSError, ValueError):
        return None


class Settings:
    # config.json parsed (config.load: values and problems), kept without the config
    # module: settings() lets that go after boot, its parsing code ~650 bytes of RAM the
    # agent would otherwise hold for good (measured on the 32-bit frozen build).
    def __init__(self, values, problems=()):
        self.values = values
        self.problems = problems

    def get(self, key):
        node = self.values
        for part in key.split("."):
            node = node[part]
        return node


def settings(path):
    # config.json parsed; the config module is let go once it has done that.
    import config
    cfg = config.load(path)
    sys.modules.pop("config", None)
    return Settings(cfg.values, cfg.problems)


class App:
    def __init__(self, cfg, *, safe=False, cause=None, notes=()):
        self.cfg = cfg
        self.safe = safe
        self.clock = Clock()
        self.id = cfg.get("id") or "unconfigured"
        self.prefix = cfg.get("prefix")
        self.outbox = Outbox("ob", max_bytes=cfg.get("outbox.max_bytes"), q_bytes=Q_HARD)
        self.outbox.open()
        self.boot = self.outbox.boot
        # The heartbeat's boot is in this outbox's numbering too: name the outbox.
        self._hb_ob = ',"ob":"%s"' % self.outbox.ob if self.outbox.ob else ""
        self.cause = cause or reset_cause()
        self.alive = {}
        self.budget = {}
        self._crash_log = bool(read_crashes())  # read once: cleared after a clean run
        self.heap_peak = 0    # gc.mem_alloc() high-water, sampled once a second (watchdog)
        self.gap_max = 0      # the longest gap between two LED sample turns (ms)
        self.mem_errors = 0   # MemoryErrors a task survived (a lost round, a batch later)
        self.lost = 0         # records dropped for want of memory (said in an error record)
        self._lost_said = 0
        # A block kept for good for the records that must not be lost to a full heap (a
        # state change above all): a record that finds no block is encoded into its free
        # end and queued there (_queue_again); it is free again once they are on flash.
        self._reserve = bytearray(RESERVE)
        self._res_used = 0
        # The sender's batch buffer, made here and kept for good: a sender task restarted
        # after a MemoryError must not need a fresh 1 KiB block, which a fragmented heap
        # lacks (the soak: a sender restarted every 100 ms for 30 s, failing each time on
        # it, until the heap ran out for everyone).
        self._batch = bytearray(BATCH_BUF)
        self._batch_busy = False  # taken by the sender or the heartbeat (_take_batch)
        self.oom_by = bytearray(len(TASKS))  # MemoryErrors per task (TASKS order, to 255)
        self.outbox_error = None
        self.line = "up"
        self.net = Net(cfg.get("wifi.ssid"), cfg.get("wifi.password"))
        self.net.on_change = self._link_changed
        self.ack_ev = asyncio.Event()
        self.flush_ev = asyncio.Event()
        self.sampling = False   # the sampler runs: it writes the queued records (flush_due)
        self.flush_due = False
        self._turn_at = None    # ticks of the last LED sample turn, and the next one's due
        self._turn_w = 0        # the outbox's writes + commits, MemoryErrors, at that turn
        self._turn_m = 0
        self._tr = [None] * 6   # an LED transition a MemoryError cut short (_transition)
        self._due = time.ticks_ms()
        self._say = []          # (index in the outbox queue, kind, detail): console lines
        self._sent_upto = 0
        self._sent_at = time.ticks_ms()  # a ticks value (read only once _sent_gen matches)
        self._sent_gen = -1
        self._last_probe = {}
        self._rtt_ms = 0        # the rounds' slowest answers, smoothed (watches wait 4x)
        self._watch_i = -1      # the anchor the last watch probed
        self.lat = probe.Summary()  # RTT and loss per target for the heartbeat
        b = "%s/%s/" % (self.prefix, self.id)
        self.t_rec, self.t_hb, self.t_ack, self.t_status = b + "rec", b + "hb", b + "ack", b + "status"
        self.mq = Client(cfg.get("broker.host"), cfg.get("broker.port"), client_id="ww-" + self.id,
                         user=cfg.get("broker.user") or None,
                         password=cfg.get("broker.password") or None,
                         keepalive_s=30, will=(self.t_status, b"offline", True, 1),
                         tls=_tls(cfg), others=cfg.get("broker.others"))
        self.mq.on_message = self._on_message
        self.mq.resolver = self._resolve_name  # never a blocking getaddrinfo in the loop
        self.mq.on_connect = self._on_connect
        self.record({"k": "boot", "reset": self.cause, "fw": FW, "hw": hardware(),
                     "safe": safe, "hb_s": cfg.get("hb_s")})
        for key, msg in cfg.problems:
            self.record({"k": "error", "key": key, "msg": "config: " + msg})
        if self.outbox.corrupt:
            self.record({"k": "error", "key": "outbox",
                         "msg": "skipped %d torn or corrupt region(s) at boot" % self.outbox.corrupt})
        for note in notes:
            self.record({"k": "error", "msg": note})
        self.leds = []
        self.detector = None
        if not safe:
            self._setup_sensing()
        self.flush()  # the boot's records are on flash before the loop starts

    # -- records ------------------------------------------------------------------

    def record(self, rec):
        # Queued in RAM (outbox.queue): the flusher writes the loop turn's records as
        # one flash append within FLUSH_MS. The sender reads only what is on flash, so
        # no record is sent (and acked, and deleted) before it is stored.
        t = self.clock.now()
        rec["t"] = t
        rec["utc"] = self.clock.utc_ms(t)
        ob = self.outbox
        before = ob.queued()
        try:
            ob.queue(rec)  # past Q_HARD it writes the ones before first
        except OSError as e:
            self._failed(e)
        except MemoryError:
            # No block to encode it in: a collection and one more try, then the block
            # kept for this (RESERVE) and a last try; else the record is lost (said on the
            # console now and in an error record once there is room), not the task.
            gc.collect()
            self.mem_errors += 1
            why = self._queue_again(rec)
            if why:
                self.lost += 1
                print("record lost: out of memory:", rec.get("k"), why)
                return
        else:
            if before and ob.queued() == 1:
                self._announce()
            if self.sampling and ob.queued_bytes() >= Q_SOFT:
                # An onset's burst: written at the sampler's next turn, a step at a time
                # with turns between (work), not by the outbox inside queue() (all at
                # once: a create, a block copy and a commit in one 62 ms gap in a soak).
                self.flush_due = True
        if rec["k"] in ANNOUNCE and ob.queued():
            self._say.append((ob.queued() - 1, rec["k"],
                              rec.get("s") or rec.get("reset") or rec.get("msg") or ""))
        self.flush_ev.set()

    def flush(self):
        # All the flash work at once (boot, before the loop; after a crash).
        self.work()

    def work(self, turn=None):
        # All the outbox's flash work (records queued, acks taken), a step at a time: a
        # step erases at most one 4 KiB block (~45 ms on the chip, outbox.py "Steps").
        # turn(): an LED sample turn, taken between two steps once STEP_SLACK_MS have
        # passed since the last one (waiting for its due time), so the stall of one
        # erase is the whole gap between two turns. The loop is held meanwhile: no
        # other task runs between the steps, so what a job holds is freed before they
        # allocate (the heap as with one flush at a time) and none of them touches the
        # outbox mid-job.
        ob = self.outbox
        while ob.work():
            try:
                done = ob.step()
            except OSError as e:  # flash full or failing: keep running, say so in heartbeats
                self._failed(e)
                return
            except MemoryError:
                self._flash_oom()
                return
            if done:
                self._announce()
                if not ob.queued():
                    self._res_used = 0  # its records are on flash: none points into it
            if turn is not None:
                wait = time.ticks_diff(self._due, time.ticks_ms())
                if wait <= SAMPLE_MS - STEP_SLACK_MS:
                    if wait > 0:
                        time.sleep_ms(wait)
                    turn()

    def _flash_oom(self):
        # No block for a file session: the records not written stay queued (the outbox
        # put them back) for the flusher's next try, after a collection.
        gc.collect()
        self.mem_errors += 1
        self._announce()
        self.flush_ev.set()

    def _failed(self, e):
        self.outbox_error = str(e)
        print("outbox: cannot write:", e)
        self._say = []

    def _announce(self):
        # `record N KIND …` for what the last flush wrote (its records took the seqs up
        # to last_seq, in queue order).
        ob = self.outbox
        first = ob.last_seq - ob.nflushed + 1
        n = ob.nflushed
        for i, k, what in self._say:
            if i < n:
                print("record", first + i, k, what)
        # (after a flush cut short by a MemoryError, the rest wait in the queue)
        self._say = [(i - n, k, w) for i, k, w in self._say if i >= n] if ob.queued() else []

    async def flusher(self):
        ob = self.outbox
        while True:
            await self.flush_ev.wait()
            await asyncio.sleep_ms(FLUSH_MS)  # the other tasks' records of this moment too
            self.flush_ev.clear()
            if self.sampling:
                # A flash erase stalls the loop (~45 ms on the chip): the sampler does
                # the work right after an LED sample turn, with a turn between two
                # steps (work()); a sampler that does not come (stalled) leaves it to us.
                self.flush_due = True
                await asyncio.sleep_ms(3 * SAMPLE_MS)
                if not self.flush_due:
                    continue
                self.flush_due = False
            self.work()

    def _setup_sensing(self):
        from detector import Detector
        from led import LedChannel, LedLog
        cfg = self.cfg
        roles = {}
        for led in cfg.get("leds"):
            try:
                adc = machine.ADC(machine.Pin(led["pin"]))
                if hasattr(adc, "atten") and hasattr(machine.ADC, "ATTN_11DB"):
                    adc.atten(machine.ADC.ATTN_11DB)
            except (OSError, ValueError, AttributeError) as e:
                self.record({"k": "error", "key": "leds", "msg": "pin %d: %s" % (led["pin"], e)})
                continue
            role = led["role"]
            # `wanwitness calibrate` measured the dark/bright levels: start from them
            self.leds.append((LedChannel(role, adc, levels=led.get("levels")), role,
                              LedLog(LED_EVERY_MS)))
            # What the detector reads into this LED (detector.py "LEDS").
            if role == "power":
                roles[role] = "power"
            elif led["down_when_off"]:
                roles[role] = "wan"
            else:
                roles[role] = "evidence"
        self.detector = Detector(cfg.get("debounce.down"), cfg.get("debounce.up"),
                                 cfg.get("degraded_loss_pct"), led_roles=roles or None)
        p = cfg.get("probe")
        self.targets = {"anchors": p["anchors"]}
        if p["dns"]:
            self.targets["dns"] = p["dns"]["server"]
            self.targets["dns_name"] = p["dns"]["name"]
        for problem in probe.check_targets(dict(self.targets, gateway=p["gateway"])):
            self.record({"k": "error", "key": "probe", "msg": problem})
            self.targets = {"anchors": []}
            break

    def _queue_again(self, rec):
        # After a collection, one more try; then the reserve: the record encoded into its
        # free end and queued there (the queue lets it go once it is on flash), no block
        # needed at all. Several records fit (two state records came at one onset before
        # a flush: the second was lost while the reserve held one). The record that says
        # what happened (KEEP, a state above all) may fill it; a probe result, an LED
        # change or an error only its first half: an outage's onset writes several of
        # those first, and in the soak they took the reserve and the state record after
        # them was lost (9 onsets in 45 minutes).
        # Returns None once queued, else why not (the console's `record lost` line).
        try:
            self.outbox.queue(rec)
            return None
        except MemoryError:
            pass
        r = self._reserve
        used = self._res_used
        end = len(r) if rec.get("k") in KEEP else len(r) // 2
        if used >= end:
            return "(the reserve is full)" if rec.get("k") in KEEP else "(not worth the rest of the reserve)"
        try:
            self._res_used = used + self.outbox.queue(rec, memoryview(r)[used:end])
        except (MemoryError, ValueError) as e:  # (ValueError: larger than what is left)
            return "(in the reserve: %s)" % e
        return None

    def _after_oom(self):
        # Each heartbeat: records lost since the last time said in an error record (the
        # ledger shows the hole), once the record finds room.
        if self.lost > self._lost_said:
            n = self.lost - self._lost_said
            lost = self.lost
            self.record({"k": "error", "key": "memory",
                         "msg": "%d record(s) lost: no memory to queue them" % n})
            if self.lost == lost:
                self._lost_said = lost
            else:
                self.lost = lost  # the note itself found no room: said at the next one

    def _led(self, role, tr, log, tick):
        self.record({"k": "led", "ch": role, "st": tr[0], "at": tr[1]})
        log.wrote(tr[0], tick)

    def _states(self, records):
        for rec in records:
            self.record(rec)
            self.line = rec["s"]

    def _link_changed(self, up):
        # Our own Wi-Fi: evidence, never an ISP fault (docs/protocol.md, kind "link");
        # with the power LED dark it confirms the router is off (detector.py).
        t = self.clock.now()
        self.record({"k": "link", "up": up})
        if self.detector is not None:  # safe mode has none
            self._states(self.detector.link(t, up))

    # -- MQTT callbacks -------------------------------------------------------------

    def _on_message(self, topic, payload):
        if topic != self.t_ack:
            return
        try:
            ack = json.loads(payload)
            seq = ack["seq"]
            ob = ack.get("ob")
        except (ValueError, KeyError, TypeError, AttributeError):
            return
        if not isinstance(seq, int) or not (ob is None or isinstance(ob, str)):
            return
        before = self.outbox.acked_to()
        why = self.outbox.take_ack(seq, ob)  # persisted by the flusher's steps
        if why:
            # Not ours to take (another outbox, or seqs we never wrote): say so once.
            print("ack", seq, "ignored:", why)
        elif seq > before:
            self.ack_ev.set()
            self.flush_ev.set()

    async def _on_connect(self, _session_present):
        print("mqtt: connected;", self.outbox.depth, "record(s) to send")
        await self.mq.publish(self.t_status, b"online", 1, True, 10000)
        self.ack_ev.set()  # wake the sender: drain the outbox after every reconnect

    # -- tasks --------------------------------------------------------------------

    def stamp(self, name):
        self.alive[name] = time.ticks_ms()

    async def sampler(self):
        # Samples at ticks_ms() deadlines (led.next_due), stamped with ticks_ms(): a
        # small int at any uptime; clock.at() turns a transition's ticks into our ms.
        global _next_due
        from led import next_due
        _next_due = next_due    # (an import in _turn would allocate every turn)
        self._due = time.ticks_ms()
        self.sampling = True
        while True:
            self.stamp("sampler")
            try:
                self._turn()
                if self.flush_due:
                    self.flush_due = False
                    self.work(self._turn)   # right after this turn's samples (flusher)
            except MemoryError:
                # (a held `led` record: taken up at the next turn; a transition: _transition)
                # Not the task's restart, which waits 100 ms: the next turn is on time.
                self.mem_errors += 1
                if self.oom_by[_SAMPLER] < 255:
                    self.oom_by[_SAMPLER] += 1
            await asyncio.sleep_ms(max(0, time.ticks_diff(self._due, time.ticks_ms())))

    def _turn(self):
        # One LED sample turn; the next is due SAMPLE_MS later (led.next_due).
        now = time.ticks_ms()
        prev = self._turn_at
        ob = self.outbox
        w = ob.writes + ob.commits
        if prev is not None:
            g = time.ticks_diff(now, prev)
            if g > self.gap_max:
                self.gap_max = g    # the loop's longest stall, as the LEDs saw it
            if g > STALL_MS:
                # Said when it happens, with what came between (the console's only
                # clue to a stall's cause: flash work, or collections after
                # MemoryErrors).
                print("loop stall %d ms: %d flash write(s)/commit(s), %d MemoryError(s)" % (
                    g, w - self._turn_w, self.mem_errors - self._turn_m))
        self._turn_at = now
        self._turn_w = w
        self._turn_m = self.mem_errors
        self._due = _next_due(self._due, now, SAMPLE_MS)
        for ch, role, log in self.leds:
            ch.sample(now)
            held = log.due(now)
            if held is not None:
                self._led(role, held, log, now)
        # Transitions in order; one a MemoryError cut short is taken up again at the
        # next turn, from where it stopped, before any later one (_transition).
        r = self._tr
        if r[0] is not None and not self._transition(r[0], r[1], r[2], r[3], r[4], r[5], now):
            return
        for ch, role, log in self.leds:
            tr = ch.transition()
            while tr is not None:
                if not self._transition(ch, role, log, tr, 0, 0, now):
                    return
                tr = ch.transition()

    def _transition(self, ch, role, log, tr, at, stage, now):
        # An LED transition in three stages: its ms on our clock, its `led` record(s),
        # the detector. False when a MemoryError stopped it (a heap full for a moment
        # at an onset): kept in self._tr (made at boot: nothing to allocate then) and
        # taken up at the next turn from the stage it reached, so no transition is
        # lost nor any stage done twice (an `led` record the error cut short is lost,
        # counted). The detector's stage is not taken up again: a MemoryError inside
        # it may leave its state half changed; that is said on the console. (Escaping
        # the sampler, such an error cost the transition and restarted the task 100 ms
        # later: a 111 ms gap in the soak.)
        st = tr[0]
        try:
            if stage == 0:
                at = self.clock.at(tr[1])
                stage = 1
            if stage == 1:
                stage = 2
                if log.offer(st, at, now):
                    held = log.take()
                    if held is not None:
                        self._led(role, held, log, now)
                    self._led(role, (st, at), log, now)
            stage = 3
            self._states(self.detector.led(at, role, st))
        except MemoryError:
            self.mem_errors += 1
            r = self._tr
            if stage == 3:
                r[0] = None
                print("led %s %s: out of memory in the detector (its records may be cut short)" % (role, st))
                return True
            if stage == 2:
                self.lost += 1  # (said in the ledger at the next heartbeat)
                print("record lost: out of memory: led (its transition goes on)")
            r[0] = ch
            r[1] = role
            r[2] = log
            r[3] = tr
            r[4] = at
            r[5] = stage
            return False
        self._tr[0] = None
        return True

    async def prober(self):
        p = self.cfg.get("probe")
        interval = int(p["interval_s"] * 1000)
        while True:
            self.stamp("prober")
            start = time.ticks_ms()
            if self.net.up() and self.targets["anchors"]:
                targets = self.targets
                gw = p["gateway"] or self.net.gateway()
                if gw and gw != "0.0.0.0":
                    targets = dict(targets, gateway=gw)
                t = self.clock.now()
                wait = p["timeout_ms"]
                if self.detector.state in OPEN_WAIT:
                    # An outage is open: the question is only whether anything answers;
                    # a short wait leaves time for watches, which date its end.
                    wait = min(wait, max(500, 4 * self._rtt_ms))
                try:
                    r = await probe.probe_round(targets, wait)
                except (OSError, ValueError) as e:
                    self.record({"k": "error", "key": "probe", "msg": str(e)})
                    r = None
                except MemoryError:
                    # A fragmented heap had no block for a reply: this round is lost,
                    # not the prober (the watchdog would reset the board for it).
                    gc.collect()
                    self.mem_errors += 1
                    self.record({"k": "error", "key": "probe", "msg": "out of memory: round skipped"})
                    r = None
                if r is not None:
                    self._probe_changes(r["results"])
                    self._rtt(r["results"], r["dns_tries"])
                    self.lat.add(r["results"], r["dns_tries"])
                    dns = r["results"].get("dns:" + targets.get("dns", ""))
                    self._states(self.detector.round(t, r["gateway_ok"], r["anchors_ok"],
                                                     r["anchors_total"], r["dns_ok"],
                                                     r["loss_pct"], r["dns_tries"],
                                                     (dns and dns.get("rtt")) or 0))
                    await self._watches(start, interval, p["watch_ms"], p["timeout_ms"])
            # Our own Wi-Fi down: no round at all (blind, not an ISP outage).
            left = interval - time.ticks_diff(time.ticks_ms(), start)
            await asyncio.sleep_ms(max(50, left))

    def _rtt(self, results, dns_tries):
        # The slowest answer of the round, smoothed: what a watch waits for. Not a
        # query sent again (dns_tries > 1): its rtt counts from the first send, 250 ms
        # a try, and one such answer on a lossy line made every watch wait the round's
        # whole timeout, so none fitted between rounds for the next dozen rounds.
        worst = 0
        for res in results.values():
            if res["kind"] == "dns" and dns_tries > 1:
                continue
            if res["ok"] and res.get("rtt") and res["rtt"] > worst:
                worst = res["rtt"]
        if worst:
            self._rtt_ms = worst if worst > self._rtt_ms else (self._rtt_ms * 7 + worst) // 8

    async def _watches(self, start, interval, every, timeout_ms):
        # Between rounds, every `every` ms from the round's start: one anchor (in turn)
        # and one DNS query, one try each, waiting 4 round trips (at least 250 ms, at
        # most the round's timeout). They only sharpen the detector's times, confirm an
        # outage early and feed the fast degraded CUSUM (detector.py STREAKS, FAST
        # DEGRADED): no record of their own. A round that waited out its timeout for a
        # lost probe took the first slots: their anchors go with the next watch (at
        # most every anchor once), so a lossy line is probed as often as a clean one
        # (never more), which is what calls `degraded` within 15 s at 80 % loss.
        if not every:
            return
        wait = min(max(250, 4 * self._rtt_ms), timeout_ms)
        anchors = self.targets["anchors"]
        slot = every
        while True:
            self.stamp("prober")
            now = time.ticks_diff(time.ticks_ms(), start)
            k = 1
            while slot + every <= now:
                slot += every   # a slot the round took: its anchor goes with this watch
                k += 1
            if slot < now:
                slot = now      # a slow round took the slot: watch at once
            if slot + wait > interval - 20 or not self.net.up():
                return
            await asyncio.sleep_ms(slot - now)
            k = min(k, len(anchors))
            i = self._watch_i
            tg = dict(self.targets, anchors=[anchors[(i + j + 1) % len(anchors)] for j in range(k)])
            self._watch_i = (i + k) % len(anchors)
            t = self.clock.now()
            try:
                r = await probe.probe_round(tg, wait, 1)
            except (OSError, ValueError):
                return
            except MemoryError:
                gc.collect()        # as in a round: the watch is lost, not the prober
                self.mem_errors += 1
                return
            self.detector.watch(t, r["anchors_ok"], r["dns_ok"], r["anchors_total"])
            self.lat.add(r["results"])
            slot += every

    def _probe_changes(self, results):
        for tg, res in results.items():
            ok = res["ok"]
            if self._last_probe.get(tg) != ok:
                self._last_probe[tg] = ok
                self.record({"k": "probe", "tg": tg, "ok": ok, "rtt": res.get("rtt"),
                             "kind": res.get("kind"), "err": res.get("err")})

    async def sender(self):
        # Each batch is built in one buffer, the app's for good (a fresh 1 KiB block each
        # time is what a fragmented heap fails to find), behind room for its PUBLISH header; the
        # QoS 1 publish sends and resends it from there (mqtt.py publish_at), no copies.
        buf = self._batch
        k = publish_room(self.t_rec)
        while True:
            self.stamp("sender")
            if not self.mq.connected:
                await asyncio.sleep_ms(200)
                continue
            try:
                recs = self.outbox.pending(BATCH_RECS)
            except MemoryError:
                # No block for a segment's bytes in a fragmented heap: the records stay
                # on flash (pending() only reads); try again after a collection.
                recs = None
                gc.collect()
                self.mem_errors += 1
                await asyncio.sleep_ms(500)
                continue
            if not recs:
                await self._wait_ack(1000)
                continue
            last = _seq_of(recs[-1])
            fresh = self._sent_gen == self.mq.connects and last <= self._sent_upto
            if fresh and time.ticks_diff(time.ticks_ms(), self._sent_at) < RESEND_MS:
                await self._wait_ack(500)  # sent; the collector's ack will remove it
                continue
            # Records of an earlier boot go in a batch of their own, with that boot's
            # id and no send time (our clock means nothing in that boot's time base).
            boot = self.outbox.pending_boot
            t = self.clock.now() if boot == self.boot else None
            await self._take_batch(0)  # (the heartbeat's, between two batches)
            try:
                n = batch_into(None, 0, self.id, boot, t, recs, self.outbox.ob)
                b = buf if k + n <= len(buf) else bytearray(k + n)  # a record over 1 KiB
                batch_into(b, k, self.id, boot, t, recs, self.outbox.ob)
                recs = None
                self.ack_ev.clear()
                if await self.mq.publish_at(b, k, n, self.t_rec, False, 15000):
                    self._sent_upto = last
                    self._sent_at = time.ticks_ms()
                    self._sent_gen = self.mq.connects
                b = None
            finally:
                self._batch_busy = False

    async def _take_batch(self, wait_ms):
        # The batch buffer for the caller: True once it is theirs (they set _batch_busy
        # back to False in a `finally`), False after wait_ms (0: no limit). A flag, not an
        # asyncio.Lock under wait_for: a MemoryError between wait_for's inner task taking
        # such a lock and handing it over left it taken for good, the sender waiting on
        # it until the watchdog reset the board (the 56K soak).
        waited = 0
        while self._batch_busy:
            if wait_ms and waited >= wait_ms:
                return False
            await asyncio.sleep_ms(20)
            waited += 20
        self._batch_busy = True  # (no await between the test and this: the loop is ours)
        return True

    def _oom_tasks(self):
        # " oom=sender:3,prober:1": which tasks a MemoryError restarted (console only)
        s = ""
        for i in range(len(TASKS)):
            if self.oom_by[i]:
                s += "%s%s:%d" % ("," if s else " oom=", TASKS[i], self.oom_by[i])
        return s

    async def _wait_ack(self, ms):
        try:
            await asyncio.wait_for_ms(self.ack_ev.wait(), ms)
        except asyncio.TimeoutError:
            pass
        self.ack_ev.clear()

    async def heartbeat(self):
        hb_ms = self.cfg.get("hb_s") * 1000
        while True:
            self.stamp("heartbeat")
            self._after_oom()
            free = gc.mem_free()
            print("heap alloc=%d peak=%d free=%d memerr=%d gap=%d%s" % (
                gc.mem_alloc(), self.heap_peak, free, self.mem_errors, self.gap_max,
                self._oom_tasks()))
            lat = self.lat.take_parts()   # this heartbeat's window, sent or not
            if self.mq.connected:
                await self._send_heartbeat(free, lat)
            lat = None
            _rtc_uptime(self.clock.now())
            await asyncio.sleep_ms(hb_ms)

    async def _send_heartbeat(self, free, lat):
        # The message in small pieces, put one by one into the sender's batch buffer
        # while the sender is not using it: no block of the message's size (~400 bytes,
        # and as much again encoded) is needed. Built whole, it was the task a
        # fragmented heap restarted most (75 times in a 45-minute soak at 56K).
        t = self.clock.now()
        parts = ['{"boot":%d,"t":%d,"utc":%s,' % (self.boot, t, _js(self.clock.utc_ms(t))),
                 '"s":"%s","heap":%d,"peak":%d,' % (self.line, free, self.heap_peak),
                 '"q":%d,"rssi":%s,"safe":%s,' % (self.outbox.depth, _js(self.net.rssi()),
                                                   "true" if self.safe else "false"),
                 '"fe":%d%s' % (self.outbox.wear(), self._hb_ob)]
        parts.extend(lat)
        parts.append("}")
        n = parts_into(None, 0, parts)
        if not await self._take_batch(HB_WAIT_MS):
            return False  # the sender is waiting on a slow broker: this one is skipped
        try:
            buf = self._batch if n <= len(self._batch) else bytearray(n)
            parts_into(buf, 0, parts)
            parts = None
            return await self.mq.publish(self.t_hb, memoryview(buf)[:n], 0, False)
        finally:
            self._batch_busy = False

    async def _resolve_name(self, name):
        # A name -> ['a.b.c.d', ...] or None by our own DNS client (probe.resolve, never
        # blocking): at the probed resolver, else at the one the Wi-Fi's DHCP gave.
        dns = self.cfg.get("probe.dns")
        srv = dns["server"] if dns else self.net.dns()
        if not srv or not self.net.up():
            return None
        ip, port = probe.split_target(srv, 53)
        return await probe.resolve(ip, name, 2000, port)

    async def timekeeper(self):
        ntp = self.cfg.get("probe.ntp")
        dns = self.cfg.get("probe.dns")
        while True:
            self.stamp("clock")
            wait = 10000
            if ntp and self.net.up():
                server = ntp
                if not _is_ip(ntp) and dns:
                    addrs = await probe.resolve(dns["server"], ntp, 2000)
                    server = addrs[0] if addrs else None
                if server:
                    got = await sntp(self.clock, server, 2000)
                    if got:
                        self.record({"k": "clock", "rtt": got[1]})
                        wait = NTP_EVERY_MS
            slept = 0
            while slept < wait:  # stamp while waiting: an hour is longer than any budget
                await asyncio.sleep_ms(1000)
                slept += 1000
                self.stamp("clock")

    async def stats(self):
        while True:
            for _ in range(STATS_MS // 1000):
                self.stamp("stats")
                await asyncio.sleep_ms(1000)
            gc.collect()
            self.record({"k": "stats", "heap_free": gc.mem_free(), "q": self.outbox.depth,
                         "wifi_changes": self.net.changes, "mqtt_connects": self.mq.connects})

    async def watchdog(self, tasks):
        try:
            wdt = machine.WDT(timeout=self.cfg.get("wdt_s") * 1000)
        except (AttributeError, ValueError, OSError):
            wdt = None
        while True:
            a = gc.mem_alloc()  # a small int: no allocation
            if a > self.heap_peak:
                self.heap_peak = a
            now = time.ticks_ms()
            healthy = True
            for name, budget in self.budget.items():
                last = self.alive.get(name)
                if last is None or time.ticks_diff(now, last) > budget:
                    healthy = False
            for task in tasks:
                if task.done():
                    healthy = False
            if healthy and wdt:
                wdt.feed()
            if self._crash_log and self.clock.now() > CRASH_WINDOW_MS:
                write_crashes([])  # a long clean run ends a crash loop
                self._crash_log = False
            await asyncio.sleep_ms(1000)

    async def main(self):
        interval = int(self.cfg.get("probe.interval_s") * 1000)
        self.budget = {"sender": 30000, "heartbeat": self.cfg.get("hb_s") * 1000 + 15000,
                       "net": 30000, "clock": 30000, "stats": 10000}
        run = self._outlive_oom
        tasks = [asyncio.create_task(run(self.mq.run_forever, 0)),
                 asyncio.create_task(run(lambda: self.net.keep(lambda: self.stamp("net")), 1)),
                 asyncio.create_task(run(self.sender, 2)),
                 asyncio.create_task(run(self.flusher, 3)),
                 asyncio.create_task(run(self.heartbeat, 4)),
                 asyncio.create_task(run(self.timekeeper, 5)),
                 asyncio.create_task(run(self.stats, 6))]
        if not self.safe:
            self.budget["sampler"] = 5000
            self.budget["prober"] = interval + self.cfg.get("probe.timeout_ms") + 15000
            tasks.append(asyncio.create_task(run(self.sampler, 7)))
            tasks.append(asyncio.create_task(run(self.prober, 8)))
        await self.mq.subscribe(self.t_ack, 1)  # renewed by the client on every connect
        gc.collect()
        # A collection after every 4 KB allocated, not only when the heap is full: short-
        # lived objects are freed before long-lived ones are placed between them, so a
        # 4 KiB flash buffer still finds a free block (the soak on a 58K heap: 237
        # MemoryErrors in 5 min without, none with).
        gc.threshold(4096)
        await run(lambda: self.watchdog(tasks), 9)

    async def _outlive_oom(self, start, i):
        # Run the task start() makes; after a MemoryError (counted, the heap collected)
        # start it again rather than let it end: a task that ended stops the watchdog's
        # feeding and the board resets 20 s later, its RAM queue lost (the soak on a
        # 58K heap lost its heartbeat so, at a heap nearly full of a leak since fixed).
        # A task that cannot get going again still misses its stamps: the watchdog
        # stays the last resort.
        while True:
            try:
                return await start()
            except MemoryError:
                gc.collect()
                self.mem_errors += 1
                if self.oom_by[i] < 255:
                    self.oom_by[i] += 1
                await asyncio.sleep_ms(100)


def _tls(cfg):
    # The MQTT client's tls argument. Fails closed: without a usable CA the client never
    # connects (the reason is its connect error), so the password never goes to a
    # broker nobody verified.
    if not cfg.get("broker.tls"):
        return None
    der = cfg.get("broker.ca")
    if der is None:
        return "TLS is on but broker.ca is missing or invalid in config.json: not connecting"
    cfg.values["broker"]["ca"] = None  # mbedTLS keeps its own parsed copy
    try:
        return tls_context(der)
    except (ValueError, OSError) as e:
        return "TLS: broker.ca is not a certificate mbedTLS accepts (%s): not connecting" % e


def _put(buf, i, b):
    n = len(b)
    if buf is not None:
        buf[i:i + n] = b
    return i + n


def batch_into(buf, i, agent, boot, t, recs, ob=""):
    # A protocol v1 batch around the outbox's record JSON (no re-encoding), written at
    # buf[i:] (buf None: nothing written); returns where it ends. t: our ms at send time,
    # or None for records of an earlier boot; ob: the outbox id ("" = none).
    i = _put(buf, i, b'{"v":1,"agent":"')
    i = _put(buf, i, agent.encode())
    if ob:
        i = _put(buf, i, b'","ob":"')
        i = _put(buf, i, ob.encode())
    i = _put(buf, i, b'","boot":')
    i = _put(buf, i, str(boot).encode())
    if t is not None:
        i = _put(buf, i, b',"t":')
        i = _put(buf, i, str(t).encode())
    i = _put(buf, i, b',"recs":[')
    for j in range(len(recs)):
        if j:
            i = _put(buf, i, b",")
        i = _put(buf, i, recs[j])
    return _put(buf, i, b"]}")


def parts_into(buf, i, parts):
    # Strings put at buf[i:] one after another as their UTF-8 bytes, no encoded copy
    # (a MicroPython str lends its bytes to a memoryview); buf None: only measured.
    for s in parts:
        i = _put(buf, i, memoryview(s))  # type: ignore[arg-type]  # MicroPython: a str's bytes
    return i


def encode_batch(agent, boot, t, recs, ob=""):
    # The same batch as bytes of its own (tests/mpy/encode_vectors.py).
    buf = bytearray(batch_into(None, 0, agent, boot, t, recs, ob))
    batch_into(buf, 0, agent, boot, t, recs, ob)
    return bytes(buf)


def _seq_of(frame):
    # The outbox keeps `seq` first: b'{"seq":123,...'
    i = 7
    n = 0
    while 48 <= frame[i] <= 57:
        n = n * 10 + frame[i] - 48
        i += 1
    return n


def _js(v):
    return "null" if v is None else str(v)


def _is_ip(s):
    parts = s.split(".")
    return len(parts) == 4 and all(p.isdigit() for p in parts)


def run(cfg, *, safe=False, notes=()):
    app = App(cfg, safe=safe, notes=notes)
    try:
        asyncio.run(app.main())
    finally:
        # A crash: what the last FLUSH_MS queued goes to flash first. The event loop's
        # tasks (and all they hold) are let go before, so this flash work finds room
        # and a MemoryError in it cannot take the place of the crash's own exception.
        asyncio.new_event_loop()
        gc.collect()
        try:
            app.flush()
        except MemoryError:
            print("crash: the queued records could not be written: out of memory")
