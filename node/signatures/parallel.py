"""Bulk work over many instances: a few threads, and no garbage collector passes.

The work per archived instance is reading it, walking its element headers and hashing it;
hashlib releases the GIL while it hashes a large buffer, so two threads keep two cores
busy hashing while either walks headers. Results keep the order of the inputs, and the
first error stops the others and is raised in the caller.

Building a 1000-reference document allocates tens of thousands of objects that all stay
alive until it is stored; the cyclic garbage collector meanwhile runs some eighty passes,
one of them over the whole heap of the node, for a third of the build time and nothing to
free. :func:`gc_paused` suspends it for such a burst; reference counting still frees
everything it can, and the collector runs again afterwards.
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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


@contextmanager
def gc_paused() -> Iterator[None]:
    """Suspend automatic garbage collection for the block (usable as a decorator).

    It is switched on again at the end only if it was on at the start, so nested or
    concurrent pauses never leave it off.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
