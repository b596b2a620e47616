"""Work that one collector of several does (`wanwitness collect --shared`).

Several collectors on one PostgreSQL each ingest a share of the agents' messages, but
some of the collector's work must not be done N times: the Home Assistant publisher
(its events would reach Home Assistant once per collector, and each collector's last
will would mark the whole service offline). Whoever holds a PostgreSQL session advisory
lock named for the work does it; the lock goes with its holder's database session, so
when that collector dies (or loses the database) another takes the work over within
`retry_s`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

import sqlalchemy as sa

from wanwitness.store import Store

log = logging.getLogger("wanwitness.collector")

RETRY_S = 15.0


class Work(Protocol):
    def start(self) -> None: ...
    def changed(self) -> None: ...
    def close(self) -> None: ...


class Periodic:
    """A thread-run job with start() and stop() (the ledger's Checkpointer, the daily
    stamper) as a Work; its Duty makes a new one each time it is taken."""

    def __init__(self, job: Any) -> None:
        self.job = job

    def start(self) -> None:
        self.job.start()

    def changed(self) -> None:
        pass

    def close(self) -> None:
        self.job.stop()


class Duty:
    """start(), changed() after each commit (passed on to the work while held), close()."""

    def __init__(self, store: Store, name: str, make: Callable[[], Work], retry_s: float = RETRY_S):
        self.store = store
        self.name = name
        self.make = make  # a fresh Work each time the lock is taken
        self.retry_s = retry_s
        # pg_try_advisory_lock(bigint): a stable key from the name
        self.key = int.from_bytes(hashlib.sha256(f"wanwitness:{name}".encode()).digest()[:8],
                                  "big", signed=True)
        self.work: Work | None = None
        self._conn: sa.Connection | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"duty-{name}", daemon=True)

    @property
    def held(self) -> bool:
        return self.work is not None

    def start(self) -> None:
        self._thread.start()

    def changed(self) -> None:
        work = self.work
        if work is not None:
            work.changed()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        self._release()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.work is None:
                    self._try_take()
                else:
                    assert self._conn is not None
                    self._conn.execute(sa.select(1)).scalar()  # still ours: the session lives
            except Exception as e:  # the database away: whoever reconnects first takes it
                if self.work is not None:
                    log.warning("%s: lost the database session holding it (%s: %s); "
                                "stopped here until it is taken again", self.name,
                                type(e).__name__, e)
                self._release()
            self._stop.wait(self.retry_s)

    def _try_take(self) -> None:
        conn = self.store.engine.connect()
        try:
            got = conn.execute(sa.select(sa.func.pg_try_advisory_lock(self.key))).scalar()
            conn.commit()
        except Exception:
            conn.close()
            raise
        if not got:
            conn.close()
            return
        self._conn = conn
        log.info("%s: this collector does it (of those sharing the store)", self.name)
        work = self.make()
        work.start()
        self.work = work

    def _release(self) -> None:
        work, self.work = self.work, None
        if work is not None:
            work.close()
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.invalidate()  # the session ends, and the lock with it
            except Exception:
                pass
            conn.close()
