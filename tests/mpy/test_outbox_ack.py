# agent/outbox.py on MicroPython: which acks the outbox takes, and its outbox id.
# (A file of its own: test_outbox.py's scripts already fill the 128 KiB heap.)
import binascii
import gc
import json
import os

import flash
import mpyunit
from mpyunit import eq
from outbox import Outbox

IMG = "/tmp/wanwitness-test-outbox-ack-%s.img" % binascii.hexlify(os.urandom(4)).decode()
_dev = None


def fresh():
    """An empty flash image, mounted, and an opened Outbox on it."""
    global _dev
    if _dev is not None:
        flash.umount("/flash", _dev)
    try:
        os.remove(IMG)
    except OSError:
        pass
    _dev = flash.mount(IMG, size=256 * 1024, sync=False, erase_ms=0, page_us=0)
    return reopen()


def reopen():
    """A new Outbox on the same flash: what the next boot sees."""
    gc.collect()
    ob = Outbox()
    ob.open()
    return ob


def probe(i):
    return {"k": "probe", "t": i, "utc": None, "tg": "gw", "ok": True}


def seqs(ob):
    """Every pending seq, across boots (pending() stops where the boot changes)."""
    out = []
    while True:
        page = ob.pending(1 << 30, out[-1] if out else 0)
        if not page:
            return out
        out.extend(json.loads(b)["seq"] for b in page)


def read(name):
    with open(name, "rb") as f:
        return f.read()


def write(name, data):
    with open(name, "wb") as f:
        f.write(data)


def test_ack_above_last_seq_deletes_nothing_and_keeps_seq():
    ob = fresh()
    for i in range(3):
        ob.append(probe(i))
    # A forged or foreign ack: it names seqs this log never wrote.
    eq(ob.ack(9223372036854775807, ob.ob), "above the last seq 3")
    eq(ob.ack(4, ob.ob), "above the last seq 3")
    eq((ob.acked, ob.last_seq, ob.depth), (0, 3, 3))
    eq(seqs(ob), [1, 2, 3])
    eq(ob.append(probe(4)), 4)
    ob = reopen()
    eq((ob.acked, ob.last_seq), (0, 4))
    eq(seqs(ob), [1, 2, 3, 4])
    eq(ob.ack(4, ob.ob), None)   # up to the last seq: taken
    eq((ob.acked, ob.depth), (4, 0))


def test_a_fresh_outbox_gets_an_id_that_persists():
    ob = fresh()
    eq(len(ob.ob), 8)
    eq(all(c in "0123456789abcdef" for c in ob.ob), True)
    eq(json.loads(read("ob/meta"))["ob"], ob.ob)
    first = ob.ob
    ob.append(probe(1))
    ob.ack(1, first)
    eq(reopen().ob, first)
    eq(reopen().ob, first)
    eq(fresh().ob != first, True)   # an erased flash: another id (4 random bytes)


def test_an_ack_for_another_outbox_is_ignored():
    ob = fresh()
    for i in range(4):
        ob.append(probe(i))
    other = "0123abcd" if ob.ob != "0123abcd" else "4567cdef"
    # Retained from this board's previous flash: the collector's ack of that outbox.
    eq(ob.ack(2, other), "for outbox %s, not %s" % (other, ob.ob))
    eq(ob.ack(2), "for outbox (none), not %s" % ob.ob)   # names no outbox at all
    eq((ob.acked, ob.depth), (0, 4))
    eq(seqs(ob), [1, 2, 3, 4])
    eq(ob.ack(2, ob.ob), None)
    eq(seqs(ob), [3, 4])


def test_older_firmwares_meta_keeps_its_seqs_and_the_legacy_stream():
    ob = fresh()
    for i in range(5):
        ob.append(probe(i))
    ob.ack(2, ob.ob)
    # What firmware without outbox ids left on flash: a meta with no "ob".
    write("ob/meta", b'{"seq":5,"acked":2,"boot":7}')
    ob = reopen()
    eq((ob.ob, ob.boot, ob.last_seq, ob.acked), ("", 8, 5, 2))
    eq(seqs(ob), [3, 4, 5])
    eq(ob.append(probe(6)), 6)
    eq(json.loads(read("ob/meta"))["ob"], "")
    eq(reopen().ob, "")
    ob = reopen()
    eq(ob.ack(3, "0123abcd"), "for outbox 0123abcd, not (none)")
    eq(ob.ack(3), None)              # the collector's legacy ack names no outbox
    eq(ob.ack(9, None), "above the last seq 6")
    eq(seqs(ob), [4, 5, 6])


def test_a_meta_beyond_repair_starts_a_new_outbox_id():
    ob = fresh()
    first = ob.ob
    for i in range(3):
        ob.append(probe(i))
    write("ob/meta", b'{"seq":3,"ob":12}')
    ob = reopen()
    eq(ob.ob != first and len(ob.ob) == 8, True)
    eq(ob.last_seq, 3)   # the log's seqs go on; the collector numbers the new stream


def test_zz_cleanup():
    flash.umount("/flash", _dev)
    os.remove(IMG)


mpyunit.main(globals())
