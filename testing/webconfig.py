"""A collector configuration for the web UI's tests and benchmarks: a tariff in EUR in
Europe/Berlin, the parties a letter needs, de-tkg58 as the rule pack."""

from __future__ import annotations

from pathlib import Path

from wanwitness import config as cfg

CONFIG = """
[tariff]
monthly_fee = "40.00"
currency = "EUR"
timezone = "Europe/Berlin"
[customer]
name = "Erika Mustermann"
customer_number = "K-123456"
contract = "V-9876"
[isp]
name = "Example Telecom"
[claim]
rules = "de-tkg58"
"""


def make_config(directory: Path) -> cfg.Config:
    """CONFIG written to `directory`/wanwitness.toml and loaded (no environment)."""
    path = Path(directory) / "wanwitness.toml"
    path.write_text(CONFIG)
    return cfg.load(path, env={})
