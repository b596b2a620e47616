"""Agent traffic for tests, fed through the real Ingestor (one commit per message)."""

from __future__ import annotations

import json
from typing import Any

from wanwitness.collector.ingest import Ingestor, Message

T0 = 1793685600000  # 2026-11-03T06:00:00Z
MIN = 60_000
HOUR = 60 * MIN


def rec_message(agent: str, boot: int, recs: list[dict[str, Any]], recv_ms: int, *,
                sent_t: int | None = None) -> Message:
    doc: dict[str, Any] = {"v": 1, "agent": agent, "boot": boot, "recs": recs}
    if sent_t is not None:
        doc["t"] = sent_t
    return Message(f"wanwitness/{agent}/rec", json.dumps(doc).encode(), recv_ms)


def hb_message(agent: str, boot: int, t: int, recv_ms: int) -> Message:
    return Message(f"wanwitness/{agent}/hb", json.dumps({"boot": boot, "t": t}).encode(), recv_ms)


def ingest(ingestor: Ingestor, msg: Message) -> None:
    result = ingestor.ingest([msg])
    assert result.quarantined == 0, result.reasons


class Board:
    """One agent with an exact clock and no network delay: agent t = UTC - boot start.

    Times passed in are UTC ms. Records are delivered when made unless `deliver=False`,
    which keeps them in the outbox until `flush` (a LAN outage).
    """

    def __init__(self, ingestor: Ingestor, agent: str, seq: int = 0):
        self.ingestor = ingestor
        self.agent = agent
        self.seq = seq
        self.boot = 0
        self.boot_utc = 0
        self.outbox: list[dict[str, Any]] = []

    def t(self, utc: int) -> int:
        return utc - self.boot_utc

    def start(self, boot: int, utc: int, reset: str = "power_on") -> int:
        assert not self.outbox, "flush before a reboot"
        self.boot, self.boot_utc = boot, utc
        return self.rec("boot", utc, reset=reset)

    def hb(self, utc: int) -> None:
        ingest(self.ingestor, hb_message(self.agent, self.boot, self.t(utc), utc))

    def rec(self, kind: str, utc: int, /, *, deliver: bool = True, **fields: Any) -> int:
        self.seq += 1
        rec = {"seq": self.seq, "t": self.t(utc), "utc": None, "k": kind, **fields}
        self.outbox.append(rec)
        if deliver:
            self.flush(utc)
        return self.seq

    def state(self, s: str, at: int, *, t: int | None = None, bound: int | None = None,
              ev: dict[str, Any] | None = None, retract: bool = False,
              deliver: bool = True) -> int:
        """A state record whose `at`/`bound` are the UTC instants given; made at `t`."""
        made = at if t is None else t
        fields: dict[str, Any] = {"s": s, "at": self.t(at),
                                  "bound": None if bound is None else self.t(bound),
                                  "ev": ev if ev is not None else {}}
        if retract:
            fields["retract"] = True
        return self.rec("state", made, deliver=deliver, **fields)

    def flush(self, utc: int) -> None:
        if self.outbox:
            ingest(self.ingestor, rec_message(self.agent, self.boot, self.outbox, utc,
                                              sent_t=self.t(utc)))
            self.outbox = []
