"""Fuzzing the agent's MQTT and DNS parsers, on MicroPython (the unix port).

Hypothesis mutates the seeds in tests/fuzz_corpus/mqtt_agent (what a broker sends: CONNACK,
SUBACK, PUBLISH QoS 0/1 with remaining lengths 127/128/16383/16384, PUBACK, PINGRESP, a whole
session) and tests/fuzz_corpus/dns (answers, CNAME chains, compression pointers, truncated,
NXDOMAIN, a pointer loop) in CPython, writes a batch of inputs to a file, and
tests/mpy/fuzz_mqtt.py / fuzz_dns.py feed each one to the agent's own code under MicroPython
with a 64 KB heap: mqtt.decode_remaining_length, read_packet + parse_* and the client's
reader; probe.dns_parse. Every input must end parsed or refused with the error the code
documents (MQTTError, ValueError, OSError at the end of the stream); no other exception,
no MemoryError, no hang (the run has a timeout), no crash of the interpreter.
"""

from __future__ import annotations

import re
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from testing.mpy import ROOT, run_mpy
from tests.fuzzlib import dns_length_fields, mqtt_length_fields, mutants, scaled, seeds

HEAP = "64K"  # the agent's parsers share an ESP32's ~100 KB with everything else
TIMEOUT_S = 120  # a run takes well under a second: this is the hang detector
MARK = re.compile(r"^##fuzz (\d+) (ok|refused|UNEXPECTED) ?(.*)$")
DONE = re.compile(r"^##fuzz done (\d+) minfree (\d+)$")
# The largest read the fake socket returns: whole packets, or split at every byte.
CHUNKS = st.sampled_from((1, 2, 3, 7, 64, 512, 65535))

Case = tuple[str, bytes, str]  # (seed, input, how it was made)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return Path(tmp_path_factory.mktemp("fuzz"))


def run_on_micropython(script: str, cases: list[tuple[Case, int]], work: Path) -> dict[int, tuple[str, str]]:
    """Runs tests/mpy/<script> over the inputs; returns {index: (status, detail)}.
    Fails the test, naming the input, on a hang or a crash."""
    path = work / f"{script}.inputs"
    with path.open("wb") as f:
        for (_seed, data, _how), chunk in cases:
            f.write(struct.pack("!IH", len(data), chunk) + data)
    try:
        proc = run_mpy(ROOT / "tests" / "mpy" / script, str(path), heap=HEAP, timeout=TIMEOUT_S)
        out, err, code = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err, code = "", None
    results = {}
    done = None
    for line in out.splitlines():
        if m := MARK.match(line):
            results[int(m[1])] = (m[2], m[3])
        elif m := DONE.match(line):
            done = (int(m[1]), int(m[2]))
    if code != 0 or done is None or done[0] != len(cases):
        where = len(results)  # inputs are reported in order: the next one is where it stopped
        what = "hung (killed after the timeout)" if code is None else f"exit status {code}"
        culprit = describe(cases[where]) if where < len(cases) else "(after the last input)"
        pytest.fail(f"{script} under MicroPython {what} on input {where}: {culprit}\n"
                    f"last output: {out.splitlines()[-3:]}\nstderr: {err.strip()[-2000:]}", pytrace=False)
    print(f"{script}: {len(cases)} inputs; least free heap seen after one (garbage not yet collected): "
          f"{done[1]} bytes of {HEAP}")
    return results


def describe(case: tuple[Case, int]) -> str:
    (seed, data, how), chunk = case
    shown = data.hex() if len(data) <= 200 else f"{data[:100].hex()}...({len(data)} bytes)"
    return f"seed {seed}, {how}, read {chunk} bytes at a time: {shown}"


def assert_no_unexpected(script: str, cases: list[tuple[Case, int]], work: Path) -> dict[int, tuple[str, str]]:
    results = run_on_micropython(script, cases, work)
    bad = [f"input {i}: {detail}\n    {describe(cases[i])}"
           for i, (status, detail) in sorted(results.items()) if status == "UNEXPECTED"]
    assert not bad, f"{script}: the agent's parser raised what it does not document:\n" + "\n".join(bad)
    return results


def prefixes(target: str, chunk: int) -> list[tuple[Case, int]]:
    """Every seed whole and cut at every length (for long seeds: the first and last 40)."""
    cases = []
    for name, data in seeds(target):
        cuts = sorted(set(range(min(len(data), 40))) | set(range(max(0, len(data) - 40), len(data) + 1)))
        cases += [((name, data[:n], f"cut at {n}" if n < len(data) else "unchanged"), chunk) for n in cuts]
    return cases


# --- MQTT: mqtt.py --------------------------------------------------------------------------------


def test_mqtt_seeds_and_their_truncations_on_micropython(work):
    cases = prefixes("mqtt_agent", 512) + prefixes("mqtt_agent", 1)
    results = assert_no_unexpected("fuzz_mqtt.py", cases, work)
    # The unmutated packets parse: nothing but the end of the stream stops the reader.
    whole = [i for i, ((_s, _d, how), _c) in enumerate(cases) if how == "unchanged"]
    refused = {cases[i][0][0] for i in whole if results[i][0] != "ok"}
    # A CONNACK after the handshake is a protocol violation [MQTT-3.2.0-1]: the reader refuses it.
    assert refused == {n for n, _ in seeds("mqtt_agent") if n.startswith(("connack-", "session"))}


@scaled(0.05)
@given(st.lists(st.tuples(mutants("mqtt_agent", mqtt_length_fields), CHUNKS), min_size=20, max_size=100))
def test_mutated_mqtt_packets_on_micropython(work, cases):
    assert_no_unexpected("fuzz_mqtt.py", cases, work)


# --- DNS: probe.dns_parse -----------------------------------------------------------------------


def test_dns_seeds_and_their_truncations_on_micropython(work):
    cases = prefixes("dns", 512)
    results = assert_no_unexpected("fuzz_dns.py", cases, work)
    ok = {cases[i][0][0] for i, (status, _) in results.items() if status == "ok" and cases[i][0][2] == "unchanged"}
    # Of the seeds, exactly the good answers parse (NODATA is a good, empty answer).
    assert ok == {"a-answers.bin", "aaaa-then-a.bin", "case-0x20.bin", "cname-chain.bin",
                  "compression-pointers.bin", "nodata.bin"}


@scaled(0.05)
@given(st.lists(mutants("dns", dns_length_fields, max_edits=6), min_size=50, max_size=300))
def test_mutated_dns_responses_on_micropython(work, cases):
    assert_no_unexpected("fuzz_dns.py", [(case, 512) for case in cases], work)
