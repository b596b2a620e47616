"""Opening the store: SQLite or PostgreSQL by URL, migrated on open.

SQLite (the default, a file in the user data dir) runs in WAL mode with
`synchronous=FULL`, so a commit survives a power cut before the collector acks.
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from wanwitness.errors import UserError
from wanwitness.resources import data_dir
from wanwitness.store.errors import is_corrupt
from wanwitness.store.schema import migrate, schema_migrations, settings

# --- opening ------------------------------------------------------------------

def default_db_path() -> Path:
    return data_dir() / "wanwitness.db"


def default_url() -> str:
    return f"sqlite:///{default_db_path()}"


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # Take transaction control from pysqlite so that BEGIN IMMEDIATE below works.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")  # a commit is on disk before we ack it
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_begin(conn) -> None:
    # Writers take the lock up front: no deadlock when a reader upgrades.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


class Store:
    def __init__(self, engine: Engine, url: str):
        self.engine = engine
        self.url = url

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def dispose(self) -> None:
        self.engine.dispose()

    def setting(self, key: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(settings.c.value).where(settings.c.key == key)).scalar()

    def set_setting(self, key: str, value: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(settings.delete().where(settings.c.key == key))
            conn.execute(settings.insert().values(key=key, value=value))


def _describe_url(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


class NoStore(UserError):
    """A command that only reads was pointed at a store that does not exist."""


def open_store(url: str | None = None, *, migrate_schema: bool = True,
               must_exist: bool = False) -> Store:
    """Open (and create or upgrade) the store at `url`; raises UserError on failure.

    `must_exist`: for commands that only read (outages, verify, claim): a store that
    is not there (a mistyped path, an empty database) is an error, not a new empty
    store that then reports "ok"."""
    url = url or default_url()
    try:
        parsed = sa.engine.make_url(url)
    except Exception:
        raise UserError(f"database URL {url!r} is not a database URL (try "
                        "sqlite:///path/to/file.db or postgresql://user@host/dbname)") from None
    shown = _describe_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = parsed.database
        if path and path != ":memory:":
            if must_exist and not os.path.isfile(path):
                raise NoStore(f"no store at {os.path.abspath(path)} ({shown}): check the path; "
                              "`wanwitness collect` creates the store")
            try:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            except OSError as e:
                raise UserError(f"store {shown}: cannot create its directory: {e.strerror}") from None
        engine = sa.create_engine(parsed)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        sa.event.listen(engine, "begin", _sqlite_begin)
    elif backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        engine = sa.create_engine(parsed, pool_pre_ping=True)
    else:
        raise UserError(f"store {shown}: unsupported database {backend!r} "
                        "(use sqlite:/// or postgresql://)")
    try:
        if must_exist and not sa.inspect(engine).has_table(schema_migrations.name):
            engine.dispose()
            raise NoStore(f"store {shown}: the database holds no wanwitness store "
                          "(check the URL; `wanwitness collect` creates the store)")
        if migrate_schema:
            migrate(engine)
        else:
            with engine.connect():
                pass
    except sa.exc.DBAPIError as e:
        engine.dispose()
        reason = str(e.orig).strip().splitlines()[0] if e.orig else str(e)
        if is_corrupt(e):
            # Exit status 3, as when the collector finds it corrupt while running.
            raise UserError(f"store {shown}: the database file is corrupt ({reason}): restore "
                            "it from a backup", exit_code=3) from None
        raise UserError(f"store {shown}: cannot open the database: {reason}") from None
    return Store(engine, url)
