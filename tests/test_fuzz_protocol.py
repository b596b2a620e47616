"""Fuzzing the collector's protocol decoder: whatever arrives, only ProtocolError escapes.

Two sources of input: the seed corpus (tests/fuzz_corpus/protocol: the shared vectors'
payloads, heartbeats, edge numbers) mutated byte-wise, and JSON documents built from a
grammar that knows the batch's shape and puts the hard values where the validator looks:
5000-digit integers, 1e999, -0, integers around 2^63, unicode escapes (lone surrogates
too), duplicate keys, deep nesting. A batch that is accepted must survive `canonical`
(the ledger hashes those bytes) and parse again to the same records.
"""

from __future__ import annotations

import json

from hypothesis import event, example, given
from hypothesis import strategies as st

from tests.fuzzlib import mutants
from wanwitness.collector.protocol import (
    Batch,
    ProtocolError,
    canonical,
    decode,
    decode_careful,
    parse_batch,
    parse_heartbeat,
)

TOPICS = (None, "wanwitness/a1/rec")


def accepted_batch_round_trips(batch: Batch) -> None:
    """The stored form of an accepted batch is canonical JSON, and that parses again to
    the same batch (a record the collector took must be re-verifiable from the ledger)."""
    doc = {"v": 1, "agent": batch.agent, "boot": batch.boot, "t": batch.sent_t, "recs": batch.recs}
    wire = canonical(doc)
    again = parse_batch(wire)
    assert (again.agent, again.boot, again.sent_t) == (batch.agent, batch.boot, batch.sent_t)
    assert canonical(again.recs) == canonical(batch.recs)
    for rec in batch.recs:
        assert json.loads(canonical(rec)) == rec


def parse_or_refuse(payload: bytes, topic: str | None) -> Batch | None:
    try:
        batch = parse_batch(payload, topic)
    except ProtocolError as e:
        assert str(e) and "\n" not in str(e), f"a refusal is one line of text: {e!r}"
        event("refused")  # --hypothesis-show-statistics shows how deep the inputs get
        return None
    event("accepted")
    accepted_batch_round_trips(batch)
    return batch


# --- the corpus, mutated ------------------------------------------------------------------------------


@given(mutants("protocol"), st.sampled_from(TOPICS))
def test_mutated_batches_are_accepted_whole_or_refused_with_a_reason(case, topic):
    _seed, payload, _how = case
    parse_or_refuse(payload, topic)


@given(mutants("protocol"))
def test_mutated_heartbeats_and_documents_raise_only_protocol_errors(case):
    _seed, payload, _how = case
    try:
        decode(payload)
    except ProtocolError:
        pass
    try:
        boot, t = parse_heartbeat(payload)
    except ProtocolError:
        return
    assert isinstance(boot, int) and isinstance(t, int)


# --- documents from a grammar --------------------------------------------------------------------------

# A document is built plausible (so the validator looks deep into it), then gets up to
# three hard values: in place of a field's value or as an unknown field, at the top or in
# a record. Strategies are built once: building one per draw costs more than the test.

MAX_INT = 2**63 - 1
INT = st.integers(-3, 2**40).map(str)
BENIGN = st.one_of(INT, st.floats(-1e6, 1e6).map(repr), st.text(max_size=12).map(json.dumps),
                   st.sampled_from(("true", "false", "null")))


def obj(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in pairs) + "}"


def nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


def _tree(leaf: st.SearchStrategy[str], depth: int) -> st.SearchStrategy[str]:
    if depth == 0:
        return leaf
    inner = _tree(leaf, depth - 1)
    return st.one_of(
        leaf,
        st.lists(inner, max_size=3).map(lambda xs: "[" + ",".join(xs) + "]"),
        st.lists(st.tuples(st.sampled_from(("a", "k", "t", "seq", "é")), inner), max_size=3,
                 unique_by=lambda kv: kv[0]).map(obj),
    )


PLAIN_VALUE = _tree(BENIGN, 2)  # what unknown fields of a sane agent hold

