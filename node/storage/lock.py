"""One serving node per archive: an exclusive ``flock`` on ``<archive>/.lock``.

Two receivers on one archive and index would each clear the other's temporary files
and each resolve the other's half-written instances as leftovers of a crash, so until
several receivers are supported on purpose, ``serve`` holds this lock for the life of
the process. The kernel releases it when the process ends, however it ends (kill -9
included), so a stale lock cannot keep a node from starting. Commands that work beside
a serving node (``send``, ``studies``, ``export``...) do not take it.

The lock file holds the holder's process id, only to name it in the refusal.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from node.errors import NodeError

LOCK_NAME = ".lock"


class ArchiveInUse(NodeError):
    """Another process holds the archive lock."""

    def __init__(self, archive: Path, holder: str) -> None:
        self.archive = archive
        self.holder = holder
        who = f"process {holder}" if holder else "another process"
        super().__init__(f"{archive} is in use by another dicom-node serve ({who})")


@dataclass
class ArchiveLock:
    """The held lock; :meth:`release` (or the end of the process) gives it up."""

    path: Path
    fd: int | None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the only descriptor releases the flock
            self.fd = None


def lock_archive(archive: Path) -> ArchiveLock:
    """Take the archive's lock (creating the folder and lock file), or raise ArchiveInUse."""
    archive.mkdir(parents=True, exist_ok=True)
    path = archive / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read(fd)
        os.close(fd)
        raise ArchiveInUse(archive, holder) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return ArchiveLock(path, fd)


def archive_holder(archive: Path) -> str | None:
    """Who holds the lock ("" when unknown), or None when it is free; creates nothing."""
    try:
        fd = os.open(archive / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None  # no lock file (or no archive yet): nobody serves it
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read(fd: int) -> str:
    with contextlib.suppress(OSError):
        return os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return ""
