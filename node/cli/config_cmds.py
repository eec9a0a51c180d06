"""Command ``config check``: validate, then print the effective configuration."""

from __future__ import annotations

import argparse
import enum
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from node.cli.common import EXIT_OK, add_config_option, load
from node.config import NodeConfig

_URL_PASSWORD = re.compile(r"(?P<head>://[^:/@]+:)[^@]*(?P<tail>@)")


def register(sub: Any) -> None:
    config = sub.add_parser("config", help="configuration commands")
    actions = config.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser("check", help="validate and print the effective configuration")
    add_config_option(check)
    check.set_defaults(func=run_check)


def mask_secrets(value: str) -> str:
    """Hide a password inside a database URL."""
    return _URL_PASSWORD.sub(r"\g<head>***\g<tail>", value)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return {name: _plain(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (frozenset, set)):
        return sorted(_plain(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return mask_secrets(value)
    return value


def effective(config: NodeConfig) -> dict[str, Any]:
    tree = _plain(config)
    tree.pop("source", None)
    return dict(tree)


def run_check(args: argparse.Namespace) -> int:
    config = load(args)
    print(f"# {config.source}: valid")
    print(yaml.safe_dump(effective(config), sort_keys=False), end="")
    return EXIT_OK
