"""What every command shares: loading the configuration, output, exit statuses.

Exit statuses (the README's command reference): 0 success, 1 a verification or operation failed,
2 bad usage or bad configuration.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from node.config import NodeConfig, load_config

if TYPE_CHECKING:
    from sqlalchemy import Engine

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

DEFAULT_CONFIG = Path("config/node.yaml")

# A command receives its parsed arguments and returns an exit status.
Command = Callable[[argparse.Namespace], int]


def named_config(args: argparse.Namespace) -> str | None:
    """The file ``-c/--config`` names, after the command or before it, else None.

    After the command wins when both are given: it is the one nearer to what it configures.
    """
    return getattr(args, "config", None) or getattr(args, "global_config", None)


def config_path(args: argparse.Namespace) -> Path:
    """``-c/--config``, else ``$DICOM_NODE_CONFIG``, else ``config/node.yaml``."""
    given = named_config(args)
    if given:
        return Path(given)
    env = os.environ.get("DICOM_NODE_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG


def optional_config(args: argparse.Namespace) -> NodeConfig | None:
    """The configuration, or None when none was named and the default file is absent."""
    named = named_config(args) or os.environ.get("DICOM_NODE_CONFIG")
    if not named and not DEFAULT_CONFIG.exists():
        return None
    return load(args)


def load(args: argparse.Namespace) -> NodeConfig:
    """Load and validate the configuration named by the arguments (raises ConfigError).

    Every command that has a configuration gets the process-wide library settings from it
    here, once, before it does anything else (node.app is the composition root).
    """
    config = load_config(config_path(args))
    from node.app import configure_library_globals

    configure_library_globals()
    return config


CONFIG_HELP = "configuration file (default: $DICOM_NODE_CONFIG, else config/node.yaml)"


def add_config_option(parser: argparse.ArgumentParser, *, dest: str = "config") -> None:
    """``-c/--config FILE``: on the main parser (before the command) and on every command.

    The two are kept under different names, because a sub-command's default would
    otherwise overwrite the value given before it.
    """
    parser.add_argument("-c", "--config", dest=dest, metavar="FILE", help=CONFIG_HELP)


def existing_database(config: NodeConfig) -> Engine | None:
    """The index for a read-only command, or None when its SQLite file does not exist yet.

    Looking must not create state: ``open_database`` would make the folder and an empty
    index, so a mistyped ``-c`` would leave a new archive behind.
    """
    from node.schema import open_database

    url = config.storage.database
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return None
    return open_database(url)


def no_database(config: NodeConfig) -> str:
    """The words for "this node has received nothing yet"."""
    return f"no index database at {config.storage.database.removeprefix('sqlite:///')} yet"


def error(message: str) -> None:
    """One clear line on stderr."""
    print(f"dicom-node: {message}", file=sys.stderr)


def progress(done: int, total: int, what: str) -> None:
    """A progress line on a terminal; nothing when stderr is piped."""
    if not sys.stderr.isatty():
        return
    end = "\n" if done >= total else ""
    print(f"\r{what}: {done}/{total}", end=end, file=sys.stderr, flush=True)
