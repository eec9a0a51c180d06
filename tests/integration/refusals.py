"""Waiting for the node's refusal lines, and reading the matching audit records."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Engine

from node.storage import audit
from node.storage.audit import AuditEvent

# Bound for waits on something the node does by itself: generous, never the expected time.
WAIT = 30.0


class RefusalLines(logging.Handler):
    """Counts the gate's "connection ... refused (REASON)" lines as they are logged.

    The gate logs after its audit record is written, so a counted line means the
    record is in the database.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.reasons: list[str] = []
        self._changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.name == "node.association" and " refused (" in message:
            with self._changed:
                self.reasons.append(message.split(" refused (", 1)[1].split(")", 1)[0])
                self._changed.notify_all()

    def wait_for(self, reason: str, count: int = 1) -> None:
        with self._changed:
            ok = self._changed.wait_for(lambda: self.reasons.count(reason) >= count, WAIT)
        assert ok, f"{count} x {reason} not logged; logged: {self.reasons}"


_H = TypeVar("_H", bound=logging.Handler)


@contextmanager
def _attached(handler: _H) -> Iterator[_H]:
    """``handler`` on the node's association logger for the block."""
    logger = logging.getLogger("node.association")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def refusal_lines() -> contextlib.AbstractContextManager[RefusalLines]:
    return _attached(RefusalLines())


def rejected(engine: Engine) -> list[dict[str, Any]]:
    """Details of every association-rejected audit record, in order."""
    return [
        dict(r.details) for r in audit.records(engine) if r.event == AuditEvent.ASSOCIATION_REJECTED
    ]


def closed_by_node(sock: socket.socket) -> bool:
    """True once the node has closed ``sock`` (read until end of stream, bounded)."""
    sock.settimeout(WAIT)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


class EndedLines(logging.Handler):
    """Collects the association-ended lines and signals each one."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.arrived = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("association ") and " after " in message:
            self.lines.append(message)
            self.arrived.set()

    def next_line(self, timeout: float = 30) -> str:
        assert self.arrived.wait(timeout), "no association-ended line"
        self.arrived.clear()
        return self.lines[-1]


def ended_lines() -> contextlib.AbstractContextManager[EndedLines]:
    return _attached(EndedLines())


def wait_until(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll ``check`` (a state the node reaches by itself) until true, bounded."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        pause.wait(0.02)
