"""The base of every configuration model: frozen, closed to unknown keys, in the node's words.

pydantic validates each section; this base adds what the node has always promised about
its configuration file:

- every problem is reported, not only the first, each under its key path;
- each problem reads as the node words it (``unknown key (allowed: ...)``,
  ``is required``, ``must be a list``), not as pydantic's default text;
- a section left empty (``node:`` with nothing under it) takes its defaults, and a list
  left empty is an empty list;
- rules that relate fields (``host`` is required when ``port`` is given) are checked even
  when another field of the same section is wrong, so they are reported together.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar, Self, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails

from node.config.types import PROBLEM, LoadContext, load_context, problem

# A problem a rule found: the key path below the section, and the message.
Problem = tuple[tuple[str | int, ...], str]

_MAPPING_ERRORS = {"model_type", "model_attributes_type", "dict_type"}
_LIST_ERRORS = {"tuple_type", "list_type", "set_type", "frozen_set_type", "iterable_type"}


class Section(BaseModel):
    """A frozen configuration model; see the module docstring for what it adds."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True
    )

    # Fields that code may set but a configuration file may not name.
    not_in_file: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def file_keys(cls) -> list[str]:
        """The keys this section accepts in a file, sorted."""
        keys = {field.alias or name for name, field in cls.model_fields.items()}
        return sorted(keys - cls.not_in_file)

    @classmethod
    def prepare_context(cls, data: Mapping[str, Any], context: LoadContext | None) -> None:
        """Fill in ``context`` before the fields are validated (a hook; nothing by default)."""

    @classmethod
    def cross_field_problems(
        cls, data: Mapping[str, Any], context: LoadContext | None
    ) -> Iterator[Problem]:
        """Problems between fields, found on the given values (a hook; none by default)."""
        return iter(())

    @model_validator(mode="wrap")
    @classmethod
    def _validate_section(
        cls, data: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> Self:
        context = load_context(info)
        if data is None:
            data = {}  # an empty section: every default
        found: list[Problem] = []
        if isinstance(data, Mapping):
            found += [((str(key),), _unknown(cls)) for key in data if not isinstance(key, str)]
            data = _filled(cls, {k: v for k, v in data.items() if isinstance(k, str)}, context)
            if context is not None:
                found += [((key,), _unknown(cls)) for key in cls.not_in_file if key in data]
            cls.prepare_context(data, context)
            found += cls.cross_field_problems(data, context)
        try:
            section = handler(data)
        except ValidationError as exc:
            raise _combined(cls, exc.errors(), found) from None
        if found:
            raise _combined(cls, [], found)
        return section  # type: ignore[no-any-return]


class _Null:
    """An explicit null in a file where a value is expected: validated as that value.

    Optional fields accept None from code; in a file, ``host:`` with nothing after it is
    as wrong as any other value that is not a host, and gets that value's error.
    """

    def __repr__(self) -> str:
        return "None"  # as the message quotes it: "must be 1-65535 (got None)"


_NULL = _Null()


def _holds_section(annotation: object) -> bool:
    return any(isinstance(t, type) and issubclass(t, Section) for t in get_args(annotation))


def _filled(
    cls: type[Section], data: dict[str, Any], context: LoadContext | None
) -> dict[str, Any]:
    """``key:`` with no value: a required key is missing, a list is empty, a section is off.

    A section the data leaves out is validated as an empty one, so that its defaults are
    resolved against the file being loaded (a default factory would know nothing of it).
    """
    for name, field in cls.model_fields.items():
        key = field.alias or name
        if key in data and data[key] is None:
            if field.is_required() or field.default == ():
                del data[key]
            elif context and field.default is None and not _holds_section(field.annotation):
                data[key] = _NULL
        factory = field.default_factory
        if key not in data and isinstance(factory, type) and issubclass(factory, Section):
            data[key] = {}
    return data


def _unknown(cls: type[Section]) -> str:
    return f"unknown key (allowed: {', '.join(cls.file_keys())})"


def _one_of(error: ErrorDetails) -> str:
    expected = re.findall(r"'([^']*)'", str((error.get("ctx") or {}).get("expected", "")))
    return f"must be one of {', '.join(expected)} (got {error['input']!r})"


def explain(cls: type[Section], error: ErrorDetails) -> str:
    """The node's wording of one pydantic error found in a section of type ``cls``."""
    kind = error["type"]
    if kind == PROBLEM:
        return str((error.get("ctx") or {})["problem"])
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return _unknown(cls)
    if kind in _MAPPING_ERRORS:
        return "must be a mapping"
    if kind in _LIST_ERRORS:
        return "must be a list"
    if kind in {"literal_error", "enum"}:
        return _one_of(error)
    return error["msg"]


def _combined(
    cls: type[Section], errors: Iterable[ErrorDetails], found: Iterable[Problem]
) -> ValidationError:
    """One ValidationError holding pydantic's errors (reworded) and the rules' problems."""
    details = [
        InitErrorDetails(type=problem(explain(cls, e)), loc=e["loc"], input=e["input"])
        for e in errors
    ]
    details += [
        InitErrorDetails(type=problem(message), loc=loc, input=None) for loc, message in found
    ]
    return ValidationError.from_exception_data(cls.__name__, details)
