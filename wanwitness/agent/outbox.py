# outbox.py - the agent's record log on flash (MicroPython only).
#
# Records wait here until the collector acks them: its retained {"seq":N,"ob":O} says
# every record <= N is committed (docs/protocol.md "Acknowledgement"); a PUBACK does not.
# An ack is taken only for this log's own outbox id and never above its own last seq:
# it must not delete or skip a record this log has not written.
#
# On flash, under `root` (relative to the cwd, which is the filesystem root):
#   meta   {"seq":S,"acked":A,"boot":B,"ob":O}: the high-water seq, the ack cursor, the
#          boot counter, the outbox id; written to meta.tmp then renamed over meta
#          (rename is atomic on littlefs), so a power cut leaves the old or the new one.
#          It carries a "gap" entry only while a full filesystem forces a drop (see
#          _full()). The outbox id (8 random lowercase hex digits) is made when there is
#          no meta (an empty flash): it names this run of seqs and boots, so the
#          collector tells a re-flashed board from copies. A meta of older firmware has
#          none and keeps "": its seqs continue the collector's legacy stream.
#   <key>  segments, named by a decimal key (the seq of their first record when made);
#          read in key order they hold strictly increasing seqs. A segment is a run of
#          frames: u16 length, u32 CRC32 of the JSON (both little-endian), then JSON:
#          - a record, compact, `seq` and `k` first: {"seq":7,"k":"probe",...}; these
#            bytes are what pending() returns and the batch carries;
#          - a boot marker {"boot":B} (no seq, never sent): it starts every segment
#            and precedes the first record of each boot. Records after it were
#            written in boot B: their `t` is on that boot's clock, so they go out in
#            a batch with boot id B even after a reboot (pending_boot).
#   tmp    a compaction's output before it is renamed over a segment.
#
# Invariant the collector's ack depends on (it acks the highest N such that every
# seq <= N is stored or declared dropped): every seq in (acked, last_seq] is a record
# in the log or inside a `drop` range of a `gap` record in the log.
#
# Steps: the outbox's flash work runs as jobs (a flush, an ack) cut into steps, each at
# most one littlefs operation that can erase a 4 KiB block (45 ms on the chip, the loop
# stalled): creating a segment (a directory commit), the writes of an append (littlefs
# copies the file's last block into a freshly erased one in the first write), the close
# (the commit: a directory compaction erases once every ~20 commits), meta.tmp created,
# written and closed, renamed, each segment an ack deletes; a compaction's gap records,
# its output files' creates, block erases, closes and renames, its removes (_apply).
# step() runs one; the app runs a job's steps with an LED sample turn between two of
# them, holding its loop meanwhile (app.App.work). One job at a time: an
# ack is taken at once (pending() skips what it covers) and persisted by the next job;
# nothing else opens a file while a job has one open; pending() reads only committed
# files. What may still erase more than once in a step: a full filesystem (_full: in
# one step), and a directory relocation (every ~100 compactions) whose commit to the
# parent compacts that one too. flush() and ack() run every step at once (boot,
# crash, tests).
#
# Crash safety, step by step:
# - append: one or two frames, one file close (the littlefs commit); a cut before the
#   commit leaves the file as it was; the outbox's counts change after the commit. A
#   torn or corrupt frame found by open() is counted in `corrupt`, skipped (scanning on for the next valid frame), cut out of
#   the file, and the seqs it took are declared in a gap record (`lost`).
# - ack: meta (with the high-water seq) is renamed into place before acked segments
#   are deleted, so a seq is never reused even when the whole log is gone.
# - compaction: the gap records are appended first: they are the commit point. Then
#   the victims' survivors are written in order over the victims, one rename each,
#   then the remaining victims are deleted. open() drops copies (a seq not above the
#   highest seen so far) and records inside the drop ranges of the gap records that
#   end the log, which finishes a compaction a power cut interrupted.
import binascii
import io
import json
import os
import struct
from micropython import const

_HDR = const(6)        # u16 length + u32 CRC32
_MIN = const(9)        # the shortest JSON a frame holds: {"seq":1}
_MAXLEN = const(65535)
_META_PER_ERASE = const(20)  # directory commits per erase (measured: tests/mpy/flash_wear_day.py)
_INLINE = const(128)   # littlefs inline_max on MicroPython: min(cache_size 128, ...)
_ENOSPC = const(28)
# fields of a segment entry in Outbox._segs
_KEY = const(0)
_SIZE = const(1)       # file bytes
_FIRST = const(2)      # first and last seq in it
_LAST = const(3)
_N = const(4)          # records
_LOWB = const(5)       # bytes of low-value records
_BOOT = const(6)       # boot of its last marker: the boot its next record belongs to

LOW_VALUE = (b"probe", b"stats", b"led")   # dropped first when the log is full
_SEQ_HEAD = b'{"seq":'
_K_HEAD = b',"k":"'
_BOOT_HEAD = b'{"boot":'


def _run(job):
    # every step of a job at once
    for _ in job:
        pass


def _marker(boot):
    j = b'{"boot":%d}' % boot
    return struct.pack("<HI", len(j), binascii.crc32(j) & 0xFFFFFFFF) + j


def _marker_len(boot):
    return _HDR + len(b'{"boot":%d}' % boot)


