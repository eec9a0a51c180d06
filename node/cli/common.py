"""What every command shares: loading the configuration, output, exit statuses.

Exit statuses (PRODUCT.md): 0 success, 1 a verification or operation failed,
2 bad usage or bad configuration.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from node.config import NodeConfig, load_config

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

DEFAULT_CONFIG = Path("config/node.yaml")

# A command receives its parsed arguments and returns an exit status.
Command = Callable[[argparse.Namespace], int]


def config_path(args: argparse.Namespace) -> Path:
    """``-c/--config``, else ``$DICOM_NODE_CONFIG``, else ``config/node.yaml``."""
    given = getattr(args, "config", None)
    if given:
        return Path(given)
    env = os.environ.get("DICOM_NODE_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG


def load(args: argparse.Namespace) -> NodeConfig:
    """Load and validate the configuration named by the arguments (raises ConfigError)."""
    return load_config(config_path(args))


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="configuration file (default: $DICOM_NODE_CONFIG, else config/node.yaml)",
    )


def error(message: str) -> None:
    """One clear line on stderr."""
    print(f"dicom-node: {message}", file=sys.stderr)


def progress(done: int, total: int, what: str) -> None:
    """A progress line on a terminal; nothing when stderr is piped."""
    if not sys.stderr.isatty():
        return
    end = "\n" if done >= total else ""
    print(f"\r{what}: {done}/{total}", end=end, file=sys.stderr, flush=True)
