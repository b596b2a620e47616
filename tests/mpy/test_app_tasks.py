# app.App on MicroPython: the watches between rounds (a slow round's slots go with the next
# watch); its tasks: a MemoryError at the top of a task starts it again
# (counted) instead of ending it, which would stop the watchdog's feeding; a record that
# finds no block takes the reserve kept for it, and one lost anyway is said in the ledger;
# the outbox's flash work with an LED sample turn between its steps (App.work); an LED
# transition a MemoryError cuts short taken up at the next turn (App._transition).
import asyncio
import binascii
import json
import os
import sys

import app
import flash
import led
import outbox
import mpyunit
from mpyunit import eq, raises


class _Counts:
    # what App._outlive_oom uses of the App
    def __init__(self):
        self.mem_errors = 0
        self.oom_by = bytearray(len(app.TASKS))


def test_a_memory_error_starts_the_task_again_and_counts():
    box = _Counts()
    starts = []

    async def task():
        starts.append(len(starts))
        if len(starts) < 3:
            bytearray(1 << 20)  # a real MemoryError: more than the heap
        return "ended"

    eq(asyncio.run(app.App._outlive_oom(box, task, app.TASKS.index("prober"))), "ended")
    eq(starts, [0, 1, 2])
    eq(box.mem_errors, 2)
    # counted against its task, and named so on the console's heap line
    eq(box.oom_by[app.TASKS.index("prober")], 2)
    eq(sum(box.oom_by), 2)
    eq(app.App._oom_tasks(box), " oom=prober:2")


def test_the_heap_line_names_each_task_a_memory_error_restarted():
    box = _Counts()
    eq(app.App._oom_tasks(box), "")  # none: the line as before
    box.oom_by[app.TASKS.index("sender")] = 255  # saturates there
    box.oom_by[app.TASKS.index("mqtt")] = 1
    eq(app.App._oom_tasks(box), " oom=mqtt:1,sender:255")


def test_other_errors_still_end_the_task():
    box = _Counts()

    async def task():
        raise ValueError("a bug")

    raises(ValueError, lambda: asyncio.run(app.App._outlive_oom(box, task, 0)))
    eq(box.mem_errors, 0)


def test_a_cancel_ends_it():
    box = _Counts()

    async def task():
        await asyncio.sleep_ms(10000)

    async def main():
        t = asyncio.create_task(app.App._outlive_oom(box, task, 0))
        await asyncio.sleep_ms(20)
        t.cancel()
        try:
            await t
        except asyncio.CancelledError:
            return "cancelled"
        return "not cancelled"

    eq(asyncio.run(main()), "cancelled")


class _Clock:
    def now(self):
        return 1000

    def utc_ms(self, t):
        return None


class _Mq:
    # a connected client whose first publish finds no block
    connected = True
    connects = 1

    def __init__(self):
        self.bufs = []

    async def publish_at(self, buf, k, n, topic, retain, timeout_ms):
        self.bufs.append(buf)
        if len(self.bufs) == 1:
            raise MemoryError("memory allocation failed, allocating 48 bytes")
        await asyncio.sleep_ms(10000)
        return True


class _Pending:
    ob = ""
    pending_boot = 1

    def pending(self, n):
        return [b'{"seq":7,"k":"state","s":"up"}']


class _Sender(app.App):
    def __init__(self):
        self.mem_errors = 0
        self.oom_by = bytearray(len(app.TASKS))
        self._batch = bytearray(app.BATCH_BUF)
        self._batch_busy = False
        self.mq = _Mq()
        self.outbox = _Pending()
        self.clock = _Clock()
        self.id = "a1"
        self.boot = 1
        self.t_rec = "ww/a1/rec"
        self._sent_gen = -1
        self._sent_upto = 0
        self.ack_ev = asyncio.Event()

    def stamp(self, name):
        pass