def _frame(buf, off, size):
    """(seq, kind bytes, end) of a valid frame at buf[off], else None; a boot
    marker is (0, boot, end)."""
    if off + _HDR + _MIN > size:
        return None
    ln, crc = struct.unpack_from("<HI", buf, off)
    s = off + _HDR
    e = s + ln
    if ln < _MIN or e > size or buf[s] != 0x7B:
        return None
    if binascii.crc32(memoryview(buf)[s:e]) & 0xFFFFFFFF != crc:
        return None
    # Our own layout: read seq and k in place, no parsing, no allocation but the kind.
    i = 0
    while i < 8 and buf[s + i] == _BOOT_HEAD[i]:
        i += 1
    if i == 8:
        i = s + 8
        boot = 0
        while i < e and 48 <= buf[i] <= 57:
            boot = boot * 10 + buf[i] - 48
            i += 1
        if i == e - 1 and buf[i] == 0x7D:
            return 0, boot, e
        return None
    i = 0
    while i < 7 and buf[s + i] == _SEQ_HEAD[i]:
        i += 1
    if i == 7:
        i = s + 7
        seq = 0
        while i < e and 48 <= buf[i] <= 57:
            seq = seq * 10 + buf[i] - 48
            i += 1
        if seq > 0 and i < e:
            if buf[i] == 0x7D:  # }
                return seq, b"", e
            j = 0
            while j < 6 and i + j < e and buf[i + j] == _K_HEAD[j]:
                j += 1
            if j == 6:
                a = i + 6
                b = a
                while b < e and buf[b] != 0x22 and buf[b] != 0x5C:
                    b += 1
                if b < e and buf[b] == 0x22:
                    return seq, bytes(memoryview(buf)[a:b]), e
    # Any other JSON object with a positive integer seq (a hand-made or future frame).
    try:
        rec = json.loads(bytes(memoryview(buf)[s:e]))
    except ValueError:
        return None
    if not isinstance(rec, dict):
        return None
    seq = rec.get("seq")
    if type(seq) is not int or seq < 1:
        return None
    k = rec.get("k")
    return seq, (k.encode() if isinstance(k, str) else b""), e


class _Sink(io.IOBase):
    # json.dump's output put straight into a buffer (json.dump writes its pieces to a
    # stream): no string of the record's size at all.
    def __init__(self, buf):
        self.buf = buf
        self.n = 0

    def write(self, b):
        k = len(b)
        if self.n + k > len(self.buf):
            raise ValueError("record does not fit its buffer")  # (never grow it)
        self.buf[self.n:self.n + k] = b
        self.n += k
        return k


def _body_into(rec, buf):
    # _body()'s bytes written into buf (a bytearray the caller gives up): a memoryview of
    # them. Allocates nothing of the record's size: what a record that found no block
    # anywhere else is queued in (App: the reserve). ValueError when it does not fit.
    k = rec.pop("k", None)
    seq = rec.pop("seq", None)
    w = _Sink(buf)
    try:
        if k is not None:
            w.write(b',"k":')
            json.dump(k, w)
        p = w.n
        json.dump(rec, w, separators=(",", ":"))  # type: ignore[call-overload]  # a keyword on MicroPython
    finally:
        if k is not None:
            rec["k"] = k
        if seq is not None:
            rec["seq"] = seq
    if w.n - p > 2:
        buf[p] = 44  # "{" -> ",": head + "," + the fields + "}"
    else:
        buf[p] = 125  # "{}" -> "}"
        w.n = p + 1
    return memoryview(buf)[:w.n]


def _body(rec):
    # A record's JSON after its seq: b',"k":"kind",<the other fields>}' (or b'}'); the
    # seq is put in front when the record goes to flash (Outbox.flush).
    k = rec.pop("k", None)
    seq = rec.pop("seq", None)
    try:
        body = json.dumps(rec, separators=(",", ":"))
    finally:
        if k is not None:
            rec["k"] = k
        if seq is not None:
            rec["seq"] = seq
    # Put together in one block of the result's size, no intermediate copies: joined
    # and encoded as strings, a record was four copies of itself at once, the moment
    # an outage's onset queues its records into a heap already short of blocks.
    head = memoryview(',"k":' + json.dumps(k) if k is not None else "")  # type: ignore[arg-type]  # MicroPython: a str's bytes
    js = memoryview(body)  # type: ignore[arg-type]
    h = len(head)
    n = len(js)
    out = bytearray(h + (n if n > 2 else 1))  # head + "," + body[1:], or head + "}"
    out[:h] = head
    if n > 2:
        out[h] = 44  # ","
        out[h + 1:] = js[1:]
    else:
        out[h] = 125  # "}"
    return out


def _valid_ob(ob):
    # "" (older firmware's meta) or 8 lowercase hex digits
    if not isinstance(ob, str) or (ob and len(ob) != 8):
        return False
    for c in ob:
        if c not in "0123456789abcdef":
            return False
    return True


def _resync(buf, off, size):
    """Offset of the next valid frame at or after off (size if none): one corrupt
    frame must not cost the good ones behind it."""
    last = size - _HDR - _MIN
    while off <= last:
        if buf[off + _HDR] == 0x7B and _frame(buf, off, size) is not None:
            return off
        off += 1
    return size


