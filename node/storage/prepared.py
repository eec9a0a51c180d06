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


class Prepared:
    """One statement compiled for ``engine``'s dialect; parameters are given by name."""

    def __init__(
        self, engine: Engine, statement: ClauseElement, keys: Sequence[str] | None = None
    ) -> None:
        compiled = statement.compile(
            dialect=engine.dialect,
            column_keys=list(keys) if keys is not None else None,
            compile_kwargs={"literal_binds": keys is None},
        )
        self.sql = compiled.string
        # Positional paramstyles (SQLite's qmark) need the bind names in order.
        self._order: list[str] | None = getattr(compiled, "positiontup", None)

    def run(self, cursor: Any, params: Mapping[str, Any] | None = None) -> Any:
        if params is None:
            cursor.execute(self.sql)
        elif self._order is not None:
            cursor.execute(self.sql, tuple(params[name] for name in self._order))
        else:
            cursor.execute(self.sql, dict(params))
        return cursor


@contextlib.contextmanager
def raw_transaction(engine: Engine) -> Iterator[Any]:
    """A DB-API cursor inside one transaction: committed on exit, rolled back on error.

    SQLite starts it with BEGIN IMMEDIATE, as every transaction of the node does
    (:mod:`node.storage.database`), so concurrent writers serialise before reading the
    audit chain's last record.
    """
    dbapi = engine.dialect.loaded_dbapi
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        try:
            if engine.dialect.name == "sqlite":
                cursor.execute("BEGIN IMMEDIATE")
            yield cursor
            raw.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                raw.rollback()
            raise
        finally:
            cursor.close()
    except dbapi.IntegrityError as exc:
        raise sa_exc.IntegrityError(None, None, exc) from exc
    except dbapi.OperationalError as exc:
        raise sa_exc.OperationalError(None, None, exc) from exc
    except dbapi.Error as exc:
        raise sa_exc.DatabaseError(None, None, exc) from exc
    finally:
        raw.close()  # back to the pool
