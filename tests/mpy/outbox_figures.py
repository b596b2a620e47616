# Outbox figures on the virtual board's flash (run under MicroPython, unix port):
#   MICROPYPATH=agent:firmware/boards/virtual micropython -X heapsize=128K \
#       tests/mpy/outbox_figures.py [records]
# For a typical 120-byte record it prints, per segment size:
# - records per KB of flash: records held / flash blocks the log takes (statvfs),
# - bytes written per record: bytes handed to writeblocks (and blocks erased) per
#   append, while the log fills and once it is full (compactions and gap records
#   included).
import os
import sys

import flash
from outbox import Outbox

IMAGE = "/tmp/wanwitness-outbox-figures.img"


def rec(i):
    # a typical record: a probe result with both clocks, ~120 bytes of JSON with seq
    return {"k": "probe", "t": 86400000 + i * 1537, "utc": 1767225600123 + i * 1537,
            "tg": "anchor-2", "ok": i % 7 != 0, "rtt": 23 + i % 50, "kind": "icmp",
            "loss": 0, "n": 3}


def used_blocks():
    st = os.statvfs("/flash")
    return st[2] - st[3]


def measure(seg_bytes, n):
    try:
        os.remove(IMAGE)
    except OSError:
        pass
    dev = flash.mount(IMAGE, sync=False, erase_ms=0, page_us=0)  # counts only: no fsync, no erase wait
    ob = Outbox(seg_bytes=seg_bytes)
    ob.open()
    size = len(ob._encode(rec(1000), 1000))
    base = used_blocks()
    dev.reset_counters()
    for i in range(n):
        ob.append(rec(i))
    fill_w = dev.bytes_written / n
    fill_e = dev.erases / n
    held = ob.depth
    per_kb = held / ((used_blocks() - base) * 4.096)
    # Keep appending: the log is full, so every append may compact.
    dev.reset_counters()
    for i in range(n, 2 * n):
        ob.append(rec(i))
    full_w = dev.bytes_written / n
    full_e = dev.erases / n
    print("seg %5d B | record %d B | %5.2f records/KB of flash | filling: %6.0f B written, "
          "%.2f erases per record | full: %6.0f B written, %.2f erases per record "
          "(%d dropped, all in gap records)"
          % (seg_bytes, size, per_kb, fill_w, fill_e, full_w, full_e, ob.dropped))
    flash.umount("/flash", dev)
    os.remove(IMAGE)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    print("outbox figures: %d appends of a typical record into an empty 128 KiB log, "
          "then %d more into the full log; 2 MiB littlefs image, 4096-byte blocks" % (n, n))
    for seg in (1024, 2048, 4096):
        measure(seg, n)


main()
