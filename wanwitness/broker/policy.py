"""What both brokers enforce, in one place: the embedded broker applies it in code and
`mosquitto.py` writes it into Mosquitto's configuration."""

from __future__ import annotations

from wanwitness.collector.protocol import MAX_PAYLOAD

# What an agent may publish below <prefix>/<id>/: its records, heartbeats and status.
# Never its ack, which only the collector writes (docs/protocol.md "Topics").
AGENT_TOPICS = ("rec", "hb", "status")

# The largest packet a client may send: a message of the protocol's largest payload
# (64 KiB) plus its topic and headers. Anything larger is refused before it is read.
DEFAULT_MAX_PACKET = MAX_PAYLOAD + 1024

# Connections at most, whoever they are from.
DEFAULT_MAX_CONNECTIONS = 256
