# Flash erases per day at the worst realistic record rate, on the virtual flash
# (untimed; erases counted). Run from the repo root:
#   MICROPYPATH=wanwitness/firmware/boards/virtual:wanwitness/agent micropython -X heapsize=256K tests/mpy/flash_wear_day.py [hours]
# A day (default 24 h) of 2 s rounds: the internet LED flips on<->blink every 2 s, 3
# anchors each lose 1 % of probes (seeded), an hourly stats record. "acked": the
# collector acks every flush (as it acks every batch: the acked segment is deleted and
# the next one starts as a small file inside littlefs' directory log); "unacked": the
# collector is away all day, the log fills to its 128 KiB budget and compacts.
# "before": one append per record, every LED change a record; "after": the records of
# a turn in one flush, led.LedLog(60 s).
import binascii, os, random, sys, flash
from outbox import Outbox
from led import LedLog

HOURS = int(sys.argv[1]) if len(sys.argv) > 1 else 24
IMG = "/tmp/ww-wear-day-%s.img" % binascii.hexlify(os.urandom(4)).decode()
BLOCKS = 512          # the 2 MiB vfs partition of a 4 MB board
CYCLES = 100000       # NOR endurance per sector (W25Q32JV datasheet: min 100,000)


def run(after, acked):
    try: os.remove(IMG)
    except OSError: pass
    dev = flash.mount(IMG, size=BLOCKS * 4096, sync=False, erase_ms=0, page_us=0)
    ob = Outbox("ob", max_bytes=131072); ob.open()
    dev.reset_counters()
    random.seed(14)
    log = LedLog(60000)
    last = {}
    st = "on"
    recs = 0
    for r in range(HOURS * 1800):
        t = r * 2000
        put = ob.queue if after else ob.append
        held = log.due(t) if after else None
        if held:
            put({"k": "led", "t": t, "utc": None, "ch": "internet", "st": held[0], "at": held[1]})
            log.wrote(held[0], t); recs += 1
        st = "blink" if st == "on" else "on"
        if not after or log.offer(st, t, t):
            put({"k": "led", "t": t, "utc": None, "ch": "internet", "st": st, "at": t})
            log.wrote(st, t); recs += 1
        ob.flush()
        if acked and ob.last_seq > ob.acked: ob.ack(ob.last_seq, ob.ob)
        for a in range(3):  # the round, ~1 s later
            ok = random.random() >= 0.01
            if last.get(a) != ok:
                last[a] = ok
                put({"k": "probe", "t": t + 1000, "utc": None, "tg": "198.51.100.%d" % (7 + a),
                     "ok": ok, "rtt": 23 if ok else None, "kind": "icmp",
                     "err": None if ok else "timeout"}); recs += 1
        if r % 1800 == 0:
            put({"k": "stats", "t": t, "utc": None, "heap_free": 50000, "q": 0,
                 "wifi_changes": 0, "mqtt_connects": 1}); recs += 1
        ob.flush()
        if acked and ob.last_seq > ob.acked: ob.ack(ob.last_seq, ob.ob)
    e = dev.erases * 24 // HOURS
    n = recs * 24 // HOURS
    years = BLOCKS * CYCLES / e / 365
    print("%s %s: %d records/day, %d erases/day (outbox estimate %d), max erases of one block %d,"
          " %.1f years to %d cycles x %d blocks"
          % ("after " if after else "before", "acked  " if acked else "unacked", n, e, ob.wear() * 24 // HOURS,
             dev.max_block_erases(), years, CYCLES, BLOCKS))
    flash.umount("/flash", dev); os.remove(IMG)


for acked in (True, False):
    for after in (False, True):
        run(after, acked)