def test_a_sender_restarted_after_a_memory_error_needs_no_new_buffer():
    # Its 1 KiB batch buffer is the app's, made once: a restart in a fragmented heap
    # (no 1 KiB block left) must not fail on it again and again (the soak's storm).
    a = _Sender()

    async def main():
        t = asyncio.create_task(a._outlive_oom(a.sender, app.TASKS.index("sender")))
        await asyncio.sleep_ms(300)
        t.cancel()

    asyncio.run(main())
    eq(len(a.mq.bufs), 2)
    eq(a.mq.bufs[0] is a._batch and a.mq.bufs[1] is a._batch, True)
    eq(a.oom_by[app.TASKS.index("sender")], 1)


class _HbMq:
    # a connected client that keeps what each QoS 0 heartbeat published
    connected = True

    def __init__(self):
        self.sent = []
        self.wire = bytearray(1024)  # made now: a full heap has no block for a copy

    async def publish(self, topic, payload, qos=1, retain=False, timeout_ms=0):
        n = len(payload)
        self.wire[:n] = payload
        self.sent.append((topic, n, qos, type(payload) is memoryview))
        return True


class _HbOutbox:
    depth = 3

    def wear(self):
        return 12


class _HbNet:
    def rssi(self):
        return -61


class _Beat(app.App):
    # what the heartbeat's message needs of an App
    def __init__(self):
        self.mq = _HbMq()
        self.clock = _Clock()
        self.boot = 4
        self.line = "isp_down"
        self.heap_peak = 40000
        self.safe = False
        self.outbox = _HbOutbox()
        self.net = _HbNet()
        self._hb_ob = ',"ob":"0badcafe"'
        self.t_hb = "ww/a1/hb"
        self._batch = bytearray(app.BATCH_BUF)
        self._batch_busy = False
        self.lat = app.probe.Summary()
        for tg in ("gw", "192.0.2.1:443", "198.51.100.7:443", "203.0.113.9:443",
                   "192.0.2.77:80", "dns:203.0.113.53"):
            self.lat.add({tg: {"ok": True, "rtt": 20, "kind": "dns" if "dns" in tg else "tcp"}})


def _heartbeat_json(b):
    import json
    eq(len(b.mq.sent), 1)
    topic, n, qos, view = b.mq.sent[0]
    eq((topic, qos, view), ("ww/a1/hb", 0, True))  # from the buffer, not a copy
    return json.loads(b.mq.wire[:n])


def test_a_heartbeat_is_built_in_the_senders_buffer_and_says_everything():
    b = _Beat()
    eq(asyncio.run(b._send_heartbeat(21000, b.lat.take_parts())), True)
    hb = _heartbeat_json(b)
    eq(hb, {"boot": 4, "t": 1000, "utc": None, "s": "isp_down", "heap": 21000,
            "peak": 40000, "q": 3, "rssi": -61, "safe": False, "fe": 12, "ob": "0badcafe",
            "lat": {"gw": [1, 0, 20, 20, 20], "192.0.2.1:443": [1, 0, 20, 20, 20],
                    "198.51.100.7:443": [1, 0, 20, 20, 20],
                    "203.0.113.9:443": [1, 0, 20, 20, 20], "192.0.2.77:80": [1, 0, 20, 20, 20],
                    "dns:203.0.113.53": [1, 0, 20, 20, 20]}})


def test_a_heartbeat_waits_for_a_batch_under_way_and_is_skipped_after_a_while():
    b = _Beat()
    order = []

    async def sender(ms):
        await b._take_batch(0)
        try:
            order.append("batch")
            await asyncio.sleep_ms(ms)
            order.append("acked")
        finally:
            b._batch_busy = False

    async def main(ms):
        t = asyncio.create_task(sender(ms))
        await asyncio.sleep_ms(0)
        sent = await b._send_heartbeat(21000, [])
        order.append("hb sent" if sent else "hb skipped")
        await t

    asyncio.run(main(50))
    eq(order, ["batch", "acked", "hb sent"])
    eq(len(b.mq.sent), 1)
    wait = app.HB_WAIT_MS
    app.HB_WAIT_MS = 100
    try:
        order[:] = []
        asyncio.run(main(400))
    finally:
        app.HB_WAIT_MS = wait
    eq(order, ["batch", "hb skipped", "acked"])
    eq(len(b.mq.sent), 1)  # nothing more: the broker is slow, the next one goes
    eq(b._batch_busy, False)


