# Erases per loop step of the outbox's flash work, the steady state of a busy LED (one
# record per flush, the collector acking as it goes): "whole" runs each flush() and each
# ack() in one step (the app before the outbox's jobs were cut into steps), "steps" runs
# them as the app does now, one Outbox.step() per LED sample turn. Each erase is 45 ms
# of stalled loop on the chip; the LED gap target (< 60 ms) allows one per step. Counting
# only (no stall). "away": the collector does not ack, the log is full after ~1,700
# flushes and each flush past that makes room first (a compaction); "mixed": every
# third record a `state` (kept by a compaction: the segments are rewritten), "state":
# all of them (the oldest records dropped). Run from the repo root:
#   MICROPYPATH=wanwitness/firmware/boards/virtual:wanwitness/agent micropython -X heapsize=256K tests/mpy/flash_step_erases.py [N] [away] [mixed|state]
import binascii, os, sys, flash
from outbox import Outbox
N = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
AWAY = "away" in sys.argv[2:]
MIX = 3 if "mixed" in sys.argv[2:] else 1 if "state" in sys.argv[2:] else 0


def record(i):
    if MIX and i % MIX == 0:
        return {"k": "state", "t": i * 2000, "s": "isp_down" if i % 2 else "up", "at": i,
                "bound": i - 2000, "ev": {"by": "led", "led": {"internet": "off"}}}
    return {"k": "led", "t": i * 2000, "ch": "internet", "st": "blink", "at": i}


def run(steps):
    img = "/tmp/ww-step-erases-%s.img" % binascii.hexlify(os.urandom(4)).decode()
    dev = flash.mount(img, size=2 * 1024 * 1024, sync=False, erase_ms=0, page_us=0)
    ob = Outbox("ob", max_bytes=131072)
    ob.open()
    hist = {}
    nsteps = 0
    worst = []
    for i in range(N):
        ob.queue(record(i))
        if i % 50 == 49 and not AWAY:
            # the collector acks as it goes: segments are recycled
            if steps:
                ob.take_ack(ob.last_seq - 5, ob.ob)
            else:
                dev.reset_counters()
                ob.ack(ob.last_seq - 5, ob.ob)
                hist[dev.erases] = hist.get(dev.erases, 0) + 1
                nsteps += 1
        while True:
            dev.reset_counters()
            if steps:
                more = ob.work()
                if not more:
                    break
                ob.step()
            else:
                ob.flush()
            hist[dev.erases] = hist.get(dev.erases, 0) + 1
            nsteps += 1
            if dev.erases > 1:
                worst.append(i)
            if not steps:
                break
    flash.umount("/flash", dev)
    os.remove(img)
    print("%s%s%s: %d flushes, %d steps: %s%s" % (
        "steps" if steps else "whole", ", collector away" if AWAY else "",
        ["", ", all state", "", ", a third state"][MIX], N, nsteps, ", ".join(
            "%d erase(s) %d (%.2f %%)" % (e, hist[e], 100 * hist[e] / nsteps) for e in sorted(hist)),
        "" if not worst else "; more than one at flush %s (%d)" % (worst[:4], len(worst))))


run(False)
run(True)
