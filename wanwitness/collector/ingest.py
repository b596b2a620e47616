"""Ingest: validate, store idempotently on (agent, seq), chain, commit; then ack.

`Ingestor.ingest` is the database half and knows nothing of MQTT: it takes the
messages received since the last commit, writes them in one transaction (group
commit: one fsync for many messages) and returns the acks to publish. Only after it
returns does the MQTT half (collector.py) PUBACK the messages and publish each
agent's retained `{"seq": N}`, so an ack is never ahead of what is committed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from typing import Any

import sqlalchemy as sa
from prometheus_client import Counter, Histogram, Metric
from prometheus_client.registry import Collector

from wanwitness import store as s
from wanwitness.collector import ledger, protocol
from wanwitness.collector.quarantine import DROPPED, KEPT, Quota
from wanwitness.collector.quarantine import write as quarantine_write
from wanwitness.store.errors import is_message_error
from wanwitness.store.errors import reason as db_reason

log = logging.getLogger(__name__)


@dataclass
class Message:
    topic: str
    payload: bytes
    recv_ms: int


@dataclass
class IngestResult:
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    acks: dict[str, int] = field(default_factory=dict)  # agent -> contiguous seq to (re)publish
    # agent -> (outbox id, seq_base) of its current stream, for every agent in `acks`
    # whose batches carry an outbox id: the ack goes out in that outbox's own numbering.
    streams: dict[str, tuple[str, int]] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)


@dataclass
class _AgentRow:
    id: str
    enabled: bool
    ack_seq: int
    max_seq: int
    last_recv_ms: int | None
    chain_n: int = 0  # the agent's chain head (schema.agents), advanced in this commit
    chain_hash: str | None = None
    has_gaps: bool = False
    ob: str | None = None  # the current stream's outbox id; None: none yet (legacy)
    took_over: bool = False  # a new outbox became current in this commit


@dataclass
class _Stream:
    """One outbox of an agent (schema.streams): stored = base + the agent's own number."""
    ob: str
    seq_base: int
    boot_base: int
    seq_end: int | None = None  # set once a newer outbox took over: stored seqs and
    boot_end: int | None = None  # boots of this one may not pass them


def ack_payload(seq: int, stream: tuple[str, int] | None) -> str:
    """The retained ack for stored ack seq `seq`: in the current outbox's own numbering
    with its id, or `{"seq":N}` for an agent whose batches carry no outbox id."""
    if stream is None:
        return json.dumps({"seq": seq}, separators=(",", ":"))
    ob, base = stream
    return json.dumps({"seq": seq - base, "ob": ob}, separators=(",", ":"))


# What a quarantine reason starts with (the text before its first ':', docs/protocol.md
# "Quarantine"): the `reason` label of wanwitness_messages_quarantined_total, spaces
# made underscores. Each is exposed from the start, at 0, so a rate sees the first one.
QUARANTINE_REASONS = ("unexpected topic", "unknown agent", "unauthorised agent",
                      "invalid heartbeat", "invalid batch", "conflicting record",
                      "replaced outbox", "internal error")


def reason_label(reason: str) -> str:
    """A quarantine reason's kind as a Prometheus label value: `invalid_batch`."""
    return reason.split(":", 1)[0].strip().replace(" ", "_")


class IngestMetrics(Collector):
    """What ingest measures in this process for /metrics (prometheus_client objects in
    no registry: the web app's registry collects them through `collect`): the time of
    each committed transaction and the messages quarantined, by reason."""

    COMMIT_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self) -> None:
        self.commit = Histogram(
            "wanwitness_ingest_commit_duration_seconds",
            "Time of one ingest transaction that committed (validate, store, chain, commit), "
            "seconds", registry=None, buckets=self.COMMIT_BUCKETS_S)
        self.quarantined = Counter(
            "wanwitness_messages_quarantined", "Messages quarantined by this collector process, "
            "by the kind of reason (docs/protocol.md, Quarantine)", ["reason"], registry=None)
        for reason in QUARANTINE_REASONS:
            self.quarantined.labels(reason_label(reason))

    def committed(self, seconds: float, reasons: list[str]) -> None:
        self.commit.observe(seconds)
        for reason in reasons:
            self.quarantined.labels(reason_label(reason)).inc()

    def collect(self) -> Iterable[Metric]:
        return [*self.commit.collect(), *self.quarantined.collect()]


