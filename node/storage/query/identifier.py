"""Read a C-FIND, C-MOVE or C-GET request identifier into a checked query.

Hierarchical (baseline) behaviour only, PS3.4 C.4.1.2.2 and C.4.2.2.1: the identifier
names its Query/Retrieve Level and carries the unique key of every level above it with a
single value. A C-FIND may match on any supported key of its level (and, as an
extension, on keys of the levels above); a C-MOVE or C-GET is defined by the unique keys
alone, the one of the retrieve level possibly a list of UIDs (C.4.2.1.4.1).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from node.storage.query.matching import has_wildcard, is_universal
from node.storage.query.model import (
    KEYS,
    NON_KEY_ATTRIBUTES,
    IdentifierError,
    InformationModel,
    Key,
    Level,
    Match,
)


@dataclass(frozen=True, slots=True)
class Condition:
    """A requested key with its values (empty values: universal matching)."""

    key: Key
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FindQuery:
    """A checked C-FIND identifier."""

    model: InformationModel
    level: Level
    conditions: tuple[Condition, ...]  # every requested supported key, in request order
    unsupported: tuple[str, ...]  # requested attributes this SCP does not support

    @property
    def returned(self) -> tuple[Key, ...]:
        return tuple(c.key for c in self.conditions)


@dataclass(frozen=True, slots=True)
class RetrieveQuery:
    """A checked C-MOVE or C-GET identifier: unique keys from the top to the level."""

    model: InformationModel
    level: Level
    conditions: tuple[Condition, ...]


def element_values(element: DataElement) -> tuple[str, ...]:
    """The values of a request element as stripped strings (empty: universal)."""
    value = element.value
    if value is None or value in ("", b""):
        return ()
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    out = []
    for item in items:
        text = item.decode("latin-1") if isinstance(item, bytes) else str(item)
        out.append(text.strip(" \0"))
    return tuple(out)


def parse_find(model: InformationModel, identifier: Dataset) -> FindQuery:
    """Check a C-FIND identifier; IdentifierError when it does not fit ``model``."""
    level = model.level(identifier.get("QueryRetrieveLevel"))
    allowed = {level, *model.above(level)}
    conditions: list[Condition] = []
    unsupported: list[str] = []
    for element in identifier:
        keyword = element.keyword
        if keyword in NON_KEY_ATTRIBUTES:
            continue
        key = KEYS.get(keyword)
        if key is None or model.level_of(key) not in allowed or element.VR == "SQ":
            unsupported.append(keyword or str(element.tag))
            continue
        conditions.append(Condition(key, element_values(element)))
    _check_higher_unique_keys(model, level, conditions)
    return FindQuery(model, level, tuple(conditions), tuple(unsupported))


def parse_retrieve(model: InformationModel, identifier: Dataset) -> RetrieveQuery:
    """Check a C-MOVE/C-GET identifier; IdentifierError when it does not fit ``model``."""
    level = model.level(identifier.get("QueryRetrieveLevel"))
    conditions = []
    for each in (*model.above(level), level):
        key = model.unique_key(each)
        values = _present(identifier, key, level)
        if is_universal(values) or any(has_wildcard(v) for v in values):
            raise IdentifierError(f"{key.keyword} needs a value without wildcards to retrieve")
        several_allowed = each is level and key.match is Match.UID
        if len(values) > 1 and not several_allowed:
            raise IdentifierError(f"{key.keyword} must have a single value here")
        conditions.append(Condition(key, values))
    return RetrieveQuery(model, level, tuple(conditions))


def _present(identifier: Dataset, key: Key, level: Level) -> tuple[str, ...]:
    if key.keyword not in identifier:
        raise IdentifierError(f"{level} level needs the unique key {key.keyword}")
    return element_values(identifier[key.keyword])


def _check_higher_unique_keys(
    model: InformationModel, level: Level, conditions: list[Condition]
) -> None:
    """Baseline queries below the top level name one entity per level above (C.4.1.2.2.1)."""
    given = {c.key.keyword: c.values for c in conditions}
    for each in model.above(level):
        key = model.unique_key(each)
        values = given.get(key.keyword, ())
        if len(values) != 1 or is_universal(values) or has_wildcard(values[0]):
            raise IdentifierError(
                f"a {level} level query needs a single value of {key.keyword} ({each} level)"
            )
