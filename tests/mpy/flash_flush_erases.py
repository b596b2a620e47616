# Erases per flush of one record, the steady state of a busy LED: how often a littlefs
# commit needs more than one 4 KiB erase (each 45 ms on the chip, the agent's loop
# stalled meanwhile: a second erase is the longest LED gaps of the soak). Run from the
# repo root (counting only, no stall):
#   MICROPYPATH=wanwitness/firmware/boards/virtual:wanwitness/agent micropython -X heapsize=256K tests/mpy/flash_flush_erases.py
import binascii, os, flash
from outbox import Outbox
IMG = "/tmp/ww-flush-erases-%s.img" % binascii.hexlify(os.urandom(4)).decode()
N = 3000
dev = flash.mount(IMG, size=2 * 1024 * 1024, sync=False, erase_ms=0, page_us=0)
ob = Outbox("ob", max_bytes=131072)
ob.open()
hist = {}
for i in range(N):
    dev.reset_counters()
    ob.queue({"k": "led", "t": i * 2000, "ch": "internet", "st": "blink", "at": i})
    ob.flush()
    hist[dev.erases] = hist.get(dev.erases, 0) + 1
    if i % 50 == 49:
        ob.ack(ob.last_seq - 5)   # the collector acks as it goes: segments are recycled
flash.umount("/flash", dev)
os.remove(IMG)
print("%d one-record flushes: %s" % (N, ", ".join(
    "%d erase(s) %d (%.2f %%)" % (e, hist[e], 100 * hist[e] / N) for e in sorted(hist))))