class Ingestor:
    def __init__(self, store: s.Store, prefix: str = "wanwitness", quota: Quota | None = None):
        self.store = store
        self.prefix = prefix
        self.quota = quota or Quota()
        self.metrics = IngestMetrics()
        self._full: set[str] = set()  # quarantine buckets whose full quota was logged

    # -- classification ------------------------------------------------------

    def _kind(self, topic: str) -> tuple[str, str | None]:
        head = self.prefix + "/"
        if not topic.startswith(head):
            return "other", None
        parts = topic[len(head):].split("/")
        if len(parts) != 2:
            return "other", None
        return parts[1], parts[0]

    # -- the transaction -----------------------------------------------------

    def ingest(self, messages: list[Message]) -> IngestResult:
        """One transaction for all `messages`. A message whose data the store refuses
        (or that meets a bug) is quarantined and the others commit: the group is
        bisected in the same transaction, a savepoint per part, down to that
        message (about 2 log2 n parts; never a commit per message). Any other
        database error (disk full, read-only, corrupt, connection lost) is raised:
        then nothing was stored and nothing may be acked (loop.py retries)."""
        started = time.perf_counter()
        with self.store.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                self._lock_chains(conn, messages)
            result = IngestResult()
            try:
                with conn.begin_nested():
                    self._ingest(conn, messages, result)
            except Exception as e:
                if not is_message_error(e):
                    raise
                log.warning("a message in a group of %d failed (%s: %s); isolating it",
                            len(messages), type(e).__name__, db_reason(e))
                result = self._isolate(conn, messages)
        self.metrics.committed(time.perf_counter() - started, result.reasons)
        return result

    def _lock_chains(self, conn: sa.Connection, messages: list[Message]) -> None:
        """PostgreSQL: lock the chains of the agents these messages name, for this
        transaction, in one order (no deadlock between collectors). A lock per agent,
        never a global one: collectors ingesting different agents never wait. Taken
        before any savepoint, so the bisection of a failing group keeps them. (SQLite
        has one writer at a time anyway.)"""
        keys = sorted({chain_lock_key(agent) for agent in
                       (self._kind(m.topic)[1] for m in messages) if agent is not None
                       and protocol.valid_agent_id(agent)})
        if keys:
            conn.execute(sa.text("SELECT count(pg_advisory_xact_lock(k)) FROM "
                                 "(SELECT unnest(CAST(:keys AS BIGINT[])) AS k ORDER BY k) AS t"),
                         {"keys": keys})

    def _isolate(self, conn: sa.Connection, messages: list[Message]) -> IngestResult:
        """`messages` failed together: each half in a savepoint of its own, a failing
        half split again, a failing single message quarantined; in arrival order."""
        total = IngestResult()
        if len(messages) == 1:
            parts = [messages]
        else:
            mid = len(messages) // 2
            parts = [messages[:mid], messages[mid:]]
        for group in parts:
            part = IngestResult()
            try:
                with conn.begin_nested():
                    self._ingest(conn, group, part)
            except Exception as e:
                if not is_message_error(e):
                    raise
                if len(group) > 1:
                    part = self._isolate(conn, group)
                else:
                    part = IngestResult()
                    msg = group[0]
                    _, agent = self._kind(msg.topic)
                    registered = (agent is not None and protocol.valid_agent_id(agent)
                                  and conn.execute(sa.select(s.agents.c.id)
                                                   .where(s.agents.c.id == agent)).first() is not None)
                    self._refuse(conn, msg, agent, f"internal error: {type(e).__name__}: "
                                 f"{db_reason(e)}", part, registered)
            for f in fields(IngestResult):  # counts add up, lists extend, dicts update:
                mine, theirs = getattr(total, f.name), getattr(part, f.name)
                if isinstance(mine, dict):
                    mine.update(theirs)  # later parts saw the earlier ones: theirs are newer
                elif isinstance(mine, list):
                    mine.extend(theirs)
                else:
                    setattr(total, f.name, mine + theirs)
        return total

    def _refuse(self, conn: sa.Connection, msg: Message, agent: str | None, reason: str,
                result: IngestResult, registered: bool) -> None:
        """Quarantine one message (within the quota; repeats counted on their row)."""
        result.quarantined += 1
        result.reasons.append(reason)
        status = quarantine_write(conn, recv_ms=msg.recv_ms, topic=msg.topic, payload=msg.payload,
                                  agent=agent, reason=reason, registered=registered,
                                  quota=self.quota)
        if status == KEPT:
            log.warning("quarantined a message on %s: %s", msg.topic, reason)
        elif status == DROPPED:
            bucket = agent if registered and agent else ""
            if bucket not in self._full:
                self._full.add(bucket)
                log.warning("the quarantine of %s is full (%d messages or %d bytes): further "
                            "refused messages are counted, not kept (wanwitness quarantine list, "
                            "wanwitness quarantine prune)", repr(bucket) if bucket else
                            "unknown senders", self.quota.max_rows, self.quota.max_bytes)

    def _ingest(self, conn: sa.Connection, messages: list[Message], result: IngestResult) -> None:
        agent_rows: dict[str, _AgentRow | None] = {}
        # (agent, boot) -> [first_recv, last_recv, last_t, first_seq, reset, best clock point]
        seen: dict[tuple[str, int], list[Any]] = {}

        def agent_row(agent_id: str) -> _AgentRow | None:
            if agent_id not in agent_rows:
                _load_agents(conn, agent_rows, [agent_id])
            return agent_rows[agent_id]

        def quarantine(msg: Message, agent: str | None, reason: str) -> None:
            registered = (agent is not None and protocol.valid_agent_id(agent)
                          and agent_row(agent) is not None)
            self._refuse(conn, msg, agent, reason, result, registered)

        def note(agent: str, boot: int, t: int, recv_ms: int) -> list[Any]:
            entry = seen.get((agent, boot))
            if entry is None:
                entry = seen[(agent, boot)] = [recv_ms, recv_ms, t, None, None, (t, recv_ms)]
            else:
                entry[0] = min(entry[0], recv_ms)
                entry[1] = max(entry[1], recv_ms)
                entry[2] = max(entry[2], t)
                # Within one commit the points are milliseconds apart: keep the one with
                # the least queueing delay (lowest recv - t), which is all the envelope uses.
                bt, br = entry[5]
                if recv_ms - t < br - bt:
                    entry[5] = (t, recv_ms)
            return entry

        # The rows of all the agents named, in one query: read in this transaction (on
        # PostgreSQL under their chain locks), so nothing read in an earlier one is trusted.
        _load_agents(conn, agent_rows, {agent for agent in (self._kind(m.topic)[1] for m in messages)
                                        if agent is not None and protocol.valid_agent_id(agent)})

        # Pass 1: classify and validate, no writes except quarantine.
        batches: list[tuple[Message, protocol.Batch]] = []
        beats: list[tuple[str, str, int, int, Message, dict[str, Any]]] = []  # (agent, ob,
        #                                                    boot, t, message, its document)
        health: dict[str, tuple[Message, dict[str, Any]]] = {}  # agent -> its newest heartbeat
        latency: dict[tuple[str, int, int, str], list[Any]] = {}  # (agent, span, bucket, target) -> sums
        for msg in messages:
            kind, topic_agent = self._kind(msg.topic)
            if kind in ("status", "ack"):
                continue  # `online`/`offline` and our own retained acks: nothing to store
            if kind not in ("rec", "hb"):
                quarantine(msg, topic_agent, f"unexpected topic: {msg.topic!r}")
                continue
            assert topic_agent is not None
            row = agent_row(topic_agent) if protocol.valid_agent_id(topic_agent) else None
            if row is None:
                quarantine(msg, topic_agent, f"unknown agent: {topic_agent!r} is not registered "
                                             "(wanwitness agent add NAME)")
                continue
            if not row.enabled:
                quarantine(msg, topic_agent, f"unauthorised agent: {topic_agent!r} is revoked")
                continue
            if kind == "hb":
                try:
                    boot, t, hb_ob, hb_doc = protocol.parse_heartbeat_doc(msg.payload)
                except protocol.ProtocolError as e:
                    quarantine(msg, topic_agent, f"invalid heartbeat: {e}")
                    continue
                beats.append((topic_agent, hb_ob, boot, t, msg, hb_doc))  # boot: the outbox's
                continue
            try:
                batch = protocol.parse_batch(msg.payload, msg.topic, self.prefix)
            except protocol.ProtocolError as e:
                quarantine(msg, topic_agent, f"invalid batch: {e}")
                continue
            batches.append((msg, batch))

        # Pass 1b: each outbox's numbers -> stored numbers (schema.streams). Batches in
        # arrival order, so a re-flashed board's stream starts after everything before it.
        streams = _Streams(conn, agent_rows)
        streams.load({b.agent for _, b in batches} | {beat[0] for beat in beats})
        mapped: list[tuple[Message, protocol.Batch]] = []
        for msg, batch in batches:
            st = streams.get(batch.agent, batch.ob, msg.recv_ms)
            boot = st.boot_base + batch.boot
            if st.boot_end is not None and boot > st.boot_end:
                quarantine(msg, batch.agent, _replaced(st, f"boot {batch.boot}"))
                continue
            recs = []
            for rec in batch.recs:
                seq = st.seq_base + rec["seq"]
                if st.seq_end is not None and seq > st.seq_end:
                    one = protocol.canonical({"v": 1, "agent": batch.agent, "boot": batch.boot,
                                              "recs": [rec], **({"ob": batch.ob} if batch.ob else {})})
                    quarantine(Message(msg.topic, one, msg.recv_ms), batch.agent,
                               _replaced(st, f"seq {rec['seq']}"))
                    continue
                if st.seq_base or st.boot_base:
                    # Stored in the agent's numbering past its earlier outboxes; the body
                    # names the outbox it came from.
                    rec = dict(rec, seq=seq, ob=st.ob)
                    if rec["k"] == "gap":
                        rec["drop"] = [[a + st.seq_base, b + st.seq_base] for a, b in rec["drop"]]
                recs.append(rec)
            if recs:
                streams.saw(batch.agent, max(r["seq"] for r in recs), boot)
                shifted = st.seq_base or st.boot_base or len(recs) != len(batch.recs)
                mapped.append((msg, replace(batch, boot=boot, recs=recs) if shifted else batch))
        batches = mapped
        for agent_id, ob, boot, t, beat, hb_doc in beats:
            st = streams.get(agent_id, ob, beat.recv_ms)
            boot += st.boot_base
            if st.boot_end is not None and boot > st.boot_end:
                log.debug("heartbeat of replaced outbox %r of %s ignored", ob, agent_id)
                continue
            streams.saw(agent_id, 0, boot)
            note(agent_id, boot, t, beat.recv_ms)
            if agent_id not in health or beat.recv_ms >= health[agent_id][0].recv_ms:
                health[agent_id] = (beat, hb_doc)
            for lat in protocol.heartbeat_latency(hb_doc):
                for span in s.LATENCY_SPANS_MS:
                    _add_latency(latency, (agent_id, span, beat.recv_ms // span * span, lat.target), lat)

        # Pass 2: what is already stored, one query per agent and chunk; seqs above the
        # agent's highest stored one (the usual case) need no lookup.
        wanted: dict[str, set[int]] = {}
        for _, batch in batches:
            ceiling = agent_rows[batch.agent].max_seq  # type: ignore[union-attr]
            wanted.setdefault(batch.agent, set()).update(
                r["seq"] for r in batch.recs if r["seq"] <= ceiling)
        stored: dict[tuple[str, int], str] = {}
        for agent_id, seqs in wanted.items():
            ordered = sorted(seqs)
            for i in range(0, len(ordered), 500):
                chunk = ordered[i:i + 500]
                for seq, body in conn.execute(
                        sa.select(s.records.c.seq, s.records.c.body)
                        .where(s.records.c.agent == agent_id, s.records.c.seq.in_(chunk))):
                    stored[(agent_id, seq)] = body

        # Pass 3: chain the new records in arrival order, each into its agent's chain.
        new_records: list[dict[str, Any]] = []
        prevs: dict[str, bytes] = {}  # agent -> its newest link's hash, as bytes
        touched: set[str] = set()
        resent: set[str] = set()  # agents that sent what we have: they missed an ack
        fresh: dict[str, set[int]] = {}  # agent -> seqs stored in this commit
        for msg, batch in batches:
            entry = note(batch.agent, batch.boot, batch.sent_t, msg.recv_ms)
            touched.add(batch.agent)
            for rec in batch.recs:
                seq = rec["seq"]
                body = protocol.canonical_text(rec)
                old = stored.get((batch.agent, seq))
                if old is not None:
                    if old == body:
                        result.duplicates += 1
                        resent.add(batch.agent)
                    else:
                        # Same seq, different content: never overwrite what is stored.
                        one = protocol.canonical({"v": 1, "agent": batch.agent,
                                                  "boot": batch.boot, "recs": [rec]})
                        quarantine(Message(msg.topic, one, msg.recv_ms), batch.agent,
                                   f"conflicting record: seq {seq} is already stored with "
                                   "different content")
                    continue
                arow = agent_rows[batch.agent]
                assert arow is not None
                prev = prevs.get(batch.agent)
                if prev is None:
                    prev = bytes.fromhex(arow.chain_hash) if arow.chain_hash else ledger.GENESIS
                prev = prevs[batch.agent] = ledger.link(prev, batch.agent, batch.boot, body, msg.recv_ms)
                arow.chain_n += 1
                new_records.append(dict(agent=batch.agent, seq=seq, boot=batch.boot, t=rec["t"],
                                        utc=rec["utc"], k=rec["k"], body=body,
                                        recv_ms=msg.recv_ms, link=arow.chain_n, hash=prev.hex()))
                stored[(batch.agent, seq)] = body
                fresh.setdefault(batch.agent, set()).add(seq)
                result.stored += 1
                entry[3] = seq if entry[3] is None else min(entry[3], seq)
                if rec["k"] == "boot" and entry[4] is None:
                    entry[4] = rec["reset"]
                elif rec["k"] == "gap":
                    for first, last in rec["drop"]:
                        self._add_gap(conn, batch.agent, first, last, seq)
                    agent_rows[batch.agent].has_gaps = True  # type: ignore[union-attr]

        if new_records:
            for rec_row, pos in zip(new_records, _positions(conn, len(new_records)), strict=True):
                rec_row["pos"] = pos
            _execute_many(conn, _INSERT_RECORDS, new_records)
        if latency:
            _write_latency(conn, latency)
        last_recv = self._write_seen(conn, seen)
        updates: list[dict[str, Any]] = []  # the agents' rows: what changed, in id order
        for agent_id in sorted(touched | set(last_recv)):  # sorted: one lock order
            row = agent_rows[agent_id]
            assert row is not None
            new_seqs = fresh.get(agent_id, set())
            values: dict[str, Any] = {}
            if agent_id in health:
                beat, hb_doc = health[agent_id]
                values["last_hb"] = json.dumps(protocol.heartbeat_health(hb_doc),
                                               sort_keys=True, separators=(",", ":"))
                values["last_hb_ms"] = beat.recv_ms
            new_ack = self._advance(conn, agent_id, row, new_seqs)
            if new_seqs and max(new_seqs) > row.max_seq:
                values["max_seq"] = row.max_seq = max(new_seqs)
            recv = last_recv.get(agent_id)
            if recv is not None and (row.last_recv_ms is None or recv > row.last_recv_ms):
                values["last_recv_ms"] = row.last_recv_ms = recv
            if row.took_over:
                # Acked up to the new stream's base: the new outbox's own ack starts at 0,
                # and that ack replaces the retained one of the outbox before.
                values["ob"] = row.ob
                values["ack_seq"] = new_ack
                result.acks[agent_id] = new_ack
                row.ack_seq = new_ack
            elif new_ack != row.ack_seq:
                values["ack_seq"] = new_ack
                result.acks[agent_id] = new_ack
                row.ack_seq = new_ack
            elif agent_id in resent:
                # Our last ack may have been lost (killed after commit, broker restarted
                # without its retained messages): say it again or the agent resends forever.
                result.acks[agent_id] = new_ack
            if agent_id in prevs:
                values["chain_n"] = row.chain_n
                values["chain_hash"] = row.chain_hash = prevs[agent_id].hex()
            if values:
                updates.append({"b_id": agent_id, **{"b_" + c: values.get(c) for c in _AGENT_UPDATED}})
            if agent_id in result.acks and row.ob is not None:
                result.streams[agent_id] = (row.ob, streams.get(agent_id, row.ob, 0).seq_base)
        if updates:
            conn.execute(_AGENTS_UPDATE, updates)

    # -- helpers --------------------------------------------------------------

    def _write_seen(self, conn: sa.Connection,
                    seen: dict[tuple[str, int], list[Any]]) -> dict[str, int]:
        """Boot bookkeeping and clock points for everything heard in this commit;
        returns each agent's newest receive time."""
        points = []
        boots = []
        last_recv: dict[str, int] = {}
        for (agent, boot), (first_recv, recv, t, first_seq, reset, point) in seen.items():
            points.append(dict(agent=agent, boot=boot, t=point[0], recv_ms=point[1]))
            last_recv[agent] = max(last_recv.get(agent, 0), recv)
            boots.append(dict(agent=agent, boot=boot, first_recv_ms=first_recv, last_recv_ms=recv,
                              last_t=t, first_seq=first_seq, reset=reset))
        if boots:
            boots.sort(key=lambda b: (b["agent"], b["boot"]))  # one lock order
            _execute_many(conn, _boots_upsert(conn.dialect.name), boots)
        if points:
            _execute_many(conn, _INSERT_CLOCK_POINTS, points)
        return last_recv

    def _add_gap(self, conn: sa.Connection, agent: str, first: int, last: int, seq: int) -> None:
        G = s.gaps
        old = conn.execute(sa.select(G.c.last).where(G.c.agent == agent, G.c.first == first)).first()
        if old is None:
            conn.execute(G.insert().values(agent=agent, first=first, last=last, seq=seq))
        elif old.last < last:
            conn.execute(G.update().where(G.c.agent == agent, G.c.first == first).values(last=last))

    def _advance(self, conn: sa.Connection, agent: str, row: _AgentRow, new_seqs: set[int]) -> int:
        """Highest N such that every seq <= N is stored or declared dropped."""
        ack = row.ack_seq
        # Fast path, the usual case: this commit's seqs continue the acked run and
        # nothing was stored above them before (the seq ceiling says so): no queries.
        while ack + 1 in new_seqs:
            ack += 1
        if ack >= row.max_seq and (not new_seqs or ack >= max(new_seqs)) and not row.has_gaps:
            return ack
        R, G = s.records, s.gaps
        while True:
            nxt = ack + 1
            gap = conn.execute(sa.select(sa.func.max(G.c.last))
                               .where(G.c.agent == agent, G.c.first <= nxt, G.c.last >= nxt)).scalar()
            if gap is not None:
                ack = gap
                continue
            seqs = conn.execute(sa.select(R.c.seq).where(R.c.agent == agent, R.c.seq > ack)
                                .order_by(R.c.seq).limit(2000)).scalars().all()
            moved = False
            for seq in seqs:
                if seq != ack + 1:
                    break
                ack = seq
                moved = True
            if not moved:
                return ack


# What ingest writes on an agent's row. None of them is ever set back to NULL, so one
# statement serves every agent of a commit: a column given as NULL keeps its value.
_AGENT_UPDATED = ("ack_seq", "max_seq", "last_recv_ms", "ob", "last_hb", "last_hb_ms", "chain_n",
                  "chain_hash")
_AGENTS_UPDATE = s.agents.update().where(s.agents.c.id == sa.bindparam("b_id")).values({
    c: sa.func.coalesce(sa.bindparam("b_" + c, type_=s.agents.c[c].type), s.agents.c[c])
    for c in _AGENT_UPDATED})


def _load_agents(conn: sa.Connection, agent_rows: dict[str, _AgentRow | None],
                 agent_ids: Iterable[str]) -> None:
    """Read the agents' rows into `agent_rows` (None: not registered), 500 a query."""
    A = s.agents
    ordered = sorted(set(agent_ids) - agent_rows.keys())
    for i in range(0, len(ordered), 500):
        chunk = ordered[i:i + 500]
        for agent_id in chunk:
            agent_rows[agent_id] = None
        for row in conn.execute(sa.select(A.c.id, A.c.enabled, A.c.ack_seq, A.c.max_seq,
                                          A.c.last_recv_ms, A.c.ob, A.c.chain_n, A.c.chain_hash)
                                .where(A.c.id.in_(chunk))):
            agent_rows[row.id] = _AgentRow(row.id, bool(row.enabled), row.ack_seq, row.max_seq,
                                           row.last_recv_ms, row.chain_n, row.chain_hash, ob=row.ob)


def chain_lock_key(agent: str) -> int:
    """The PostgreSQL advisory lock key of an agent's chain (a signed 64-bit integer)."""
    digest = hashlib.sha256(b"wanwitness.chain:" + agent.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _positions(conn: sa.Connection, n: int) -> list[int]:
    """n new global order numbers (records.pos): from a sequence on PostgreSQL (no lock
    shared by collectors), after the highest stored on SQLite (one writer at a time)."""
    if conn.dialect.name == "postgresql":
        return list(conn.execute(sa.text("SELECT nextval('records_pos_seq') FROM generate_series(1, :n)"),
                                 {"n": n}).scalars())
    top = conn.execute(sa.select(sa.func.max(s.records.c.pos))).scalar() or 0
    return list(range(top + 1, top + n + 1))


def _replaced(st: _Stream, what: str) -> str:
    name = repr(st.ob) if st.ob else "(none: batches without an outbox id)"
    return (f"replaced outbox: {what} of outbox {name} lies past where a newer outbox of this "
            "agent took over (another board with this agent's credentials, or older firmware?)")


class _Streams:
    """The streams (outboxes) of the agents in one commit: found, or started."""

    def __init__(self, conn: sa.Connection, agent_rows: dict[str, _AgentRow | None]):
        self.conn = conn
        self.agent_rows = agent_rows
        self.cache: dict[tuple[str, str], _Stream] = {}
        self.high: dict[str, list[int]] = {}  # agent -> [seq, boot]: the highest stored
        #                                       numbers seen in this commit so far
        self.loaded: set[str] = set()  # agents all of whose streams are in `cache`

    def load(self, agents: set[str]) -> None:
        """Read all the streams of these agents, 500 agents a query (instead of a query
        per agent and outbox in `get`)."""
        S = s.streams
        ordered = sorted(agents - self.loaded)
        for i in range(0, len(ordered), 500):
            chunk = ordered[i:i + 500]
            for row in self.conn.execute(sa.select(S.c.agent, S.c.ob, S.c.seq_base, S.c.boot_base,
                                                   S.c.seq_end, S.c.boot_end)
                                         .where(S.c.agent.in_(chunk))):
                self.cache.setdefault((row.agent, row.ob), _Stream(row.ob, row.seq_base, row.boot_base,
                                                                   row.seq_end, row.boot_end))
            self.loaded.update(chunk)

    def saw(self, agent: str, seq: int, boot: int) -> None:
        hi = self.high.setdefault(agent, [0, 0])
        hi[0] = max(hi[0], seq)
        hi[1] = max(hi[1], boot)

    def get(self, agent: str, ob: str, recv_ms: int) -> _Stream:
        key = (agent, ob)
        st = self.cache.get(key)
        if st is not None:
            return st
        S = s.streams
        row = None if agent in self.loaded else self.conn.execute(
            sa.select(S.c.seq_base, S.c.boot_base, S.c.seq_end, S.c.boot_end)
            .where(S.c.agent == agent, S.c.ob == ob)).first()
        if row is not None:
            st = self.cache[key] = _Stream(ob, row.seq_base, row.boot_base, row.seq_end,
                                           row.boot_end)
            return st
        arow = self.agent_rows[agent]
        assert arow is not None
        if ob == "":
            # Batches without an outbox id (older firmware): the numbering is the agent's.
            st = _Stream("", 0, 0)
        else:
            # A new outbox (an erased flash, or the agent's first): it starts after all the
            # agent has, and the outbox it replaces may not pass that point from now on.
            hi = self.high.get(agent, [0, 0])
            boot = self.conn.execute(sa.select(sa.func.max(s.boots.c.boot))
                                     .where(s.boots.c.agent == agent)).scalar() or 0
            st = _Stream(ob, max(arow.max_seq, hi[0]), max(boot, hi[1]))
            self._close(agent, arow.ob or "", st, recv_ms)
            arow.ob = ob
            arow.took_over = True
            arow.ack_seq = max(arow.ack_seq, st.seq_base)
            log.info("agent %s: new outbox %s, stored from seq %d and boot %d on",
                     agent, ob, st.seq_base + 1, st.boot_base + 1)
        self.conn.execute(S.insert().values(agent=agent, ob=ob, seq_base=st.seq_base,
                                            boot_base=st.boot_base, first_recv_ms=recv_ms))
        self.cache[key] = st
        return st

    def _close(self, agent: str, ob: str, new: _Stream, recv_ms: int) -> None:
        S = s.streams
        old = self.get(agent, ob, recv_ms)  # the legacy stream "" is made here if need be
        if old.seq_end is None:
            old.seq_end, old.boot_end = new.seq_base, new.boot_base
            self.conn.execute(S.update().where(S.c.agent == agent, S.c.ob == ob)
                              .values(seq_end=new.seq_base, boot_end=new.boot_base))


def _execute_many(conn: sa.Connection, stmt: Any, rows: list[dict[str, Any]]) -> None:
    """`conn.execute(stmt, rows)`. On SQLite handed to the driver as one executemany of
    tuples, compiled once: SQLAlchemy's handling of each row's parameters costs more than
    SQLite's insert, and it does nothing to these values (no column here converts one)."""
    if conn.dialect.name == "sqlite":
        sql, names = _driver_sql(conn.dialect, stmt, tuple(rows[0]))
        if sql:
            conn.exec_driver_sql(sql, [tuple(row[n] for n in names) for row in rows])
            return
    conn.execute(stmt, rows)


_INSERT_RECORDS = s.records.insert()
_INSERT_CLOCK_POINTS = s.clock_points.insert()
# (dialect, statement, keys) by id -> (SQL, parameter order, the dialect and statement:
# held, so that their ids stay theirs)
_DRIVER_SQL: dict[tuple[int, int, tuple[str, ...]], tuple[str, tuple[str, ...], object, object]] = {}


def _driver_sql(dialect: sa.Dialect, stmt: Any, keys: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """The SQL of `stmt` (a statement kept for good: _INSERT_*, the cached upserts) for
    rows of `keys` and the order of its parameters; ("", ()) when a column's type would
    convert a value (then SQLAlchemy must do it)."""
    key = (id(dialect), id(stmt), keys)
    got = _DRIVER_SQL.get(key)
    if got is None:
        compiled = stmt.compile(dialect=dialect, column_keys=list(keys))
        table = stmt.table
        plain = dialect.paramstyle == "qmark" and compiled.positiontup is not None and all(
            k in table.c and table.c[k].type.dialect_impl(dialect).bind_processor(dialect) is None
            for k in keys)
        got = _DRIVER_SQL[key] = (compiled.string if plain else "",
                                  tuple(compiled.positiontup or ()) if plain else (), dialect, stmt)
    return got[0], got[1]


def _upsert(dialect: str, table: sa.Table) -> Any:
    """INSERT ... ON CONFLICT of `table` in the dialect (both have it)."""
    from sqlalchemy.dialects import postgresql, sqlite
    return (postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table))


@functools.cache
def _boots_upsert(dialect: str) -> Any:
    """A boot's row made, or brought up to date with what this commit heard of it (the
    newest t and receive time, the lowest first seq, the reset once known): one statement
    for every boot heard, run with a row of values each."""
    B = s.boots
    stmt = _upsert(dialect, B)
    ex = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[B.c.agent, B.c.boot],
        set_={
            "last_t": sa.case((ex.last_t > B.c.last_t, ex.last_t), else_=B.c.last_t),
            "last_recv_ms": sa.case((ex.last_recv_ms > B.c.last_recv_ms, ex.last_recv_ms),
                                    else_=B.c.last_recv_ms),
            "first_seq": sa.case((sa.and_(ex.first_seq.is_not(None), sa.or_(
                B.c.first_seq.is_(None), ex.first_seq < B.c.first_seq)), ex.first_seq),
                else_=B.c.first_seq),
            "reset": sa.func.coalesce(B.c.reset, ex.reset),
        })


def _add_latency(acc: dict[tuple[str, int, int, str], list[Any]], key: tuple[str, int, int, str],
                 lat: protocol.Latency) -> None:
    """One heartbeat's line into its bucket's sums: [sent, lost, min, max, med_w, med_n]."""
    answered = lat.sent - lat.lost
    med_w = lat.rtt_med * answered if lat.rtt_med is not None else 0
    med_n = answered if lat.rtt_med is not None else 0
    row = acc.get(key)
    if row is None:
        acc[key] = [lat.sent, lat.lost, lat.rtt_min, lat.rtt_max, med_w, med_n]
        return
    row[0] += lat.sent
    row[1] += lat.lost
    row[2] = _least(row[2], lat.rtt_min)
    row[3] = _greatest(row[3], lat.rtt_max)
    row[4] += med_w
    row[5] += med_n


def _least(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _greatest(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def _write_latency(conn: sa.Connection, acc: dict[tuple[str, int, int, str], list[Any]]) -> None:
    """Add the sums to the stored buckets (schema.latency): an upsert on either backend,
    one statement run with a row of values per bucket."""
    _execute_many(conn, _latency_upsert(conn.dialect.name),
                  [{"agent": agent, "span_ms": span, "bucket_ms": bucket, "target": target,
                    "sent": sent, "lost": lost, "rtt_min": lo, "rtt_max": hi, "med_w": med_w,
                    "med_n": med_n}
                   for (agent, span, bucket, target), (sent, lost, lo, hi, med_w, med_n)
                   in sorted(acc.items())])


@functools.cache
def _latency_upsert(dialect: str) -> Any:
    L = s.latency
    stmt = _upsert(dialect, L)
    ex = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[L.c.agent, L.c.span_ms, L.c.bucket_ms, L.c.target],
        set_={
            "sent": L.c.sent + ex.sent, "lost": L.c.lost + ex.lost,
            "rtt_min": sa.case((L.c.rtt_min.is_(None), ex.rtt_min), (ex.rtt_min.is_(None), L.c.rtt_min),
                               (ex.rtt_min < L.c.rtt_min, ex.rtt_min), else_=L.c.rtt_min),
            "rtt_max": sa.case((L.c.rtt_max.is_(None), ex.rtt_max), (ex.rtt_max.is_(None), L.c.rtt_max),
                               (ex.rtt_max > L.c.rtt_max, ex.rtt_max), else_=L.c.rtt_max),
            "med_w": L.c.med_w + ex.med_w, "med_n": L.c.med_n + ex.med_n,
        })
