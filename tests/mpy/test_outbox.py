# agent/outbox.py on MicroPython, on the virtual board's flash (a littlefs image in /tmp).
import binascii
import gc
import json
import os
import struct

import flash
import mpyunit
import outbox
from mpyunit import eq
from outbox import Outbox

IMG = "/tmp/wanwitness-test-outbox-%s.img" % binascii.hexlify(os.urandom(4)).decode()
_dev = None


def _umount():
    global _dev
    if _dev is not None:
        flash.umount("/flash", _dev)
        _dev = None


def fresh(max_bytes=131072, seg=4096, size=512 * 1024):
    """An empty flash image, mounted, and an opened Outbox on it."""
    global _dev
    _umount()
    try:
        os.remove(IMG)
    except OSError:
        pass
    _dev = flash.mount(IMG, size=size, sync=False, erase_ms=0, page_us=0)  # counts only
    return reopen(max_bytes, seg)


def reopen(max_bytes=131072, seg=4096):
    """A new Outbox on the same flash: what the next boot sees."""
    gc.collect()  # each Outbox holds a segment-sized buffer: the old ones go first
    ob = Outbox(max_bytes=max_bytes, seg_bytes=seg)
    ob.open()
    return ob


def probe(i, pad=40):
    return {"k": "probe", "t": i, "utc": None, "tg": "gw", "ok": True, "pad": "x" * pad}


def state(i):
    return {"k": "state", "t": i, "utc": None, "s": "up", "at": i, "bound": None, "ev": {}}


def everything(ob):
    """All pending records, across boots (pending() stops where the boot changes)."""
    out = []
    after = 0
    while True:
        page = ob.pending(1 << 30, after)
        if not page:
            return out
        out.extend(page)
        after = json.loads(page[-1])["seq"]


def recs(ob):
    return [json.loads(b) for b in everything(ob)]


def seqs(ob):
    return [json.loads(b)["seq"] for b in everything(ob)]


def read(name):
    with open(name, "rb") as f:
        return f.read()


def write(name, data):
    with open(name, "wb") as f:
        f.write(data)


def marker(boot):
    j = b'{"boot":%d}' % boot
    return struct.pack("<HI", len(j), binascii.crc32(j) & 0xFFFFFFFF) + j


def frames(data):
    """A segment file split into its frames (bytes each, header included)."""
    out = []
    off = 0
    while off < len(data):
        n = data[off] | data[off + 1] << 8
        out.append(data[off:off + 6 + n])
        off += 6 + n
    return out


def segments():
    return sorted(int(n) for n in os.listdir("ob") if n.isdigit())


def check_covered(ob):
    """The invariant the collector's ack needs: every seq in (acked, last_seq] is a
    pending record or inside a drop range of a pending gap record; pending seqs grow."""
    rs = []
    for b in everything(ob):   # keep only what is checked: the heap is small
        r = json.loads(b)
        rs.append(r if r["k"] == "gap" else {"seq": r["seq"], "k": r["k"]})
    have = [r["seq"] for r in rs]
    for i in range(1, len(have)):
        assert have[i] > have[i - 1], "pending not increasing: %r" % have
    ranges = []
    for r in rs:
        if r["k"] == "gap":
            for a, b in r["drop"]:
                assert 1 <= a <= b < r["seq"], "bad range %r in gap %d" % ([a, b], r["seq"])
                ranges.append((a, b))
    present = set(have)
    for s in range(ob.acked + 1, ob.last_seq + 1):
        if s not in present:
            assert any(a <= s <= b for a, b in ranges), "seq %d lost silently" % s
    return rs


# --- frames -------------------------------------------------------------------

def test_frame_bytes_exact():
    ob = fresh()
    eq(ob.append({"k": "boot", "t": 0}), 1)
    # u16 length, u32 CRC32 of the JSON (zlib.crc32), both little-endian, then the JSON:
    # the boot marker (length 10, CRC 0x90cad1b6), then the record (26, 0x9560a4c0)
    eq(read("ob/1"), b'\x0a\x00\xb6\xd1\xca\x90{"boot":1}'
                     b'\x1a\x00\xc0\xa4\x60\x95{"seq":1,"k":"boot","t":0}')
    eq(ob.pending(), [b'{"seq":1,"k":"boot","t":0}'])
    eq(ob.pending_boot, 1)


