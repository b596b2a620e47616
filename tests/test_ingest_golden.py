"""Ingest's outcome, pinned: a seeded stream of messages (12 agents; legacy and outbox
streams, a re-flashed board, reboots, gaps, holes filled late, resends, conflicting
records, heartbeats with latency lines, refused senders and bad messages) ingested in
commits of random sizes must leave exactly the rows, and give exactly the acks, that
the code before the per-core ingest work (issue 18) gave. The digests below were taken
from that code (main at 0fc333c) on SQLite and PostgreSQL alike; a change that moves
any of them changes what is stored, and must say why.

On a mismatch the test names the table; `python -m tests.test_ingest_golden URL` prints
the dump to compare two trees.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from typing import Any

import sqlalchemy as sa

from wanwitness import store as s
from wanwitness.collector import ledger
from wanwitness.collector.ingest import Ingestor, IngestResult, Message

BASE_UTC = 1_800_000_000_000
AGENTS = [f"g{i}" for i in range(12)]
REVOKED = "g11"
WITH_OB = set(AGENTS[4:])  # g0..g3 send no outbox id (older firmware)
REFLASHED = "g5"           # erased flash halfway: a new outbox id, seqs from 1 again


class _Agent:
    def __init__(self, name: str, rng: random.Random):
        self.name, self.rng = name, rng
        self.ob = f"{rng.getrandbits(32):08x}" if name in WITH_OB else ""
        self.seq = 0
        self.boot = 1
        self.t = 1000
        self.state = "up"
        self.sent: list[bytes] = []  # every batch sent: some are sent again
        self.fresh_boot = True

    def _rec(self) -> dict[str, Any]:
        self.seq += 1
        self.t += self.rng.randrange(50, 5000)
        rec: dict[str, Any] = {"seq": self.seq, "t": self.t,
                               "utc": BASE_UTC + self.t if self.rng.random() < 0.7 else None}
        if self.fresh_boot:
            self.fresh_boot = False
            rec.update(k="boot", reset=self.rng.choice(("PWRON_RESET", "WDT_RESET")), safe=False)
            return rec
        r = self.rng.random()
        if r < 0.4:
            rec.update(k="probe", tg="gw:192.0.2.1", ok=self.rng.random() < 0.8, rtt=self.rng.randrange(1, 90))
        elif r < 0.55:
            rec.update(k="led", ch="wan", st=self.rng.choice(("on", "off", "blink")), at=self.t - 10)
        elif r < 0.7:
            rec.update(k="stats", heap=80000 + self.rng.randrange(9000), q=self.rng.randrange(40))
        elif r < 0.8:
            old, self.state = self.state, "isp_down" if self.state == "up" else "up"
            rec.update(k="state", s=self.state, **{"from": old}, at=self.t - 20, bound=max(0, self.t - 900),
                       ev={"by": "probe", "loss": 1.0})
        elif r < 0.87 and rec["utc"] is not None:
            rec.update(k="clock")
        elif r < 0.93 and self.seq > 3:
            # A gap record: the two seqs before it were dropped from the flash.
            self.seq += 2
            rec["seq"] = self.seq
            rec.update(k="gap", drop=[[self.seq - 2, self.seq - 1]], kinds={"probe": 2})
        else:
            rec.update(k="future-kind", payload={"x": [1, 2, {"y": "é"}]})
        return rec

    def batch(self) -> bytes:
        recs = [self._rec() for _ in range(self.rng.choice((1, 1, 2, 3, 5)))]
        doc: dict[str, Any] = {"v": 1, "agent": self.name, "boot": self.boot, "t": self.t + 3, "recs": recs}
        if self.ob:
            doc["ob"] = self.ob
        body = json.dumps(doc, separators=(",", ":")).encode()
        self.sent.append(body)
        return body

    def heartbeat(self) -> bytes:
        lat = {"gw:192.0.2.1": [12, 0, 2, 3, 9], "198.51.100.7": [12, self.rng.randrange(3), 10, 14, 40],
               "dns:198.51.100.53": [6, 6, None, None, None]}
        doc: dict[str, Any] = {"boot": self.boot, "t": self.t + self.rng.randrange(1, 40), "s": self.state,
                               "heap": 90000, "q": self.rng.randrange(9), "lat": lat}
        if self.ob:
            doc["ob"] = self.ob
        return json.dumps(doc, separators=(",", ":")).encode()

    def reboot(self) -> None:
        self.boot += 1
        self.t = 1000 + self.rng.randrange(500)
        self.fresh_boot = True

    def reflash(self) -> None:
        self.ob = f"{self.rng.getrandbits(32):08x}"
        self.seq = 0
        self.boot = 1
        self.t = 1000
        self.fresh_boot = True


def messages(seed: int = 18, n: int = 1500) -> list[Message]:
    rng = random.Random(seed)
    agents = {name: _Agent(name, rng) for name in AGENTS}
    held: list[tuple[int, Message]] = []  # delayed messages: (release at, message)
    out: list[Message] = []
    recv = BASE_UTC + 10_000_000
    for i in range(n):
        if i == n // 2:
            agents[REFLASHED].reflash()
        recv += rng.randrange(0, 700)
        a = agents[rng.choice(AGENTS)]
        r = rng.random()
        topic = f"wanwitness/{a.name}/"
        if r < 0.55:
            msg = Message(topic + "rec", a.batch(), recv)
            if rng.random() < 0.08:  # arrives late: the ack waits for the hole
                held.append((i + rng.randrange(3, 60), msg))
                continue
        elif r < 0.8:
            msg = Message(topic + "hb", a.heartbeat(), recv)
        elif r < 0.87 and a.sent:
            msg = Message(topic + "rec", rng.choice(a.sent), recv)  # a resend
        elif r < 0.89 and a.sent:
            doc = json.loads(rng.choice(a.sent))  # the same seq, other content
            doc["recs"][0]["zz"] = rng.randrange(100)
            msg = Message(topic + "rec", json.dumps(doc).encode(), recv)
        elif r < 0.91:
            a.reboot()
            continue
        elif r < 0.93:
            msg = Message(rng.choice(("wanwitness/ghost/rec", "wanwitness/g1/cmd", "wanwitness/Bad/rec",
                                      "wanwitness/g2/status", "wanwitness/g3/ack")),
                          b'{"v":1,"agent":"ghost","boot":1,"recs":[]}', recv)
        elif r < 0.95:
            msg = Message(topic + rng.choice(("rec", "hb")), rng.choice((b"{", b"[]", b'{"v":2}')), recv)
        else:
            continue
        out.append(msg)
        while held and held[0][0] <= i:
            out.append(held.pop(0)[1])
        held.sort(key=lambda h: h[0])
    out.extend(m for _, m in held)
    return out


def run(store: s.Store, seed: int = 18) -> list[IngestResult]:
    from wanwitness.collector.agents import add_agent, set_enabled
    for name in AGENTS:
        add_agent(store, name)
    set_enabled(store, REVOKED, False)
    rng = random.Random(seed + 1)
    msgs = messages(seed)
    ing = Ingestor(store)
    results = []
    i = 0
    while i < len(msgs):
        k = rng.choice((1, 2, 7, 30, 120))
        results.append(ing.ingest(msgs[i:i + k]))
        i += k
    return results


TABLES: dict[str, tuple[str, ...]] = {
    "agents": ("id", "enabled", "ack_seq", "max_seq", "last_recv_ms", "ob", "last_hb", "last_hb_ms",
               "chain_n", "chain_hash"),
    "records": ("agent", "seq", "boot", "t", "utc", "k", "body", "recv_ms", "pos", "link", "hash"),
    "boots": ("agent", "boot", "first_recv_ms", "last_recv_ms", "last_t", "first_seq", "reset"),
    "clock_points": ("id", "agent", "boot", "t", "recv_ms"),
    "latency": ("agent", "span_ms", "bucket_ms", "target", "sent", "lost", "rtt_min", "rtt_max",
                "med_w", "med_n"),
    "streams": ("agent", "ob", "seq_base", "boot_base", "first_recv_ms", "seq_end", "boot_end"),
    "gaps": ("agent", "first", "last", "seq"),
    "quarantine": ("id", "recv_ms", "topic", "agent", "reason", "size", "count", "last_recv_ms", "sha256"),
}


def dump(store: s.Store, results: list[IngestResult]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    with store.engine.connect() as conn:
        for name, cols in TABLES.items():
            t = s.metadata.tables[name]
            order = [t.c[c] for c in (("id",) if "id" in cols and name != "agents" else
                                      [c.name for c in t.primary_key.columns])]
            out[name] = [[v if not isinstance(v, bool) else int(v) for v in row]
                         for row in conn.execute(sa.select(*[t.c[c] for c in cols]).order_by(*order))]
    out["results"] = [[r.stored, r.duplicates, r.quarantined, sorted(r.acks.items()),
                       sorted((a, list(v)) for a, v in r.streams.items()), r.reasons] for r in results]
    return out


def digests(d: dict[str, list[Any]]) -> dict[str, str]:
    return {k: f"{len(v)} {hashlib.sha256(json.dumps(v, sort_keys=True).encode()).hexdigest()[:16]}"
            for k, v in d.items()}


# Taken from main at 0fc333c (before issue 18's per-core work), both backends.
EXPECTED = {
    "agents": "12 773db9d69fdf50fc",
    "records": "1887 c8287d823f3846fb",
    "boots": "42 208c2ac19147c5c7",
    "clock_points": "307 1a8276005c2e4e8f",
    "latency": "126 2c5ae420decb83f7",
    "streams": "19 c4086077aebc2ac1",
    "gaps": "141 0e5bc2eab1ad625f",
    "quarantine": "143 835c89beb51b9dec",
    "results": "40 e5b5f0636321f115",
}


def test_ingest_stores_exactly_what_it_stored_before(store):
    results = run(store)
    assert ledger.verify(store).ok
    got = digests(dump(store, results))
    assert {k: v for k, v in got.items() if EXPECTED.get(k) != v} == {}


if __name__ == "__main__":
    from wanwitness.store import open_store
    st = open_store(sys.argv[1])
    d = dump(st, run(st))
    print(json.dumps(digests(d), indent=1))
    if len(sys.argv) > 2:
        with open(sys.argv[2], "w") as f:
            json.dump(d, f, indent=0, sort_keys=True)
