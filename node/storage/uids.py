"""UID validation (PS3.5 9.1): the only gate between peer input and file names."""

from __future__ import annotations

import re

from node.errors import InvalidRequest

# Components are digits with no leading zero (except "0" itself), separated by dots.
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
MAX_UID_LENGTH = 64


def is_valid_uid(value: object) -> bool:
    """True when ``value`` is a syntactically valid UID of at most 64 characters."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_UID_LENGTH
        and _UID.fullmatch(value) is not None
    )


def checked_uid(value: object, name: str) -> str:
    """Return ``value`` as a UID, or raise InvalidRequest naming the attribute."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str):
        value = value.rstrip("\0 ")
    if not is_valid_uid(value):
        raise InvalidRequest(f"{name} is not a valid UID: {value!r}")
    assert isinstance(value, str)
    return value
