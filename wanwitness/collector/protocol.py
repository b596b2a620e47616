"""Wire protocol v1: record batches from agent to collector (see docs/protocol.md).

`parse_batch` turns the bytes of one MQTT message into a `Batch` or raises
`ProtocolError` whose text says what is wrong and where (a JSON path such as
`recs[3].s`). `canonical` is the byte form used for hashing: sorted keys, no
whitespace, UTF-8. Unknown kinds and unknown fields are kept, not rejected, so an
older collector still stores what a newer agent sends.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

VERSION = 1
MAX_PAYLOAD = 64 * 1024

# Plausibility bounds (docs/protocol.md, "Bounds"). A value outside them is not a
# measurement but a bug or an attack, and would overflow the store's BIGINT or the
# timeline's dates; each bound is far beyond anything a working agent writes.
MAX_SEQ = 2**53 - 1                 # seq: exact in an IEEE double, so any JSON reader keeps it
MAX_BOOT = 2**32 - 1                # boot: one start a second for 136 years
MAX_T = 36525 * 86_400_000          # t, at, bound: 100 years (of 365.25 days) since boot, in ms
UTC_MIN = 1_577_836_800_000         # utc: 2020-01-01T00:00:00Z ...
UTC_MAX = 4_102_444_800_000         # ... to 2100-01-01T00:00:00Z
MAX_INT_DIGITS = 20                 # any integer anywhere: 2^63 has 19 digits
MAX_DEPTH = 32                      # nesting of lists and objects; a batch needs 5
MAX_KIND = 32                       # `k`: the store's column is that wide
MAX_RESET = 64                      # a boot record's `reset`: likewise

_T_RANGE = (0, MAX_T, "at most 100 years since boot")
_SEQ_RANGE = (1, MAX_SEQ, "at most 2^53-1")
_BOOT_RANGE = (0, MAX_BOOT, "at most 2^32-1")
_UTC_RANGE = (UTC_MIN, UTC_MAX, "2020-01-01..2100-01-01 UTC")

AGENT_ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
STATES = ("up", "isp_down", "dns_down", "degraded", "local_down")
OUTAGE_STATES = STATES[1:]
LED_STATES = ("off", "on", "blink")
KINDS = ("boot", "state", "led", "probe", "stats", "clock", "gap", "error", "link")


class ProtocolError(ValueError):
    """A message that does not follow protocol v1; the text names the place."""


@dataclass(frozen=True)
class Batch:
    agent: str
    boot: int
    recs: list[dict[str, Any]]
    sent_t: int  # agent ms at send time: the batch's `t`, else the newest record's `t`
    ob: str = ""  # the agent's outbox id; "" = none (the legacy stream)


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False)  # built once: json.dumps builds one a call


def canonical(obj: Any) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, UTF-8 (not ASCII-escaped)."""
    return _CANONICAL.encode(obj).encode("utf-8")


def canonical_text(obj: Any) -> str:
    """`canonical` as text (what the store keeps)."""
    return _CANONICAL.encode(obj)


def valid_agent_id(name: str) -> bool:
    """Agent ids become MQTT topic levels and user names: no `/`, `+`, `#`."""
    return isinstance(name, str) and AGENT_ID_RE.fullmatch(name) is not None


def agent_from_topic(topic: str, prefix: str) -> str | None:
    """`<prefix>/<id>/rec` -> id, anything else -> None."""
    head = prefix + "/"
    if not topic.startswith(head) or not topic.endswith("/rec"):
        return None
    middle = topic[len(head):-len("/rec")]
    return middle if middle and "/" not in middle else None


# --- decoding -------------------------------------------------------------------

def _reject_constant(name: str) -> Any:
    raise ProtocolError(f"malformed JSON: {name} is not allowed")


