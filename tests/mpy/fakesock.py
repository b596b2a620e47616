# A fake byte-buffer socket/stream for MicroPython tests (no network).
#
# FakeSock(data, chunks) serves `data` to readers in pieces: `chunks` is a list of piece
# sizes, used in turn (the last one repeats), so a packet can be split across reads at
# chosen points. Everything written to it is collected in `.out`. It has the two sides
# the MQTT code uses: `await readinto(buf)` (an asyncio Stream's) and `write(buf)`
# (a non-blocking socket's, which may take only part: `write_max`).


class FakeSock:
    def __init__(self, data=b"", chunks=None, write_max=0):
        self.data = data  # not copied: tests hand in 16 KB packets on a small heap
        self.pos = 0
        self.chunks = chunks or [len(self.data) or 1]
        self.reads = 0
        self.out = bytearray()
        self.write_max = write_max
        self.closed = False

    def feed(self, data):
        self.data = bytes(self.data[self.pos:]) + bytes(data)
        self.pos = 0

    async def readinto(self, buf):
        if self.pos >= len(self.data):
            return 0  # end of stream, like a closed TCP connection
        size = self.chunks[min(self.reads, len(self.chunks) - 1)]
        self.reads += 1
        n = min(len(buf), size, len(self.data) - self.pos)
        buf[0:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n

    def write(self, buf):
        n = len(buf)
        if self.write_max:
            n = min(n, self.write_max)
        self.out += bytes(buf[0:n])
        return n

    def close(self):
        self.closed = True


def hexs(b):
    return " ".join("%02x" % x for x in b)


class Pattern:
    """n bytes of a letter pattern ('abc...z' repeated), made only where sliced: a large
    payload without a large allocation (a MicroPython heap is small and fragmented)."""

    def __init__(self, n, start=0):
        self.n = n
        self.start = start

    def __len__(self):
        return self.n

    def at(self, i):
        return 0x61 + (self.start + i) % 26

    def __getitem__(self, s):
        a = s.start or 0
        b = self.n if s.stop is None else min(s.stop, self.n)
        return bytes(self.at(i) for i in range(a, b))


class Joined:
    """Several byte strings / Patterns read as one, for FakeSock(data)."""

    def __init__(self, *parts):
        self.parts = parts

    def __len__(self):
        return sum(len(p) for p in self.parts)

    def __getitem__(self, s):
        a = s.start or 0
        b = len(self) if s.stop is None else s.stop
        out = bytearray()
        off = 0
        for p in self.parts:
            lo = max(a - off, 0)
            hi = min(b - off, len(p))
            if lo < hi:
                out += p[lo:hi]
            off += len(p)
        return bytes(out)