def test_a_heartbeat_that_runs_out_of_memory_leaves_the_buffer_to_the_sender():
    # (an asyncio.Lock taken under wait_for stayed taken after a MemoryError in the soak:
    # the sender waited on it until the watchdog reset the board)
    b = _Beat()

    async def no_block(*a):
        raise MemoryError("memory allocation failed, allocating 64 bytes")

    b.mq.publish = no_block
    raises(MemoryError, lambda: asyncio.run(b._send_heartbeat(21000, [])))
    eq(b._batch_busy, False)
    eq(asyncio.run(b._take_batch(100)), True)


def test_a_heartbeat_goes_out_from_a_heap_with_no_block_of_its_size():
    # The soak's heap: free memory in holes of 224 bytes at most (192 on a 32-bit
    # port). The message (~330 bytes) was a string of its size and its encoded copy:
    # a MemoryError, the task restarted, no heartbeat. Now it goes into the buffer in
    # pieces (what it still needs whole: its coroutine's frame, ~200 bytes on 64 bits).
    import gc
    b = _Beat()
    lat = b.lat.take_parts()
    gc.collect()
    keep = drop = None
    try:
        while True:  # alike, so first fit puts them side by side in turn
            drop = (drop, bytearray(160))  # freed below: the holes
            keep = (keep, bytearray(160))  # what stays between them
    except MemoryError:
        pass
    try:
        while True:
            keep = (keep, None)  # the smaller holes left filled too
    except MemoryError:
        pass
    drop = None
    gc.collect()
    try:
        while True:  # and any hole still of the message's size (drop items side by side)
            node = [keep, None]
            node[1] = bytearray(300)
            keep = node
    except MemoryError:
        node = None
    try:
        bytearray(300)
        big = True
    except MemoryError:
        big = False
    try:
        sent = asyncio.run(b._send_heartbeat(21000, lat))
    except MemoryError:
        sent = "MemoryError"
    keep = None
    gc.collect()
    eq(big, False)  # (the heap is as the soak's)
    eq(sent, True)
    eq(_heartbeat_json(b)["lat"]["gw"], [1, 0, 20, 20, 20])


class _TightOutbox:
    # A heap with no block for a record until `room()` says so; a record given a buffer
    # is encoded into it as the real outbox does (outbox._body_into: no block needed).
    def __init__(self, room):
        self.room = room
        self.q = []
        self.tries = 0

    def queue(self, rec, into=None):
        self.tries += 1
        if into is not None:
            n = len(outbox._body_into(rec, into))
            self.q.append(rec)
            return n
        if not self.room():
            raise MemoryError("memory allocation failed, allocating 280 bytes")
        self.q.append(rec)
        return 60

    def queued(self):
        return len(self.q)

    def queued_bytes(self):
        return 60 * len(self.q)


class _App(app.App):
    # record() and the heartbeat's _after_oom() with nothing else of an App.
    def __init__(self, room):
        self.clock = _Clock()
        self.outbox = _TightOutbox(lambda: room(self))
        self.mem_errors = 0
        self.lost = 0
        self._lost_said = 0
        self._reserve = bytearray(app.RESERVE)
        self._res_used = 0
        self._say = []
        self.flush_ev = asyncio.Event()
        self.sampling = False
        self.flush_due = False

    def _announce(self):
        pass


def _state(s):
    return {"k": "state", "s": s, "why": "isp: gateway up, anchors down (3/3 lost)"}


