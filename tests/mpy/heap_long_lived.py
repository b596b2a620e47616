# ruff: noqa: E402, I001
# What the agent keeps on the heap for good, and what the outbox's flash jobs hold
# between two steps; bytes after gc.collect(). Run on the 32-bit frozen build from the
# repo root (the agent's modules frozen in, as on a board):
#   build/mp32/micropython32 -X heapsize=256K tests/mpy/heap_long_lived.py
import binascii
import gc
import os

gc.collect()
a0 = gc.mem_alloc()
import config
cfg = config.load("/nonexistent.json")
import app  # noqa: F401
gc.collect()
a1 = gc.mem_alloc()
from detector import Detector
d = Detector(3, 2, 50)
gc.collect()
a2 = gc.mem_alloc()
for i in range(100):
    d.round(i * 2000, True, 3, 3, True, 0, 1)
gc.collect()
a3 = gc.mem_alloc()
print("config loaded + app imported %d B; detector %d B; its history (%d rounds) %d B; total %d B" % (
    a1 - a0, a2 - a1, len(d._hist), a3 - a2, a3 - a0))

import flash
from outbox import Outbox
img = "/tmp/ww-heap-long-lived-%s.img" % binascii.hexlify(os.urandom(4)).decode()
dev = flash.mount(img, size=1024 * 1024, sync=False, erase_ms=0, page_us=0)
ob = Outbox("ob")
ob.open()
for i in range(10):
    ob.append({"k": "led", "t": i, "ch": "internet", "st": "blink", "at": i})
ob.queue({"k": "led", "t": 11, "ch": "internet", "st": "blink", "at": 11})
gc.collect()
ob.step()   # the data written, the file open until the next step
gc.collect()
b1 = gc.mem_alloc()
while ob.work():
    ob.step()
gc.collect()
b2 = gc.mem_alloc()
ob.take_ack(5, ob.ob)
ob.step()   # meta.tmp created, open until the next step
gc.collect()
b3 = gc.mem_alloc()
while ob.work():
    ob.step()
gc.collect()
b4 = gc.mem_alloc()
print("held between a flush's steps %d B, between an ack's %d B" % (b1 - b2, b3 - b4))
flash.umount("/flash", dev)
os.remove(img)
