"""The `demo` fixture: the real collector, broker and agent on the virtual board
(wanwitness/demo.py), stopped when the test ends; and `query`, to read its store."""

from __future__ import annotations

from typing import Any

import pytest

from wanwitness import store as s
from wanwitness.demo import Demo


@pytest.fixture
def demo(tmp_path):
    """demo(**kw) makes a Demo under tmp_path; every one made is stopped afterwards."""
    made: list[Demo] = []

    def make(**kw: Any) -> Demo:
        d = Demo(tmp_path / "demo", **kw)
        made.append(d)
        return d
    yield make
    for d in made:
        d.stop()


def query(demo: Demo, stmt: Any) -> list[Any]:
    """Rows of one SELECT on the demo's store, opened for this query only."""
    st = s.open_store(demo.db_url, migrate_schema=False)
    try:
        with st.engine.connect() as conn:
            return list(conn.execute(stmt).all())
    finally:
        st.dispose()
