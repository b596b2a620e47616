"""The agent's batch encoder (running on MicroPython) against the protocol vectors."""

from __future__ import annotations

import json

import pytest

from testing.mpy import ROOT, run_mpy
from tests.vectorlib import load
from wanwitness.collector.protocol import canonical, parse_batch


# On the 64-bit wheel and on the 32-bit frozen build (./dev mp32): small ints end at
# 2^30 there, as on an ESP32, and the agent's timestamps and sequence numbers get near it.
@pytest.mark.parametrize("frozen", [False, True], ids=["wheel", "mp32"])
def test_agent_batches_validate_and_match_the_vectors(tmp_path, frozen):
    proc = run_mpy(ROOT / "tests/mpy/encode_vectors.py", str(ROOT / "tests/vectors/valid"),
                   str(tmp_path), heap="256K", frozen=frozen)
    assert proc.returncode == 0 and "done" in proc.stdout, proc.stdout + proc.stderr
    encoded = {}
    for line in proc.stdout.splitlines():
        if line.startswith("BATCH "):
            _, name, hexed = line.split(" ", 2)
            encoded[name[:-5]] = bytes.fromhex(hexed)
    vectors = dict(load("valid"))
    assert set(encoded) == set(vectors)
    for name, payload in encoded.items():
        vec = vectors[name]
        assert len(payload) <= 1024, f"{name}: a batch must fit in 1 KiB"
        batch = parse_batch(payload, vec["topic"])  # raises with the reason if invalid
        assert (batch.agent, batch.boot, batch.ob) == (vec["payload"]["agent"], vec["payload"]["boot"],
                                                       vec["payload"].get("ob", ""))
        # Byte for byte the same records once in canonical form.
        assert canonical(batch.recs) == canonical(vec["payload"]["recs"]), name
        assert json.loads(payload)["v"] == 1