HARD_NUMBER = st.one_of(
    st.sampled_from(("-0", "-0.0", "0.0", "1e2", "1E+2", "4.9e-324", "1e-400", "1e308", "1e999", "-1e999",
                     "1E400", "123456789012345678901234567890.125", str(2**64), str(2**53 + 1))),
    st.integers(MAX_INT - 2, MAX_INT + 2).map(str),
    st.integers(-MAX_INT - 3, -MAX_INT + 1).map(str),
    # 4300 digits is CPython's default limit for int(); 5000 is past it.
    st.sampled_from((4299, 4300, 4301, 5000)).flatmap(
        lambda n: st.sampled_from(("9" * n, "-" + "7" * n, "1" + "0" * (n - 1)))),
)
HARD_STRING = st.one_of(
    st.sampled_from(('""', '"\\ud800"', '"\\udfff x"', '"\\ud83d\\ude00"', '"\\u0000"', '"K\\u00fcche"',
                     '"\\"\\\\/\\b\\f\\n\\r\\t"', '"=cmd|x"', '"\\u2028"')),
    st.text(max_size=12).map(lambda s: json.dumps(s, ensure_ascii=False)),
)
HARD = st.one_of(
    HARD_NUMBER, HARD_STRING,
    st.sampled_from((50, 500, 990, 2000, 30000)).map(nested),  # Python's recursion limit is 1000
    st.tuples(st.sampled_from(("a", "k")), BENIGN, BENIGN).map(lambda kvv: obj([kvv[:2], kvv[::2]])),  # a key twice
    _tree(st.one_of(BENIGN, HARD_NUMBER, HARD_STRING), 2),
)


def sometimes(plausible: st.SearchStrategy[str], p_other: int = 12) -> st.SearchStrategy[str]:
    """Mostly the plausible value (p_other to 1); now and then one of another type."""
    # (one_of would not do: it draws its branches about evenly, however often one is listed)
    return st.sampled_from((True,) * p_other + (False,)).flatmap(lambda ok: plausible if ok else BENIGN)


RECORD_FIELDS = {kind: {key: sometimes(strategy) for key, strategy in fields.items()} for kind, fields in {
    "boot": {"reset": st.just('"power"'), "safe": st.sampled_from(("true", "false"))},
    "state": {"s": st.sampled_from(('"up"', '"isp_down"', '"dns_down"')), "at": st.just("AT"),
              "bound": st.sampled_from(("null", "0", "AT")), "ev": st.just("{}"),
              "retract": st.sampled_from(("true", "false"))},
    "led": {"ch": st.just('"wan"'), "st": st.sampled_from(('"on"', '"off"', '"blink"')), "at": st.just("AT")},
    "probe": {"tg": st.just('"192.0.2.1"'), "ok": st.sampled_from(("true", "false")), "rtt": INT},
    "clock": {},  # its utc is the record's utc, which it requires
    "gap": {"drop": st.sampled_from(("[[1,1]]", "[[1,2],[3,3]]", "[]", "[[0,1]]", "[[1,99999999999999999999]]")),
            "kinds": st.just('{"led":2}')},
    "error": {"msg": st.text(max_size=20).map(json.dumps), "key": st.just('"wifi"')},
    "stats": {"heap": INT, "n": PLAIN_VALUE},
    "future-kind": {"payload": PLAIN_VALUE},
}.items()}
T = sometimes(st.integers(0, 2**40).map(str))
SEQ = sometimes(st.just("SEQ"))
UTC = sometimes(st.sampled_from(("null", "1767225600000")))
EXTRA = st.tuples(st.sampled_from(("lux", "fw", "rssi", "x")), PLAIN_VALUE)  # unknown fields are kept
V, AGENT, BOOT, SENT = (sometimes(st.just("1"), 20), sometimes(st.just('"a1"'), 20),
                        sometimes(st.integers(0, 9).map(str)), sometimes(st.just(str(2**41))))
# Where a hard value goes: (record index, or -1 for the batch; field index, or -1 for a new field).
SPOT = st.tuples(st.integers(-1, 3), st.integers(-1, 9), st.sampled_from(("deep", "x", "seq", "t", "utc", "k")))


@st.composite
def record(draw: st.DrawFn, seq: int) -> list[tuple[str, str]]:
    kind = draw(st.sampled_from(sorted(RECORD_FIELDS)))
    t = draw(T)
    at = draw(st.sampled_from((t, "0", "1")))
    pairs = [("seq", draw(SEQ).replace("SEQ", str(seq))), ("t", t), ("utc", draw(UTC)), ("k", json.dumps(kind))]
    for key, strategy in RECORD_FIELDS[kind].items():
        if draw(st.integers(0, 19)):  # a field is sometimes missing
            pairs.append((key, draw(strategy).replace("AT", at)))
    pairs += draw(st.lists(EXTRA, max_size=2, unique_by=lambda kv: kv[0]))
    return draw(st.permutations(pairs))