def test_frame_length_is_little_endian_u16():
    ob = fresh()
    ob.append({"k": "error", "t": 5, "msg": "m" * 300})
    data = frames(read("ob/1"))[1]
    n = len(data) - 6
    eq(n > 255, True)
    eq(data[0:2], bytes((n & 0xFF, n >> 8)))
    eq(struct.unpack("<I", data[2:6])[0], binascii.crc32(data[6:]) & 0xFFFFFFFF)
    eq(json.loads(data[6:]), {"seq": 1, "k": "error", "t": 5, "msg": "m" * 300})


def test_record_round_trips_with_seq_first():
    ob = fresh()
    rec = {"k": "state", "t": 1000, "utc": 1767225600000, "s": "isp_down", "at": 990,
           "bound": 980, "ev": {"gw": True, "anchors": [0, 3]}, "seq": 77}
    eq(ob.append(dict(rec)), 1)
    out = ob.pending()
    eq(out[0][:19], b'{"seq":1,"k":"state')
    rec["seq"] = 1
    eq(json.loads(out[0]), rec)


def test_an_older_firmwares_4_kib_segments_are_read_and_compacted_by_2_kib_ones():
    # Segments were 4 KiB until 2026-12-04: after an upgrade the new firmware reads the
    # old ones (a buffer of their size for the moment), sends them, appends its own
    # smaller ones after them and compacts across both when the log is full.
    ob = fresh(max_bytes=16384, seg=4096)
    for i in range(60):
        ob.append(probe(i))
    assert max(seg[1] for seg in ob._segs) > 2048
    old = len(ob._segs)
    ob = reopen(max_bytes=16384, seg=2048)
    eq(seqs(ob), list(range(1, 61)))
    for i in range(60, 100):
        ob.append(probe(i))
    eq(seqs(ob), list(range(1, 101)))
    for seg in ob._segs[old:]:
        assert seg[1] <= 2048, seg
    eq(ob.ack(30, ob.ob), None)
    eq(seqs(ob)[0], 31)
    for i in range(100, 400):  # the log fills: compactions over old and new segments
        ob.append(probe(i) if i % 10 else state(i))
    assert ob.dropped > 0, "no compaction"
    eq(ob.depth, ob.last_seq - ob.acked - ob.dropped)
    got = seqs(ob)
    eq(got, sorted(got))
    eq(got[-1], ob.last_seq)
    states = [r["t"] for r in recs(ob) if r["k"] == "state"]
    eq(states, [i for i in range(100, 400) if i % 10 == 0][-len(states):])
    ob = reopen(max_bytes=16384, seg=2048)  # and the next boot reads it all the same
    eq(seqs(ob), got)


def test_a_record_queued_into_a_given_buffer_is_the_same_on_flash():
    # What App gives a record that found no block: its reserve, encoded into in place.
    ob = fresh()
    rec = {"k": "state", "t": 1000, "utc": None, "s": "local_down", "at": 990,
           "bound": 980, "ev": {"by": "led", "led": {"power": "off"}}}
    reserve = bytearray(512)
    n = ob.queue(dict(rec), memoryview(reserve)[:256])
    ob.queue(dict(rec, t=1001))        # and one the usual way after it
    m = ob.queue(dict(rec, t=1002), memoryview(reserve)[n:])  # the reserve's next part
    ob.queue({"k": "gap"}, bytearray(16))  # no fields: b',"k":"gap"}'
    eq(reserve[n:n + m], outbox._body(dict(rec, t=1002)))  # each where it was put
    ob.flush()
    rec["seq"] = 1
    eq(recs(ob), [rec, dict(rec, t=1001, seq=2), dict(rec, t=1002, seq=3),
                  {"k": "gap", "seq": 4}])
    big = dict(rec, msg="x" * 600)
    try:
        ob.queue(big, bytearray(512))
        got = "queued"
    except ValueError:
        got = "ValueError"
    eq((got, ob.queued()), ("ValueError", 0))  # too large: refused, nothing queued
    eq(big["k"], "state")  # and the caller's dict as it was


