# Power-cut subject for tests/test_outbox_powercut.py (runs under MicroPython).
#   micropython outbox_writer.py IMAGE SEED [check]
# Mounts the flash image (flash.py) and prints M, opens the outbox, prints what it
# recovered:
#   O <boot> <last_seq> <acked> <depth> <corrupt> <lost ranges as JSON>
#   P <boot> <record JSON>  one per pending record, oldest first, with its boot
#   D                       end of the dump
# then (unless `check`) appends records forever, one at a time (append) or in bursts of
# 2..6 queued in RAM and written by one flush(), as the app does; acking now and then.
# An odd SEED runs the outbox as the app does instead: one step() at a time, with records
# queued, acks taken (take_ack) and pending() read between the steps (it asserts that
# pending() stays above the ack taken and in order); an `A` once acked reaches it:
#   c                       the next append has to compact (the log is full)
#   W <seq>                 append or flush returned: the record is on flash (one line
#                           per record of a burst, after its flush)
#   a <seq> / A <seq>       before / after ack(seq)
# The test kills it with SIGKILL at a random moment, the way a power cut would.
import json
import random
import sys

import flash
from outbox import Outbox

MAX_BYTES = 12 * 1024
SEG_BYTES = 1024


def main():
    image = sys.argv[1]
    seed = int(sys.argv[2])
    check = len(sys.argv) > 3 and sys.argv[3] == "check"
    flash.mount(image, size=256 * 1024, erase_ms=0, page_us=0)  # cuts, not timing: many records
    print("M")
    ob = Outbox(max_bytes=MAX_BYTES, seg_bytes=SEG_BYTES)
    ob.open()
    print("O %d %d %d %d %d %s" % (ob.boot, ob.last_seq, ob.acked, ob.depth, ob.corrupt,
                                   str(ob.lost).replace(" ", "")))
    after = 0
    while True:  # page by page: the whole log at once would not fit a 64K heap
        page = ob.pending(2048, after)
        if not page:
            break
        for b in page:
            print("P", ob.pending_boot, b.decode())
        after = json.loads(page[-1])["seq"]
    print("D")
    if check:
        return
    random.seed(seed)
    if seed % 2:
        steps(ob)
    t = 0
    while True:
        n = 1 if random.randint(0, 1) else random.randint(2, 6)
        if ob._total + 300 * n > ob.max_bytes:
            print("c")
        for _ in range(n):
            t += random.randint(1, 5000)
            r, rec = record(t)
            if n == 1:
                print("W", ob.append(rec))
            else:
                ob.queue(rec)
        if n > 1:
            last = ob.flush()
            for s in range(last - ob.nflushed + 1, last + 1):
                print("W", s)
        if random.randint(0, 99) < 3 and ob.last_seq > ob.acked:
            # the collector acks everything, or up to somewhere in what was sent; rare
            # enough that the log fills and compacts
            a = ob.last_seq if r < 30 else random.randint(ob.acked + 1, ob.last_seq)
            print("a", a)
            ob.ack(a, ob.ob)
            print("A", a)


def record(t):
    r = random.randint(0, 99)
    if r < 60:
        rec = {"k": "probe", "t": t, "utc": None, "tg": "anchor-%d" % (r % 3),
               "ok": r % 2 == 0, "rtt": r, "kind": "icmp",
               "pad": "p" * random.randint(0, 60)}
    elif r < 75:
        rec = {"k": "stats", "t": t, "utc": None, "rounds": r, "heap": 40000 + r,
               "pad": "s" * random.randint(0, 60)}
    elif r < 95:
        rec = {"k": "state", "t": t, "utc": None, "s": "isp_down" if r % 2 else "up",
               "at": t - 1, "bound": t - 2, "ev": {"gw": True, "r": r}}
    else:
        rec = {"k": "error", "t": t, "utc": None, "msg": "e" * random.randint(1, 200)}
    return r, rec


def steps(ob):
    t = 0
    taken = 0   # the last ack taken, not yet printed as done
    while True:
        c = random.randint(0, 9)
        if c < 5:
            if ob.work():
                if ob._q and ob._job is None and ob._total + 300 * ob.queued() > ob.max_bytes:
                    print("c")
                if ob.step():
                    for s in range(ob.last_seq - ob.nflushed + 1, ob.last_seq + 1):
                        print("W", s)
                if taken and ob.acked >= taken:
                    print("A", taken)
                    taken = 0
        elif c < 8:
            if ob._qbytes + 300 < ob.q_bytes:  # no flush inside queue(): every W printed
                t += random.randint(1, 5000)
                ob.queue(record(t)[1])
        elif c == 8:
            if random.randint(0, 9) == 0 and ob.last_seq > ob.acked_to():
                lo = ob.acked_to() + 1
                a = ob.last_seq if random.randint(0, 1) else random.randint(lo, ob.last_seq)
                print("a", a)
                ob.take_ack(a, ob.ob)
                taken = max(taken, a)
        else:
            prev = ob.acked_to()
            for b in ob.pending(600):
                seq = json.loads(b)["seq"]
                assert prev < seq <= ob.last_seq, "pending() out of order or acked"
                prev = seq


main()
