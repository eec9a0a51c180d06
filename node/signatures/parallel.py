"""Bulk work over many instances on a few threads.

The work per archived instance is reading it, walking its element headers and hashing it;
hashlib releases the GIL while it hashes a large buffer, so two threads keep two cores
busy hashing while either walks headers. Results keep the order of the inputs, and the
first error stops the others and is raised in the caller.

The collector policy for such bursts is the composition root's
(:func:`node.app.configure_library_globals`), not this module's.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar, cast

T = TypeVar("T")
R = TypeVar("R")

MAX_WORKERS = 4


def default_workers() -> int:
    """One thread per core, at most MAX_WORKERS (hashing more files at once gains nothing)."""
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


def map_ordered(fn: Callable[[T], R], items: Sequence[T], workers: int | None = None) -> list[R]:
    """``[fn(x) for x in items]`` on up to ``workers`` threads (the caller's is one of them)."""
    count = min(workers or default_workers(), len(items))
    if count <= 1:
        return [fn(item) for item in items]
    results: list[R | None] = [None] * len(items)
    feed = iter(range(len(items)))  # next() on it is atomic under the GIL
    errors: list[BaseException] = []

    def work() -> None:
        for index in feed:
            if errors:
                return
            try:
                results[index] = fn(items[index])
            except BaseException as exc:  # re-raised in the caller
                errors.append(exc)
                return

    threads = [threading.Thread(target=work, daemon=True) for _ in range(count - 1)]
    for thread in threads:
        thread.start()
    work()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return cast(list[R], results)  # every slot was filled
