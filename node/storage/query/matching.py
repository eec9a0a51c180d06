"""Attribute matching of PS3.4 C.2.2.2 as SQL conditions on an index column.

- Universal matching (C.2.2.2.3): an empty value, or only ``*``, matches everything.
- Single value matching (C.2.2.2.1): equality; case-sensitive, except Person Name keys,
  which match case-insensitively as C.2.2.2.1 permits for PN.
- Wildcard matching (C.2.2.2.4): ``*`` any sequence, ``?`` one character, for the text
  keys (AE, CS, LO, PN, SH VRs), case-sensitive there: GLOB on SQLite (its LIKE ignores
  case), LIKE with escaped ``%`` and ``_`` on PostgreSQL (whose LIKE respects case).
- Range matching (C.2.2.2.5): dates and times ``a-b``, ``a-``, ``-b``; an empty stored
  value never falls in a range. A bound given with less precision covers the whole unit
  (``-1015`` includes 10:15:59). Bounds compare byte-wise (``COLLATE "C"`` on
  PostgreSQL), whatever the database's collation.
- List of UID matching (C.2.2.2.2): UID keys with several values match any of them.
Several values for another key (a backslash in the value) match if any value matches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, func, or_
from sqlalchemy.sql.elements import ColumnElement

from node.storage.query.model import Match

# Greater than every character of a DA or TM value: "hi" + this bounds all values
# starting with "hi" (reduced-precision upper bounds).
_AFTER = "~"
_WILDCARD_MATCHES = frozenset({Match.TEXT, Match.PERSON_NAME, Match.MODALITIES})


def is_universal(values: Sequence[str]) -> bool:
    """True when ``values`` ask for universal matching (C.2.2.2.3)."""
    return all(not v or set(v) == {"*"} for v in values)


def has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def condition(
    column: ColumnElement[Any], match: Match, values: Sequence[str], dialect: str
) -> ColumnElement[bool] | None:
    """The SQL condition for ``values`` of a key on ``column``; None when universal."""
    if match is Match.COUNT or is_universal(values):
        return None
    wanted = [v for v in values if v]
    if match is Match.UID:
        return column == wanted[0] if len(wanted) == 1 else column.in_(wanted)
    parts = [_one(column, match, value, dialect) for value in wanted]
    return parts[0] if len(parts) == 1 else or_(*parts)


def _one(column: ColumnElement[Any], match: Match, value: str, dialect: str) -> ColumnElement[bool]:
    if match in (Match.DATE, Match.TIME) and "-" in value:
        low, _, high = value.partition("-")
        if dialect == "postgresql":
            # Bounds compare character by character, as SQLite does: a database in a
            # language collation (en_US.UTF-8) ignores the "~" that closes a bound.
            column = column.collate("C")
        bounds = [column != ""]
        if low:
            bounds.append(column >= low)
        if high:
            bounds.append(column <= high + _AFTER)
        return and_(*bounds)
    if match in _WILDCARD_MATCHES and has_wildcard(value):
        return _wildcard(column, value, dialect, fold_case=match is Match.PERSON_NAME)
    if match is Match.PERSON_NAME:
        return func.lower(column) == value.lower()
    if match is Match.NUMBER:
        return column.in_(sorted({value, _integer_text(value)}))
    result: ColumnElement[bool] = column == value
    return result


def _integer_text(value: str) -> str:
    """``"007"`` and ``"+7"`` are the IS value 7, stored as written by the modality."""
    try:
        return str(int(value))
    except ValueError:
        return value


def _wildcard(
    column: ColumnElement[Any], value: str, dialect: str, *, fold_case: bool
) -> ColumnElement[bool]:
    if fold_case:
        return func.lower(column).like(_like_pattern(value.lower()), escape="\\")
    if dialect == "sqlite":  # SQLite's LIKE ignores case; GLOB does not
        glob = value.replace("[", "[[]")
        result: ColumnElement[bool] = column.op("GLOB", is_comparison=True)(glob)
        return result
    return column.like(_like_pattern(value), escape="\\")  # case-sensitive in PostgreSQL


def _like_pattern(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")
