"""A board's config.json on the host: read it, and check it with the agent's own rules.

The rules are `parse` in wanwitness/agent/config.py, the code the board runs: plain
Python that MicroPython and CPython both run, loaded from the package as a module of
its own. So `deploy`, the virtual board and the outage lab refuse exactly what the
agent would complain about, and a rule changes in one place.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

from wanwitness.errors import UserError
from wanwitness.resources import agent_dir


def read(path: Path) -> dict[str, Any]:
    """The config.json at `path` as a dict; UserError with one clear line when it is
    missing, unreadable, not JSON or not an object."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"agent config {path} not found: create one with "
                        "`wanwitness agent add NAME`") from None
    except IsADirectoryError:
        raise UserError(f"agent config {path} is a directory, not a JSON file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"agent config {path} cannot be read: {e}") from None
    try:
        conf = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"agent config {path} is not valid JSON: {e.msg} at line {e.lineno} "
                        f"column {e.colno}") from None
    if not isinstance(conf, dict):
        raise UserError(f"agent config {path} must hold a JSON object, not {type(conf).__name__}")
    return conf


@functools.cache
def agent_rules() -> ModuleType:
    """wanwitness/agent/config.py, as the module `wanwitness_agent_config`."""
    spec = importlib.util.spec_from_file_location("wanwitness_agent_config",
                                                  agent_dir() / "config.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def problems(conf: dict[str, Any]) -> list[tuple[str, str]]:
    """What the agent would report about this config: [(key, message)], [] if none."""
    return [(str(k), str(m)) for k, m in agent_rules().parse(conf).problems]


def check(path: Path, conf: dict[str, Any]) -> None:
    """UserError naming every problem the agent would report (it would run on defaults
    for those keys: better to fix them before the board is on the router)."""
    found = problems(conf)
    if found:
        listed = "; ".join(f"{key}: {message}" for key, message in found)
        raise UserError(f"agent config {path}: {listed}")