def _parse_int(text: str) -> int:
    # Checked before int(): Python refuses over 4300 digits with a plain ValueError,
    # and anything over 20 digits is beyond every column and bound anyway.
    digits = len(text) - (text[0] == "-")
    if digits > MAX_INT_DIGITS:
        raise ProtocolError(f"number too long: an integer of {digits} digits "
                            f"(at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):  # 1e999: JSON allows it, floats do not
        shown = text if len(text) <= 24 else text[:20] + "..."
        raise ProtocolError(f"number out of range: {shown} is beyond a 64-bit float")
    return value


def _check_tree(doc: Any) -> None:
    """Depth and text checks over the decoded document, without recursion."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            _check_text(node)
        elif isinstance(node, (dict, list)):
            if depth > MAX_DEPTH:
                raise ProtocolError(f"malformed JSON: nested deeper than {MAX_DEPTH} levels")
            if isinstance(node, dict):
                for key, value in node.items():
                    _check_text(key)
                    stack.append((value, depth + 1))
            else:
                stack.extend((value, depth + 1) for value in node)


def _check_text(text: str) -> None:
    # A \ud800 escape decodes to a lone surrogate: not Unicode, so no UTF-8 (canonical
    # form) exists for it. Valid UTF-8 input cannot hold one otherwise.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ProtocolError(f"malformed JSON: a string holds a lone surrogate "
                            f"\\u{ord(text[e.start]):04x} (not Unicode text)") from None


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            # Two values for one key would make the stored record ambiguous.
            raise ProtocolError(f"malformed JSON: key {key!r} appears twice in one object")
        out[key] = value
    return out


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`_no_duplicate_keys` at C speed: a dict of the pairs, the careful loop only to
    name the key when one was lost."""
    out = dict(pairs)
    if len(out) != len(pairs):
        return _no_duplicate_keys(pairs)  # raises
    return out


# The JSON decoders, built once (json.loads with hooks builds one per call). CAREFUL
# checks each integer's length before int(); FAST may skip that where the text holds no
# run of more than MAX_INT_DIGITS digits at all (then no integer can be that long).
_CAREFUL = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_constant,
                            parse_int=_parse_int, parse_float=_parse_float)
_FAST = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_reject_constant,
                         parse_float=_parse_float)
_DIGITS_AS_0 = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS = b"0" * (MAX_INT_DIGITS + 1)
# What `_check_tree` looks for, found in the text without walking the document: a lone
# surrogate can only come from a \uD800-\uDFFF escape (the text is valid UTF-8), and
# nesting is at most the number of opening brackets, else measured on the brackets alone.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_EMPTY_PAIR = re.compile(r"\[\]|\{\}")


def _nesting_within(text: str, limit: int) -> bool:
    """Whether the valid JSON `text` nests lists and objects at most `limit` deep."""
    if text.count("{") + text.count("[") <= limit:
        return True
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    for _ in range(limit):  # each round removes the innermost level: depth = rounds
        if not brackets:
            return True
        brackets = _EMPTY_PAIR.sub("", brackets)
    return not brackets


def decode(payload: bytes) -> Any:
    """The JSON document of a message, or ProtocolError. Fast paths (C decoding, checks
    on the text) where they cannot change the outcome: the result, or the error and its
    text, is that of `decode_careful`."""
    text = _text(payload)
    fast = _LONG_DIGITS not in payload.translate(_DIGITS_AS_0)
    doc = _loads(_FAST if fast else _CAREFUL, text)
    if _SURROGATE_ESCAPE.search(text) is not None or not _nesting_within(text, MAX_DEPTH):
        _check_tree(doc)
    return doc


def decode_careful(payload: bytes) -> Any:
    """`decode` without its fast paths: every integer's length checked as it is read,
    every string and container of the document walked (the reference the tests hold
    `decode` to)."""
    doc = _loads(_CAREFUL, _text(payload))
    _check_tree(doc)
    return doc


def _text(payload: bytes) -> str:
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload too large: {len(payload)} bytes (limit {MAX_PAYLOAD})")
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolError(f"payload is not UTF-8 (byte {e.start})") from None