def test_a_record_with_no_block_is_queued_in_the_reserve():
    a = _App(lambda a: False)  # no block at all
    a.record(_state("isp_down"))
    eq([r["s"] for r in a.outbox.q], ["isp_down"])
    eq((a.outbox.tries, a.mem_errors, a.lost), (3, 1, 0))
    assert 0 < a._res_used < app.RESERVE // 2, a._res_used
    # what the reserve holds is the record as the outbox would store it
    eq(bytes(a._reserve[:a._res_used]), bytes(outbox._body(a.outbox.q[0])))


def test_an_onsets_records_leave_room_in_the_reserve_for_two_state_records():
    # An outage's onset in a full heap: probe results, an LED change and an error first,
    # then two state records before a flush (the soak lost the second while the reserve
    # held one record). The first kinds take at most the reserve's first half.
    a = _App(lambda a: False)
    for i in range(4):
        a.record({"k": "probe", "tg": "anchors", "ok": False, "n": 3, "lost": 3, "rtt": None})
    a.record({"k": "led", "ch": "internet", "st": "off", "at": 123456})
    a.record({"k": "error", "key": "probe", "msg": "out of memory: round skipped"})
    half = a._res_used
    assert half <= app.RESERVE // 2, half
    a.record(_state("isp_down"))
    a.record(_state("local_down"))
    kinds = [r["k"] for r in a.outbox.q]
    eq(kinds[-2:], ["state", "state"])
    assert "probe" in kinds, kinds  # (some of the first ones fit its first half)
    eq(a.lost, 6 - (len(kinds) - 2))
    assert a._res_used > half


def test_a_full_reserve_loses_the_record_and_the_next_heartbeat_says_so():
    room = [False]
    a = _App(lambda a: room[0])
    n = 0
    while a.lost == 0 and n < 50:
        a.record(_state("isp_down"))
        n += 1
    assert 3 <= n < 50, n  # 512 bytes: several state records, then one lost
    eq(len(a.outbox.q), n - 1)
    a._after_oom()  # still no room: the note is lost too, and not counted as a record
    eq((a.lost, a._lost_said, len(a.outbox.q)), (1, 0, n - 1))
    room[0] = True
    a._after_oom()
    eq([(r["k"], r.get("key"), r.get("msg")) for r in a.outbox.q[n - 1:]],
       [("error", "memory", "1 record(s) lost: no memory to queue them")])
    a._after_oom()  # said once
    eq(len(a.outbox.q), n)


def test_a_record_lost_anyway_is_said_in_an_error_record_once_there_is_room():
    full = [True]
    a = _App(lambda a: not full[0])
    a._res_used = app.RESERVE  # the reserve full already
    a.record(_state("local_down"))
    a.record({"k": "probe", "ok": False})
    eq((a.outbox.q, a.lost, a.mem_errors), ([], 2, 2))
    full[0] = False
    a._after_oom()
    eq([(r["k"], r.get("key"), r.get("msg")) for r in a.outbox.q],
       [("error", "memory", "2 record(s) lost: no memory to queue them")])
    a._after_oom()  # said once
    eq(len(a.outbox.q), 1)



# ---------------------------------------------------------------- watches between rounds

class _Up:
    def up(self):
        return True


class _Seen:
    # what App._watches tells the detector: (anchors answered, anchors probed) a watch
    def __init__(self):
        self.watches = []

    def watch(self, t, anchors_ok, dns_ok, anchors_total=1):
        self.watches.append((anchors_ok, anchors_total))


class _Watcher(app.App):
    # _watches() with real probes: three TCP anchors listening on loopback
    def __init__(self, anchors):
        self.targets = {"anchors": anchors}
        self._rtt_ms = 0
        self._watch_i = -1
        self.net = _Up()
        self.clock = _Clock()
        self.detector = _Seen()
        self.lat = app.probe.Summary()
        self.mem_errors = 0

    def stamp(self, name):
        pass


_LAT = []   # the heartbeat summary the last _watch_after() left


