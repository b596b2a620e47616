"""Shared fixtures: a fresh store on SQLite and on the real PostgreSQL; hypothesis profiles."""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings

from testing.cli import Cli
from testing.tsa import LocalTsa
from wanwitness.store import open_store

# tests/mpy holds MicroPython scripts: tests/test_agent_mpy.py runs them under the
# micropython binary; CPython must not import them.
collect_ignore_glob = ["mpy/*"]

# The fuzz tests (tests/test_fuzz_*.py): the suite runs the same examples every time
# (derandomize), few enough to stay in the fast tier, and no example database (a run
# depends on nothing left on this machine). `pytest --hypothesis-profile=fuzz` is a
# campaign: 100 times the examples, new ones each run.
_FUZZ_COMMON = {"deadline": None, "database": None,
                "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("suite", max_examples=200, derandomize=True, **_FUZZ_COMMON)
settings.register_profile("fuzz", max_examples=20000, derandomize=False, print_blob=True, **_FUZZ_COMMON)
settings.load_profile("suite")  # the plugin's --hypothesis-profile, read later, overrides it

PG_ADMIN_URL = os.environ.get("WANWITNESS_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_available() -> bool:
    try:
        eng = sa.create_engine(PG_ADMIN_URL)
        with eng.connect():
            pass
        eng.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_admin():
    if not _pg_available():
        # PostgreSQL is part of this project's test environment: its absence is a failure.
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}")
    eng = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    yield eng
    eng.dispose()


def _new_pg_db(pg_admin) -> tuple[str, str]:
    name = f"ww_test_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(PG_ADMIN_URL).set(database=name)
    return name, url.render_as_string(hide_password=False)


def _drop_pg_db(pg_admin, name: str) -> None:
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture
def pg_url(pg_admin):
    name, url = _new_pg_db(pg_admin)
    yield url
    _drop_pg_db(pg_admin, name)


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'wanwitness.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A URL of a fresh, empty database: once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'wanwitness.db'}"
    else:
        pg = request.getfixturevalue("pg_admin")
        name, url = _new_pg_db(pg)
        yield url
        _drop_pg_db(pg, name)


@pytest.fixture
def store(db_url):
    st = open_store(db_url)
    yield st
    st.dispose()


@pytest.fixture
def ww(tmp_path_factory) -> Cli:
    """`ww(*args)` runs `wanwitness` in-process, `ww.process(*args)` as a process; HOME and
    the XDG dirs in a directory of their own (not tmp_path: tests list and glob that)."""
    return Cli(tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def tsa(tmp_path_factory):
    """A time-stamping authority on loopback (testing/tsa.py), one per test module."""
    t = LocalTsa(tmp_path_factory.mktemp("tsa"))
    yield t
    t.stop()
