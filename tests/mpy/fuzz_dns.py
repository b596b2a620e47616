# Fuzz target (tests/test_fuzz_agent.py): every input is a UDP datagram as the agent's
# resolver would receive it (at most 512 bytes, RFC 1035 4.2.1) in answer to its query
# id 0x1234 for www.example.com. probe.dns_parse may return addresses or raise
# ValueError (DnsError is one); anything else is reported UNEXPECTED with its type.
import sys

if ".frozen" not in sys.path:
    sys.path.append(".frozen")

import gc  # noqa: E402

gc.collect()
import probe  # noqa: E402
from fuzzrun import Report, Stream, argv, describe, inputs  # noqa: E402

QID = 0x1234
NAME = "www.example.com"
BUF = bytearray(512)  # the reused receive buffer case: dns_parse(buf, qid, name, n)


def check_addresses(got):
    if not isinstance(got, list):
        raise AssertionError("dns_parse returned %r" % (got,))
    for a in got:
        parts = a.split(".")
        if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts):
            raise AssertionError("dns_parse returned the address %r" % (a,))


def parse(data, n):
    refused = 0
    for args in ((data, QID, NAME), (data, QID), (BUF, QID, NAME, n)):
        try:
            check_addresses(probe.dns_parse(*args))
        except ValueError:
            refused += 1
    return refused


def main():
    report = Report()
    stream = None
    for i, f, start, n, chunk in inputs(argv()):
        if stream is None:
            stream = Stream(f)
        n = min(n, len(BUF))  # recv(512) keeps the first 512 bytes of a longer datagram
        stream.reset(start, n, n).read_now(BUF)
        data = bytes(BUF[0:n])  # recv() hands the parser bytes
        try:
            refused = parse(data, n)
        except Exception as e:  # noqa: what this fuzz is looking for
            report.say(i, "UNEXPECTED", describe(e))
            continue
        report.say(i, "refused" if refused else "ok", "")
    report.done()


main()
