"""The store's schema (SQLAlchemy Core tables) and its migrations.

Schema changes are migrations: functions registered in order, each applied in its
own transaction and recorded in `schema_migrations`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine


def now_ms() -> int:
    return time.time_ns() // 1_000_000


metadata = sa.MetaData()

agents = sa.Table(
    "agents", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("password_hash", sa.String(200), nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False, default=True),
    sa.Column("hb_s", sa.Integer, nullable=False, default=30),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    # Every record with seq <= ack_seq is committed (gaps the agent declared count).
    sa.Column("ack_seq", sa.BigInteger, nullable=False, default=0),
    sa.Column("last_recv_ms", sa.BigInteger),
    # Highest seq stored (migration 2): lets ingest skip lookups for fresh records.
    sa.Column("max_seq", sa.BigInteger, nullable=False, default=0, server_default="0"),
    # The outbox id of the agent's current stream (migration 5); NULL: none yet, its
    # batches carry no outbox id (the legacy stream).
    sa.Column("ob", sa.String(8)),
    # The newest heartbeat's health fields as compact JSON (protocol.heartbeat_health)
    # and when it came (migration 6): what the web UI shows of the board now.
    sa.Column("last_hb", sa.Text),
    sa.Column("last_hb_ms", sa.BigInteger),
    # The head of the agent's own hash chain (migration 11, collector/ledger.py): its
    # number of links and the newest link's hash (NULL while it has none). Ingest
    # extends it under a lock on this agent only.
    sa.Column("chain_n", sa.BigInteger, nullable=False, default=0, server_default="0"),
    sa.Column("chain_hash", sa.String(64)),
)

# Each outbox an agent has sent from (migration 5): a board whose flash is erased starts
# a new outbox id with seq 1 and boot 1. The collector stores that stream's records
# shifted past everything the agent had (seq + seq_base, boot + boot_base), so stored
# (agent, seq) and (agent, boot) stay unique and in order. ob "" is the legacy stream
# (batches without an outbox id), always at base 0. seq_end / boot_end: set when a newer
# outbox took over; the stream's stored seqs and boots may not pass them.
streams = sa.Table(
    "streams", metadata,
    sa.Column("agent", sa.String(32), primary_key=True),
    sa.Column("ob", sa.String(8), primary_key=True),
    sa.Column("seq_base", sa.BigInteger, nullable=False),
    sa.Column("boot_base", sa.BigInteger, nullable=False),
    sa.Column("first_recv_ms", sa.BigInteger, nullable=False),
    sa.Column("seq_end", sa.BigInteger),
    sa.Column("boot_end", sa.BigInteger),
)

boots = sa.Table(
    "boots", metadata,
    sa.Column("agent", sa.String(32), primary_key=True),
    sa.Column("boot", sa.BigInteger, primary_key=True),
    sa.Column("first_recv_ms", sa.BigInteger, nullable=False),
    sa.Column("last_recv_ms", sa.BigInteger, nullable=False),
    sa.Column("last_t", sa.BigInteger, nullable=False),  # newest agent ms seen from this boot
    sa.Column("first_seq", sa.BigInteger),
    sa.Column("reset", sa.String(64)),
)

# (t, recv) pairs: the agent's ms at send time and our UTC ms at receipt. The lower
# envelope of recv - t is this boot's clock offset (timeline.py).
clock_points = sa.Table(
    "clock_points", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("agent", sa.String(32), nullable=False),
    sa.Column("boot", sa.BigInteger, nullable=False),
    sa.Column("t", sa.BigInteger, nullable=False),
    sa.Column("recv_ms", sa.BigInteger, nullable=False),
    sa.Index("ix_clock_points_boot", "agent", "boot", "t"),
    # An agent's points in the order they were stored (migration 12): what the
    # materialised outages (timeline.py) have not folded in yet.
    sa.Index("ix_clock_points_agent_id", "agent", "id"),
)

def _records_v1(m: sa.MetaData) -> sa.Table:
    """`records` before migration 11 (no link, no hash)."""
    return sa.Table(
        "records", m,
        sa.Column("agent", sa.String(32), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("boot", sa.BigInteger, nullable=False),
        sa.Column("t", sa.BigInteger, nullable=False),
        sa.Column("utc", sa.BigInteger),
        sa.Column("k", sa.String(32), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("recv_ms", sa.BigInteger, nullable=False),
        sa.Column("pos", sa.BigInteger, nullable=False, unique=True),
        sa.Index("ix_records_kind", "agent", "k", "seq"),
    )


# Each record is a link of its agent's hash chain (migration 11, collector/ledger.py):
#     h_0 = 32 zero bytes (per agent);  h_n = sha256(h_{n-1} || entry || ascii(recv_ms))
# `link` is n, the record's number in its agent's chain, `hash` is h_n. `pos` is a global
# order number (unique, increasing with arrival on one collector; from a sequence on
# PostgreSQL), not part of any hash. link and hash are NULL only in a store that was
# tampered with or half-migrated: `verify` reports such a record.
records = sa.Table(
    "records", metadata,
    sa.Column("agent", sa.String(32), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("boot", sa.BigInteger, nullable=False),
    sa.Column("t", sa.BigInteger, nullable=False),
    sa.Column("utc", sa.BigInteger),
    sa.Column("k", sa.String(32), nullable=False),
    sa.Column("body", sa.Text, nullable=False),  # canonical JSON of the record
    sa.Column("recv_ms", sa.BigInteger, nullable=False),
    sa.Column("pos", sa.BigInteger, nullable=False, unique=True),  # global order number
    sa.Column("link", sa.BigInteger),
    sa.Column("hash", sa.String(64)),
    sa.Index("ix_records_kind", "agent", "k", "seq"),
    sa.Index("ix_records_link", "agent", "link", unique=True),
)

# The single chain over all agents the ledger was before migration 11, kept frozen:
#     h_pos = sha256(h_{pos-1} || canonical {"agent","boot","rec"} || recv_ms)
# (tables `ledger` and `ledger_head` renamed). Stamps made before the migration
# stamped its head; `verify` still recomputes it from the records and checks them.
# A store created after migration 11 has both tables empty.
ledger_v1 = sa.Table(
    "ledger_v1", metadata,
    sa.Column("pos", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("agent", sa.String(32), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("recv_ms", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)
ledger_v1_head = sa.Table(
    "ledger_v1_head", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("pos", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

# Checkpoints (migration 11, collector/ledger.py): each commits every agent's chain
# head at one moment, as the Merkle root (RFC 6962 shape, leaf/node domain-separated)
# over the leaves (agent, link, hash) sorted by agent. `links`: the sum of the heads'
# link numbers (the chains only grow, so an equal sum means nothing changed).
checkpoints = sa.Table(
    "checkpoints", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("made_ms", sa.BigInteger, nullable=False),
    sa.Column("root", sa.String(64), nullable=False),
    sa.Column("agents", sa.Integer, nullable=False),
    sa.Column("links", sa.BigInteger, nullable=False),
)
checkpoint_heads = sa.Table(
    "checkpoint_heads", metadata,
    sa.Column("checkpoint", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("agent", sa.String(32), primary_key=True),
    sa.Column("link", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

# Seq ranges an agent declared dropped (a `gap` record): they count as delivered.
gaps = sa.Table(
    "gaps", metadata,
    sa.Column("agent", sa.String(32), primary_key=True),
    sa.Column("first", sa.BigInteger, primary_key=True),
    sa.Column("last", sa.BigInteger, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
)

quarantine = sa.Table(
    "quarantine", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("recv_ms", sa.BigInteger, nullable=False),
    sa.Column("topic", sa.Text, nullable=False),
    sa.Column("agent", sa.String(200)),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),  # first MAX_PAYLOAD bytes
    # Migration 4: one row per distinct refusal (agent, reason, payload hash): `count`
    # copies, the last one received at `last_recv_ms`.
    sa.Column("count", sa.BigInteger, nullable=False, default=1, server_default="1"),
    sa.Column("last_recv_ms", sa.BigInteger),
    sa.Column("sha256", sa.String(64)),
    sa.Index("ix_quarantine_sha256", "sha256"),
)

# Per agent (bucket "" for unknown and unnamed senders, who could otherwise make up
# any number of buckets): what the quarantine keeps of it and what it dropped once
# the quota was full (migration 4, quarantine.py).
quarantine_quota = sa.Table(
    "quarantine_quota", metadata,
    sa.Column("bucket", sa.String(32), primary_key=True),
    sa.Column("kept_rows", sa.BigInteger, nullable=False),
    sa.Column("kept_bytes", sa.BigInteger, nullable=False),       # payload bytes kept
    sa.Column("dropped", sa.BigInteger, nullable=False),          # messages not kept
    sa.Column("dropped_bytes", sa.BigInteger, nullable=False),
    sa.Column("last_dropped_ms", sa.BigInteger),
)

# Outages and unknown spans materialised from state records by timeline.py (migration
# 12), never edited by hand: what does not depend on the time of the query. `src` 0: a
# boot's own fold (`boot`), replaced when that boot is folded again; 1: what joins the
# boots (an outage a reboot ended, unknown spans between boots), replaced on every
# update of the agent. (ord1, ord2): the span's place in the full derivation's order,
# which breaks ties. `note`: the span cannot be real (timeline._plausible): never listed,
# its note is told to the reader. An ongoing outage and the unknown span after a silent
# agent depend on the time of the query: they are made when read, from outage_agents.
outages = sa.Table(
    "outages", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("agent", sa.String(32), nullable=False),
    sa.Column("class", sa.String(32), nullable=False),
    sa.Column("start_ms", sa.BigInteger, nullable=False),
    sa.Column("end_ms", sa.BigInteger),
    sa.Column("start_unc_ms", sa.BigInteger),
    sa.Column("evidence", sa.Text, nullable=False),
    sa.Column("src", sa.SmallInteger, nullable=False, default=0, server_default="0"),
    sa.Column("boot", sa.BigInteger),
    sa.Column("ord1", sa.BigInteger, nullable=False, default=0, server_default="0"),
    sa.Column("ord2", sa.BigInteger, nullable=False, default=0, server_default="0"),
    sa.Column("note", sa.Text),
    sa.Index("ix_outages_agent_start", "agent", "start_ms"),
    sa.Index("ix_outages_agent_end", "agent", "end_ms"),
    sa.Index("ix_outages_agent_boot", "agent", "src", "boot"),
)

# Per agent and boot, what the materialised outages were made from (migration 12,
# timeline.py): the lower hull of the boot's clock points so far as [[t, recv_ms], ...]
# (the hull of all points is the hull of this hull and the new points), the least `t`
# of its records and points, its state records' seq range and greatest `at`, a copy of
# its `boots` row, its coverage in UTC ms, and the outage still open at the end of its
# fold (JSON; NULL: none) after its `n_items` spans, `n_notes` of them left out.
outage_boots = sa.Table(
    "outage_boots", metadata,
    sa.Column("agent", sa.String(32), primary_key=True),
    sa.Column("boot", sa.BigInteger, primary_key=True),
    sa.Column("hull", sa.Text, nullable=False),
    sa.Column("first_t", sa.BigInteger),
    sa.Column("sseq_min", sa.BigInteger),
    sa.Column("sseq_max", sa.BigInteger),
    sa.Column("max_at", sa.BigInteger),
    sa.Column("first_recv_ms", sa.BigInteger, nullable=False),
    sa.Column("last_recv_ms", sa.BigInteger, nullable=False),
    sa.Column("last_t", sa.BigInteger, nullable=False),
    sa.Column("cov_start", sa.BigInteger, nullable=False),
    sa.Column("cov_end", sa.BigInteger, nullable=False),
    sa.Column("open", sa.Text),
    sa.Column("n_items", sa.Integer, nullable=False),
    sa.Column("n_notes", sa.Integer, nullable=False),
)

# Per agent (migration 12, timeline.py): how far the materialised outages go (`link`:
# the agent's chain head, `clock_id`: its newest clock point's id, `hb_s`), the agent's
# last contact then, and what the time of a query decides (`tail`, JSON: the outage
# open at the end and where the unknown span after silence would start). `full`: this
# agent's records do not fold boot by boot (seqs of boots interleaved, unreadable data):
# it is derived in full on every query, as before.
outage_agents = sa.Table(
    "outage_agents", metadata,
    sa.Column("agent", sa.String(32), primary_key=True),
    sa.Column("link", sa.BigInteger, nullable=False),
    sa.Column("clock_id", sa.BigInteger, nullable=False),
    sa.Column("hb_s", sa.Integer, nullable=False),
    sa.Column("last_contact", sa.BigInteger),
    sa.Column("tail", sa.Text),
    sa.Column("n_notes", sa.Integer, nullable=False),
    sa.Column("full", sa.Boolean, nullable=False),
)

# Round-trip times and loss per agent and probe target, from the heartbeats' "lat"
# summaries (docs/protocol.md § Heartbeat), summed into buckets of 5 minutes and of an
# hour (span_ms; bucket_ms: the bucket's start, UTC ms, by the collector's clock when the
# heartbeat came): a year's chart reads 8,784 hours a target, not 105,408 5-minute
# buckets. Not evidence (heartbeats are not records, not in the ledger): what the
# latency charts draw. rtt_min/rtt_max: NULL while nothing answered with a time;
# med_w / med_n: the heartbeat medians weighted by their answers, for the bucket's
# typical round trip (med_w/med_n).
LATENCY_SPANS_MS = (300_000, 3_600_000)
latency = sa.Table(
    "latency", metadata,
    sa.Column("agent", sa.String(32), primary_key=True),
    sa.Column("span_ms", sa.Integer, primary_key=True),
    sa.Column("bucket_ms", sa.BigInteger, primary_key=True),
    sa.Column("target", sa.String(64), primary_key=True),
    sa.Column("sent", sa.BigInteger, nullable=False),
    sa.Column("lost", sa.BigInteger, nullable=False),
    sa.Column("rtt_min", sa.Integer),
    sa.Column("rtt_max", sa.Integer),
    sa.Column("med_w", sa.BigInteger, nullable=False),
    sa.Column("med_n", sa.BigInteger, nullable=False),
)

# Notifications (migration 8, collector/notify.py): one row per event and destination.
# `event` is deterministic (line_back:<agent>:<open_seq>, ...), so an event found again
# (every round, after a restart) is inserted once; `target` names the destination URL
# by a hash (the URL itself, with its secrets, stays in the config). The message is
# made when the event is found and kept, so a retry sends the same words.
notifications = sa.Table(
    "notifications", metadata,
    sa.Column("event", sa.String(200), primary_key=True),
    sa.Column("target", sa.String(16), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("agent", sa.String(32)),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("data", sa.Text, nullable=False),           # JSON: what sending and later events need
    sa.Column("state", sa.String(8), nullable=False),     # pending | sent | failed
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_ms", sa.BigInteger, nullable=False),  # not to be tried before
    sa.Column("last_error", sa.Text),
    sa.Column("sent_ms", sa.BigInteger),
    sa.Index("ix_notifications_state", "state", "next_ms"),
)

def _stamps_v1(m: sa.MetaData) -> sa.Table:
    return sa.Table(
        "stamps", m,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("pos", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("tsa", sa.Text, nullable=False),
        sa.Column("gen_ms", sa.BigInteger, nullable=False),
        sa.Column("reply", sa.LargeBinary, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Index("ix_stamps_pos", "pos"),
    )


# Trusted timestamps (migration 9, collector/stamp.py): one row per token a
# time-stamping authority (RFC 3161) gave. What was stamped is the 32 bytes of `hash`
# (the token's messageImprint is their SHA-256): since migration 11 the root of
# checkpoint `checkpoint` (and `pos` is that checkpoint's id too); a row with
# `checkpoint` NULL is a stamp made before, of the single chain's hash at link `pos`
# (table ledger_v1). `reply` is the TSA's whole TimeStampResp, DER, as received.
stamps = sa.Table(
    "stamps", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("pos", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("tsa", sa.Text, nullable=False),
    sa.Column("gen_ms", sa.BigInteger, nullable=False),   # the token's genTime, UTC ms
    sa.Column("reply", sa.LargeBinary, nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("checkpoint", sa.BigInteger),
    sa.Index("ix_stamps_pos", "pos"),
)

settings = sa.Table(
    "settings", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

# Support tickets (migration 3): the fault reports a claim counts from (docs/claims.md).
# Times are UTC ms like everywhere else in the store.
tickets = sa.Table(
    "tickets", metadata,
    sa.Column("number", sa.String(64), primary_key=True),
    sa.Column("opened_ms", sa.BigInteger, nullable=False),  # when the ISP received the report
    sa.Column("closed_ms", sa.BigInteger),
    sa.Column("channel", sa.String(16)),                    # phone | email | app | office
    sa.Column("operator", sa.String(200)),                  # "17 / Maria"
    sa.Column("promised_ms", sa.BigInteger),                # the fix the ISP promised
    sa.Column("note", sa.Text),
    sa.Column("declined_s", sa.BigInteger, nullable=False, default=0),  # repair slots declined
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    # The line the fault was reported for ([lines.NAME] in the config, migration 10); NULL:
    # the only line (a config without [lines], or with one line).
    sa.Column("line", sa.String(32)),
)

ticket_appointments = sa.Table(
    "ticket_appointments", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("ticket", sa.String(64), sa.ForeignKey("tickets.number"), nullable=False),
    sa.Column("at_ms", sa.BigInteger, nullable=False),
    sa.Column("missed", sa.Boolean, nullable=False),
    sa.Index("ix_ticket_appointments_ticket", "ticket", "at_ms"),
)

# Manual overrides of the automatic ticket <-> outage linking (claims/link.py). An
# outage is named by its opening record (agent, seq): unlike its start time, which
# moves by milliseconds as the clock map learns, that never changes.
ticket_links = sa.Table(
    "ticket_links", metadata,
    sa.Column("ticket", sa.String(64), sa.ForeignKey("tickets.number"), primary_key=True),
    sa.Column("agent", sa.String(32), primary_key=True),
    sa.Column("open_seq", sa.BigInteger, primary_key=True),
    sa.Column("linked", sa.Boolean, nullable=False),       # True = link, False = unlink
)

schema_migrations = sa.Table(
    "schema_migrations", metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("applied_ms", sa.BigInteger, nullable=False),
)


# --- migrations ---------------------------------------------------------------

MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = []


def migration(version: int, name: str):
    def register(fn: Callable[[Connection], None]):
        MIGRATIONS.append((version, name, fn))
        MIGRATIONS.sort(key=lambda m: m[0])
        return fn
    return register


@migration(1, "initial schema")
def _m1(conn: Connection) -> None:
    # The schema as it was at version 1: later migrations change it.
    m = sa.MetaData()
    sa.Table("agents", m,
             sa.Column("id", sa.String(32), primary_key=True),
             sa.Column("password_hash", sa.String(200), nullable=False),
             sa.Column("enabled", sa.Boolean, nullable=False),
             sa.Column("hb_s", sa.Integer, nullable=False),
             sa.Column("created_ms", sa.BigInteger, nullable=False),
             sa.Column("ack_seq", sa.BigInteger, nullable=False),
             sa.Column("last_recv_ms", sa.BigInteger)).create(conn)
    sa.Table("quarantine", m,
             sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                       autoincrement=True),
             sa.Column("recv_ms", sa.BigInteger, nullable=False),
             sa.Column("topic", sa.Text, nullable=False),
             sa.Column("agent", sa.String(200)),
             sa.Column("reason", sa.Text, nullable=False),
             sa.Column("size", sa.Integer, nullable=False),
             sa.Column("payload", sa.LargeBinary, nullable=False)).create(conn)
    _records_v1(m).create(conn)
    sa.Table("ledger", m,
             sa.Column("pos", sa.BigInteger, primary_key=True, autoincrement=False),
             sa.Column("agent", sa.String(32), nullable=False),
             sa.Column("seq", sa.BigInteger, nullable=False),
             sa.Column("recv_ms", sa.BigInteger, nullable=False),
             sa.Column("hash", sa.String(64), nullable=False)).create(conn)
    head = sa.Table("ledger_head", m,
                    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
                    sa.Column("pos", sa.BigInteger, nullable=False),
                    sa.Column("hash", sa.String(64), nullable=False))
    head.create(conn)
    for table in (boots, clock_points, gaps, outages, settings):
        table.to_metadata(m).create(conn)
    conn.execute(head.insert().values(id=1, pos=0, hash="0" * 64))


@migration(2, "agents.max_seq")
def _m2(conn: Connection) -> None:
    conn.exec_driver_sql("ALTER TABLE agents ADD COLUMN max_seq BIGINT NOT NULL DEFAULT 0")
    conn.exec_driver_sql("UPDATE agents SET max_seq = COALESCE("
                         "(SELECT MAX(seq) FROM records WHERE records.agent = agents.id), 0)")


@migration(3, "tickets, appointments, manual ticket links")
def _m3(conn: Connection) -> None:
    m = sa.MetaData()
    # tickets as it was at version 3 (migration 10 adds `line`)
    sa.Table("tickets", m, *[c._copy() for c in tickets.columns if c.name != "line"]).create(conn)
    for table in (ticket_appointments, ticket_links):
        table.to_metadata(m).create(conn)


@migration(4, "quarantine: repeats counted, per-agent quota")
def _m4(conn: Connection) -> None:
    import hashlib
    conn.exec_driver_sql("ALTER TABLE quarantine ADD COLUMN count BIGINT NOT NULL DEFAULT 1")
    conn.exec_driver_sql("ALTER TABLE quarantine ADD COLUMN last_recv_ms BIGINT")
    conn.exec_driver_sql("ALTER TABLE quarantine ADD COLUMN sha256 VARCHAR(64)")
    conn.exec_driver_sql("UPDATE quarantine SET last_recv_ms = recv_ms")
    Q = sa.table("quarantine", sa.column("id"), sa.column("payload"), sa.column("sha256"),
                 sa.column("agent"))
    last = 0
    while True:  # in chunks: an old quarantine can be large
        rows = conn.execute(sa.select(Q.c.id, Q.c.payload).where(Q.c.id > last)
                            .order_by(Q.c.id).limit(500)).all()
        if not rows:
            break
        for row_id, payload in rows:
            conn.execute(Q.update().where(Q.c.id == row_id)
                         .values(sha256=hashlib.sha256(bytes(payload)).hexdigest()))
        last = rows[-1][0]
    conn.exec_driver_sql("CREATE INDEX ix_quarantine_sha256 ON quarantine (sha256)")
    quarantine_quota.to_metadata(sa.MetaData()).create(conn)
    # What is already kept counts against each quota (registered agents; the rest is "").
    conn.exec_driver_sql(
        "INSERT INTO quarantine_quota (bucket, kept_rows, kept_bytes, dropped, dropped_bytes) "
        "SELECT b, COUNT(*), COALESCE(SUM(LENGTH(payload)), 0), 0, 0 FROM ("
        " SELECT CASE WHEN quarantine.agent IN (SELECT id FROM agents) THEN quarantine.agent"
        " ELSE '' END AS b, payload FROM quarantine) AS q GROUP BY b")


@migration(5, "outbox streams: agents.ob, streams")
def _m5(conn: Connection) -> None:
    conn.exec_driver_sql("ALTER TABLE agents ADD COLUMN ob VARCHAR(8)")
    streams.to_metadata(sa.MetaData()).create(conn)


@migration(6, "agents.last_hb, agents.last_hb_ms")
def _m6(conn: Connection) -> None:
    conn.exec_driver_sql("ALTER TABLE agents ADD COLUMN last_hb TEXT")
    conn.exec_driver_sql("ALTER TABLE agents ADD COLUMN last_hb_ms BIGINT")


@migration(7, "latency")
def _m7(conn: Connection) -> None:
    latency.to_metadata(sa.MetaData()).create(conn)


@migration(8, "notifications")
def _m8(conn: Connection) -> None:
    notifications.to_metadata(sa.MetaData()).create(conn)


@migration(9, "stamps")
def _m9(conn: Connection) -> None:
    _stamps_v1(sa.MetaData()).create(conn)


@migration(10, "tickets.line")
def _m10(conn: Connection) -> None:
    conn.exec_driver_sql("ALTER TABLE tickets ADD COLUMN line VARCHAR(32)")


@migration(11, "a hash chain per agent, checkpoints")
def _m11(conn: Connection) -> None:
    # The work is in collector/ledger.py (it knows the hashes); imported here late.
    from wanwitness.collector.ledger import migrate_to_chains
    migrate_to_chains(conn)


@migration(12, "outages materialised per agent and boot")
def _m12(conn: Connection) -> None:
    # `outages` held rows rebuilt on every query: made again here in the new shape.
    conn.exec_driver_sql("DROP TABLE IF EXISTS outages")
    m = sa.MetaData()
    for table in (outages, outage_boots, outage_agents):
        table.to_metadata(m).create(conn, checkfirst=True)
    # A store made at version 1 or later by this code has the index already.
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_clock_points_agent_id "
                         "ON clock_points (agent, id)")
    # The work is in collector/timeline.py; imported here late.
    from wanwitness.collector.timeline import materialise_all
    materialise_all(conn)


def migrate(engine: Engine, upto: int | None = None) -> list[int]:
    """Apply the migrations this store lacks (up to version `upto`, for tests of a
    migration); returns the versions applied."""
    applied: list[int] = []
    with engine.begin() as conn:
        schema_migrations.create(conn, checkfirst=True)
    for version, name, fn in MIGRATIONS:
        if upto is not None and version > upto:
            break
        with engine.begin() as conn:
            done = conn.execute(sa.select(schema_migrations.c.version)
                                .where(schema_migrations.c.version == version)).first()
            if done:
                continue
            fn(conn)
            conn.execute(schema_migrations.insert().values(
                version=version, name=name, applied_ms=now_ms()))
            applied.append(version)
    return applied