def _watch_after(round_ms):
    # The watches after a round that took round_ms of a 2 s interval (500 ms apart):
    # the anchors each one probed, and what the detector was told.
    import socket
    import time
    servers = []
    anchors = []
    port = 20000 + time.ticks_ms() % 20000
    while len(servers) < 3:   # no getsockname() here: the next free port
        port += 1
        s = socket.socket()
        try:
            s.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
        except OSError:
            s.close()
            continue
        s.listen(8)
        servers.append(s)
        anchors.append("127.0.0.1:%d" % port)
    w = _Watcher(anchors)
    probed = []
    real = app.probe.probe_round

    async def spy(targets, wait, tries=5):
        probed.append([anchors.index(a) for a in targets["anchors"]])
        return await real(targets, wait, tries)

    app.probe.probe_round = spy
    try:
        start = time.ticks_add(time.ticks_ms(), -round_ms)
        asyncio.run(w._watches(start, 2000, 500, 1500))
    finally:
        app.probe.probe_round = real
        for s in servers:
            s.close()
    _LAT[:] = [w.lat.take()]
    return probed, w.detector.watches


def test_a_fast_round_leaves_three_watches_of_one_anchor_each_in_turn():
    eq(_watch_after(50), ([[0], [1], [2]], [(1, 1), (1, 1), (1, 1)]))


def test_a_round_that_waited_out_its_timeout_sends_the_slots_anchors_with_one_watch():
    # 80 % loss: every round waits 1.5 s for a lost echo. The slots at 0.5 and 1 s were
    # taken: their anchors go with the watch at 1.5 s, so the CUSUM gets as many probes
    # as on a clean line (the lab's loss-80 was called after 24 s with one a round).
    eq(_watch_after(1500), ([[0, 1, 2]], [(3, 3)]))


def test_a_round_of_one_second_owes_one_slot():
    eq(_watch_after(1000), ([[0, 1], [2]], [(2, 2), (1, 1)]))


def test_the_watches_probes_go_into_the_heartbeats_summary():
    import json
    _watch_after(50)
    lat = json.loads("{" + _LAT[0][1:] + "}")["lat"]
    eq(sorted((n, lost) for n, lost, lo, med, hi in lat.values()), [(1, 0), (1, 0), (1, 0)])
    eq(all(0 <= lo <= med <= hi for n, lost, lo, med, hi in lat.values()), True, lat)


# ---------------------------------------------------------------- flash work and LED turns

class _Ticks:
    # app.time with a clock that moves only when the test moves it (no wall clock)
    def __init__(self):
        self.now = 1000
        self.slept = 0

    def ticks_ms(self):
        return self.now

    def ticks_diff(self, a, b):
        return a - b

    def ticks_add(self, a, b):
        return a + b

    def sleep_ms(self, ms):
        self.now += ms
        self.slept += ms


class _SteppedOutbox:
    # a job of steps that take the given ms (45: an erase), and one more job queued by
    # the first LED turn inside it
    def __init__(self, clock, jobs):
        self.clock = clock
        self.jobs = jobs
        self.nflushed = 0
        self.last_seq = 0

    def work(self):
        return bool(self.jobs)

    def step(self):
        self.clock.now += self.jobs[0].pop(0)
        if not self.jobs[0]:
            self.jobs.pop(0)
            return True
        return False

    def queued(self):
        return 0


class _Sampler(app.App):
    def __init__(self, clock, jobs):
        self.outbox = _SteppedOutbox(clock, jobs)
        self.clock = clock
        self.turns = []
        self._say = []
        self._due = clock.now + app.SAMPLE_MS
        self.turns.append(clock.now)
        self._reserve = bytearray(app.RESERVE)
        self._res_used = 0

    def _turn(self):
        now = self.clock.now
        self.turns.append(now)
        self._due = now + app.SAMPLE_MS


