"""Statements compiled once and run on the DB-API cursor: the C-STORE path's index writes.

Why: per C-STORE the index takes three statements in one transaction. Run through
SQLAlchemy's Connection, its per-execution bookkeeping (cache keys, result objects,
events) cost several times the SQLite work itself. The statements are still written in
SQLAlchemy Core and compiled for the engine's own dialect, so the same code serves a
PostgreSQL URL; only their execution skips the Connection layer.

Errors are raised as SQLAlchemy's own exception types, so callers handle them in one way
whichever layer ran the statement.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.sql.expression import ClauseElement

from node.storage.database import LOCK_STATEMENT


class Prepared:
    """One statement compiled for ``engine``'s dialect; parameters are given by name.

    ``keys``: the columns an INSERT sets. Bound values written into the statement (a
    LIMIT, a constant in a comparison) are kept as defaults; avoid ``in_()``, whose
    expanding parameters need SQLAlchemy's own execution.
    """

    def __init__(
        self, engine: Engine, statement: ClauseElement, keys: Sequence[str] | None = None
    ) -> None:
        compiled = statement.compile(
            dialect=engine.dialect, column_keys=list(keys) if keys is not None else None
        )
        self.sql = compiled.string
        self._defaults: dict[str, Any] = dict(compiled.params)
        # Positional paramstyles (SQLite's qmark) need the bind names in order.
        self._order: list[str] | None = getattr(compiled, "positiontup", None)

    def run(self, cursor: Any, params: Mapping[str, Any] | None = None) -> Any:
        values = {**self._defaults, **params} if params else self._defaults
        if self._order is not None:
            cursor.execute(self.sql, tuple(values[name] for name in self._order))
        else:
            cursor.execute(self.sql, values)
        return cursor


@contextlib.contextmanager
def _translated(engine: Engine) -> Iterator[None]:
    """DB-API errors raised as SQLAlchemy's own types."""
    dbapi = engine.dialect.loaded_dbapi
    try:
        yield
    except dbapi.IntegrityError as exc:
        raise sa_exc.IntegrityError(None, None, exc) from exc
    except dbapi.OperationalError as exc:
        raise sa_exc.OperationalError(None, None, exc) from exc
    except dbapi.Error as exc:
        raise sa_exc.DatabaseError(None, None, exc) from exc


class CommitUncertain(sa_exc.OperationalError):
    """COMMIT itself failed on a server database: the transaction may have committed
    (the reply can be lost after the server made it durable). SQLite commits locally and
    atomically, so there a failed COMMIT is a plain error."""


@contextlib.contextmanager
def raw_transaction(engine: Engine) -> Iterator[Any]:
    """A DB-API cursor inside one transaction: committed on exit, rolled back on error.

    SQLite starts it with BEGIN IMMEDIATE, PostgreSQL with the node's advisory lock, as
    every transaction of the node does (:mod:`node.storage.database`), so concurrent
    writers serialise before reading the audit chain's last record.
    """
    with _translated(engine):
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            try:
                if engine.dialect.name == "sqlite":
                    cursor.execute("BEGIN IMMEDIATE")
                elif engine.dialect.name == "postgresql":
                    cursor.execute(LOCK_STATEMENT)  # opens the transaction (no autocommit)
                yield cursor
                try:
                    raw.commit()
                except engine.dialect.loaded_dbapi.Error as exc:
                    if engine.dialect.name == "sqlite":
                        raise
                    raise CommitUncertain(None, None, exc) from exc
            except BaseException:
                with contextlib.suppress(Exception):
                    raw.rollback()
                raise
            finally:
                cursor.close()
        finally:
            raw.close()  # back to the pool


@contextlib.contextmanager
def raw_cursor(engine: Engine) -> Iterator[Any]:
    """A DB-API cursor for reads outside any explicit transaction."""
    with _translated(engine):
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            try:
                yield cursor
            finally:
                cursor.close()
        finally:
            raw.close()
