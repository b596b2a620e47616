"""The collector's configuration: one TOML file, environment overrides, CLI options.

Precedence (highest first): command-line options, environment variables
`WANWITNESS_<SECTION>_<KEY>` (e.g. `WANWITNESS_BROKER_URL`), the file, the defaults
below. The file's path is `wanwitness config path` (or `--config FILE`, or the
environment variable `WANWITNESS_CONFIG`). A bad file or value is one clear line
naming the key and the problem (`ConfigError`, exit 2).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import UserError


class ConfigError(UserError):
    pass


def default_config_path() -> Path:
    env = os.environ.get("WANWITNESS_CONFIG")
    if env:
        return Path(env)
    from platformdirs import user_config_dir
    return Path(user_config_dir("wanwitness", appauthor=False)) / "config.toml"


# --- value checks: each returns the parsed value or raises ValueError(why) ----------

def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {type(v).__name__} {v!r}")
    return v


def _int_range(lo: int, hi: int) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, str):
            try:
                v = int(v.strip())
            except ValueError:
                raise ValueError(f"expected an integer, got {v!r}") from None
        if not isinstance(v, int) or isinstance(v, bool):
            raise ValueError(f"expected an integer, got {type(v).__name__} {v!r}")
        if not lo <= v <= hi:
            raise ValueError(f"{v} is out of range {lo}..{hi}")
        return v
    return check


def _host_port(v: Any) -> tuple[str, int]:
    text = _str(v)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:1883, got {text!r}")
    return host.strip("[]"), int(port)


def _host_port_or_off(v: Any) -> tuple[str, int] | None:
    """HOST:PORT, or "off" (also "") for none."""
    if isinstance(v, str) and v.strip().lower() in ("", "off"):
        return None
    try:
        return _host_port(v)
    except ValueError:
        raise ValueError(f"expected HOST:PORT such as 0.0.0.0:8883, or \"off\", got {v!r}") from None


def _broker_url(v: Any) -> str:
    text = _str(v).strip()
    if not text:
        return ""
    parts = urlsplit(text)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(f"expected mqtt://HOST:PORT or mqtts://HOST:PORT, got {text!r}")
    try:
        _ = parts.port  # urlsplit checks the port only when asked
    except ValueError:
        raise ValueError(f"bad port in {text!r}") from None
    return text


def _bool(v: Any) -> bool:
    """true/false (TOML), or from the environment: true, false, yes, no, on, off, 1, 0."""
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "yes", "on", "1"):
        return True
    if isinstance(v, str) and v.strip().lower() in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"expected true or false, got {v!r}")


def _db_url(v: Any) -> str:
    text = _str(v).strip()
    if text and "://" not in text:
        raise ValueError(f"expected a database URL such as sqlite:///path.db or "
                         f"postgresql://user@host/db, got {text!r}")
    return text


def _prefix(v: Any) -> str:
    text = _str(v)
    if not text or any(c in text for c in "+#") or text.startswith("/") or text.endswith("/"):
        raise ValueError(f"expected a topic prefix without +, # or leading/trailing '/', got {text!r}")
    return text


def _share_group(v: Any) -> str:
    text = _str(v)
    if any(c in text for c in "/+#") or any(c.isspace() for c in text):
        raise ValueError(f"expected a shared-subscription group name without /, +, # or spaces, "
                         f"got {text!r}")
    return text


def _level(v: Any) -> str:
    text = _str(v).lower()
    if text not in ("debug", "info", "warning", "error"):
        raise ValueError(f"expected debug, info, warning or error, got {text!r}")
    return text


def _path(v: Any) -> str:
    text = _str(v)
    if text and not Path(text).expanduser().exists():
        raise ValueError(f"file {text!r} does not exist")
    return text


def _money(v: Any) -> str:
    """A non-negative amount with at most 2 decimals; '' = not set. Kept as a string
    (Decimal("39.99") exactly) so that no float ever touches money."""
    if isinstance(v, bool):
        raise ValueError(f"expected an amount such as \"39.99\", got {v!r}")
    if isinstance(v, (int, float)):
        v = repr(v)
    text = _str(v).strip()
    if not text:
        return ""
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"expected an amount such as \"39.99\", got {text!r}") from None
    exponent = amount.as_tuple().exponent
    if not amount.is_finite() or amount < 0 or (isinstance(exponent, int) and exponent < -2):
        raise ValueError(f"expected a non-negative amount with at most 2 decimals, got {text!r}")
    return str(amount.quantize(Decimal("0.01")))


def _currency(v: Any) -> str:
    text = _str(v).strip()
    # ISO 4217 alphabetic codes are three capital letters.
    if text and not (len(text) == 3 and text.isascii() and text.isalpha() and text.isupper()):
        raise ValueError(f"expected an ISO 4217 code such as EUR, GBP, HUF, RUB, KES, got {text!r}")
    return text


def _timezone(v: Any) -> str:
    text = _str(v).strip()
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"expected an IANA time zone such as Europe/Berlin, got {text!r}") from None
    return text


LANGS = ("en", "de", "hu", "ru", "sw")


def _lang(v: Any) -> str:
    text = _str(v).strip()
    if text not in LANGS:
        raise ValueError(f"expected one of {', '.join(LANGS)}, got {text!r}")
    return text


def _pairs(text: str, form: str) -> dict[str, str]:
    """A table from the environment: 'key=value;key=value' (';' between pairs: a value
    may itself be a list)."""
    pairs = [p for p in (x.strip() for x in text.split(";")) if p]
    if any("=" not in p for p in pairs):
        raise ValueError(f"expected {form}, got {text!r}")
    return dict(p.split("=", 1) for p in pairs)


def _options(v: Any) -> dict[str, Any]:
    """Rule pack options: a TOML table ([claim.options]) or, from the environment,
    'key=value;key=value'. Values are kept as strings (lists as lists of strings);
    the pack parses them."""
    if isinstance(v, str):
        v = _pairs(v, "key=value;key=value")
    if not isinstance(v, dict):
        raise ValueError(f"expected a table of options, got {type(v).__name__} {v!r}")

    def scalar(key: str, value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (str, int, float)):
            return str(value).strip()
        raise ValueError(f"option {key!r}: expected a string, number, true/false or a list "
                         f"of those, got {value!r}")

    return {str(k).strip(): [scalar(k, x) for x in val] if isinstance(val, list) else scalar(k, val)
            for k, val in v.items()}


NOTIFY_EVENTS = ("line_back", "flap", "agent_silent", "agent_back", "deadline", "monthly_report")


def _notify_urls(v: Any) -> tuple[str, ...]:
    """A list of Apprise URLs (from the environment: separated by spaces); each must be
    one Apprise can use (checked by Apprise itself, lazily: only when some are given)."""
    items = v.split() if isinstance(v, str) else v
    if not isinstance(items, (list, tuple)):
        raise ValueError(f"expected a list of notification URLs, got {type(v).__name__}")
    urls = tuple(_str(x).strip() for x in items)
    if urls:
        from wanwitness.collector.notify import check_url
        for url in urls:
            check_url(url)
    return urls


def _notify_routes(v: Any) -> dict[str, tuple[str, ...]]:
    """[notify.routes]: event -> its own list of URLs (instead of [notify] urls); from the
    environment 'line_back=URL URL;flap='."""
    if isinstance(v, str):
        v = _pairs(v, "event=URL URL;event=URL")
    if not isinstance(v, dict):
        raise ValueError(f"expected a table such as [notify.routes] line_back = [\"URL\"], "
                         f"got {type(v).__name__}")
    out = {}
    for event, urls in v.items():
        if event not in NOTIFY_EVENTS:
            raise ValueError(f"unknown event {event!r} (events: {', '.join(NOTIFY_EVENTS)})")
        try:
            out[event] = _notify_urls(urls)
        except ValueError as e:
            raise ValueError(f"{event}: {e}") from None
    return out


def _tsa_urls(v: Any) -> tuple[str, ...]:
    """A list of time-stamping authority URLs (http:// or https://; from the environment:
    separated by spaces)."""
    items = v.split() if isinstance(v, str) else v
    if not isinstance(items, (list, tuple)):
        raise ValueError(f"expected a list of TSA URLs, got {type(v).__name__}")
    from wanwitness.collector.stamp import check_url
    return tuple(check_url(_str(x).strip()) for x in items)


def _paths(v: Any) -> tuple[str, ...]:
    """A list of existing files (from the environment: separated by spaces)."""
    items = v.split() if isinstance(v, str) else v
    if not isinstance(items, (list, tuple)):
        raise ValueError(f"expected a list of file names, got {type(v).__name__}")
    return tuple(_path(x) for x in items if _str(x))


def _quiet_hours(v: Any) -> tuple[int, int] | None:
    """"22:00-07:00" -> (minute of the day it starts, minute it ends); "" -> None."""
    text = _str(v).strip()
    if not text:
        return None
    try:
        a, b = text.split("-")
        minutes = []
        for part in (a, b):
            hh, mm = part.strip().split(":")
            if not (len(mm) == 2 and 0 <= int(hh) <= 23 and 0 <= int(mm) <= 59):
                raise ValueError
            minutes.append(int(hh) * 60 + int(mm))
    except ValueError:
        raise ValueError(f"expected HH:MM-HH:MM such as 22:00-07:00, got {text!r}") from None
    if minutes[0] == minutes[1]:
        raise ValueError(f"quiet hours {text!r} start and end at the same time")
    return minutes[0], minutes[1]


SCHEMA: dict[str, dict[str, tuple[Callable[[Any], Any], Any, str]]] = {
    "store": {
        "url": (_db_url, "", "database URL; empty = SQLite in the user data dir"),
    },
    "broker": {
        "url": (_broker_url, "", "external broker mqtt://HOST:PORT or mqtts://; empty = embedded"),
        "listen": (_host_port, ("0.0.0.0", 1883), "embedded broker address HOST:PORT"),
        "prefix": (_prefix, "wanwitness", "topic prefix"),
        "username": (_str, "", "collector user name at an external broker"),
        "password": (_str, "", "collector password at an external broker"),
        "ca_file": (_path, "", "CA certificate for mqtts:// (default: system CAs)"),
        "tls_listen": (_host_port_or_off, ("0.0.0.0", 8883), "embedded broker's MQTT over TLS "
                       "HOST:PORT, served when its certificate exists; \"off\" = none"),
        "tls_cert": (_path, "", "server certificate (PEM) for TLS; default: tls/server.crt beside "
                     "this file (wanwitness broker tls init)"),
        "tls_key": (_path, "", "its private key; default: tls/server.key beside this file"),
        "tls_ca": (_path, "", "CA certificate `agent add` writes into the boards' config; "
                   "default: tls/ca.crt beside this file"),
        "client_id": (_str, "wanwitness-collector", "MQTT client id (persistent session; with "
                      "share_group, the start of each collector's own id)"),
        "share_group": (_share_group, "", "shared-subscription group for several collectors on "
                        "one PostgreSQL and an external broker (wanwitness collect --shared)"),
        "max_packet": (_int_range(1024 + 128, 256 * 1024 * 1024), 64 * 1024 + 1024,
                       "largest MQTT packet a client may send, bytes (both brokers)"),
        "max_connections": (_int_range(1, 100000), 256, "most client connections (both brokers)"),
    },
    "collector": {
        "batch_max": (_int_range(1, 10000), 1000, "most messages per commit"),
        "log_level": (_level, "info", "debug, info, warning or error"),
        "summary_s": (_int_range(1, 86400), 600, "seconds between one-line summaries in the log"),
        "quarantine_max_rows": (_int_range(0, 10**9), 1000,
                                "refused messages kept per agent (the rest are counted only)"),
        "quarantine_max_bytes": (_int_range(0, 2**40), 4 * 1024 * 1024,
                                 "payload bytes of refused messages kept per agent"),
        "checkpoint_s": (_int_range(60, 7 * 86400), 3600, "`collect` makes a ledger checkpoint "
                         "(a Merkle root over every agent's chain head) this often when records "
                         "came since the last one"),
    },
    "web": {
        "listen": (_host_port_or_off, ("127.0.0.1", 8765), "web UI and API HOST:PORT; \"off\" = "
                   "none; an address other than loopback needs `wanwitness web password`"),
        "tls_cert": (_path, "", "certificate (PEM) to serve the web UI over HTTPS"),
        "tls_key": (_path, "", "its private key (PEM)"),
    },
    "agents": {
        "broker_host": (_str, "", "host name the boards use to reach the broker"),
    },
    # --- claims (docs/claims.md) ---
    "tariff": {
        "monthly_fee": (_money, "", 'monthly fee, e.g. "39.99"; a claim needs it'),
        "currency": (_currency, "", "ISO 4217 currency of the fee, e.g. EUR; a claim needs it"),
        "period_start_day": (_int_range(1, 28), 1, "billing period starts on this day of the month"),
        "timezone": (_timezone, "UTC", "IANA time zone of the contract, e.g. Europe/Berlin; "
                     "days are counted and ticket times read in it"),
    },
    "customer": {
        "name": (_str, "", "your name as on the contract"),
        "address": (_str, "", "your postal address (lines separated by \\n)"),
        "customer_number": (_str, "", "customer number at the ISP"),
        "contract": (_str, "", "contract number"),
        "email": (_str, "", "your e-mail address"),
        "phone": (_str, "", "your phone number"),
    },
    "isp": {
        "name": (_str, "", "the ISP's name"),
        "address": (_str, "", "the ISP billing department's postal address"),
        "email": (_str, "", "the ISP billing department's e-mail address"),
    },
    "claim": {
        "rules": (_str, "", "default rule pack (`wanwitness claim --help` lists them under --rules)"),
        "lang": (_lang, "en", "letter language: en, de, hu, ru or sw"),
        "options": (_options, {}, "rule pack options, also as a table: [claim.options] partial_days = true"),
    },
    # --- Home Assistant MQTT discovery (README "Home Assistant") ---
    "homeassistant": {
        "enabled": (_bool, True, "publish to Home Assistant when broker is set; false: not"),
        "broker": (_broker_url, "", "Home Assistant's MQTT broker mqtt://HOST:PORT or mqtts://; "
                   "empty = no Home Assistant"),
        "username": (_str, "", "user name at that broker"),
        "password": (_str, "", "password at that broker"),
        "ca_file": (_path, "", "CA certificate for mqtts:// (default: system CAs)"),
        "client_id": (_str, "wanwitness-homeassistant", "MQTT client id at that broker"),
        "discovery_prefix": (_prefix, "homeassistant", "Home Assistant's MQTT discovery prefix"),
        "interval_s": (_int_range(1, 3600), 60, "seconds between state updates when nothing "
                       "changes (running durations, silence)"),
    },
    # --- notifications through Apprise (README "Notifications") ---
    "notify": {
        "enabled": (_bool, True, "send notifications when urls (or routes) are set; false: not"),
        "urls": (_notify_urls, (), "Apprise URLs every event goes to, e.g. [\"ntfy://ntfy.sh/my-line\"]"),
        "routes": (_notify_routes, {}, "an event's own URLs instead: [notify.routes] line_back = "
                   "[\"URL\"] (events: " + ", ".join(NOTIFY_EVENTS) + "; [] = none)"),
        "min_duration_s": (_int_range(0, 7 * 86400), 60, "a line-back message only for outages at "
                           "least this long"),
        "quiet_hours": (_quiet_hours, None, "\"22:00-07:00\": messages wait until then ([tariff] "
                        "timezone), except a deadline that falls before the end"),
        "flap_outages": (_int_range(1, 1000), 5, "more outages than this within flap_window_s: one "
                         "digest instead of a message each"),
        "flap_window_s": (_int_range(60, 86400), 900, "the flap window, seconds"),
        "silent_after_s": (_int_range(0, 30 * 86400), 900, "agent not heard from this long: a "
                           "message (and one when it is back); 0 = none"),
        "deadlines": (_bool, True, "remind of the rule pack's deadlines and promised fixes of open "
                      "tickets, and of a claim's filing deadline"),
        "deadline_notice_s": (_int_range(60, 90 * 86400), 86400, "how long before a deadline"),
        "monthly_report": (_bool, False, "after each billing period: its claim, the letter as PDF "
                           "attached (needs [tariff] and [claim] rules)"),
        "retry_min_s": (_int_range(1, 86400), 30, "first retry of a failed send after this long, "
                        "doubling up to retry_max_s"),
        "retry_max_s": (_int_range(1, 7 * 86400), 1800, "longest wait between retries"),
        "give_up_s": (_int_range(60, 365 * 86400), 7 * 86400, "a message not sent within this "
                      "long is marked failed"),
    },
    # --- trusted timestamps of ledger checkpoints, RFC 3161 (README "Trusted timestamps") ---
    "stamp": {
        "tsa_urls": (_tsa_urls, (), "time-stamping authorities (RFC 3161 over HTTP), e.g. "
                     "[\"https://tsa.example/tsr\"]; empty = no stamps"),
        "tsa_certs": (_paths, (), "PEM files with the TSAs' CA certificates: replies are "
                      "checked against them, and the evidence bundle carries them"),
        "timeout_s": (_int_range(1, 600), 30, "seconds to wait for a TSA's reply"),
        "interval_s": (_int_range(3600, 30 * 86400), 86400, "`collect` stamps a checkpoint "
                       "this often when new records came since the last stamp"),
        "retry_s": (_int_range(60, 86400), 900, "after a failed stamp, `collect` tries again "
                    "after this long"),
    },
}


# --- typed sections: what the code reads (config.broker.prefix is a str, checked) ---

@dataclass(frozen=True)
class StoreSection:
    url: str


@dataclass(frozen=True)
class BrokerSection:
    url: str
    listen: tuple[str, int]
    prefix: str
    username: str
    password: str
    ca_file: str
    tls_listen: tuple[str, int] | None
    tls_cert: str
    tls_key: str
    tls_ca: str
    client_id: str
    share_group: str
    max_packet: int
    max_connections: int


@dataclass(frozen=True)
class CollectorSection:
    batch_max: int
    log_level: str
    summary_s: int
    quarantine_max_rows: int
    quarantine_max_bytes: int
    checkpoint_s: int


@dataclass(frozen=True)
class WebSection:
    listen: tuple[str, int] | None
    tls_cert: str
    tls_key: str


@dataclass(frozen=True)
class AgentsSection:
    broker_host: str


@dataclass(frozen=True)
class TariffSection:
    monthly_fee: str          # "" or an amount with two decimals ("39.99"): Decimal(it)
    currency: str
    period_start_day: int
    timezone: str


@dataclass(frozen=True)
class CustomerSection:
    name: str
    address: str
    customer_number: str
    contract: str
    email: str
    phone: str


@dataclass(frozen=True)
class IspSection:
    name: str
    address: str
    email: str


@dataclass(frozen=True)
class ClaimSection:
    rules: str
    lang: str
    options: dict[str, str | list[str]]


@dataclass(frozen=True)
class HomeAssistantSection:
    enabled: bool
    broker: str
    username: str
    password: str
    ca_file: str
    client_id: str
    discovery_prefix: str
    interval_s: int


@dataclass(frozen=True)
class NotifySection:
    enabled: bool
    urls: tuple[str, ...]
    routes: dict[str, tuple[str, ...]]
    min_duration_s: int
    quiet_hours: tuple[int, int] | None   # minutes of the day: (start, end)
    flap_outages: int
    flap_window_s: int
    silent_after_s: int
    deadlines: bool
    deadline_notice_s: int
    monthly_report: bool
    retry_min_s: int
    retry_max_s: int
    give_up_s: int


@dataclass(frozen=True)
class StampSection:
    tsa_urls: tuple[str, ...]
    tsa_certs: tuple[str, ...]
    timeout_s: int
    interval_s: int
    retry_s: int


SECTIONS: dict[str, type] = {
    "store": StoreSection, "broker": BrokerSection, "collector": CollectorSection,
    "web": WebSection, "agents": AgentsSection, "tariff": TariffSection, "customer": CustomerSection,
    "isp": IspSection, "claim": ClaimSection,
    "homeassistant": HomeAssistantSection, "notify": NotifySection,
    "stamp": StampSection,
}


# --- lines: a household's several internet lines (dual WAN, home + office) ---------------
#
#   [lines.home]
#   agents = ["ww-hall"]             # the agents that watch this line (each in one line only)
#   [lines.home.tariff]              # any key of [tariff], [customer], [isp] or [claim]:
#   monthly_fee = "39.99"            # the line's own value; the rest are the top-level ones
#   [lines.home.customer]
#   customer_number = "K-1234"
#
# Without [lines] there is one line: every agent, the top-level sections.

LINE_SECTIONS = ("tariff", "customer", "isp", "claim")
_LINE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}\Z")


@dataclass(frozen=True)
class Line:
    name: str
    agents: tuple[str, ...]
    overrides: dict[str, dict[str, Any]]   # section -> key -> checked value

    def has(self, agent: str) -> bool:
        return agent in self.agents


def _check_lines(raw: Any, path: Path) -> tuple[Line, ...]:
    if not isinstance(raw, dict):
        raise ConfigError(f"config error: {path}: lines must be tables: [lines.NAME]")
    lines: list[Line] = []
    owner: dict[str, str] = {}
    for name, body in raw.items():
        where = f"{path}: [lines.{name}]"
        if not _LINE_NAME.match(name):
            raise ConfigError(f"config error: {where}: a line's name is 1-32 letters, digits, "
                              "'_', '.' or '-', starting with a letter or digit")
        if not isinstance(body, dict):
            raise ConfigError(f"config error: {where} must be a table with agents = [...]")
        for key in body:
            if key != "agents" and key not in LINE_SECTIONS:
                raise ConfigError(f"config error: {where}: unknown key {key} (known: agents, "
                                  + ", ".join(f"[lines.{name}.{sec}]" for sec in LINE_SECTIONS) + ")")
        agents = body.get("agents")
        if (not isinstance(agents, list) or not agents
                or not all(isinstance(a, str) and 0 < len(a.strip()) <= 32 for a in agents)):
            raise ConfigError(f"config error: {where}: agents must list the ids of the agents "
                              'that watch this line, e.g. agents = ["ww-hall"]')
        for agent in agents:
            if agent.strip() in owner:
                raise ConfigError(f"config error: {where}: agent {agent.strip()!r} is already in "
                                  f"line {owner[agent.strip()]!r} (an agent watches one line)")
            owner[agent.strip()] = name
        overrides: dict[str, dict[str, Any]] = {}
        for section in LINE_SECTIONS:
            table = body.get(section, {})
            if not isinstance(table, dict):
                raise ConfigError(f"config error: {where}: {section} must be a table "
                                  f"[lines.{name}.{section}]")
            overrides[section] = {}
            for key, value in table.items():
                if key not in SCHEMA[section]:
                    raise ConfigError(f"config error: {path}: unknown key [lines.{name}.{section}] "
                                      f"{key} (known: {', '.join(SCHEMA[section])})")
                try:
                    overrides[section][key] = SCHEMA[section][key][0](value)
                except ValueError as e:
                    raise ConfigError(f"config error: {path}: [lines.{name}.{section}] {key}: "
                                      f"{e}") from None
        lines.append(Line(name, tuple(a.strip() for a in agents), overrides))
    return tuple(lines)


@dataclass
class Config:
    """The checked configuration: `config.broker.prefix`, `config.tariff.currency`, ...
    (typed, so a wrong use is a type error), or `config.get(section, key)` where the
    key is data (`config show`, the claim's parties).

    `lines` are the [lines.NAME] tables (none: one line, every agent); `for_line(NAME)`
    is this configuration as that line sees it, with `line` set."""
    path: Path
    values: dict[str, dict[str, Any]]
    lines: tuple[Line, ...] = ()
    line: Line | None = None

    def line_names(self) -> list[str]:
        return [ln.name for ln in self.lines]

    def for_line(self, name: str | None, *, how: str = "--line NAME") -> Config:
        """The configuration of line NAME: its own [tariff], [customer], [isp] and [claim]
        keys over the top-level ones. NAME may be None when there is at most one line."""
        if self.line is not None and name in (None, self.line.name):
            return self
        if not self.lines:
            if name is None:
                return self
            raise ConfigError(f"no line {name!r}: {self.path} has no [lines.NAME] tables "
                              "(one line, every agent: leave the line out)")
        if name is None:
            if len(self.lines) > 1:
                raise ConfigError(f"{self.path} has {len(self.lines)} lines: pass {how} "
                                  f"({', '.join(self.line_names())})")
            chosen = self.lines[0]
        else:
            found = [ln for ln in self.lines if ln.name == name]
            if not found:
                raise ConfigError(f"no line {name!r} in {self.path} (lines: "
                                  f"{', '.join(self.line_names())})")
            chosen = found[0]
        values = {sec: dict(keys) for sec, keys in self.values.items()}
        for sec, keys in chosen.overrides.items():
            values[sec].update(keys)
        return Config(self.path, values, self.lines, chosen)

    def for_agent(self, agent: str) -> Config | None:
        """The configuration of the line AGENT watches (for_line); without [lines] this
        one; None when there are lines and AGENT is in none of them."""
        if not self.lines:
            return self
        line = self.line_of(agent)
        return None if line is None else self.for_line(line)

    def line_of(self, agent: str) -> str | None:
        """The name of the line AGENT watches (None: no [lines], or in none of them)."""
        return next((ln.name for ln in self.lines if ln.has(agent)), None)

    def get(self, section: str, key: str) -> object:
        return self.values[section][key]

    @property
    def store(self) -> StoreSection:
        return StoreSection(**self.values["store"])

    @property
    def broker(self) -> BrokerSection:
        return BrokerSection(**self.values["broker"])

    @property
    def collector(self) -> CollectorSection:
        return CollectorSection(**self.values["collector"])

    @property
    def web(self) -> WebSection:
        return WebSection(**self.values["web"])

    @property
    def agents(self) -> AgentsSection:
        return AgentsSection(**self.values["agents"])

    @property
    def tariff(self) -> TariffSection:
        return TariffSection(**self.values["tariff"])

    @property
    def customer(self) -> CustomerSection:
        return CustomerSection(**self.values["customer"])

    @property
    def isp(self) -> IspSection:
        return IspSection(**self.values["isp"])

    @property
    def claim(self) -> ClaimSection:
        return ClaimSection(**self.values["claim"])

    @property
    def homeassistant(self) -> HomeAssistantSection:
        return HomeAssistantSection(**self.values["homeassistant"])

    @property
    def notify(self) -> NotifySection:
        return NotifySection(**self.values["notify"])

    @property
    def stamp(self) -> StampSection:
        return StampSection(**self.values["stamp"])


def load(path: Path | None = None, env: dict[str, str] | None = None) -> Config:
    path = Path(path) if path else default_config_path()
    env_vars: Mapping[str, str] = os.environ if env is None else env
    raw: dict[str, Any] = {}
    if path.exists():
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config error: {path}: {e}") from None
        except OSError as e:
            raise ConfigError(f"config error: {path}: cannot read it: {e.strerror}") from None
    elif path != default_config_path() or "WANWITNESS_CONFIG" in env_vars:
        raise ConfigError(f"config error: {path}: no such file")

    values: dict[str, dict[str, Any]] = {}
    lines = _check_lines(raw.pop("lines"), path) if "lines" in raw else ()
    for section, body in raw.items():
        if section not in SCHEMA:
            raise ConfigError(f"config error: {path}: unknown section [{section}] "
                              f"(known: {', '.join(SCHEMA)}, lines.NAME)")
        if not isinstance(body, dict):
            raise ConfigError(f"config error: {path}: {section} must be a [{section}] table")
        for key in body:
            if key not in SCHEMA[section]:
                raise ConfigError(f"config error: {path}: unknown key [{section}] {key} "
                                  f"(known: {', '.join(SCHEMA[section])})")
    for section, keys in SCHEMA.items():
        values[section] = {}
        for key, (check, default, _help) in keys.items():
            env_name = f"WANWITNESS_{section.upper()}_{key.upper()}"
            if env_name in env_vars:
                source, value = f"environment {env_name}", env_vars[env_name]
            elif key in raw.get(section, {}):
                source, value = f"{path}: [{section}] {key}", raw[section][key]
            else:
                values[section][key] = default
                continue
            try:
                values[section][key] = check(value)
            except ValueError as e:
                raise ConfigError(f"config error: {source}: {e}") from None
    return Config(path, values, lines)


def example() -> str:
    """A commented config file with every key at its default."""
    lines = ["# wanwitness collector configuration", ""]
    for section, keys in SCHEMA.items():
        lines.append(f"[{section}]")
        for key, (_check, default, help_text) in keys.items():
            if isinstance(default, tuple) and len(default) == 2:
                default = f"{default[0]}:{default[1]}"
            shown = (f'"{default}"' if isinstance(default, str) else str(default).lower()
                     if isinstance(default, bool) else '""' if default is None
                     else "[]" if default == () else str(default))
            lines.append(f"# {help_text}")
            lines.append(f"# {key} = {shown}")
        lines.append("")
    lines += ["# Several lines (dual WAN, home + office): one table per line, with the agents that",
              "# watch it and any [tariff], [customer], [isp] or [claim] key of its own; tickets",
              "# then name their line and `wanwitness claim --line NAME` claims for one.",
              "#  [lines.home]", '#  agents = ["ww-hall"]', "#  [lines.home.customer]",
              '#  customer_number = "K-1234"', "#  [lines.office]", '#  agents = ["ww-office"]',
              "#  [lines.office.tariff]", '#  monthly_fee = "59.00"', "#  [lines.office.isp]",
              '#  name = "Other ISP"', ""]
    return "\n".join(lines)