def _run_work(jobs):
    clock = _Ticks()
    saved = app.time
    app.time = clock
    try:
        a = _Sampler(clock, jobs)
        a.work(a._turn)
    finally:
        app.time = saved
    gaps = [a.turns[i + 1] - a.turns[i] for i in range(len(a.turns) - 1)]
    return a, clock, gaps


def test_a_flush_frees_the_reserve_at_once():
    # Not only at the next heartbeat: an onset's records come within a second, and
    # each that finds no block needs the reserve there.
    clock = _Ticks()
    a = _Sampler(clock, [[1, 2]])
    a._res_used = 300
    a.work()
    eq(a._res_used, 0)


def test_an_led_turn_comes_between_two_steps_that_could_erase():
    # a new segment's flush (create 1 ms, write 45: an erase, close 2), an ack (meta:
    # 1, 1, 45 (the rename compacts), a segment deleted 1), a compaction's steps
    a, clock, gaps = _run_work([[1, 45, 2], [1, 1, 45, 1], [45, 1, 45, 45, 1, 2, 45]])
    eq(a.outbox.jobs, [])
    assert max(gaps) <= 45 + app.STEP_SLACK_MS, gaps
    # and no turn is taken early: the LEDs are sampled on their period or later
    assert min(gaps) >= app.SAMPLE_MS, gaps


def test_quick_steps_run_on_without_a_turn():
    # steps of 1 ms: a turn only once STEP_SLACK_MS have passed (then on its due time)
    a, clock, gaps = _run_work([[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]])
    eq(a.outbox.jobs, [])
    assert len(a.turns) <= 3, a.turns
    assert max(gaps) <= app.SAMPLE_MS, gaps


class _Ch:
    # an LED channel whose transitions are given by the test
    def __init__(self, trs):
        self.trs = list(trs)

    def sample(self, now):
        pass

    def transition(self):
        return self.trs.pop(0) if self.trs else None


class _Det:
    # the detector: what it was told, and MemoryErrors to raise (on entry, or after
    # changing its state: fail = ["entry" | "inside", ...], one per call in turn)
    def __init__(self, fail=()):
        self.seen = []
        self.fail = list(fail)

    def led(self, at, role, st):
        f = self.fail.pop(0) if self.fail else None
        if f == "entry":
            raise MemoryError("memory allocation failed, allocating 16 bytes")
        self.seen.append((role, st, at))
        if f == "inside":
            raise MemoryError("memory allocation failed, allocating 96 bytes")
        return [{"k": "state", "s": "isp_down" if st == "off" else "up", "at": at}]


class _AtClock(_Clock):
    # at() raises as often as asked
    def __init__(self, fail=0):
        self.fail = fail

    def at(self, ticks):
        if self.fail:
            self.fail -= 1
            raise MemoryError("memory allocation failed, allocating 16 bytes")
        return ticks + 5


class _LedApp(_App):
    def __init__(self, trs, det, clock):
        _App.__init__(self, lambda a: True)
        self.clock = clock
        self.detector = det
        self.leds = [(_Ch(trs), "internet", led.LedLog(60000))]
        self.outbox.writes = self.outbox.commits = 0
        self._turn_at = None
        self._due = 0
        self.gap_max = 0
        self._tr = [None] * 6
        self.line = "up"
        self._led_fail = 0

    def _led(self, role, tr, log, tick):
        if self._led_fail:
            self._led_fail -= 1
            raise MemoryError("memory allocation failed, allocating 64 bytes")
        app.App._led(self, role, tr, log, tick)

    def kinds(self):
        return [(r["k"], r.get("st") or r.get("s")) for r in self.outbox.q]


def _turns(a, n):
    app._next_due = led.next_due
    for _ in range(n):
        a._turn()