def test_a_record_queued_into_a_given_buffer_needs_no_block_of_its_size():
    # The heap as the soak's at an onset: free memory only in holes of ~64 bytes (48 on
    # a 32-bit port). The usual encoding needs the record's JSON text and its bytes
    # (~200 bytes each here); into the buffer it needs neither.
    ob = fresh()
    rec = {"k": "state", "t": 1000, "utc": None, "s": "local_down", "at": 990,
           "bound": 980, "ev": {"by": "led+probe", "anc_n": 3, "anc_ok": 0,
                                "led": {"internet": "off", "power": "off"}}}
    reserve = bytearray(512)
    r1 = dict(rec)  # (the caller's dicts exist before: the detector made them)
    r2 = dict(rec)
    gc.collect()
    keep = drop = None
    try:
        while True:
            drop = (drop, bytearray(24))
            keep = (keep, bytearray(24))
    except MemoryError:
        pass
    try:
        while True:
            keep = (keep, None)
    except MemoryError:
        pass
    drop = None
    gc.collect()
    try:
        ob.queue(r1)
        usual = "queued"
    except MemoryError:
        usual = "MemoryError"
    try:
        ob.queue(r2, memoryview(reserve)[100:])  # (App: the reserve's free end)
        into = "queued"
    except MemoryError:
        into = "MemoryError"
    keep = None
    gc.collect()
    eq((usual, into), ("MemoryError", "queued"))
    ob.flush()
    rec["seq"] = 1
    eq(recs(ob), [rec])


def test_append_sets_seq_on_the_dict():
    ob = fresh()
    r = probe(1)
    eq(ob.append(r), 1)
    eq(r["seq"], 1)


def test_corrupt_crc_detected_and_declared():
    ob = fresh()
    for i in range(3):
        ob.append(state(i))
    fr = frames(read("ob/1"))     # marker, 1, 2, 3
    bad = bytearray(fr[2])
    bad[2] ^= 0x01                # one bit of record 2's CRC
    write("ob/1", fr[0] + fr[1] + bad + fr[3])
    ob = reopen()
    eq(ob.corrupt, 1)
    eq(ob.lost, [[2, 2]])
    rs = check_covered(ob)
    eq([r["seq"] for r in rs], [1, 3, 4])
    eq(rs[2]["k"], "gap")
    eq(rs[2]["drop"], [[2, 2]])
    eq(rs[2]["kinds"], {"lost": 1})
    # the bad frame was cut out of the file: the next boot finds nothing wrong
    ob = reopen()
    eq(ob.corrupt, 0)
    eq(seqs(ob), [1, 3, 4])


def test_corrupt_json_byte_detected():
    ob = fresh()
    for i in range(3):
        ob.append(probe(i))
    fr = frames(read("ob/1"))
    bad = bytearray(fr[1])
    bad[20] ^= 0x40               # inside record 1's JSON
    write("ob/1", fr[0] + bad + fr[2] + fr[3])
    ob = reopen()
    eq(ob.corrupt, 1)
    eq(ob.lost, [[1, 1]])
    check_covered(ob)
    eq(seqs(ob), [2, 3, 4])


def test_torn_tail_at_every_offset():
    ob = fresh()
    for r in (state(1), probe(2), {"k": "boot", "t": 3, "reset": "PWRON_RESET"}):
        ob.append(r)
    good = read("ob/1")
    last = probe(4, pad=60)
    ob.append(dict(last))
    frame = read("ob/1")[len(good):]
    for cut in range(len(frame)):
        write("ob/1", good + frame[:cut])
        ob = reopen()
        eq(ob.corrupt, 1 if cut else 0, "cut %d" % cut)
        eq(seqs(ob), [1, 2, 3], "cut %d" % cut)
        eq(ob.lost, [])
        eq(ob.last_seq, 3)   # the torn record's append never returned: 4 is free
        eq(ob.depth, 3)
        # the next append goes right after the last good frame (after this boot's marker)
        eq(ob.append(dict(last)), 4)
        eq(read("ob/1"), good + marker(ob.boot) + frame, "cut %d" % cut)


def test_torn_frame_alone_in_a_segment():
    ob = fresh(seg=128)   # one probe per segment
    for i in range(4):
        ob.append(probe(i))
    eq(segments(), [1, 2, 3, 4])
    data = read("ob/4")
    write("ob/4", data[:len(data) - 5])
    ob = reopen(seg=128)
    eq(ob.corrupt, 1)
    eq(seqs(ob), [1, 2, 3])
    eq(segments(), [1, 2, 3])  # nothing good was left in it
    eq(ob.append(probe(9)), 4)
    eq(seqs(reopen(seg=128)), [1, 2, 3, 4])


# --- seq, ack, boot -----------------------------------------------------------

