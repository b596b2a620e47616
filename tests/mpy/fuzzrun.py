# The MicroPython side of the fuzz tests (tests/test_fuzz_agent.py): reads the inputs
# CPython generated and reports one line per input. Nothing here parses: the scripts
# fuzz_mqtt.py and fuzz_dns.py hand each input to the agent's own code.
#
# Input file: records of  [length: 4 bytes big-endian][chunk: 2 bytes][length bytes];
# `chunk` is the largest read the fake socket returns (packets split across reads).
# Output: "##fuzz I ok|refused|UNEXPECTED detail" per input, then "##fuzz done N minfree B",
# B the least free heap seen after an input (before collecting): the headroom left.
import gc
import sys

MARK = "##fuzz"


class Stream:
    # One input of the file as a socket would deliver it: at most `chunk` bytes a read,
    # then end of stream (readinto returns 0, as a closed TCP connection does). The
    # input is never held whole in RAM: the heap is the agent's alone.

    def __init__(self, f):
        self.f = f
        self.start = self.pos = self.end = 0
        self.chunk = 1
        self.out = 0

    def reset(self, start, n, chunk):
        self.start = self.pos = start
        self.end = start + n
        self.chunk = chunk or 1
        self.out = 0
        return self

    async def readinto(self, buf):
        return self.read_now(buf)

    def read_now(self, buf):
        k = min(len(buf), self.chunk, self.end - self.pos)
        if k <= 0:
            return 0
        self.f.seek(self.pos)
        mv = buf if isinstance(buf, memoryview) else memoryview(buf)
        r = self.f.readinto(mv[0:k])
        self.pos += r
        return r

    def write(self, buf):  # what the agent sends back (PUBACKs) is counted, not kept
        self.out += len(buf)
        return len(buf)

    def close(self):
        pass


def inputs(path):
    # (index, file, offset of the input, its length, chunk), the file left open
    f = open(path, "rb")
    head = bytearray(6)
    i = 0
    pos = 0
    while True:
        f.seek(pos)
        if f.readinto(head) != 6:
            break
        n = head[0] << 24 | head[1] << 16 | head[2] << 8 | head[3]
        chunk = head[4] << 8 | head[5]
        yield i, f, pos + 6, n, chunk
        pos += 6 + n
        i += 1
    f.close()


def describe(e):
    try:
        text = "%s: %s" % (type(e).__name__, e)
    except Exception:  # noqa: too little heap to format it
        text = type(e).__name__
    return text.replace("\n", " ")[:200]


class Report:
    def __init__(self):
        self.n = 0
        self.minfree = gc.mem_free()

    def say(self, i, status, detail=""):
        free = gc.mem_free()
        if free < self.minfree:
            self.minfree = free
        print(MARK, i, status, detail)
        self.n += 1
        gc.collect()

    def done(self):
        print(MARK, "done", self.n, "minfree", self.minfree)


def argv():
    if len(sys.argv) < 2:
        raise SystemExit("usage: micropython %s INPUTS" % sys.argv[0])
    return sys.argv[1]
