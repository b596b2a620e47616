"""Which database errors are the store's and which are one message's.

Ingest isolates a message the store refuses (a value out of a column's range, a
constraint): that message is quarantined and the rest commits. Everything else the
database says (disk full, read-only, a lost PostgreSQL connection, a corrupt SQLite
file) is the store's condition, not the message's: nothing may be quarantined or
acknowledged for it.
"""

from __future__ import annotations

import sqlalchemy as sa

# SQLite primary result codes (sqlite.org/rescode.html): SQLITE_CORRUPT, SQLITE_NOTADB.
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26


def is_message_error(e: BaseException) -> bool:
    """An error caused by the data of the message being written, or a bug on it."""
    if isinstance(e, sa.exc.DBAPIError):
        return (isinstance(e, (sa.exc.DataError, sa.exc.IntegrityError))
                and not e.connection_invalidated)
    if isinstance(e, sa.exc.StatementError):
        return True  # a parameter that could not be bound: the message's value
    if isinstance(e, sa.exc.SQLAlchemyError):
        return False  # the pool, a closed connection: the store's condition
    return isinstance(e, Exception)


def is_corrupt(e: BaseException) -> bool:
    """A SQLite file that is damaged or not a database at all."""
    orig = getattr(e, "orig", None)
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(orig or e)
    return "database disk image is malformed" in text or "file is not a database" in text


def reason(e: BaseException) -> str:
    """The database's own words, one line."""
    orig = getattr(e, "orig", None)
    text = str(orig if orig is not None else e).strip()
    return text.splitlines()[0] if text else type(e).__name__
