"""The value types of the configuration file, as annotated pydantic types.

Each type accepts exactly the spellings the node has always accepted and, when a value
does not fit, raises one :func:`problem` in the node's own words (``must be 1-65535
(got 0)``), which :mod:`node.config.problems` prints after the key path.

Paths written in the file are relative to the folder that holds the file
(:class:`LoadContext`); a path the file leaves out defaults to a fixed name under
``storage.root`` (:class:`UnderRoot`), so everything the node writes lives under one root.
AE titles follow PS3.5 Table 6.2-1 (AE VR).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, TypeGuard

from pydantic import (
    Field,
    PlainValidator,
    Strict,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

from node.config.choices import ALL_ROLES, Role

PROBLEM = "node_config"  # the error type of every message written for the node's users
DEFAULT_ROOT = Path("var")  # storage.root when the file names none

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    **{f"{p}b": 1000 ** (n + 1) for n, p in enumerate("kmgt")},
    **{f"{p}ib": 1 << (10 * (n + 1)) for n, p in enumerate("kmgt")},
}


def problem(message: str) -> PydanticCustomError:
    """A validation error whose text is shown to the user as it is."""
    return PydanticCustomError(PROBLEM, "{problem}", {"problem": message})


@dataclass
class LoadContext:
    """What validation needs to know about the file being read (pydantic's context).

    ``base``: the folder of the file. ``root`` and ``own_certificate`` are filled in by
    :class:`node.config.model.NodeConfig` before its sections are validated.
    """

    base: Path
    root: Path | None = None
    own_certificate: Path | None = None  # may be created at first start, so may be trusted


def load_context(info: ValidationInfo) -> LoadContext | None:
    """The context of a file being loaded; None for objects built in code."""
    return info.context if isinstance(info.context, LoadContext) else None


@dataclass(frozen=True)
class UnderRoot:
    """Default of a path field: ``name`` under ``storage.root`` (never checked to exist)."""

    name: str

    def under(self, root: Path) -> Path:
        return root / self.name


def root_of(context: LoadContext | None) -> Path:
    """``storage.root`` of the file being loaded (the default root for objects built in code)."""
    if context is None:
        return DEFAULT_ROOT
    return context.root or resolve_path(DEFAULT_ROOT, context)


def resolve_path(value: str | os.PathLike[str], context: LoadContext | None) -> Path:
    """``~`` expanded; relative to the file's folder when loading a file; normalized."""
    path = Path(os.path.expanduser(value))
    if context is None:
        return path
    return Path(os.path.normpath(path if path.is_absolute() else context.base / path))


def is_path_text(value: object) -> TypeGuard[str | Path]:
    """Whether ``value`` is something :data:`ConfigPath` accepts."""
    return (isinstance(value, str) and bool(value)) or isinstance(value, Path)


def explained(message: str, *, show_value: bool = True) -> WrapValidator:
    """Replace pydantic's wording for the wrapped type by the node's ``message``."""

    def wrap(value: object, handler: ValidatorFunctionWrapHandler) -> object:
        try:
            return handler(value)
        except ValidationError:
            raise problem(f"{message} (got {value!r})" if show_value else message) from None

    return WrapValidator(wrap)


def ae_title_problem(value: object) -> str | None:
    """Why ``value`` is not a valid AE title (PS3.5 Table 6.2-1, AE VR), or None."""
    if not isinstance(value, str):
        return "must be a string"
    if not 1 <= len(value) <= 16:
        return "must be 1-16 characters"
    if "\\" in value or any(ord(c) < 0x20 or ord(c) > 0x7E for c in value):
        return "must not contain a backslash or control characters"
    if not value.strip(" "):
        return "must not be all spaces"
    return None


def _ae_title(value: object) -> str:
    reason = ae_title_problem(value)
    if reason:
        raise problem(f"{reason} (got {value!r})")
    return str(value)


def _seconds(value: object) -> float:
    """Seconds as a number, or a string such as ``250ms``, ``30s``, ``10m``, ``2h``, ``1d``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    match = _DURATION.match(value) if isinstance(value, str) else None
    if not match:
        raise problem(f"must be a duration such as 30s, 10m or 2h (got {value!r})")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def _positive_seconds(value: object) -> float:
    seconds = _seconds(value)
    if seconds <= 0:
        raise problem(f"must be more than zero (got {value!r})")
    return seconds


def _bytes(value: object) -> int:
    """Bytes as an integer, or a string such as ``512MiB``, ``4GiB``, ``2GB`` (SI or IEC)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _SIZE.match(value.strip()) if isinstance(value, str) else None
    if not match or float(match.group(1)) <= 0:
        raise problem(f"must be a size such as 512MiB or 4GiB (got {value!r})")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def _path(value: object, info: ValidationInfo) -> Path:
    if not is_path_text(value):
        raise problem("must be a file path")
    return resolve_path(value, load_context(info))


def _rooted_path(value: object, info: ValidationInfo) -> Path:
    if isinstance(value, UnderRoot):
        return value.under(root_of(load_context(info)))
    return _path(value, info)


def _existing_file(value: object, info: ValidationInfo) -> Path:
    path = _path(value, info)
    if not path.is_file():
        raise problem(f"file not found: {path}")
    return path


def _database(value: object, info: ValidationInfo) -> str:
    """An SQLAlchemy URL; a plain path is an SQLite file."""
    if isinstance(value, UnderRoot):
        return f"sqlite:///{value.under(root_of(load_context(info)))}"
    if not isinstance(value, str) or not value:
        raise problem("must be a file path or a database URL")
    if "://" in value:
        return value
    return f"sqlite:///{resolve_path(value, load_context(info))}"


def _roles(value: object, handler: ValidatorFunctionWrapHandler) -> frozenset[Role]:
    allowed = ", ".join(r.value for r in Role)
    if isinstance(value, frozenset) and value <= ALL_ROLES:
        return value  # built in code
    if not isinstance(value, list) or not value:
        raise problem(f"must be a list of roles: {allowed}")
    try:
        roles: frozenset[Role] = handler(value)
    except ValidationError:
        raise problem(f"unknown role in {value!r} (allowed: {allowed})") from None
    return roles


Text = Annotated[
    str, Strict(), Field(min_length=1), explained("must be a non-empty string", show_value=False)
]
AETitle = Annotated[str, PlainValidator(_ae_title)]
# Our own listening port: 0 lets the OS choose one.
ListenPort = Annotated[
    int, Strict(), Field(ge=0, le=65535), explained("must be 0-65535, 0 letting the OS choose")
]
# A port we connect to: 0 is no port one can connect to.
RemotePort = Annotated[int, Strict(), Field(ge=1, le=65535), explained("must be 1-65535")]
PositiveInt = Annotated[int, Strict(), Field(ge=1), explained("must be a positive integer")]
PositiveNumber = Annotated[float, Strict(), Field(gt=0), explained("must be a positive number")]
Flag = Annotated[bool, Strict(), explained("must be true or false")]
Duration = Annotated[float, PlainValidator(_seconds)]  # seconds
PositiveDuration = Annotated[float, PlainValidator(_positive_seconds)]  # seconds, more than 0
Size = Annotated[int, PlainValidator(_bytes)]  # bytes
ConfigPath = Annotated[Path, PlainValidator(_path)]
RootedPath = Annotated[Path, PlainValidator(_rooted_path)]  # accepts an UnderRoot default
ExistingFile = Annotated[Path, PlainValidator(_existing_file)]
Database = Annotated[str, PlainValidator(_database)]  # accepts an UnderRoot default
EnvName = Annotated[
    str,
    Strict(),
    Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$"),
    explained("must be an environment variable name"),
]
WebURL = Annotated[
    str,
    Strict(),
    Field(pattern=r"^https?://[^/?#\s]+\S*$"),
    explained("must be an http:// or https:// URL"),
]
# RFC 5646 language tag (TID 1204, Language of Content).
LanguageTag = Annotated[
    str,
    Strict(),
    Field(pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$"),
    explained("must be an RFC 5646 language tag such as en-US"),
]
Roles = Annotated[frozenset[Role], WrapValidator(_roles)]
