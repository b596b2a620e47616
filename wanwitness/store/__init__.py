"""The store: where the ledger, the agents, the outages and the tickets are kept.

`schema` holds the tables and their migrations, `connect` opens a store by URL
(SQLite or PostgreSQL). Callers write `from wanwitness import store as s` and use
`s.records`, `s.open_store(url)`, ...
"""

from wanwitness.store.connect import Store, default_db_path, default_url, open_store
from wanwitness.store.schema import (
                                     LATENCY_SPANS_MS,
                                     MIGRATIONS,
                                     agents,
                                     boots,
                                     checkpoint_heads,
                                     checkpoints,
                                     clock_points,
                                     gaps,
                                     latency,
                                     ledger_v1,
                                     ledger_v1_head,
                                     metadata,
                                     migrate,
                                     migration,
                                     notifications,
                                     now_ms,
                                     outage_agents,
                                     outage_boots,
                                     outages,
                                     quarantine,
                                     records,
                                     schema_migrations,
                                     settings,
                                     stamps,
                                     streams,
                                     ticket_appointments,
                                     ticket_links,
                                     tickets,
)

__all__ = ["LATENCY_SPANS_MS", "MIGRATIONS", "Store", "agents", "boots", "checkpoint_heads",
           "checkpoints", "clock_points", "default_db_path",
           "default_url", "gaps", "latency", "ledger_v1", "ledger_v1_head", "metadata", "migrate", "migration",
           "notifications", "now_ms", "open_store", "outage_agents", "outage_boots", "outages", "quarantine", "records", "schema_migrations",
           "settings", "stamps", "streams", "ticket_appointments", "ticket_links", "tickets"]
