"""Entry point of the ``dicom-node`` console script.

Each command module exposes ``register(subparsers)``, which adds its sub-commands and
sets ``func`` to a callable taking the parsed arguments and returning an exit status.
Errors the user can act on become one line on stderr and an exit status; there is no
traceback for them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from node import __version__
from node.cli.common import EXIT_FAILED, EXIT_USAGE, add_config_option, error
from node.errors import ConfigError, NodeError, OperationFailed, UsageError

COMMAND_MODULES = (
    "node.cli.serve_cmds",
    "node.cli.config_cmds",
    "node.cli.archive_cmds",
    "node.cli.signing_cmds",
    "node.cli.export_cmds",
    "node.cli.retrieve_cmds",
    "node.cli.transfer_cmds",
    "node.cli.report_cmds",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicom-node",
        description="DICOM network node with a provable chain of custody.",
    )
    parser.add_argument("--version", action="version", version=f"dicom-node {__version__}")
    # Also before the command (dicom-node -c FILE serve), as with git, docker or kubectl.
    add_config_option(parser, dest="global_config")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def prepare_environment() -> None:
    """Process environment that libraries read when they are first imported.

    pydicom imports numpy, whose OpenBLAS starts a thread per core that spins while idle;
    the node does no linear algebra, and on a small machine those threads took CPU from
    the association threads (seen with perf during C-STORE bursts). It must be set before
    numpy's first import, which building the parser triggers; an operator's own setting
    wins. The composition root is the one place that writes the environment.
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def main(argv: list[str] | None = None) -> int:
    prepare_environment()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        for problem in exc.problems:
            error(f"{exc.source}: {problem}" if exc.source else problem)
        return EXIT_USAGE
    except UsageError as exc:
        error(str(exc))
        return EXIT_USAGE
    except OperationFailed as exc:
        error(str(exc))
        return EXIT_FAILED
    except NodeError as exc:
        error(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