def test_a_transition_a_memory_error_cut_short_is_taken_up_at_the_next_turn_in_order():
    # no block for its ms on our clock: nothing done, the next turn does it all, and
    # the transition behind it waits its turn (the detector sees them in order)
    a = _LedApp([("off", 100), ("on", 900)], _Det(), _AtClock(fail=1))
    _turns(a, 1)
    eq((a.detector.seen, a.mem_errors), ([], 1))
    _turns(a, 1)
    eq(a.detector.seen, [("internet", "off", 105), ("internet", "on", 905)])
    eq(a.kinds(), [("led", "off"), ("state", "isp_down"), ("led", "on"), ("state", "up")])


def test_a_transition_whose_led_record_found_no_block_still_reaches_the_detector_once():
    a = _LedApp([("off", 100)], _Det(), _AtClock())
    a._led_fail = 1
    _turns(a, 1)
    eq(a.detector.seen, [])
    _turns(a, 2)
    eq(a.detector.seen, [("internet", "off", 105)])  # once, and not its led record twice
    eq(a.kinds(), [("state", "isp_down")])
    eq(a.lost, 1)  # the led record: said in the ledger at the next heartbeat


def test_a_memory_error_inside_the_detector_is_not_done_twice():
    # its state may be half changed: said on the console, the next transitions go on
    a = _LedApp([("off", 100), ("on", 900)], _Det(["inside"]), _AtClock())
    _turns(a, 2)
    eq(a.detector.seen, [("internet", "off", 105), ("internet", "on", 905)])
    eq(a.kinds(), [("led", "off"), ("led", "on"), ("state", "up")])
    eq((a.mem_errors, a._tr[0]), (1, None))


def test_a_detector_that_found_no_block_on_entry_is_not_called_again():
    # (it cannot tell "on entry" from "inside": neither is taken up again)
    a = _LedApp([("off", 100)], _Det(["entry"]), _AtClock())
    _turns(a, 2)
    eq(a.detector.seen, [])
    eq(a.kinds(), [("led", "off")])


def test_an_onsets_burst_is_left_to_the_sampler_not_written_inside_record():
    # Past Q_SOFT queued bytes the sampler writes them at its next turn, a step at a
    # time (work): the outbox's own flush inside queue() (all steps at once) is kept
    # for Q_HARD. The outbox on the virtual flash, as the app makes it.
    img = "/tmp/ww-app-burst-%s.img" % binascii.hexlify(os.urandom(4)).decode()
    dev = flash.mount(img, size=256 * 1024, sync=False, erase_ms=0, page_us=0)
    try:
        a = _App(lambda a: True)
        a.outbox = outbox.Outbox("ob", q_bytes=app.Q_HARD)
        a.outbox.open()
        a.sampling = True
        a.flush_due = False
        n = 0
        while not a.flush_due and n < 20:
            a.record(_state("isp_down"))
            n += 1
        eq(a.outbox.last_seq, 0)  # nothing written inside record()
        eq(a.flush_due, True)
        assert a.outbox.queued_bytes() >= app.Q_SOFT and n >= 4, n
        a.record(_state("up"))  # the burst goes on until the sampler's turn
        eq(a.outbox.last_seq, 0)
        a.work()
        eq((a.outbox.last_seq, a.outbox.queued()), (n + 1, 0))
    finally:
        flash.umount("/flash", dev)
        os.remove(img)


def test_the_agent_keeps_its_settings_and_lets_the_config_module_go():
    # app.settings(): what main.py runs at boot. The parsing code is RAM the board
    # would hold for good; the values and the problems found are what the app needs.
    path = "/tmp/ww_cfg_settings_%s.json" % binascii.hexlify(os.urandom(4)).decode()
    with open(path, "w") as f:
        f.write(json.dumps({"id": "kitchen", "broker": {"host": "192.0.2.5"}, "hb_s": "often"}))
    try:
        s = app.settings(path)
    finally:
        os.remove(path)
    assert "config" not in sys.modules
    eq((s.get("id"), s.get("broker.host"), s.get("hb_s")), ("kitchen", "192.0.2.5", 30))
    eq([k for k, _ in s.problems], ["hb_s"])
    eq(type(s), app.Settings)


mpyunit.main(globals())
