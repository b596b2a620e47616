# The loop stall from flash writes at an outage onset, on the virtual flash with the
# chip's default timing (boards/virtual/flash.py). Run from the repo root:
#   MICROPYPATH=wanwitness/firmware/boards/virtual:wanwitness/agent micropython tests/mpy/flash_onset_stall.py
import binascii, os, time, flash
from outbox import Outbox
IMG = "/tmp/ww-onset-stall-%s.img" % binascii.hexlify(os.urandom(4)).decode()
try: os.remove(IMG)
except OSError: pass
dev = flash.mount(IMG, size=2*1024*1024, sync=False)  # default chip timing
ob = Outbox("ob", max_bytes=131072); ob.open()
for i in range(200):  # a log already in use
    ob.append({"k": "probe", "t": i, "ok": 1, "rtt": 23})
worst = 0; tot = 0
for burst in range(20):
    dev.reset_counters()
    t0 = time.ticks_ms()
    for k in ("led", "probe", "probe", "state", "led"):  # ~5 records at an outage onset
        ob.append({"k": k, "t": 1000 + burst, "s": "down"})
    took = time.ticks_diff(time.ticks_ms(), t0)
    worst = max(worst, took); tot += dev.erases
print("onset burst of 5 appends: worst stall %d ms over 20 bursts, erases/record %.2f" % (worst, tot / 100))
flash.umount("/flash", dev); os.remove(IMG)
