"""The lab's DNS resolver: a tiny authoritative responder for a fixed table of names.

It answers A queries (class IN) for the names in its table, NXDOMAIN for any other
name, and never recurses or forwards: nothing it does leaves the lab. It runs as a
process in the lab's isp namespace on 198.51.100.53:53 (see topology.py).

    python -m bench.lab.dnsd --listen 198.51.100.53 [--port 53] [--name NAME=IPV4 ...]

Prints `ready HOST:PORT` on stdout once the socket is bound (the lab waits for it).

Responses follow RFC 1035 4.1: the header echoes ID, opcode and RD; QR and AA are
set; RA is clear (no recursion here). The question is echoed byte for byte, the
answer's owner is a pointer to it (0xC00C, RFC 1035 4.1.4).
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import sys

# The lab's zone: every address is a lab host (RFC 5737), so a lookup leads nowhere real.
TABLE = {
    "example.test": "203.0.113.9",
    "anchor.test": "198.51.100.7",
    "anchor2.test": "198.51.100.8",
}
TTL_S = 60

QTYPE_A = 1
QCLASS_IN = 1
NOERROR, FORMERR, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 3, 4, 5

_HEADER = struct.Struct("!HHHHHH")  # id, flags, qdcount, ancount, nscount, arcount
_QFIXED = struct.Struct("!HH")      # qtype, qclass
_ANSWER = struct.Struct("!HHHIH")   # name pointer, type, class, ttl, rdlength


class Malformed(ValueError):
    pass


def parse_question(pkt: bytes) -> tuple[str, int, int, int]:
    """(lower-case name, qtype, qclass, offset past the question) of a one-question query."""
    off = _HEADER.size
    labels = []
    total = 1
    while True:
        if off >= len(pkt):
            raise Malformed("truncated name")
        ln = pkt[off]
        if ln == 0:
            off += 1
            break
        if ln > 63:  # a compression pointer (or a reserved label type): not in a query
            raise Malformed("label length byte 0x%02x" % ln)
        total += ln + 1
        if total > 255 or off + 1 + ln > len(pkt):
            raise Malformed("name too long or truncated")
        labels.append(pkt[off + 1:off + 1 + ln].decode("ascii", "replace").lower())
        off += 1 + ln
    if off + _QFIXED.size > len(pkt):
        raise Malformed("truncated question")
    qtype, qclass = _QFIXED.unpack_from(pkt, off)
    return ".".join(labels), qtype, qclass, off + _QFIXED.size


def answer(pkt: bytes, table: dict[str, str] = TABLE) -> bytes | None:
    """The response to one query datagram, or None when it must not be answered."""
    if len(pkt) < _HEADER.size:
        return None
    qid, flags, qdcount, _an, _ns, _ar = _HEADER.unpack_from(pkt)
    if flags & 0x8000:
        return None  # a response: never answer one (no loops between responders)
    opcode = (flags >> 11) & 0xF
    # QR=1, opcode and RD echoed (RFC 1035 4.1.1); AA=1: we are the authority here.
    rflags = 0x8000 | (flags & 0x7800) | 0x0400 | (flags & 0x0100)

    def reply(rcode: int, question: bytes = b"", answers: bytes = b"", ancount: int = 0) -> bytes:
        qd = 1 if question else 0
        return _HEADER.pack(qid, rflags | rcode, qd, ancount, 0, 0) + question + answers

    if opcode != 0:
        return reply(NOTIMP)
    if qdcount != 1:
        return reply(FORMERR)
    try:
        name, qtype, qclass, end = parse_question(pkt)
    except Malformed:
        return reply(FORMERR)
    question = pkt[_HEADER.size:end]
    if qclass != QCLASS_IN:
        return reply(REFUSED, question)
    addr = table.get(name)
    if addr is None:
        return reply(NXDOMAIN, question)
    if qtype != QTYPE_A:
        return reply(NOERROR, question)  # the name exists, no record of that type (NODATA)
    rr = _ANSWER.pack(0xC000 | _HEADER.size, QTYPE_A, QCLASS_IN, TTL_S, 4) + socket.inet_aton(addr)
    return reply(NOERROR, question, rr, 1)


def ready(what: str) -> None:
    """Tell the lab we are listening, then detach stdout (the lab stops reading it)."""
    print(f"ready {what}", flush=True)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def serve(host: str, port: int, table: dict[str, str]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, port))
    ready(f"{host}:{port}")
    while True:
        pkt, peer = sock.recvfrom(4096)
        resp = answer(pkt, table)
        if resp is not None:
            try:
                sock.sendto(resp, peer)
            except OSError:
                pass  # the asker's path is down (a lab fault): nothing to do


def _entry(text: str) -> tuple[str, str]:
    name, sep, addr = text.partition("=")
    try:
        socket.inet_aton(addr)
    except OSError:
        sep = ""
    if not sep or not name or addr.count(".") != 3:
        raise argparse.ArgumentTypeError(f"expected NAME=IPv4, got {text!r}")
    return name.lower().rstrip("."), addr


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.lab.dnsd",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--listen", required=True, help="address to bind (UDP)")
    ap.add_argument("--port", type=int, default=53)
    ap.add_argument("--name", type=_entry, action="append", metavar="NAME=IPV4",
                    help="a table entry; repeatable; replaces the built-in table")
    args = ap.parse_args(argv)
    table = dict(args.name) if args.name else dict(TABLE)
    try:
        serve(args.listen, args.port, table)
    except OSError as e:
        print(f"dnsd: cannot serve on {args.listen}:{args.port}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
