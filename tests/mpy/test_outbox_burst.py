# Flash wear of the agent's records (issue 14) on MicroPython, on the virtual board's
# flash (a littlefs image in /tmp, erases counted per block, untimed): the records of
# one loop turn go to flash as one append (Outbox.queue + flush), a busy LED writes at
# most one `led` record a minute (led.LedLog), and the outbox's own wear estimate
# (what the heartbeat reports as `fe`) follows the flash's erase counter. And the
# outbox's flash work in steps (outbox.py "Steps"): the app runs one Outbox.step() after
# each LED sample turn and an erase stalls the loop 45 ms on the chip, so a step may
# erase at most one block for the LED gap to stay under 60 ms; what may happen between
# two steps (records queued, acks taken, pending() read).
import binascii
import gc
import json
import os
import time

import flash
import mpyunit
from led import LedLog
from mpyunit import eq
from outbox import Outbox

IMG = "/tmp/wanwitness-test-burst-%s.img" % binascii.hexlify(os.urandom(4)).decode()
ONSET = ("led", "state", "probe", "probe", "state")  # the ~5 records of an outage onset
_dev = None


def _umount():
    global _dev
    if _dev is not None:
        flash.umount("/flash", _dev)
        _dev = None
        os.remove(IMG)


def fresh(max_bytes=131072):
    global _dev
    _umount()
    try:
        os.remove(IMG)
    except OSError:
        pass
    _dev = flash.mount(IMG, size=1024 * 1024, sync=False, erase_ms=0, page_us=0)
    return reopen(max_bytes)


def reopen(max_bytes=131072):
    gc.collect()
    ob = Outbox(max_bytes=max_bytes)
    ob.open()
    return ob


def onset_rec(k, t):
    if k == "state":
        return {"k": "state", "t": t, "utc": None, "s": "isp_down", "at": t - 5,
                "bound": t - 2000, "ev": {"by": "led", "led": {"internet": "off"}}}
    if k == "led":
        return {"k": "led", "t": t, "utc": None, "ch": "internet", "st": "off", "at": t - 3}
    return {"k": "probe", "t": t, "utc": None, "tg": "198.51.100.7", "ok": False,
            "rtt": None, "kind": "icmp", "err": "timeout"}


def in_use(ob):
    for i in range(200):  # a log already in use
        ob.append({"k": "probe", "t": i, "utc": None, "tg": "gw", "ok": i % 2 == 0, "rtt": 3})


def onset_erases(burst):
    ob = fresh()
    in_use(ob)
    _dev.reset_counters()
    for n in range(20):
        for k in ONSET:
            r = onset_rec(k, 100000 + n * 1000)
            if burst:
                ob.queue(r)
            else:
                ob.append(r)
        ob.flush()
    per = _dev.erases / (20 * len(ONSET))
    _umount()
    return per


def test_onset_burst_costs_at_most_0_4_erases_per_record():
    per = onset_erases(True)
    print("erases/record: burst %.2f" % per)
    assert per <= 0.4, per


def test_one_append_per_record_costs_an_erase_each():
    # what the burst saves: littlefs copies the segment's partly filled block into a
    # freshly erased one at every append session
    per = onset_erases(False)
    print("erases/record: one append each %.2f" % per)
    assert per >= 0.9, per


def test_onset_records_are_on_flash_in_order_before_they_can_be_sent():
    ob = fresh()
    in_use(ob)
    last = ob.last_seq
    for k in ONSET:
        ob.queue(onset_rec(k, 5000))
    eq(ob.queued(), 5)
    # not on flash yet: nothing to send, no seq to ack
    eq(ob.pending(1 << 20, last), [])
    eq(ob.last_seq, last)
    assert ob.ack(last + 5, ob.ob) is not None, "acked a record that is not on flash"
    eq(ob.flush(), last + 5)
    eq(ob.queued(), 0)
    got = [json.loads(b) for b in ob.pending(1 << 20, last)]
    eq([r["seq"] for r in got], list(range(last + 1, last + 6)))
    eq([r["k"] for r in got], list(ONSET))
    # and a reboot reads them back from flash
    ob.deinit()
    ob = reopen()
    got = [json.loads(b) for b in ob.pending(1 << 20, last)]
    eq([r["k"] for r in got], list(ONSET))
    _umount()


def test_a_cut_before_the_flush_loses_only_the_unflushed_and_no_seq_is_reused():
    ob = fresh()
    in_use(ob)
    for k in ONSET:
        ob.queue(onset_rec(k, 5000))
    ob.flush()
    flushed = ob.last_seq
    depth = ob.depth
    tail = [json.loads(b)["seq"] for b in ob.pending(1 << 20, flushed - 10)]
    for k in ONSET:
        ob.queue(onset_rec(k, 6000))  # the power goes before the flusher runs
    ob.deinit()
    ob = reopen()
    eq(ob.last_seq, flushed)
    eq(ob.depth, depth)
    eq([json.loads(b)["seq"] for b in ob.pending(1 << 20, flushed - 10)], tail)
    eq(ob.append(onset_rec("state", 7000)), flushed + 1)
    _umount()


