"""pydantic's ValidationError as the node's ConfigError: one line per problem, with its key path.

The key path is written as the YAML reads: ``partners[0].retry.factor``; a problem of the
whole file is ``(top level)``. Every message was already put in the node's words by
:mod:`node.config.section`; an error it did not foresee keeps pydantic's text.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from node.config.types import PROBLEM
from node.errors import ConfigError


def key_path(loc: Sequence[str | int]) -> str:
    """``("partners", 0, "port")`` as ``partners[0].port``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def config_error(exc: ValidationError, source: Path | None) -> ConfigError:
    """Every error of ``exc``, in order, as one ConfigError."""
    problems = []
    for error in exc.errors():
        if error["type"] == PROBLEM:
            message = str((error.get("ctx") or {})["problem"])
        else:
            message = error["msg"]
        problems.append(f"{key_path(error['loc'])}: {message}")
    return ConfigError(source, problems)
