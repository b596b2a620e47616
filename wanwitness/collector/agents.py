"""Agents: registration, credentials, and the `config.json` that goes onto the board."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from wanwitness import store as s
from wanwitness.broker.passwords import hash_password, new_secret
from wanwitness.collector import protocol
from wanwitness.errors import UserError
from wanwitness.resources import data_dir

DEFAULT_HB_S = 30

# Public anchors for real deployments only; tests and the lab always override them.
DEFAULT_ANCHORS = ["1.1.1.1", "8.8.8.8", "9.9.9.9"]
DEFAULT_DNS = {"server": "1.1.1.1", "name": "example.com"}


@dataclass
class Agent:
    id: str
    enabled: bool
    hb_s: int
    created_ms: int
    ack_seq: int
    last_recv_ms: int | None


def add_agent(store: s.Store, name: str, *, hb_s: int = DEFAULT_HB_S,
              password: str | None = None) -> str:
    """Register `name`; returns its new broker password (stored only as a hash)."""
    if not protocol.valid_agent_id(name):
        raise UserError(f"agent name {name!r}: use 1-32 characters a-z, 0-9, '-' or '_', "
                        "starting with a letter or digit")
    if not 5 <= hb_s <= 3600:
        raise UserError(f"heartbeat period {hb_s} s: must be 5..3600 seconds")
    password = password or new_secret()
    with store.engine.begin() as conn:
        if conn.execute(sa.select(s.agents.c.id).where(s.agents.c.id == name)).first():
            raise UserError(f"agent {name!r} already exists (wanwitness agent list); "
                            "use `wanwitness agent reset-password` for new credentials")
        conn.execute(s.agents.insert().values(
            id=name, password_hash=hash_password(password), enabled=True, hb_s=hb_s,
            created_ms=s.now_ms(), ack_seq=0))
    return password


def reset_password(store: s.Store, name: str) -> str:
    password = new_secret()
    with store.engine.begin() as conn:
        n = conn.execute(s.agents.update().where(s.agents.c.id == name)
                         .values(password_hash=hash_password(password), enabled=True)).rowcount
    if not n:
        raise UserError(f"no agent named {name!r} (wanwitness agent list)")
    return password


def set_enabled(store: s.Store, name: str, enabled: bool) -> None:
    with store.engine.begin() as conn:
        n = conn.execute(s.agents.update().where(s.agents.c.id == name)
                         .values(enabled=enabled)).rowcount
    if not n:
        raise UserError(f"no agent named {name!r} (wanwitness agent list)")


def list_agents(store: s.Store) -> list[Agent]:
    A = s.agents
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(A.c.id, A.c.enabled, A.c.hb_s, A.c.created_ms, A.c.ack_seq,
                                      A.c.last_recv_ms).order_by(A.c.id)).all()
    return [Agent(r.id, bool(r.enabled), r.hb_s, r.created_ms, r.ack_seq, r.last_recv_ms)
            for r in rows]


def password_hashes(store: s.Store) -> list[tuple[str, str]]:
    A = s.agents
    with store.engine.connect() as conn:
        return [(r.id, r.password_hash) for r in conn.execute(
            sa.select(A.c.id, A.c.password_hash).where(A.c.enabled.is_(True)).order_by(A.c.id))]


def check_agent_password(store: s.Store, name: str, password: str) -> bool:
    from wanwitness.broker.passwords import check_password
    A = s.agents
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(A.c.password_hash, A.c.enabled).where(A.c.id == name)).first()
    return bool(row and row.enabled and check_password(password, row.password_hash))


def board_config(name: str, password: str, *, broker_host: str, broker_port: int,
                 tls: bool = False, ca: str | None = None, prefix: str = "wanwitness",
                 hb_s: int = DEFAULT_HB_S, wifi_ssid: str = "",
                 wifi_password: str = "",
                 others: tuple[tuple[str, int], ...] = ()) -> dict[str, Any]:
    """The agent's config.json (the agent fills anything missing with its defaults).
    ca: the broker's CA certificate as PEM text; with tls the agent trusts only it.
    others: more brokers (host, port), same credentials and CA, that the agent tries in
    turn when one cannot be reached (docs/agent.md, broker.others)."""
    broker: dict[str, Any] = {"host": broker_host, "port": broker_port, "user": name,
                              "password": password, "tls": tls}
    if ca is not None:
        broker["ca"] = ca
    if others:
        broker["others"] = [{"host": h, "port": p} for h, p in others]
    return {
        "id": name,
        "prefix": prefix,
        "wifi": {"ssid": wifi_ssid, "password": wifi_password},
        "broker": broker,
        "hb_s": hb_s,
        "probe": {"interval_s": 2, "gateway": None, "anchors": DEFAULT_ANCHORS,
                  "dns": DEFAULT_DNS},
        "debounce": {"down": 3, "up": 2},
        "leds": [],
    }


def default_broker_host() -> str:
    return socket.getfqdn() or "localhost"


def board_config_path(name: str) -> Path:
    """Where `agent add` keeps a board's config.json: the user data dir, mode 0600."""
    return data_dir() / "agents" / f"{name}.config.json"


def find_board_config(name: str) -> Path:
    """The config `agent add` wrote for NAME (or ./NAME.config.json, where earlier
    versions wrote it)."""
    path = board_config_path(name)
    legacy = Path(f"{name}.config.json")
    if not path.exists() and legacy.exists():
        return legacy
    return path


def write_board_config(path: Path, config: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    # The file holds the agent's broker password: readable by its owner only.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)
