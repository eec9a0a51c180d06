"""One background thread that runs submitted calls in order, off the association threads.

Used for work that follows a C-STORE but does not decide its answer (the MPPS wait
look-up): the response goes out as soon as the instance is durable, and that work
overlaps the next instance's disk waits instead of delaying it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("node.jobs")

_STOP = object()


class SerialWorker:
    def __init__(self, name: str) -> None:
        self._name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False
        self._lock = threading.Lock()

    def submit(self, func: Callable[..., Any], *args: Any) -> None:
        with self._lock:
            if not self._started:
                self._started = True
                self._thread.start()
        self._queue.put((func, args))

    def drain(self, timeout: float) -> bool:
        """Wait until everything submitted so far has run; False on timeout."""
        with self._lock:
            if not self._started:
                return True
        done = threading.Event()
        self._queue.put((done.set, ()))
        return done.wait(timeout)

    def stop(self, timeout: float) -> bool:
        """Run what was submitted, then end; False when ``timeout`` passed first."""
        with self._lock:
            if not self._started:
                return True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            func, args = item
            try:
                func(*args)
            except Exception:
                log.exception("%s: %s failed", self._name, getattr(func, "__qualname__", func))
