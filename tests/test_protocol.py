"""Protocol v1: validation messages, canonical JSON, and the shared test vectors."""

import json

import pytest

from tests.vectorlib import load, payload
from wanwitness.collector import protocol
from wanwitness.collector.protocol import ProtocolError, canonical, parse_batch

VALID = load("valid")
INVALID = load("invalid")


def test_there_are_vectors():
    assert len(VALID) >= 10 and len(INVALID) >= 25


@pytest.mark.parametrize("name,vector", VALID, ids=[n for n, _ in VALID])
def test_valid_vector_parses_and_its_canonical_form_is_stable(name, vector):
    batch = parse_batch(payload(vector), vector["topic"])
    assert batch.agent == vector["payload"]["agent"]
    # The canonical bytes the agent's encoder must produce are ours, byte for byte.
    assert canonical(vector["payload"]).decode() == vector["canonical"]
    # Whitespace and key order on the wire do not change the canonical form.
    messy = json.dumps(vector["payload"], indent=3, sort_keys=False, ensure_ascii=True).encode()
    assert canonical(parse_batch(messy).recs) == canonical(batch.recs)


@pytest.mark.parametrize("name,vector", [v for v in INVALID if v[1]["reason"].startswith("invalid batch: ")],
                         ids=[n for n, v in INVALID if v["reason"].startswith("invalid batch: ")])
def test_invalid_vector_is_rejected_with_its_reason(name, vector):
    with pytest.raises(ProtocolError) as err:
        parse_batch(payload(vector), vector["topic"])
    assert "invalid batch: " + str(err.value) == vector["reason"]


def test_canonical_is_sorted_compact_utf8():
    assert canonical({"b": 1, "a": {"d": [1, 2], "c": "Küche"}}) == '{"a":{"c":"Küche","d":[1,2]},"b":1}'.encode()


def test_unknown_fields_are_kept():
    b = parse_batch(b'{"v":1,"agent":"a1","boot":0,"extra":1,"recs":[{"seq":1,"t":0,"utc":null,"k":"led","ch":"wan","st":"on","at":0,"lux":12}]}')
    assert b.recs[0]["lux"] == 12


def test_batch_send_time_defaults_to_newest_record():
    b = parse_batch(b'{"v":1,"agent":"a1","boot":0,"recs":[{"seq":1,"t":50,"utc":null,"k":"stats"},{"seq":2,"t":70,"utc":null,"k":"stats"}]}')
    assert b.sent_t == 70
    with pytest.raises(ProtocolError, match=r"batch.t: send time 60 is before a record's t 70"):
        parse_batch(b'{"v":1,"agent":"a1","boot":0,"t":60,"recs":[{"seq":2,"t":70,"utc":null,"k":"stats"}]}')


def test_agent_from_topic():
    assert protocol.agent_from_topic("wanwitness/kitchen/rec", "wanwitness") == "kitchen"
    assert protocol.agent_from_topic("wanwitness/a/b/rec", "wanwitness") is None
    assert protocol.agent_from_topic("other/kitchen/rec", "wanwitness") is None
    assert protocol.agent_from_topic("lab/x/wanwitness/k1/rec", "lab/x/wanwitness") == "k1"


def test_heartbeat():
    assert protocol.parse_heartbeat(b'{"boot":4,"t":120000,"heap":30000}') == (4, 120000)
    with pytest.raises(ProtocolError, match=r"hb.t: missing"):
        protocol.parse_heartbeat(b'{"boot":4}')


def test_the_agents_heartbeat_with_its_flash_wear_estimate():
    # app.App.heartbeat's payload since issue 14: `fe`, the outbox's estimated flash
    # erases this boot, is informational (docs/protocol.md § Heartbeat)
    hb = (b'{"boot":3,"t":86400000,"utc":null,"s":"up","heap":52000,"peak":41000,"q":0,'
          b'"rssi":-61,"safe":false,"fe":1834,"ob":"0a1b2c3d"}')
    assert protocol.parse_heartbeat_ob(hb) == (3, 86400000, "0a1b2c3d")


@pytest.mark.parametrize("ob,shown", [('"0a1b2c3"', "'0a1b2c3'"), ('"0a1b2c3d4"', "'0a1b2c3d4'"),
                                      ('"0a1b2c3g"', "'0a1b2c3g'"), ('""', "''"),
                                      ("12345678", "an integer"), ("null", "null")])
def test_an_outbox_id_is_8_lowercase_hex_digits(ob, shown):
    body = '"boot":1,"recs":[{"seq":1,"t":1,"utc":null,"k":"stats"}]'
    assert parse_batch(b'{"v":1,"agent":"a1",' + body.encode() + b"}").ob == ""  # none: legacy
    assert parse_batch(('{"v":1,"agent":"a1","ob":"0a1b2c3d",' + body + "}").encode()).ob == "0a1b2c3d"
    with pytest.raises(ProtocolError) as err:
        parse_batch(('{"v":1,"agent":"a1","ob":' + ob + "," + body + "}").encode())
    assert str(err.value) == f"batch.ob: {shown} is not an outbox id (8 lowercase hex digits)"
    with pytest.raises(ProtocolError, match=r"^hb\.ob: "):
        protocol.parse_heartbeat_ob(('{"boot":1,"t":5,"ob":' + ob + "}").encode())
    assert protocol.parse_heartbeat_ob(b'{"boot":1,"t":5,"ob":"0a1b2c3d"}') == (1, 5, "0a1b2c3d")
    assert protocol.parse_heartbeat_ob(b'{"boot":1,"t":5}') == (1, 5, "")


def test_the_agents_sntp_bounds_are_the_collectors_utc_bounds():
    """An SNTP answer the agent accepts must give records a utc the collector accepts, or
    a broken time server would hold up every later record (tests/mpy/test_clock.py
    checks the agent refuses answers outside them)."""
    import re

    from wanwitness.resources import agent_dir
    source = (agent_dir() / "clock.py").read_text()
    found = {name: int(value) for name, value in re.findall(r"^(UTC_MIN|UTC_MAX) = (\d+)$", source, re.M)}
    assert found == {"UTC_MIN": protocol.UTC_MIN, "UTC_MAX": protocol.UTC_MAX}
