"""Commands ``serve`` and ``echo``."""

from __future__ import annotations

import argparse
import faulthandler
import signal
from typing import Any

from node.cli.common import EXIT_FAILED, EXIT_OK, add_config_option, load
from node.errors import UsageError


def register(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the node until SIGINT/SIGTERM")
    add_config_option(serve)
    serve.set_defaults(func=run_serve)

    echo = sub.add_parser("echo", help="C-ECHO a configured peer, partner or source")
    add_config_option(echo)
    echo.add_argument("peer", metavar="PEER", help="name or AE title of a partner or source")
    echo.set_defaults(func=run_echo)


# The signals that stop `serve`: gracefully, within node.shutdown_grace.
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def run_serve(args: argparse.Namespace) -> int:
    from node.app import build_node, configure_libraries, ensure_development_key
    from node.preflight import check_serve, hold_archive

    config = load(args)
    configure_libraries(config)
    # Everything that can be checked is checked before anything is written (node.preflight),
    # and nothing else writes before this process holds the archive.
    check_serve(config)
    lock = hold_archive(config)
    try:
        ensure_development_key(config)
        node = build_node(config)
        # SIGTERM and SIGINT are blocked here, before any thread starts (threads inherit
        # the mask), and taken by sigwait() in this thread alone. A Python handler that set
        # an Event deadlocked when the signal landed while this thread was inside that
        # Event's own wait() (the node then never stopped; seen once under load).
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        # `kill -USR1 <pid>` prints every thread's stack to stderr: a node that does not
        # stop, or hangs, can be looked into without stopping it.
        faulthandler.register(signal.SIGUSR1, all_threads=True)
        node.start()
        # Readiness line for supervisors and tests: the port is known only now.
        print(f"ready {config.node.ae_title} port {node.port}", flush=True)
        if node.web is not None:
            print(f"ready http {node.web.url}", flush=True)
        signal.sigwait(STOP_SIGNALS)
        node.stop()
    finally:
        lock.release()
    return EXIT_OK


def run_echo(args: argparse.Namespace) -> int:
    from node.scu.associate import echo

    config = load(args)
    remote = config.remote(args.peer)
    if remote is None:
        raise UsageError(f"no partner or source named {args.peer!r} in {config.source}")
    ok, message = echo(config, remote)
    print(message)
    return EXIT_OK if ok else EXIT_FAILED