def test_seq_persists_and_grows_across_reopen():
    ob = fresh()
    eq(ob.boot, 1)
    for i in range(5):
        eq(ob.append(probe(i)), i + 1)
    ob = reopen()
    eq(ob.boot, 2)
    eq(ob.last_seq, 5)
    eq(ob.depth, 5)
    eq(ob.append(probe(6)), 6)
    ob = reopen()
    eq(ob.boot, 3)
    eq(ob.append(probe(7)), 7)


def test_no_segment_outgrows_seg_bytes_with_the_next_boots_marker():
    # pending() reads a segment whole into the 4 KiB buffer: one that grew past it by a
    # boot marker would need a second 4 KiB block on a fragmented heap.
    for fill in range(3960, 4096, 7):
        ob = fresh(seg=4096)
        n = 0
        while True:
            size = sum(os.stat("ob/%d" % k)[6] for k in segments())
            if size + 120 > fill:
                break
            ob.append(probe(n, 60))
            n += 1
        ob.append(probe(n, max(1, fill - size - 60)))
        for _ in range(2):
            ob = reopen()
            ob.append(probe(n + 1, 20))
        for k in segments():
            assert os.stat("ob/%d" % k)[6] <= 4096, (fill, k, os.stat("ob/%d" % k)[6])
        eq(len(everything(ob)), n + 3, fill)

def test_ack_cursor_persists():
    ob = fresh()
    for i in range(6):
        ob.append(probe(i))
    ob.ack(3, ob.ob)
    eq(ob.depth, 3)
    ob.ack(2, ob.ob)  # an old retained ack: ignored
    eq(ob.acked, 3)
    ob = reopen()
    eq(ob.acked, 3)
    eq(ob.depth, 3)
    eq(seqs(ob), [4, 5, 6])


def test_acked_segments_deleted():
    ob = fresh(seg=512)
    for i in range(20):
        ob.append(probe(i))
    before = segments()
    eq(len(before) > 4, True)
    ob.ack(10, ob.ob)
    after = segments()
    eq(len(after) < len(before), True)
    eq(after[0] <= 11, True)          # the segment holding 11 stays...
    eq(seqs(ob), list(range(11, 21)))
    for k in before:                  # ...and every deleted one held only seqs <= 10
        if k not in after:
            eq(k <= 10, True)
    ob.ack(20, ob.ob)
    eq(segments(), [])
    eq(ob.depth, 0)
    eq(ob.pending(), [])


def test_seq_never_repeats_after_ack_truncate_reopen():
    ob = fresh()
    for i in range(10):
        ob.append(probe(i))
    ob.ack(10, ob.ob)
    eq(os.listdir("ob"), ["meta"])
    ob = reopen()
    eq(ob.last_seq, 10)
    eq(ob.append(probe(11)), 11)
    ob.ack(11, ob.ob)
    ob = reopen()
    eq(ob.append(probe(12)), 12)


def test_corrupt_meta_recovers_from_log():
    ob = fresh()
    for i in range(4):
        ob.append(probe(i))
    write("ob/meta", b'{"seq":4,"ack')
    ob = reopen()
    eq(ob.corrupt, 1)
    eq(ob.last_seq, 4)
    eq(ob.append(probe(5)), 5)


def test_stale_temp_files_removed():
    ob = fresh()
    ob.append(probe(1))
    write("ob/tmp", b"half a compaction")
    write("ob/meta.tmp", b'{"seq":9')
    ob = reopen()
    eq(sorted(os.listdir("ob")), ["1", "meta"])
    eq(ob.last_seq, 1)


# --- pending -------------------------------------------------------------------

def test_pending_respects_1k():
    ob = fresh()
    for i in range(40):
        ob.append(probe(i, pad=60))
    out = ob.pending()
    total = sum(len(b) for b in out)
    eq(total <= 1024, True)
    eq(total + len(out[0]) > 1024, True)   # and it is full
    eq([json.loads(b)["seq"] for b in out], list(range(1, len(out) + 1)))
    eq(len(ob.pending(200)), 1)


def test_pending_returns_one_large_record():
    ob = fresh()
    ob.append({"k": "error", "t": 1, "msg": "x" * 1500})
    ob.append(probe(2))
    out = ob.pending()
    eq(len(out), 1)
    eq(len(out[0]) > 1024, True)
    ob.ack(1, ob.ob)
    eq([json.loads(b)["seq"] for b in ob.pending()], [2])


