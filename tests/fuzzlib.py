"""The fuzz tests' seed corpus and the hypothesis strategies that mutate it.

`tests/fuzz_corpus/<target>/` holds whole, mostly valid inputs (a protocol batch, an MQTT
packet, a DNS response); `mutants(target)` draws a seed and a few edits of the kinds that
break parsers: bit flips, byte overwrites with boundary values, truncation, inserted,
deleted and repeated runs, and edits of the seed's length fields. Hypothesis shrinks a
failure towards fewer edits, so a report shows the seed and the one edit that matters.

The profiles (tests/conftest.py) decide how many examples run: a fixed, small number in
the suite, many with `--hypothesis-profile=fuzz`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st

CORPUS = Path(__file__).parent / "fuzz_corpus"

# Values that sit on the edges parsers get wrong: 0, sign bits, all-ones, MQTT's 127/128
# continuation boundary, DNS's compression-pointer marker.
EDGE_BYTES = (0x00, 0x01, 0x02, 0x3F, 0x40, 0x7F, 0x80, 0x81, 0xC0, 0xFE, 0xFF)
EDGE_U16 = (0, 1, 2, 3, 4, 5, 0x7F, 0x80, 0xFF, 0x100, 0x1FF, 0x3FFF, 0x4000, 0x7FFF, 0x8000, 0xC00C, 0xFFFF)
# MQTT remaining lengths (2.2.3) as their encodings: the 1/2/3/4-byte edges and a
# fifth continuation byte, which no valid packet has.
EDGE_RL = (b"\x00", b"\x01", b"\x7f", b"\x80\x01", b"\xff\x7f", b"\x80\x80\x01", b"\xff\xff\x7f",
           b"\x80\x80\x80\x01", b"\xff\xff\xff\x7f", b"\xff\xff\xff\xff\x01", b"\x80", b"\xff")


def seeds(target: str) -> list[tuple[str, bytes]]:
    """(file name, bytes) of every seed of `target`, in name order."""
    files = sorted(p for p in (CORPUS / target).iterdir() if p.is_file() and p.name != "README.md")
    if not files:
        raise AssertionError(f"no seeds in {CORPUS / target}")
    return [(p.name, p.read_bytes()) for p in files]


def scaled(fraction: float, least: int = 2, **kw: Any) -> settings:
    """Settings for a test whose examples are costly: `fraction` of the profile's
    max_examples (so `--hypothesis-profile=fuzz` scales it too), at least `least`."""
    current = settings.default or settings()
    return settings(max_examples=max(least, int(current.max_examples * fraction)), **kw)


# --- edits ------------------------------------------------------------------------------------

Edit = Callable[[bytearray], None]
# A length field of a seed: (offset, size in bytes, "u16" or "rl" for an MQTT remaining length).
Field = tuple[int, int, str]
LengthFields = Callable[[bytes], list[Field]]


@st.composite
def _edit(draw: st.DrawFn, length_fields: list[Field]) -> tuple[str, Edit]:
    """One edit as (description, function applied in place). Positions are drawn as
    fractions of the current length, so they stay meaningful after earlier edits."""
    kinds = ["flip", "byte", "truncate", "insert", "delete", "repeat"]
    if length_fields:
        kinds.append("length")
    kind = draw(st.sampled_from(kinds))
    at = draw(st.integers(0, 1 << 16))

    def pos(buf: bytearray, extra: int = 0) -> int:
        return at * (len(buf) + extra) >> 16 if buf or extra else 0

    if kind == "flip":
        bit = draw(st.integers(0, 7))

        def flip(buf: bytearray) -> None:
            if buf:
                buf[min(pos(buf), len(buf) - 1)] ^= 1 << bit
        return f"flip bit {bit} at {at / 65536:.3f}", flip
    if kind == "byte":
        value = draw(st.sampled_from(EDGE_BYTES) | st.integers(0, 255))

        def put(buf: bytearray) -> None:
            if buf:
                buf[min(pos(buf), len(buf) - 1)] = value
        return f"byte 0x{value:02x} at {at / 65536:.3f}", put
    if kind == "truncate":
        def cut(buf: bytearray) -> None:
            del buf[pos(buf):]
        return f"truncate at {at / 65536:.3f}", cut
    if kind == "insert":
        data = draw(st.binary(min_size=1, max_size=8) | st.sampled_from(EDGE_RL))

        def insert(buf: bytearray) -> None:
            i = pos(buf, 1)
            buf[i:i] = data
        return f"insert {data.hex()} at {at / 65536:.3f}", insert
    if kind == "delete":
        n = draw(st.integers(1, 16))

        def delete(buf: bytearray) -> None:
            i = pos(buf)
            del buf[i:i + n]
        return f"delete {n} at {at / 65536:.3f}", delete
    if kind == "repeat":
        n = draw(st.integers(1, 32))
        times = draw(st.integers(1, 4))

        def repeat(buf: bytearray) -> None:
            i = pos(buf)
            buf[i:i] = bytes(buf[i:i + n]) * times
        return f"repeat {n} bytes x{times} at {at / 65536:.3f}", repeat
    offset, size, field = draw(st.sampled_from(length_fields))
    if field == "u16":
        value16 = draw(st.sampled_from(EDGE_U16) | st.integers(0, 0xFFFF))
        new = struct.pack("!H", value16)
    else:  # an MQTT remaining length: replaced whole, by an encoding of another length
        new = draw(st.sampled_from(EDGE_RL) | st.integers(0, 268435455).map(_rl))

    def length(buf: bytearray) -> None:
        # A seed's field offset, valid as long as the earlier edits left it in place.
        if offset + size <= len(buf):
            buf[offset:offset + size] = new
    return f"length field at {offset} := {new.hex()}", length


def _rl(n: int) -> bytes:
    out = bytearray()
    while True:
        d, n = n & 0x7F, n >> 7
        out.append(d | 0x80 if n else d)
        if not n:
            return bytes(out)


def mutate(seed: bytes, length_fields: Sequence[Field] = (), max_edits: int = 4
           ) -> st.SearchStrategy[tuple[bytes, str]]:
    """(mutated bytes, what was done) from one seed; zero edits is the seed itself."""
    return st.lists(_edit(list(length_fields)), max_size=max_edits).map(lambda edits: _apply(seed, edits))


def _apply(seed: bytes, edits: list[tuple[str, Edit]]) -> tuple[bytes, str]:
    buf = bytearray(seed)
    for _, edit in edits:
        edit(buf)
    return bytes(buf), "; ".join(d for d, _ in edits) or "unchanged"


@st.composite
def mutants(draw: st.DrawFn, target: str, length_fields: LengthFields | None = None,
            max_edits: int = 4) -> tuple[str, bytes, str]:
    """(seed name, mutated bytes, what was done) from the corpus of `target`."""
    name, seed = draw(st.sampled_from(seeds(target)))
    fields = length_fields(seed) if length_fields else []
    data, how = draw(mutate(seed, fields, max_edits))
    return name, data, how


# --- length fields of the corpus's formats -----------------------------------------------------------


def mqtt_length_fields(packets: bytes) -> list[Field]:
    """The remaining-length fields (2.2.3) and 2-byte string lengths (1.5.3) that follow
    them, of every packet in a stream of MQTT packets."""
    fields = []
    i = 0
    while i + 1 < len(packets):
        j, n, shift = i + 1, 0, 0
        while j < len(packets) and j - i <= 4:
            n |= (packets[j] & 0x7F) << shift
            shift += 7
            j += 1
            if not packets[j - 1] & 0x80:
                break
        fields.append((i + 1, j - i - 1, "rl"))
        if packets[i] & 0xF0 in (0x10, 0x30, 0x80, 0xA0):  # CONNECT, PUBLISH, (UN)SUBSCRIBE
            fields.append((j, 2, "u16"))  # protocol name / topic length; SUBSCRIBE: packet id
        i = j + n
    return fields


def dns_length_fields(msg: bytes) -> list[Field]:
    """QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT (RFC 1035 4.1.1) and, where a compression
    pointer follows the question, the first answer's owner pointer."""
    fields: list[Field] = [(4, 2, "u16"), (6, 2, "u16"), (8, 2, "u16"), (10, 2, "u16")]
    i = 12
    while i < len(msg) and msg[i] and msg[i] < 0xC0:
        i += 1 + msg[i]
    first_answer = i + 5
    if first_answer + 1 < len(msg) and msg[first_answer] >= 0xC0:
        fields.append((first_answer, 2, "u16"))
    return fields