@st.composite
def batch_text(draw: st.DrawFn) -> str:
    recs = [draw(record(seq)) for seq in range(1, draw(st.integers(1, 4)) + 1)]
    top = [("v", draw(V)), ("agent", draw(AGENT)), ("boot", draw(BOOT))]
    if draw(st.booleans()):
        top.append(("t", draw(SENT)))
    top += draw(st.lists(EXTRA, max_size=2, unique_by=lambda kv: kv[0]))
    for (where, field, new_key), hard in draw(st.lists(st.tuples(SPOT, HARD), max_size=3)):
        pairs = top if where < 0 or where >= len(recs) else recs[where]
        if 0 <= field < len(pairs):
            pairs[field] = (pairs[field][0], hard)
        else:  # a new field, or a second value for a known one
            pairs.append((new_key, hard))
    top.append(("recs", "[" + ",".join(obj(r) for r in recs) + "]"))
    return obj(draw(st.permutations(top)))


@given(batch_text(), st.sampled_from(TOPICS))
@example('{"v":1,"agent":"a1","boot":0,"recs":[{"seq":1,"t":0,"utc":null,"k":"stats","x":1e999}]}', None)
@example('{"v":1,"agent":"a1","boot":0,"recs":[{"seq":1,"t":0,"utc":null,"k":"stats","x":%s}]}' % ("9" * 5000), None)
@example('{"v":1,"agent":"a1","boot":0,"recs":[{"seq":1,"t":0,"utc":null,"k":"stats","x":-0}]}', None)
@example('{"v":1,"agent":"a1","boot":0,"recs":[{"seq":1,"t":0,"utc":null,"k":"error","msg":"\\ud800"}]}', None)
@example('{"v":1,"agent":"a1","boot":0,"recs":[{"seq":1,"t":0,"utc":null,"k":"stats","x":%s}]}'
         % nested(5000), None)
def test_grammar_batches_are_accepted_whole_or_refused_with_a_reason(text, topic):
    parse_or_refuse(text.encode("utf-8", "surrogatepass"), topic)


@given(st.one_of(HARD, PLAIN_VALUE))
@example("1e999")
@example("9" * 5000)
@example(nested(100000))
def test_any_json_value_decodes_or_raises_a_protocol_error(text):
    for decoder in (decode, parse_heartbeat):
        try:
            decoder(text.encode("utf-8", "surrogatepass"))
        except ProtocolError:
            pass


# --- decode's fast paths against the careful decoder --------------------------------------------------

def outcome(decoder, payload: bytes) -> tuple[str, object]:
    try:
        return "doc", canonical_or_repr(decoder(payload))
    except ProtocolError as e:
        return "refused", str(e)


def canonical_or_repr(doc: object) -> object:
    try:
        return canonical(doc)
    except (ValueError, UnicodeEncodeError):
        return repr(doc)


def nested_mixed(depth: int) -> str:
    """Lists and objects alternating, `depth` levels, with brackets inside strings."""
    text = '"[{"'
    for i in range(depth):
        text = f'[{text}]' if i % 2 else f'{{"k{i}":{text},"s":"]}}"}}'
    return text


@given(st.one_of(batch_text(), HARD, PLAIN_VALUE), st.sampled_from(("", "\ufeff", " ")))
@example('{"a":' + nested(32) + '}', "")
@example(nested_mixed(31), "")
@example(nested_mixed(32), "")
@example(nested_mixed(33), "")
@example("[" + ",".join([nested(3)] * 20) + "]", "")
@example('{"a":"\\\\ud800","b":' + nested(40) + '}', "")
@example('{"a":"\\ud83d\\ude00"}', "")
@example('{"a":"\\uD800"}', "")
@example('{"a":1,"a":1}', "")
@example('{"x":"' + "1" * 30 + '","y":' + "2" * 21 + '}', "")
@example('{"x":"' + "1" * 30 + '"}', "")
def test_decode_gives_what_the_careful_decoder_gives(text, lead):
    """decode's fast paths (C decoding where no integer can be too long, the text searched
    for surrogate escapes and measured for nesting instead of walking the document) give
    exactly the careful decoder's document or refusal, text included."""
    payload = (lead + text).encode("utf-8", "surrogatepass")
    assert outcome(decode, payload) == outcome(decode_careful, payload)