# --- boots --------------------------------------------------------------------

def boots_of(ob):
    """[(seq, boot)] of everything pending, page by page."""
    out = []
    after = 0
    while True:
        page = ob.pending(300, after)
        if not page:
            return out
        for b in page:
            out.append((json.loads(b)["seq"], ob.pending_boot))
        after = out[-1][0]


def test_pending_never_mixes_boots():
    ob = fresh()
    for i in range(3):
        ob.append(probe(i))
    ob = reopen()
    eq(ob.boot, 2)
    ob.append(probe(3))
    ob.append(probe(4))
    eq([json.loads(b)["seq"] for b in ob.pending()], [1, 2, 3])
    eq(ob.pending_boot, 1)     # sent after the reboot, still in boot 1's batch
    ob.ack(3, ob.ob)
    eq([json.loads(b)["seq"] for b in ob.pending()], [4, 5])
    eq(ob.pending_boot, 2)
    ob.ack(5, ob.ob)
    eq(ob.pending(), [])
    eq(ob.pending_boot, 2)


def test_boots_survive_compaction():
    ob = fresh(max_bytes=2500, seg=512)
    want = {}
    for boot in range(1, 6):
        if boot > 1:
            ob = reopen(max_bytes=2500, seg=512)
        eq(ob.boot, boot)
        for i in range(9):
            r = state(i) if i % 3 == 0 else probe(i, pad=30)
            want[ob.append(r)] = boot
        # every record kept still carries the boot it was written in (gap records:
        # the boot that wrote them)
        for seq, b in boots_of(ob):
            if seq in want:
                eq(b, want[seq], "seq %d" % seq)
    eq(ob.dropped > 0, True)
    check_covered(ob)
    got = boots_of(reopen(max_bytes=2500, seg=512))
    for seq, b in got:
        if seq in want:
            eq(b, want[seq], "seq %d after reopen" % seq)
    eq(len(set(b for _, b in got)) > 1, True)


# --- bounded -----------------------------------------------------------------

def test_bounded_drops_low_value_first_with_gap():
    ob = fresh(max_bytes=4096, seg=1024)
    kinds = {}
    for i in range(120):
        r = state(i) if i % 5 == 0 else probe(i)
        kinds[ob.append(r)] = r["k"]
        assert ob._total <= 4096, "log is %d bytes" % ob._total
    eq(ob.dropped > 0, True)
    rs = check_covered(ob)
    have = [r["seq"] for r in rs]
    # every state record is still there: only probes were dropped
    for s, k in kinds.items():
        if k == "state":
            eq(s in have, True, "state %d dropped" % s)
    gaps = [r for r in rs if r["k"] == "gap"]
    eq(len(gaps) > 0, True)
    n = 0
    for g in gaps:
        eq(list(g["kinds"].keys()), ["probe"])
        n += g["kinds"]["probe"]
        for a, b in g["drop"]:
            for s in range(a, b + 1):
                eq(kinds[s], "probe")
                eq(s in have, False)
    eq(n, ob.dropped)
    # and the next boot sees the same (this one's buffer and records freed first)
    ob = rs = gaps = None
    ob = reopen(max_bytes=4096, seg=1024)
    eq(ob.corrupt, 0)
    eq(seqs(ob), have)


def test_bounded_exact_gap_record():
    # frames: state 81 B, probe 133 B; segments of 512 B; the 8th record makes 960 > 900
    ob = fresh(max_bytes=900, seg=512)
    ob.slack = 0
    for i in range(8):
        eq(ob.append(state(i) if i in (0, 3) else probe(i, pad=60)), i + 1 if i < 7 else 9)
    rs = check_covered(ob)
    eq([r["seq"] for r in rs], [1, 4, 5, 6, 7, 8, 9])
    # the two oldest probes (between the states 1 and 4) went; nothing else did
    eq(rs[5], {"seq": 8, "k": "gap", "t": 7, "utc": None, "drop": [[2, 3]],
               "kinds": {"probe": 2}})
    eq(ob.dropped, 2)
    eq(ob.depth, 7)
    eq(ob._total <= 900, True)