def _loads(decoder: json.JSONDecoder, text: str) -> Any:
    try:
        if text.startswith("\ufeff"):  # what json.loads says (JSONDecoder.decode does not)
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        return decoder.decode(text)
    except ProtocolError:
        raise
    except json.JSONDecodeError as e:
        raise ProtocolError(f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise ProtocolError(f"malformed JSON: nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, OverflowError, MemoryError) as e:
        # Whatever else the decoder refuses is a bad message, never an internal error.
        raise ProtocolError(f"malformed JSON: {type(e).__name__}: {e}"[:300]) from None


# --- field checks ---------------------------------------------------------------

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _describe(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a number with a fraction"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "a list"
    return "an object"


def _int(obj: dict, key: str, path: str, bounds: tuple[int, int, str], *,
         nullable: bool = False) -> int | None:
    v = obj.get(key)
    if type(v) is int and bounds[0] <= v <= bounds[1]:
        return v  # the usual case, first
    if key not in obj:
        raise ProtocolError(f"{path}.{key}: missing")
    v = obj[key]
    if v is None and nullable:
        return None
    if not _is_int(v):
        want = "an integer or null" if nullable else "an integer"
        raise ProtocolError(f"{path}.{key}: expected {want}, got {_describe(v)}")
    lo, hi, note = bounds
    if v < lo or v > hi:
        raise ProtocolError(f"{path}.{key}: {v} is out of range ({lo}..{hi}: {note})")
    return int(v)


def _str(obj: dict, key: str, path: str, *, choices: tuple[str, ...] | None = None,
         optional: bool = False, max_len: int = 0) -> str | None:
    if key not in obj:
        if optional:
            return None
        raise ProtocolError(f"{path}.{key}: missing")
    v = obj[key]
    if not isinstance(v, str):
        raise ProtocolError(f"{path}.{key}: expected a string, got {_describe(v)}")
    if choices is not None and v not in choices:
        raise ProtocolError(f"{path}.{key}: {v!r} is not one of {', '.join(choices)}")
    if not choices and not v:
        raise ProtocolError(f"{path}.{key}: empty string")
    if max_len:
        # Kept in a column of its own as well as in the record: plain text of that width.
        if len(v) > max_len:
            raise ProtocolError(f"{path}.{key}: {len(v)} characters (at most {max_len})")
        if not v.isprintable():
            raise ProtocolError(f"{path}.{key}: {v!r} holds control characters")
    return v


def _bool(obj: dict, key: str, path: str) -> None:
    if key in obj and not isinstance(obj[key], bool):
        raise ProtocolError(f"{path}.{key}: expected true or false, got {_describe(obj[key])}")


def _object(obj: dict, key: str, path: str, *, optional: bool = False) -> None:
    if key not in obj:
        if optional:
            return
        raise ProtocolError(f"{path}.{key}: missing")
    if not isinstance(obj[key], dict):
        raise ProtocolError(f"{path}.{key}: expected an object, got {_describe(obj[key])}")


def _check_record(rec: Any, path: str) -> None:
    if not isinstance(rec, dict):
        raise ProtocolError(f"{path}: expected an object, got {_describe(rec)}")
    seq = _int(rec, "seq", path, _SEQ_RANGE)
    t = _int(rec, "t", path, _T_RANGE)
    _int(rec, "utc", path, _UTC_RANGE, nullable=True)
    kind = _str(rec, "k", path, max_len=MAX_KIND)
    assert seq is not None and t is not None
    if kind == "boot":
        _str(rec, "reset", path, max_len=MAX_RESET)
        _bool(rec, "safe", path)
    elif kind == "state":
        _str(rec, "s", path, choices=STATES)
        at = _int(rec, "at", path, _T_RANGE)
        assert at is not None
        if at > t:
            raise ProtocolError(f"{path}.at: {at} is after the record's t {t}")
        bound = _int(rec, "bound", path, _T_RANGE, nullable=True)
        if bound is not None and bound > at:
            raise ProtocolError(f"{path}.bound: {bound} is after at {at}")
        _object(rec, "ev", path)
        _bool(rec, "retract", path)
    elif kind == "led":
        _str(rec, "ch", path)
        _str(rec, "st", path, choices=LED_STATES)
        at = _int(rec, "at", path, _T_RANGE)
        assert at is not None
        if at > t:
            raise ProtocolError(f"{path}.at: {at} is after the record's t {t}")
    elif kind == "probe":
        _str(rec, "tg", path)
        _bool(rec, "ok", path)
        if "ok" not in rec:
            raise ProtocolError(f"{path}.ok: missing")
    elif kind == "clock":
        _int(rec, "utc", path, _UTC_RANGE)
    elif kind == "gap":
        drop = rec.get("drop")
        if drop is None:
            raise ProtocolError(f"{path}.drop: missing")
        if not isinstance(drop, list) or not drop:
            raise ProtocolError(f"{path}.drop: expected a non-empty list of [first, last] seq ranges")
        for i, r in enumerate(drop):
            where = f"{path}.drop[{i}]"
            if not (isinstance(r, list) and len(r) == 2 and all(_is_int(x) for x in r)):
                raise ProtocolError(f"{where}: expected [first, last] integers")
            if not 1 <= r[0] <= r[1] < seq:
                raise ProtocolError(f"{where}: range {r[0]}..{r[1]} must satisfy 1 <= first <= last < seq {seq}")
        _object(rec, "kinds", path, optional=True)
    elif kind == "error":
        _str(rec, "msg", path)
        _str(rec, "key", path, optional=True)
    elif kind == "link":
        _bool(rec, "up", path)
        if "up" not in rec:
            raise ProtocolError(f"{path}.up: missing")
    # stats and kinds this collector does not know are kept as they are.


def check_batch(doc: Any) -> Batch:
    if not isinstance(doc, dict):
        raise ProtocolError(f"batch: expected an object, got {_describe(doc)}")
    if "v" not in doc:
        raise ProtocolError("batch.v: missing")
    if doc["v"] != VERSION or not _is_int(doc["v"]):
        raise ProtocolError(f"batch.v: unsupported protocol version {doc['v']!r} (this collector speaks {VERSION})")
    agent = _str(doc, "agent", "batch")
    assert agent is not None
    if not valid_agent_id(agent):
        raise ProtocolError(f"batch.agent: {agent!r} is not a valid agent id")
    boot = _int(doc, "boot", "batch", _BOOT_RANGE)
    assert boot is not None
    recs = doc.get("recs")
    if "recs" not in doc:
        raise ProtocolError("batch.recs: missing")
    if not isinstance(recs, list):
        raise ProtocolError(f"batch.recs: expected a list, got {_describe(recs)}")
    if not recs:
        raise ProtocolError("batch.recs: empty")
    seen: set[int] = set()
    for i, rec in enumerate(recs):
        _check_record(rec, f"recs[{i}]")
        if rec["seq"] in seen:
            raise ProtocolError(f"recs[{i}].seq: {rec['seq']} appears twice in the batch")
        seen.add(rec["seq"])
    newest = max(r["t"] for r in recs)
    sent_t = newest
    if "t" in doc:
        sent = _int(doc, "t", "batch", _T_RANGE)
        assert sent is not None
        if sent < newest:
            raise ProtocolError(f"batch.t: send time {sent} is before a record's t {newest}")
        sent_t = sent
    return Batch(agent=agent, boot=boot, recs=recs, sent_t=sent_t, ob=_ob(doc, "batch"))


OB_RE = re.compile(r"[0-9a-f]{8}")


def _ob(doc: dict, path: str) -> str:
    """The optional outbox id: 8 lowercase hex digits; "" when absent."""
    if "ob" not in doc:
        return ""
    v = doc["ob"]
    if not isinstance(v, str) or OB_RE.fullmatch(v) is None:
        shown = repr(v) if isinstance(v, str) and len(v) <= 20 else _describe(v)
        raise ProtocolError(f"{path}.ob: {shown} is not an outbox id (8 lowercase hex digits)")
    return v


def parse_batch(payload: bytes, topic: str | None = None, prefix: str = "wanwitness") -> Batch:
    """Validate one `<prefix>/<id>/rec` message. Raises ProtocolError."""
    topic_agent = None
    if topic is not None:
        topic_agent = agent_from_topic(topic, prefix)
        if topic_agent is None:
            raise ProtocolError(f"topic {topic!r} is not {prefix}/<agent>/rec")
    batch = check_batch(decode(payload))
    if topic_agent is not None and batch.agent != topic_agent:
        raise ProtocolError(f"batch.agent: {batch.agent!r} does not match the topic's agent {topic_agent!r}")
    return batch


def parse_heartbeat(payload: bytes) -> tuple[int, int]:
    """`<prefix>/<id>/hb`: returns (boot, t). Other fields are informational."""
    return _heartbeat(decode(payload))


def _heartbeat(doc: Any) -> tuple[int, int]:
    if not isinstance(doc, dict):
        raise ProtocolError(f"heartbeat: expected an object, got {_describe(doc)}")
    boot = _int(doc, "boot", "hb", _BOOT_RANGE)
    t = _int(doc, "t", "hb", _T_RANGE)
    assert boot is not None and t is not None
    return boot, t


def parse_heartbeat_ob(payload: bytes) -> tuple[int, int, str]:
    """`<prefix>/<id>/hb`: (boot, t, outbox id or "")."""
    return parse_heartbeat_doc(payload)[:3]


def parse_heartbeat_doc(payload: bytes) -> tuple[int, int, str, dict[str, Any]]:
    """`parse_heartbeat_ob` and the decoded heartbeat, for `heartbeat_health` and
    `heartbeat_latency` (one decoding for all three)."""
    doc = decode(payload)
    boot, t = _heartbeat(doc)
    return boot, t, _ob(doc, "hb"), doc


# What a heartbeat says of the board's health (docs/protocol.md § Heartbeat), and the
# type each field must have to be kept: the rest, and a field of another type, is left
# out (the fields are informational: a heartbeat is never refused for them).
_HEALTH_FIELDS: dict[str, tuple[type, ...]] = {
    "s": (str,), "heap": (int,), "peak": (int,), "q": (int,), "rssi": (int,),
    "safe": (bool,), "fe": (int,), "utc": (int,),
}


def heartbeat_health(payload: bytes | dict[str, Any]) -> dict[str, Any]:
    """The health fields of a valid heartbeat (`parse_heartbeat` passed; its bytes or
    its decoded document), each kept only when it has its documented type and a sane
    size: what the web UI shows."""
    doc = payload if isinstance(payload, dict) else decode(payload)
    out: dict[str, Any] = {"boot": doc["boot"], "t": doc["t"]}
    for key, types in _HEALTH_FIELDS.items():
        v = doc.get(key)
        if isinstance(v, bool) and bool not in types:
            continue  # True is an int to Python, not to the protocol
        if not isinstance(v, types):
            continue
        if isinstance(v, str) and len(v) > 32:
            continue
        if isinstance(v, int) and not isinstance(v, bool) and not -2**53 < v < 2**53:
            continue
        out[key] = v
    return out


@dataclass(frozen=True)
class Latency:
    """One target's line of a heartbeat's `lat`: probes sent and lost since the
    heartbeat before, and the round trips (ms) of the answers: all None when none
    answered with a time."""
    target: str
    sent: int
    lost: int
    rtt_min: int | None
    rtt_med: int | None
    rtt_max: int | None


LAT_TARGETS = 16
_LAT_TARGET = re.compile(r"[!-~]{1,64}")  # printable ASCII, no spaces: "gw:192.0.2.1"


def heartbeat_latency(payload: bytes | dict[str, Any]) -> list[Latency]:
    """The `lat` summaries of a valid heartbeat (`parse_heartbeat` passed; its bytes or
    its decoded document). Informational like the health fields: an entry that is not as
    documented is left out, the rest kept (at most LAT_TARGETS); no `lat`, or not an
    object: []."""
    lat = (payload if isinstance(payload, dict) else decode(payload)).get("lat")
    if not isinstance(lat, dict):
        return []
    out: list[Latency] = []
    for target, v in lat.items():
        if len(out) >= LAT_TARGETS:
            break
        if not _LAT_TARGET.fullmatch(target) or not isinstance(v, list) or len(v) != 5:
            continue
        if not all(type(x) is int and 0 <= x <= 65535 for x in v[:2]):
            continue
        sent, lost = v[0], v[1]
        if not 0 < sent or lost > sent:
            continue
        times = v[2:]
        if times == [None, None, None]:
            out.append(Latency(target, sent, lost, None, None, None))
        elif all(type(x) is int and 0 <= x <= 65535 for x in times) and \
                times[0] <= times[1] <= times[2] and lost < sent:
            out.append(Latency(target, sent, lost, times[0], times[1], times[2]))
    return out
