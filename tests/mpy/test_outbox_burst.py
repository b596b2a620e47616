# Flash wear of the agent's records (issue 14) on MicroPython, on the virtual board's
# flash (a littlefs image in /tmp, erases counted per block, untimed): the records of
# one loop turn go to flash as one append (Outbox.queue + flush), a busy LED writes at
# most one `led` record a minute (led.LedLog), and the outbox's own wear estimate
# (what the heartbeat reports as `fe`) follows the flash's erase counter.
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

mpyunit.main(globals())
