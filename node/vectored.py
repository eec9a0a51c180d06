"""Writing a list of buffers with vectored system calls (sendmsg, writev)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

# Buffers per call: well under the kernel's IOV_MAX (1024 on Linux).
IOV_BATCH = 512


def write_vectored(
    buffers: Sequence[bytes | memoryview], write: Callable[[list[memoryview]], int]
) -> None:
    """Write ``buffers`` in order through ``write`` (which may write only part of them)."""
    pending = [memoryview(b).cast("B") for b in buffers if len(b)]
    while pending:
        written = write(pending[:IOV_BATCH])
        while written:
            if written >= len(pending[0]):
                written -= len(pending.pop(0))
            else:
                pending[0] = pending[0][written:]
                written = 0