def test_the_queue_stays_within_q_bytes():
    ob = fresh()
    worst = 0
    for i in range(60):
        ob.queue(onset_rec(ONSET[i % 5], i))
        worst = max(worst, ob._qbytes)
    assert worst <= ob.q_bytes, worst
    assert ob.last_seq > 0, "a full queue was not written"
    ob.flush()
    eq(ob.last_seq, 60)
    _umount()


def test_wear_estimate_follows_the_flash_counter():
    # A day's mix in miniature: onset bursts, single records, acks (meta and deletes)
    # and compactions (a small budget): the estimate within 25 % of the counter.
    ob = fresh(max_bytes=16384)
    _dev.reset_counters()
    for n in range(300):
        if n % 3 == 0:
            for k in ONSET:
                ob.queue(onset_rec(k, n * 1000))
            ob.flush()
        else:
            ob.append(onset_rec("probe", n * 1000))
        if n % 7 == 0 and ob.last_seq > ob.acked:
            ob.ack(ob.last_seq - 3, ob.ob)
    est = ob.wear()
    real = _dev.erases
    print("wear estimate %d, flash counter %d" % (est, real))
    assert abs(est - real) <= real // 4, (est, real)
    _umount()


def test_a_busy_led_writes_at_most_61_records_an_hour():
    # the internet LED flips on<->blink every 2 s for an hour of virtual time
    ob = fresh()
    log = LedLog(60000)
    _dev.reset_counters()
    n = 0
    st = "on"
    for t in range(0, 3600000, 20):  # the sampler's 20 ms turns
        held = log.due(t)
        if held is not None:
            ob.append({"k": "led", "t": t, "utc": None, "ch": "internet", "st": held[0],
                       "at": held[1]})
            log.wrote(held[0], t)
            n += 1
        if t % 2000 == 0:
            st = "blink" if st == "on" else "on"
            if log.offer(st, t, t):
                assert log.take() is None
                ob.append({"k": "led", "t": t, "utc": None, "ch": "internet", "st": st, "at": t})
                log.wrote(st, t)
                n += 1
    print("led records in an hour: %d (erases %d); without LedLog: 1800" % (n, _dev.erases))
    assert 30 <= n <= 61, n
    _umount()


def test_changes_to_and_from_off_are_written_at_once():
    log = LedLog(60000)
    assert log.offer("on", 0, 0)
    log.wrote("on", 0)
    assert not log.offer("blink", 1000, 1000)  # held
    assert log.offer("off", 1500, 1500)        # never held
    eq(log.take(), ("blink", 1000))            # written first: order kept
    log.wrote("off", 1500)
    assert log.offer("blink", 1600, 1600)      # from off: at once
    log.wrote("blink", 1600)
    assert not log.offer("on", 1700, 1700)
    assert not log.offer("blink", 1800, 1800)  # back where the record says: nothing held
    eq(log.due(70000), None)
    assert not log.offer("on", 2000, 2000)
    eq(log.due(61599), None)
    eq(log.due(61600), ("on", 2000))           # a minute after the last record
    log.wrote("on", 61600)
    assert log.offer("off", 61700, 61700)