def test_bounded_only_high_value_drops_oldest():
    ob = fresh(max_bytes=3072, seg=1024)
    for i in range(80):
        ob.append(state(i))
        assert ob._total <= 3072, "log is %d bytes" % ob._total
    rs = check_covered(ob)
    have = [r["seq"] for r in rs]
    eq(have[-1], ob.last_seq)
    eq(1 in have, False)
    gaps = [r for r in rs if r["k"] == "gap"]
    eq(len(gaps) >= 1, True)
    eq("state" in gaps[0]["kinds"] or "gap" in gaps[0]["kinds"], True)
    # everything older than the oldest record kept is declared
    eq(gaps[0]["drop"][0][0], 1)


def test_bounded_drops_low_value_in_the_tail_before_older_states():
    ob = fresh(max_bytes=1900, seg=1024)
    states = [ob.append(state(i)) for i in range(12)]   # 972 B: the first segment
    for i in range(10):
        ob.append(probe(i, pad=60))                      # 133 B each, a new segment
        assert ob._total <= 1900, "log is %d bytes" % ob._total
    rs = check_covered(ob)
    have = [r["seq"] for r in rs]
    for s in states:
        eq(s in have, True, "state %d dropped" % s)
    for r in rs:
        if r["k"] == "gap":
            eq(list(r["kinds"].keys()), ["probe"])
    eq(ob.dropped > 0, True)


def test_bounded_acked_records_go_without_gap():
    ob = fresh(max_bytes=2048, seg=512)
    for i in range(12):
        ob.append(state(i))
    ob.ack(ob.last_seq - 1, ob.ob)
    for i in range(6):
        ob.append(state(100 + i))
    eq(ob.dropped, 0)
    eq([r["k"] for r in recs(ob)], ["state"] * 7)


def test_interrupted_compaction_is_finished_on_open():
    ob = fresh(max_bytes=4096, seg=1024)

    def cut(*args):
        raise OSError(5)  # the power goes after the gap record, before the rewrite

    ob._apply = cut
    i = 0
    try:
        while True:
            ob.append(probe(i) if i % 3 else state(i))
            i += 1
    except OSError:
        pass
    ob = reopen(max_bytes=4096, seg=1024)
    rs = check_covered(ob)
    gap = rs[-1]
    eq(gap["k"], "gap")
    have = [r["seq"] for r in rs]
    for a, b in gap["drop"]:
        for s in range(a, b + 1):
            eq(s in have, False)
    eq(ob._total <= 4096 + 200, True)


class _CutAfterRenames:
    """os for outbox.py whose rename fails after n calls: a power cut mid-compaction."""

    def __init__(self, n):
        self.n = n

    def rename(self, a, b):
        if self.n <= 0:
            raise OSError(5)
        self.n -= 1
        os.rename(a, b)

    def __getattr__(self, name):
        return getattr(os, name)


def test_cut_between_renames_leaves_no_copies():
    ob = None
    for n in range(4):
        ob = None     # one 4 KiB buffer at a time
        ob = fresh(max_bytes=6000, seg=512)
        for i in range(30):
            ob.append(state(i) if i % 2 else probe(i, pad=20))
        before = [r["seq"] for r in check_covered(ob)]
        outbox.os = _CutAfterRenames(n)
        cut = False
        try:
            for i in range(300):
                ob.append(state(i) if i % 3 else probe(i, pad=20))
        except OSError:
            cut = True
        finally:
            outbox.os = os
        eq(cut, True, "no compaction made %d renames" % (n + 1))
        ob = None
        ob = reopen(max_bytes=6000, seg=512)
        rs = check_covered(ob)
        eq(len(rs) > 0, True)
        # nothing written before the cut is missing: pending or declared dropped
        have = set(r["seq"] for r in rs)
        for s in before:
            if s not in have:
                assert any(a <= s <= b for g in rs if g["k"] == "gap"
                           for a, b in g["drop"]), "seq %d lost" % s
        want = [r["seq"] for r in rs]
        rs = ob = None
        ob = reopen(max_bytes=6000, seg=512)
        eq(ob.corrupt, 0)
        eq(seqs(ob), want)


def test_full_filesystem_drops_oldest_with_gap():
    # no byte budget: a small filesystem fills first (as if other files had grown)
    ob = fresh(max_bytes=1 << 30, seg=4096, size=28 * 1024)
    for i in range(400):
        ob.append(state(i) if i % 4 == 0 else probe(i, pad=100))
        if ob.dropped and i % 25 == 0:
            check_covered(ob)
    eq(ob.dropped > 0, True)
    rs = check_covered(ob)
    eq(rs[-1]["seq"], ob.last_seq)
    eq(ob._intent, None)
    # what the next boot sees is the same (this one's buffer and records freed first)
    want = [r["seq"] for r in rs]
    ob = rs = None
    eq(seqs(reopen(max_bytes=1 << 30)), want)


