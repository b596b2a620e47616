# The loop stall from flash writes at an outage onset, on the virtual flash with the
# chip's default timing (boards/virtual/flash.py). Run from the repo root:
#   MICROPYPATH=wanwitness/firmware/boards/virtual:wanwitness/agent micropython tests/mpy/flash_onset_stall.py
# "one append per record" is the outbox before issue 14 (append() per record);
# "burst" queues the onset's records and writes them with one flush(), as the app does.
import binascii, os, time, flash
from outbox import Outbox
IMG = "/tmp/ww-onset-stall-%s.img" % binascii.hexlify(os.urandom(4)).decode()
ONSET = ("led", "state", "probe", "probe", "state")  # ~5 records at an outage onset


def run(burst):
    try: os.remove(IMG)
    except OSError: pass
    dev = flash.mount(IMG, size=2*1024*1024, sync=False)  # default chip timing
    ob = Outbox("ob", max_bytes=131072); ob.open()
    for i in range(200):  # a log already in use
        ob.append({"k": "probe", "t": i, "ok": 1, "rtt": 23})
    worst = 0; tot = 0; took_all = []
    for n in range(20):
        dev.reset_counters()
        t0 = time.ticks_ms()
        for k in ONSET:
            r = {"k": k, "t": 1000 + n, "s": "down"}
            if burst: ob.queue(r)
            else: ob.append(r)
        ob.flush()
        took = time.ticks_diff(time.ticks_ms(), t0)
        worst = max(worst, took); tot += dev.erases; took_all.append(took)
    flash.umount("/flash", dev); os.remove(IMG)
    took_all.sort()
    return worst, took_all[10], tot / (20 * len(ONSET))


for burst in (False, True):
    worst, med, per = run(burst)
    print("onset burst of 5 records, %s: stall median %d ms, worst %d ms over 20 bursts,"
          " erases/record %.2f" % ("one flush" if burst else "one append per record", med,
                                   worst, per))