def test_an_led_steady_for_a_week_writes_its_next_change_at_once():
    # ticks_diff() is signed over half the ticks period: on the ESP32 (2**30 ms) a
    # record 2**29 ms (6.2 days) or more ago reads as in the future. Its next change is
    # due, not held until the ticks come round again.
    period = time.ticks_add(0, -1) + 1        # 2**30 on a 32-bit port, 2**62 on 64 bits
    log = LedLog(60000)
    assert log.offer("on", 5000, 5000)
    log.wrote("on", 5000)
    now = time.ticks_add(time.ticks_add(5000, period // 2 - 1), 1001)  # (one add: at most half)
    assert time.ticks_diff(now, 5000) < 0      # what the wrap makes of it
    assert log.offer("blink", now, now)
    log2 = LedLog(60000)
    log2.offer("on", 5000, 5000)
    log2.wrote("on", 5000)
    assert not log2.offer("blink", 6000, 6000)  # a moment later: held
    eq(log2.due(now), ("blink", 6000))         # ... and due a week later

# --- steps ---------------------------------------------------------------------

def led(i):
    return {"k": "led", "t": i * 2000, "utc": None, "ch": "internet", "st": "blink", "at": i}


def state(i):
    return onset_rec("state", i * 2000)


def busy(n, whole, away=False, max_bytes=131072):
    """A busy LED for n flushes (an outage onset's burst of 5 every 97th), the collector
    acking every 50th as the app does (take_ack; whole: ack()), or away (the log fills
    and compacts; every third record a state, which compaction rewrites); returns the
    most erases one step did and the steps."""
    ob = fresh(max_bytes)
    worst = 0
    steps = 0
    for i in range(n):
        if i % 97 == 96:
            for k in range(5):
                ob.queue(state(i) if k % 2 else led(i))
        else:
            ob.queue(state(i) if away and i % 3 == 0 else led(i))
        if i % 50 == 49 and not away:
            if whole:
                _dev.reset_counters()
                ob.ack(ob.last_seq - 5, ob.ob)
                worst = max(worst, _dev.erases)
            else:
                eq(ob.take_ack(ob.last_seq - 5, ob.ob), None)
        if whole:
            _dev.reset_counters()
            ob.flush()
            worst = max(worst, _dev.erases)
            steps += 1
            continue
        while ob.work():
            _dev.reset_counters()
            ob.step()
            worst = max(worst, _dev.erases)
            steps += 1
    eq(ob.depth, ob.last_seq - ob.acked - ob.dropped)
    if away:
        assert ob.dropped > 0, "no compaction"
    _umount()
    return worst, steps


def test_no_step_erases_more_than_one_block():
    # 4,000 flushes (~8,400 steps: ~2 per one-record flush, 3 when it starts a segment,
    # 3 + one per segment deleted for an ack), with ~400 directory compactions and
    # several relocations of the directory's metadata pair among them
    worst, steps = busy(4000, False)
    eq(worst, 1)
    assert steps > 8000, steps


def test_no_step_erases_more_than_one_block_while_the_log_compacts():
    # the collector away: a full 16 KiB log makes room before each flush that needs it
    # (gap records, the window's survivors rewritten, victims deleted: a step each)
    worst, _ = busy(1500, False, True, 16384)
    eq(worst, 1)


def test_a_whole_flush_or_ack_can_erase_twice():
    # the same work a flush() or an ack() at a time, as the app did before: the data
    # block's copy and a directory compaction in one go (what the tests above rule out)
    worst, _ = busy(1500, True)
    assert worst >= 2, worst
    worst, _ = busy(1500, True, True, 16384)
    assert worst >= 3, worst


def test_between_steps_records_queue_acks_are_taken_and_pending_reads_the_committed():
    ob = fresh()
    for i in range(10):
        ob.append(led(i))
    eq(ob.last_seq, 10)
    ob.queue(state(11))
    ob.queue(led(12))
    eq(ob.step(), False)            # the data written, the file still open
    eq((ob.last_seq, ob.queued()), (10, 2))
    ob.queue(led(13))               # waits for the next job
    eq(ob.queued(), 3)
    eq(ob.take_ack(10, ob.ob), None)  # covers the segment being appended
    eq(ob.take_ack(11, ob.ob), "above the last seq 10")  # 11 is not on flash yet
    eq(ob.pending(), [])            # nothing above the ack taken is on flash yet
    eq(ob.acked, 0)                 # taken, not persisted
    eq(ob.step(), True)             # the commit: the flush is done
    eq((ob.last_seq, ob.nflushed, ob.queued()), (12, 2, 1))
    eq([json.loads(b)["seq"] for b in ob.pending()], [11, 12])
    n = 0
    while ob.work():
        ob.step()
        n += 1
    # the next flush (2 steps), then the ack: meta (3 steps); the segment holds 11..13
    eq((ob.last_seq, ob.acked, n), (13, 10, 5))
    eq([json.loads(b)["seq"] for b in ob.pending()], [11, 12, 13])
    eq(ob.depth, 3)
    ob.deinit()
    ob = reopen()                    # what is on flash says the same
    eq((ob.last_seq, ob.acked, ob.depth), (13, 10, 3))
    _umount()


def test_an_ack_deletes_segments_one_step_each_after_meta():
    ob = fresh()
    ob.seg_bytes = 512
    for i in range(40):
        ob.append(led(i))
    nseg = len(ob._segs)
    assert nseg >= 5, nseg
    eq(ob.take_ack(ob.last_seq, ob.ob), None)
    steps = 0
    while ob.work():
        ob.step()
        steps += 1
        if steps <= 3:
            eq(ob.acked, 0 if steps < 3 else 40)  # moves once meta is renamed
    eq((ob.acked, ob.depth, len(ob._segs), steps), (40, 0, 0, 3 + nseg))
    eq(sorted(os.listdir("ob")), ["meta"])
    _umount()


def test_a_flush_during_a_job_finishes_it_first():
    # queue() past q_bytes and the app's flush() at a crash run everything at once:
    # the job under way first, its records before the new ones
    ob = fresh()
    ob.append(led(0))
    ob.queue(led(1))
    ob.step()
    ob.queue(state(2))
    ob.queue(led(3))
    eq(ob.queued(), 3)
    eq(ob.flush(), 4)
    eq((ob.nflushed, ob.queued(), ob.work()), (3, 0, False))
    eq([json.loads(b)["seq"] for b in ob.pending()], [1, 2, 3, 4])
    _umount()


def test_ack_refusals_are_the_same():
    ob = fresh()
    ob.append(led(0))
    eq(ob.take_ack(1, "00000000"), "for outbox 00000000, not %s" % ob.ob)
    eq(ob.take_ack(1), "for outbox (none), not %s" % ob.ob)
    eq(ob.take_ack(2, ob.ob), "above the last seq 1")
    eq(ob.work(), False)
    eq(ob.take_ack(1, ob.ob), None)
    eq((ob.work(), ob.acked_to(), ob.acked), (True, 1, 0))
    _umount()


mpyunit.main(globals())
