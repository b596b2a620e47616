# Fuzz target (tests/test_fuzz_agent.py): every input is what a broker might send the
# agent. Each goes through decode_remaining_length, through read_packet + parse_connack
# / parse_suback / parse_publish with a small buffer (the oversized-packet path), and
# through the client's own reader (Client._read_loop, which dispatches as on a board).
# Allowed outcomes: parsed, or refused with MQTTError, ValueError, or OSError at the
# end of the stream. Anything else is reported UNEXPECTED with its type.
import sys

if ".frozen" not in sys.path:
    sys.path.append(".frozen")

import gc  # noqa: E402
import asyncio  # noqa: E402

gc.collect()
import mqtt  # noqa: E402
from fuzzrun import Report, Stream, argv, describe, inputs  # noqa: E402

EXPECTED = (mqtt.MQTTError, ValueError, OSError)
SMALL = memoryview(bytearray(32))  # smaller than most packets: the split path


def check_remaining_length(f, start, n):
    f.seek(start)
    head = f.read(min(n, 6))
    try:
        r = mqtt.decode_remaining_length(head, 1)
    except ValueError:
        return
    if r is not None and not (0 <= r[0] <= 268435455 and 1 <= r[1] <= 4):
        raise AssertionError("decode_remaining_length gave %r" % (r,))


async def parse_all(stream):
    # read_packet and the parse functions, called as Client._handshake / _dispatch call them.
    while True:
        hdr, n = await mqtt.read_packet(stream, SMALL)
        t = hdr & 0xF0
        if t == 0x20:
            mqtt.parse_connack(SMALL, n)
        elif t == 0x90:
            mqtt.parse_suback(SMALL, n)
        elif t == 0x30:
            big = n > len(SMALL)
            topic, msg, qos, pid = mqtt.parse_publish(hdr, SMALL, len(SMALL) >> 1 if big else n)
            if not (0 <= qos <= 2 and 0 <= pid <= 65535 and len(topic) <= n and len(msg) <= n):
                raise AssertionError("parse_publish gave qos %d pid %d" % (qos, pid))


class Client(mqtt.Client):
    def __init__(self):
        super().__init__("127.0.0.1", 1883, "fuzz", keepalive_s=0)
        self.got = 0
        self.on_message = self.count

    def count(self, topic, msg):
        self.got += 1

    def feed(self, stream):
        # A live connection whose socket is the stream (as tests/mpy/test_mqtt_codec.py).
        self._sock = stream
        self._stream = stream
        self._gen += 1
        self._live = True
        self.last_error = None


def main():
    report = Report()
    client = Client()
    stream = None
    for i, f, start, n, chunk in inputs(argv()):
        if stream is None:
            stream = Stream(f)
        try:
            check_remaining_length(f, start, n)
            try:
                asyncio.run(parse_all(stream.reset(start, n, chunk)))
            except EXPECTED:
                pass
            client.feed(stream.reset(start, n, chunk))
            asyncio.run(client._read_loop())  # ends when the stream does; never raises
            why = client.last_error or ""
            if client._live or why.split(":")[0] not in ("OSError", "MQTTError", "ValueError"):
                report.say(i, "UNEXPECTED", "client reader ended with: %r" % why)
                continue
        except Exception as e:  # noqa: what this fuzz is looking for
            report.say(i, "UNEXPECTED", describe(e))
            continue
        report.say(i, "ok" if "closed" in why else "refused", why[:80])
    report.done()


main()
