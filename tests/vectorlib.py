"""Loading tests/vectors: the protocol's valid and invalid batches.

Each file holds `topic`, a description, and the payload as `payload` (a JSON value),
`payload_text` (raw text, for broken JSON), `payload_hex` (raw bytes) or
`payload_size` (a syntactically valid batch padded to that many bytes). Invalid
vectors carry the quarantine `reason` the collector must give; valid ones carry
`canonical`, the exact bytes the agent's encoder must produce.
"""

from __future__ import annotations

import json
from pathlib import Path

VECTORS = Path(__file__).parent / "vectors"

# Agents the vectors assume: a1 registered, old registered then revoked.
REGISTERED = "a1"
REVOKED = "old"


def load(kind: str) -> list[tuple[str, dict]]:
    return [(p.stem, json.loads(p.read_text(encoding="utf-8")))
            for p in sorted((VECTORS / kind).glob("*.json"))]


def payload(vector: dict) -> bytes:
    if "payload_text" in vector:
        return vector["payload_text"].encode("utf-8")
    if "payload_hex" in vector:
        return bytes.fromhex(vector["payload_hex"])
    if "payload_size" in vector:
        head = b'{"v":1,"agent":"a1","boot":3,"recs":[{"seq":1,"t":1,"utc":null,"k":"stats","pad":"'
        tail = b'"}]}'
        return head + b"x" * (vector["payload_size"] - len(head) - len(tail)) + tail
    return json.dumps(vector["payload"], ensure_ascii=False).encode("utf-8")