class Outbox:
    # A segment fills at most half a 4 KiB littlefs block. pending() and the scans read
    # a segment whole into _buf, the largest block the agent keeps for good: at 2 KiB it
    # is 2 KiB less of the board's live heap (the 40 KB) for twice the flash per
    # record (littlefs gives each file a whole block: a full 128 KiB log takes 256 KiB of
    # a 2 MiB filesystem), the same erases per record and half the bytes programmed per
    # append (bench/README.md "Outbox on flash").
    seg_bytes = 2048
    q_bytes = 768      # RAM for records waiting for flush(): ~5 records of an outage onset
    gap_ranges = 16    # drop ranges per gap record: keeps each gap record small
    slack = 1024       # a compaction frees this much more than it must: runs rarely

    def __init__(self, root="ob", max_bytes=131072, seg_bytes=0, q_bytes=0):
        self.root = root
        self.max_bytes = max_bytes
        if q_bytes:
            self.q_bytes = q_bytes  # (the app: it flushes a step at a time before this)
        if seg_bytes:
            self.seg_bytes = seg_bytes  # smaller segments (tests, figures): a buffer to fit
        self._buf = bytearray(self.seg_bytes)
        self._hdr = bytearray(_HDR)
        self._segs = []       # [key, size, first, last, n, lowb, boot], oldest first
        self._total = 0       # bytes in segments
        self._seal = False    # the next write starts a new segment
        self._intent = None   # [first, last, n, kinds, t, utc]: a drop committed in meta,
                              # not yet declared in a gap record (full filesystem)
        self.boot = 0
        self.ob = ""           # outbox id; "" = the legacy stream of older firmware
        self.pending_boot = 0  # boot of the records the last pending() returned
        self.last_seq = 0
        self.acked = 0
        self.depth = 0        # records not yet acked
        self.corrupt = 0      # corrupt or torn regions open() skipped: the app reports them
        self.lost = []        # [first, last] seq ranges open() found lost (each in a gap record)
        self.dropped = 0      # records dropped to stay within max_bytes (all in gap records)
        self._q = []          # [(body, low)]: records queued for the next flush()
        self.nflushed = 0     # records the last flush() wrote (the last ones up to last_seq)
        self._qbytes = 0
        self._qt = 0          # t and utc of the last queued record (for gap records)
        self._qutc = None
        self.writes = 0       # block copies/erases from file writes (wear())
        self.commits = 0      # directory log commits: closes, renames, removes (wear())
        self._job = None      # the flash job under way (a generator: step() runs it)
        self._nfly = 0        # records the flush under way is writing
        self._ackto = 0       # the highest ack taken; acked once it is in meta

    def deinit(self):
        self._buf = None
        self._segs = []

    # --- files ---------------------------------------------------------------

    def _path(self, name):
        return "%s/%s" % (self.root, name)

    def _rm(self, name):
        try:
            os.remove(self._path(name))
            self.commits += 1
        except OSError:
            pass

    def _load(self, key):
        p = self._path(key)
        size = os.stat(p)[6]
        buf = self._buf if size <= len(self._buf) else bytearray(size)
        mv = memoryview(buf)
        got = 0
        with open(p, "rb") as f:
            while got < size:
                n = f.readinto(mv[got:size])
                if not n:
                    break
                got += n
        return buf, got

    def _save_meta(self, acked=-1):
        # A job (three steps: each a directory commit); _run() for all at once.
        m = {"seq": self.last_seq, "acked": self.acked if acked < 0 else acked,
             "boot": self.boot, "ob": self.ob}
        if self._intent:
            m["gap"] = self._intent[:3]  # [first, last, n]: small enough to stay inline
        js = json.dumps(m, separators=(",", ":"))
        tmp = self._path("meta.tmp")
        with open(tmp, "w") as f:   # created: a commit
            yield
            f.write(js)
        yield                       # closed: a commit (inline data)
        os.rename(tmp, self._path("meta"))
        self.commits += 2  # a small file lives in the directory log: no data block

    def _read_meta(self):
        try:
            with open(self._path("meta")) as f:
                m = json.loads(f.read())
        except OSError:
            return {}  # first boot
        except ValueError:
            m = None
        if not isinstance(m, dict):
            self.corrupt += 1
            return {}
        for k in ("seq", "acked", "boot"):
            if type(m.get(k)) is not int or m[k] < 0:
                m[k] = 0
        return m

    # --- records -------------------------------------------------------------

    def _encode(self, rec, seq):
        # {"seq":N,"k":"kind",<the other fields>}: seq and k first, for _frame().
        body = _body(rec)
        rec["seq"] = seq
        return b'{"seq":%d' % seq + body

    def _write(self, frames):
        """Append frames [(head, body, seq, low), ...] (seqs consecutive, from
        last_seq + 1; a frame's JSON is head + body, written as two pieces so a queued
        record's body is never copied to prepend its seq: a flush needs no second copy
        of its queue):
        one file session (open, write, close: one littlefs commit) per segment they go
        into, so a burst costs one block copy, not one per record. A power cut before a
        close leaves that segment as it was. A job: it yields between the operations
        that can erase (create, write, close); _run() for all at once."""
        i = 0
        n = len(frames)
        while i < n:
            segs = self._segs
            tail = segs[-1] if segs else None
            head, body, seq, low = frames[i]
            flen = len(head) + len(body) + _HDR
            # (a segment of an earlier boot takes a boot marker first: it counts too, so
            # no segment outgrows seg_bytes and pending() reads each into _buf)
            mlen = 0 if tail is not None and tail[_BOOT] == self.boot else _marker_len(self.boot)
            new = tail is None or self._seal or (tail[_SIZE] and tail[_SIZE] + mlen + flen > self.seg_bytes)
            if new:
                tail = [seq, 0, seq, seq, 0, 0, -1]
            mark = _marker(self.boot) if tail[_BOOT] != self.boot else None
            size = tail[_SIZE] + (len(mark) if mark else 0)
            j = i
            while j < n:
                flen = len(frames[j][0]) + len(frames[j][1]) + _HDR
                if j > i and size + flen > self.seg_bytes:
                    break  # the rest starts the next segment
                size += flen
                j += 1
            hdr = self._hdr
            # The CRCs first: above 2**30 each is a long int on a 32-bit port, an
            # allocation that must not fail halfway through the file session (that would
            # leave frames on flash this outbox does not count).
            crcs = [binascii.crc32(frames[k][1], binascii.crc32(frames[k][0])) & 0xFFFFFFFF
                    for k in range(i, j)]
            try:
                with open(self._path(tail[_KEY]), "ab") as f:
                    if new:
                        yield  # created: a directory commit
                    if mark:
                        f.write(mark)
                    for k in range(i, j):
                        head, body = frames[k][0], frames[k][1]
                        struct.pack_into("<HI", hdr, 0, len(head) + len(body), crcs[k - i])
                        f.write(hdr)
                        if head:
                            f.write(head)
                        f.write(body)
                    yield  # the block copy: littlefs erases a block in the first write
            except OSError:
                if new:
                    self._rm(tail[_KEY])
                raise
            # closed: the commit (a step of its own); the counts change only now
            self._wrote(size, 1)
            if new:
                segs.append(tail)
                self._seal = False
            if mark:
                tail[_SIZE] += len(mark)
                self._total += len(mark)
                tail[_BOOT] = self.boot
            for k in range(i, j):
                head, body, seq, low = frames[k]
                flen = len(head) + len(body) + _HDR
                if not tail[_N]:
                    tail[_FIRST] = seq
                tail[_LAST] = seq
                tail[_N] += 1
                tail[_SIZE] += flen
                if low:
                    tail[_LOWB] += flen
                self._total += flen
                self.last_seq = seq
                self.depth += 1
            i = j
            if i < n:
                yield  # the next segment's create in a step of its own

    def _wrote(self, size, commits):
        # A file write session that left the file `size` bytes long. Up to _INLINE
        # bytes littlefs keeps a file inside the directory log (a commit, no block of
        # its own); a longer one gets its last block copied into a freshly erased one,
        # plus a block per 4 KiB beyond.
        self.commits += commits
        if size > _INLINE:
            self.writes += 1 + (size - 1) // 4096

    def _gap(self, drop, kinds, t, utc):
        # the write of a gap record: a job (_write)
        rec = {"k": "gap", "t": t, "utc": utc, "drop": drop, "kinds": kinds}
        seq = self.last_seq + 1
        return self._write([(b"", self._encode(rec, seq), seq, False)])

    # --- the interface (docs/agent.md) ---------------------------------------

    def open(self):
        """Scan the log, cut out torn or corrupt frames, finish an interrupted
        compaction or ack, recover seq and the ack cursor; boot += 1."""
        self._recover(True)

    def _recover(self, boot):
        try:
            os.mkdir(self.root)
        except OSError:
            pass  # it exists
        self._segs = []
        self._seal = False
        if boot:
            self.corrupt = 0
            self.lost = []
        lost = []
        meta = self._read_meta()
        ob = meta.get("ob", "") if meta else None
        if ob is None or not _valid_ob(ob):
            # No meta (an empty flash, or a meta beyond repair): a new stream of seqs.
            ob = binascii.hexlify(os.urandom(4)).decode()
        self.ob = ob
        acked = meta.get("acked", 0)
        g = meta.get("gap")
        self._intent = None
        if isinstance(g, list) and len(g) == 3:
            # a drop a power cut kept from being declared: its kinds are not known
            self._intent = [g[0], g[1], g[2], {"?": g[2]}, 0, None]
        keys = []
        for name in os.listdir(self.root):
            if name.isdigit():
                keys.append(int(name))
            elif name != "meta":
                self._rm(name)  # tmp or meta.tmp: a write a power cut interrupted
        keys.sort()
        hi = 0          # highest valid seq so far, in log order
        prev = acked    # last record kept, for lost ranges
        bad = False     # a corrupt region since the previous good frame
        trail = []      # drop ranges of the gap records that end the log
        dirty = []      # (index, hi before it) of segments to rewrite
        for key in keys:
            buf, size = self._load(key)
            seg = [key, size, 0, 0, 0, 0, -1]
            hi0 = hi
            fix = False
            off = 0
            while off < size:
                f = _frame(buf, off, size)
                if f is None:
                    self.corrupt += 1
                    bad = fix = True
                    off = _resync(buf, off + 1, size)
                    continue
                seq, kind, end = f
                if not seq:
                    seg[_BOOT] = kind
                elif seq <= hi:
                    fix = True  # a copy left by an interrupted compaction
                else:
                    hi = seq
                    if bad and seq > max(prev, acked) + 1:
                        lost.append([max(prev, acked) + 1, seq - 1])
                    bad = False
                    prev = seq
                    if kind == b"gap":
                        try:
                            trail.extend(json.loads(bytes(memoryview(buf)[off + _HDR:end]))["drop"])
                        except (ValueError, KeyError, TypeError):
                            pass
                    else:
                        trail = []
                    if not seg[_N]:
                        seg[_FIRST] = seq
                    seg[_LAST] = seq
                    seg[_N] += 1
                    if kind in LOW_VALUE:
                        seg[_LOWB] += end - off
                off = end
            if fix or not seg[_N] or seg[_LAST] <= acked:
                dirty.append((len(self._segs), hi0))
            self._segs.append(seg)
        mseq = meta.get("seq", 0)
        if mseq > max(hi, acked):
            # seqs the log once held (meta says so) and no longer does: declare them
            lost.append([max(hi, acked) + 1, mseq])
        self.last_seq = max(mseq, hi)
        self.acked = acked
        self.boot = meta.get("boot", 0) + (1 if boot else 0)
        _run(self._save_meta())
        if self._intent:
            trail.append(self._intent[:2])
        # Segments the trailing gap records (or a drop in meta) cut into: a compaction
        # the power cut interrupted.
        if trail:
            trail.sort()
            marked = [i for i, _ in dirty]
            hib = 0
            for i, seg in enumerate(self._segs):
                if i not in marked and self._touches(seg, trail):
                    dirty.append((i, hib))
                hib = max(hib, seg[_LAST])
            dirty.sort()
        for i, hi0 in reversed(dirty):
            seg = self._segs[i]
            if not seg[_N] or seg[_LAST] <= acked:
                self._rm(seg[_KEY])
                del self._segs[i]
                continue
            try:
                _run(self._apply(i, i + 1, trail, hi0))
            except OSError as e:
                if e.errno != _ENOSPC:
                    raise
                # No block for the rewrite: leave it. pending() skips the copies;
                # records a gap declared may go out too, which the collector takes.
                self._rm("tmp")
        self._total = 0
        for seg in self._segs:
            self._total += seg[_SIZE]
        self.depth = self._count_depth()
        if self._intent:
            self._declare()
        for r in lost:
            _run(self._gap([r], {"lost": r[1] - r[0] + 1}, 0, None))
            self.lost.append(r)

    def _touches(self, seg, drops):
        # does a record of seg lie inside one of the (sorted) drop ranges?
        for r in drops:
            if r[0] <= seg[_LAST] and r[1] >= seg[_FIRST]:
                break
        else:
            return False
        buf, size = self._load(seg[_KEY])
        off = 0
        while off < size:
            f = _frame(buf, off, size)
            if f is None:
                off = _resync(buf, off + 1, size)
                continue
            for r in drops:
                if r[0] <= f[0] <= r[1]:
                    return True
            off = f[2]
        return False

    def append(self, rec):
        """Give rec the next seq, store it framed (with any queued records before it),
        set rec["seq"] and return it. When the log would pass max_bytes, older records
        are dropped first, each named in a gap record."""
        self.queue(rec)
        seq = self.flush()
        rec["seq"] = seq
        return seq

    def queue(self, rec, into=None):
        """Hold rec in RAM, encoded, until flush(): records of one loop turn go to flash
        as one append. It has no seq yet (flush() gives it one), is not in pending()
        and cannot be acked: nothing is sent before it is on flash. At most q_bytes
        wait: a record that would pass them flushes the ones before it first.
        into: a bytearray (or a memoryview of one) the caller gives up until rec is on
        flash, to encode rec in without allocating (ValueError when rec does not fit
        it). Returns the encoded record's length in bytes."""
        body = _body(rec) if into is None else _body_into(rec, into)
        if len(body) + 20 > _MAXLEN:
            raise ValueError("record of %d bytes does not fit a frame" % len(body))
        if self._q and self._qbytes + len(body) > self.q_bytes:
            try:
                self.flush()
            except MemoryError:
                pass  # they stay queued (flush() put them back), rec joins them
        self._q.append((body, rec.get("k") in ("probe", "stats", "led")))
        self._qbytes += len(body)
        self._qt = rec.get("t", 0)
        self._qutc = rec.get("utc")
        return len(body)

    def queued(self):
        # records not yet on flash: the flush under way's, then the queue's
        return self._nfly + len(self._q)

    def queued_bytes(self):
        # the queue's bytes (not the flush under way's)
        return self._qbytes

    def work(self):
        """True while there is flash work for step(): a job under way, queued records,
        an ack taken but not yet in meta."""
        return self._job is not None or bool(self._q) or self._ackto > self.acked

    def step(self):
        """Run one step of the flash work (at most one operation that can erase a
        block, but see "Steps" at the top): the job under way, else a flush of the
        queue, else the ack taken last. True when a job ended with this step (a flush's
        records are on flash: nflushed, last_seq). A job that raises has ended; a flush
        keeps its queue as flush() says."""
        job = self._job
        if job is None:
            if self._q:
                job = self._flushing(0)
            elif self._ackto > self.acked:
                job = self._acking()
            else:
                return False
            self.nflushed = 0
            self._job = job
        try:
            next(job)
        except StopIteration:
            self._job = None
            return True
        except Exception:
            self._job = None
            raise
        return False

    def _finish(self):
        while self._job is not None:
            self.step()

    def flush(self):
        """Write the queued records, in order, as one append (two when they start a new
        segment), all its steps at once (after the job under way); returns the last seq
        on flash. The queue is empty afterwards, also when it raises OSError (a failing
        flash: the app reports it); on MemoryError the records not yet on flash are
        queued again (nflushed: how many were written, counting the job under way's)."""
        n = 0
        if self._job is not None:
            self._finish()
            n = self.nflushed
        if self._q:
            self._job = self._flushing(n)
            self._finish()
        return self.last_seq

    def _flushing(self, base):
        # The flush job: the queue goes to flash; records queued meanwhile wait for the
        # next one. nflushed = base + records written.
        q = self._q
        self._q = []
        self._qbytes = 0
        self._nfly = len(q)
        t = self._qt
        utc = self._qutc
        first = 0
        try:
            need = len(q) * (_HDR + 7 + len(str(self.last_seq + len(q) + 64)))
            for body, _ in q:
                need += len(body)
            if self._total + need > self.max_bytes:
                yield from self._make_room(self._total + need - self.max_bytes, t, utc)
                yield
            first = self.last_seq + 1
            frames = []
            for i in range(len(q)):
                body, low = q[i]
                frames.append((b'{"seq":%d' % (first + i), body, first + i, low))
            yield from self._write(frames)
        except MemoryError:
            # No block for a file session or a frame: what is not on flash goes back to
            # the queue, in order, ahead of what came meanwhile, for the next flush
            # (nothing is lost, nothing doubled).
            self._nfly = 0
            done = self.last_seq - first + 1 if first else 0
            self._q = q[max(0, done):] + self._q
            self._qbytes = 0
            for body, _ in self._q:
                self._qbytes += len(body)
            self.nflushed = base + done
            raise
        except OSError as e:
            self._nfly = 0
            self.nflushed = base + len(q)
            if e.errno != _ENOSPC:
                raise
            done = self.last_seq - first + 1 if first else 0
            # The filesystem is full before our budget is (other files grew): no room
            # even for a gap record. Re-read what a half-done compaction left, then
            # drop whole oldest segments, each committed in meta before it goes.
            self._recover(False)
            for i in range(max(0, done), len(q)):
                self._full(q[i][0], q[i][1], t, utc)
        self._nfly = 0
        self.nflushed = base + len(q)

    def wear(self):
        """Estimated 4 KiB flash erases caused by this outbox's writes since open():
        littlefs copies a file's partly filled last block into a freshly erased one on
        each write session (open .. close) of a file beyond _INLINE bytes; its
        directory log (where small files, renames and removes go) erases a block every
        ~_META_PER_ERASE commits.
        Checked against the virtual flash's counter (tests/mpy/test_outbox_burst.py)."""
        return self.writes + self.commits // _META_PER_ERASE

    def _full(self, body, low, t, utc):
        """The filesystem has no free block: not even a gap record fits. So whole
        oldest segments go, each drop first committed in meta (small: it lives in the
        directory's metadata, no data block), then declared in a gap record; open()
        declares a drop that meta still holds."""
        while self._segs:
            self._drop_oldest(t, utc)
            try:
                if self._intent:
                    self._declare()
                seq = self.last_seq + 1
                _run(self._write([(b'{"seq":%d' % seq, body, seq, low)]))
                return
            except OSError as e:
                if e.errno != _ENOSPC:
                    raise
        raise OSError(_ENOSPC)

    def _drop_oldest(self, t, utc):
        seg = self._segs[0]
        acked = self.acked
        g = self._intent or [acked + 1, acked + 1, 0, {}, t, utc]
        kinds = g[3]
        n = 0
        buf, size = self._load(seg[_KEY])
        off = 0
        while off < size:
            f = _frame(buf, off, size)
            if f is None:
                off = _resync(buf, off + 1, size)
                continue
            if f[0] > acked:
                k = f[1].decode() if f[1] else "?"
                kinds[k] = kinds.get(k, 0) + 1
                n += 1
            off = f[2]
        if n:
            # From the ack cursor on, so it also covers what dropped gap records declared.
            g[1] = seg[_LAST]
            g[2] += n
            self._intent = g
            _run(self._save_meta())  # the commit point: open() declares it if we stop here
        self._rm(seg[_KEY])
        del self._segs[0]
        self._total -= seg[_SIZE]
        self.depth -= n
        self.dropped += n

    def _declare(self):
        g = self._intent
        _run(self._gap([g[:2]], g[3], g[4], g[5]))
        self._intent = None
        _run(self._save_meta())

    def pending(self, max_bytes=1024, after=0):
        """JSON bytes of unacked records, oldest first, at most max_bytes in all
        (the first one always, however large), all from one boot: `pending_boot` is
        the boot id their batch must carry. after: only seqs above it (the next batch
        while the previous one waits for its ack)."""
        out = []
        total = 0
        acked = max(self.acked, self._ackto, after)
        hi = 0
        self.pending_boot = self.boot
        for seg in self._segs:
            if seg[_LAST] <= acked:
                continue
            buf, size = self._load(seg[_KEY])
            cur = 0
            off = 0
            while off < size:
                f = _frame(buf, off, size)
                if f is None:
                    off = _resync(buf, off + 1, size)
                    continue
                end = f[2]
                if not f[0]:
                    cur = f[1]
                elif f[0] > acked and f[0] > hi:
                    n = end - off - _HDR
                    if out and (total + n > max_bytes or cur != self.pending_boot):
                        return out  # full, or the next record is from another boot
                    self.pending_boot = cur
                    out.append(bytes(memoryview(buf)[off + _HDR:end]))
                    total += n
                    hi = f[0]
                off = end
        return out

    def ack(self, seq, ob=None):
        """The collector committed every record <= seq of outbox `ob` (None: the ack
        named none): persist the cursor, then delete the segments it covers whole (all
        at once, after the job under way). Returns why an ack was refused (it changes
        nothing), else None."""
        why = self.take_ack(seq, ob)
        if why is None and self._ackto > self.acked:
            self._finish()
            self._job = self._acking()
            self._finish()
        return why

    def take_ack(self, seq, ob=None):
        """ack() for step(): checked now (the same refusals), pending() skips what it
        covers at once, the next job persists it (acked moves then)."""
        if ob != self.ob and (ob is not None or self.ob):
            # Another outbox's ack (one retained from this board's previous flash), or
            # one naming no outbox while we have one: its seqs are not ours.
            return "for outbox %s, not %s" % (ob or "(none)", self.ob or "(none)")
        if seq > self.last_seq:
            # We never wrote that seq: taking it would delete records never stored.
            return "above the last seq %d" % self.last_seq
        if seq > self._ackto:
            self._ackto = seq
        return None

    def acked_to(self):
        # the highest ack taken (acked, or about to be)
        return max(self.acked, self._ackto)

    def _acking(self):
        # The ack job: meta with the new cursor (three steps), then one step per
        # segment it covers whole. A cut between them: open() deletes those.
        seq = self._ackto
        try:
            yield from self._save_meta(seq)
        except OSError:
            self._ackto = self.acked  # a failing flash: not again and again (the
            raise                     # collector's retained ack comes back)
        self.acked = seq
        segs = self._segs
        while segs and segs[0][_LAST] <= seq:
            yield
            s = segs.pop(0)
            self._rm(s[_KEY])
            self._total -= s[_SIZE]
        self.depth = self._count_depth()

    # --- keeping the log bounded ---------------------------------------------

    def _count_depth(self):
        n = 0
        acked = self.acked
        for seg in self._segs:
            if seg[_FIRST] > acked:
                n += seg[_N]
            elif seg[_LAST] > acked:
                buf, size = self._load(seg[_KEY])
                off = 0
                while off < size:
                    f = _frame(buf, off, size)
                    if f is None:
                        off = _resync(buf, off + 1, size)
                        continue
                    if f[0] > acked:
                        n += 1
                    off = f[2]
        return n

    def _make_room(self, need, t, utc):
        # Acked and low-value records first, everywhere; then the oldest of any kind.
        # A job (steps), as _compact.
        freed = yield from self._compact(need, t, utc, False)
        if freed < need:
            # A step between the two: the first one's last rename or remove (a directory
            # commit, which can erase) and the second one's first write (a block copy)
            # made one step of two erases (found with 2 KiB segments).
            yield
            yield from self._compact(need - freed, t, utc, True)

    def _compact(self, need, t, utc, high):
        """Drop records from a window of segments (never the one being appended to,
        unless nothing else is left), write the gap records, then rewrite the window.
        high=False: only acked and low-value records; high=True: the oldest records.
        Returns the bytes freed net of the gap records written. A job: the window is
        read in the first step, then each gap record and each file operation of the
        rewrite is a step of its own."""
        segs = self._segs
        acked = self.acked
        hi = len(segs) - 1
        avail = 0   # what the window could free without touching the tail
        for i in range(hi):
            avail += segs[i][_SIZE] if high or segs[i][_FIRST] <= acked else segs[i][_LOWB]
        seal = hi < 1 or avail < need
        if seal:
            # Not enough in older segments: the tail joins the window and the next
            # record starts a new segment.
            hi = len(segs)
        a = 0
        if not high:
            while a < hi and not segs[a][_LOWB] and segs[a][_FIRST] > acked:
                a += 1
            if a == hi:
                return 0
            if a and segs[a - 1][_SIZE] < self.seg_bytes // 2:
                a -= 1  # merge the half-empty leftover of the previous compaction
        target = need + self.slack
        groups = []  # type: list  # [drop ranges, {kind: n}] per gap record
        freed = 0
        gapb = 0
        ndrop = 0
        run = None      # the range being extended
        b = a
        while b < hi and freed < target + gapb:
            buf, size = self._load(segs[b][_KEY])
            b += 1
            off = 0
            while off < size:
                f = _frame(buf, off, size)
                if f is None:
                    off = _resync(buf, off + 1, size)
                    continue
                seq, kind, end = f
                flen = end - off
                off = end
                if not seq:
                    continue  # a boot marker: rewritten where needed
                if seq <= acked:
                    freed += flen
                    continue
                if high:
                    if freed >= target + gapb:
                        run = None
                        continue
                    # Oldest first: a single range from the ack cursor, so it also covers
                    # whatever the dropped gap records had declared.
                    if not groups:
                        groups.append([[[acked + 1, seq]], {}])
                    groups[0][0][0][1] = seq
                    gapb = 90
                elif kind in LOW_VALUE:
                    if run is None:
                        if not groups or len(groups[-1][0]) >= self.gap_ranges:
                            groups.append([[], {}])
                        run = [seq, seq]
                        groups[-1][0].append(run)
                        gapb += 30
                    run[1] = seq
                else:
                    run = None
                    continue
                k = kind.decode() if kind else "?"
                kinds = groups[-1][1]
                kinds[k] = kinds.get(k, 0) + 1
                freed += flen
                ndrop += 1
            if high:
                run = None
            gapb = 0
            for g in groups:
                gapb += len(self._encode({"k": "gap", "t": t, "utc": utc, "drop": g[0],
                                          "kinds": g[1]}, self.last_seq + 1)) + _HDR
        if not freed:
            return 0
        if seal:
            self._seal = True
        drops = []
        for g in groups:
            yield from self._gap(g[0], g[1], t, utc)   # the commit point
            yield
            drops.extend(g[0])
        yield from self._apply(a, b, drops, 0)
        self.depth -= ndrop
        self.dropped += ndrop
        return freed - gapb

    def _apply(self, a, b, drops, hi):
        """Rewrite segments a..b-1 without: records <= acked, copies (seq not above the
        highest seen), records inside the drop ranges. Survivors are packed in order
        into files named after the victims; output j replaces victim j only once a
        later victim is being read, i.e. when every survivor of victim j is already in
        this or an earlier output (so a power cut at any point loses nothing).
        A job: a step after each create, close, rename and remove, and after the write
        that takes an output out of the directory (littlefs erases its block then); the
        victim being read is read again after each (pending() shares the buffer; the
        victim is not renamed over before the next one is read). _run() for all at once."""
        segs = self._segs
        acked = self.acked
        cap = self.seg_bytes
        tmp = self._path("tmp")
        made = []
        out = None
        cur = None
        j = a
        ri = 0
        nr = len(drops)
        try:
            for i in range(a, b):
                key = segs[i][_KEY]
                buf, size = self._load(key)
                mv = memoryview(buf)
                vboot = -1
                off = 0
                while off < size:
                    f = _frame(buf, off, size)
                    if f is None:
                        off = _resync(buf, off + 1, size)
                        continue
                    seq, kind, end = f
                    start = off
                    off = end
                    if not seq:
                        vboot = kind
                        continue
                    keep = seq > hi and seq > acked
                    if seq > hi:
                        hi = seq
                    while ri < nr and drops[ri][1] < seq:
                        ri += 1
                    if not keep or (ri < nr and drops[ri][0] <= seq):
                        continue
                    flen = end - start
                    step = False
                    if out is not None and cur[_SIZE] + flen > cap and j < i:
                        out.close()
                        out = None
                        yield
                        os.rename(tmp, self._path(segs[j][_KEY]))
                        self._wrote(cur[_SIZE], 2)
                        made.append(cur)
                        j += 1
                        yield
                        step = True
                    if out is None:
                        out = open(tmp, "wb")
                        cur = [segs[j][_KEY], 0, seq, seq, 0, 0, -1]
                        yield
                        step = True
                    if step:
                        buf, size = self._load(key)
                        mv = memoryview(buf)
                    was = cur[_SIZE]
                    if cur[_BOOT] != vboot and vboot >= 0:
                        m = _marker(vboot)
                        out.write(m)
                        cur[_SIZE] += len(m)
                        cur[_BOOT] = vboot
                    out.write(mv[start:end])
                    cur[_SIZE] += flen
                    if not cur[_N]:
                        cur[_FIRST] = seq
                    cur[_LAST] = seq
                    cur[_N] += 1
                    if kind in LOW_VALUE:
                        cur[_LOWB] += flen
                    if was <= _INLINE < cur[_SIZE] or was <= 4096 < cur[_SIZE]:
                        yield  # a block erased for the output
                        buf, size = self._load(key)
                        mv = memoryview(buf)
            if out is not None:
                out.close()
                out = None
                yield
                os.rename(tmp, self._path(segs[j][_KEY]))
                self._wrote(cur[_SIZE], 2)
                made.append(cur)
                j += 1
        finally:
            if out is not None:
                out.close()
        # The outputs in place of the victims (what pending() reads from now on), then
        # the victims left over deleted, one a step.
        left = [segs[i][_KEY] for i in range(j, b)]
        total = self._total
        for i in range(a, b):
            total -= segs[i][_SIZE]
        for seg in made:
            total += seg[_SIZE]
        self._total = total
        segs[a:b] = made
        for key in left:
            yield
            self._rm(key)