def test_full_filesystem_cut_before_the_gap_record():
    ob = fresh(max_bytes=1 << 30, seg=4096, size=28 * 1024)

    def cut():
        raise OSError(5)  # the power goes after the drop is in meta, before its gap record

    ob._declare = cut
    try:
        for i in range(400):
            ob.append(probe(i, pad=100))
    except OSError as e:
        eq(e.errno, 5)
    eq(ob.dropped > 0, True)
    meta = json.loads(read("ob/meta"))
    eq(len(meta["gap"]), 3)
    first, last, n = meta["gap"]
    ob = None
    ob = reopen(max_bytes=1 << 30)
    rs = check_covered(ob)
    gaps = [r for r in rs if r["k"] == "gap"]
    eq(gaps[-1]["drop"], [[first, last]])
    eq(gaps[-1]["kinds"], {"?": n})
    eq(gaps[-1]["t"], 0)
    eq("gap" in json.loads(read("ob/meta")), False)


class _NoBlockFor:
    """outbox's open() failing with MemoryError on the calls numbered in `fail` (from
    1): a fragmented heap with no block for littlefs's file buffer."""

    def __init__(self, fail):
        self.fail = fail
        self.calls = 0

    def __call__(self, *a):
        self.calls += 1
        if self.calls in self.fail:
            raise MemoryError("memory allocation failed, allocating 252 bytes")
        return open(*a)


def _seqs_and_ts(ob):
    return [(r["seq"], r["t"]) for r in (json.loads(b) for b in everything(ob))]


def test_memory_error_in_flush_keeps_the_records_queued():
    ob = fresh()
    for i in range(3):
        ob.queue(state(i))
    eq(ob.flush(), 3)
    for i in range(3, 7):
        ob.queue(state(i))
    outbox.open = _NoBlockFor((1,))
    try:
        try:
            ob.flush()
            raise AssertionError("flush() did not raise")
        except MemoryError:
            pass
        eq(ob.queued(), 4)   # nothing written, nothing dropped
        eq(ob.last_seq, 3)
        eq(ob.nflushed, 0)
        eq(ob.flush(), 7)    # the next try writes them, in order
    finally:
        del outbox.open
    eq(ob.queued(), 0)
    want = [(s, s - 1) for s in range(1, 8)]
    eq(_seqs_and_ts(ob), want)
    eq(_seqs_and_ts(reopen()), want)  # and so does the next boot


def test_memory_error_between_segments_writes_each_record_once():
    ob = fresh(seg=1024)
    ob.q_bytes = 4096  # one flush of all ten
    for i in range(10):  # ~150 B each: two segments' worth
        ob.queue(probe(i, pad=100))
    outbox.open = _NoBlockFor((2,))  # the first segment is written, the second is not
    try:
        try:
            ob.flush()
            raise AssertionError("flush() did not raise")
        except MemoryError:
            pass
        done = ob.nflushed
        assert 0 < done < 10, done
        eq(ob.last_seq, done)
        eq(ob.queued(), 10 - done)
        ob.queue(probe(10, pad=100))  # a record of the next turn goes behind them
        eq(ob.flush(), 11)
    finally:
        del outbox.open
    want = [(s, s - 1) for s in range(1, 12)]
    eq(_seqs_and_ts(ob), want)
    eq(_seqs_and_ts(reopen(seg=1024)), want)
    check_covered(ob)


def test_memory_error_when_the_queue_is_full_loses_nothing():
    ob = fresh()
    failing = outbox.open = _NoBlockFor((1,))
    try:
        n = 0
        while not failing.calls:  # queue() flushes past q_bytes: that flush fails
            ob.queue(state(n))
            n += 1
        # the failed flush kept the earlier ones; the record that triggered it joined them
        assert n > 1, n
        eq(ob.queued(), n)
        eq(ob.last_seq, 0)
        eq(ob.flush(), n)
    finally:
        del outbox.open
    eq(_seqs_and_ts(reopen()), [(s, s - 1) for s in range(1, n + 1)])


def test_deinit():
    ob = fresh()
    ob.deinit()
    _umount()
    try:
        os.remove(IMG)
    except OSError:
        pass


mpyunit.main(globals())
