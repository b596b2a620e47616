"""The collector: from an agent's MQTT message to the ledger and the outage timeline.

Data flows `protocol` (parse and validate a batch) -> `ingest` (store the records,
extend the hash chain in `ledger`, or refuse into `quarantine`) -> `timeline` (records
to outages). `agents` keeps the agents' credentials; `loop` is the long-running MQTT
subscriber that drives ingest and acks each batch after its commit.
"""
