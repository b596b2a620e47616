"""What every command module shares: the context object, the --db option, helpers.

Nothing here imports a command module, so the command modules never import each other.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from wanwitness import config as cfg
from wanwitness.errors import UserError
from wanwitness.store import Store

T = TypeVar("T")

COLLECTOR_USER = "_collector"  # agent ids start with a letter or digit: no clash


class Ctx:
    """click's `obj`: the --config path, the config loaded once, the store opened."""

    def __init__(self, config_path: Path | None):
        self.config_path = config_path
        self._config: cfg.Config | None = None

    @property
    def config(self) -> cfg.Config:
        if self._config is None:
            self._config = cfg.load(self.config_path)
        return self._config

    def store(self, db: str | None, *, must_exist: bool = False) -> Store:
        """The store of --db, else [store] url, else the default. `must_exist` for the
        commands that only read: a mistyped path is an error, not a new empty store."""
        from wanwitness.store import open_store
        conf = self.config  # a broken config file is reported even when --db is given
        url = db or conf.store.url or None
        try:
            store = open_store(url, must_exist=must_exist)
        except UserError as e:
            source = "--db" if db else "[store] url" if conf.store.url else "the default store"
            raise UserError(f"{source}: {e}", exit_code=e.exit_code) from None
        context = click.get_current_context(silent=True)
        if context is not None:
            context.call_on_close(store.dispose)  # its connections close with the command
        return store


db_option = click.option("--db", "db", metavar="URL", envvar="WANWITNESS_DB",
                         help="Database URL (default: [store] url, else SQLite in the user data dir).")


def checked(check: Callable[[Any], T], value: Any, option: str) -> T:
    """A config check applied to a command-line value; its complaint names the option."""
    try:
        return check(value)
    except ValueError as e:
        raise UserError(f"{option}: {e}") from None


def safe_url(url: str) -> str:
    import sqlalchemy as sa
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
