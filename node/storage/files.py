"""Crash-safe file writing for the archive.

A file appears under its final name only once it is complete and on disk: the bytes go
to a temporary file in ``<archive>/.tmp`` (same filesystem), are flushed and fsynced,
then given the final name by a hard link (which fails rather than replace an existing
file), and the folder is fsynced, as is every folder above it the first time this process
uses it (whoever created it). A crash leaves at most a temporary file, which never counts
as an instance and is removed at the next start, or a final file without its index row,
which the serving node resolves at the next start (:mod:`node.storage.recovery`).

Exactly one writer owns a final name: the name is taken without replacing, and its writer
holds an exclusive ``flock`` on the file from before the name exists until it releases
the :class:`HeldFile` (after the index commit, or after removing the file). A second
receiver of the same instance waits on that lock (:meth:`FileStore.settle`) instead of
guessing from a missing index row; no code path replaces an archived file.

The temporary name stays linked until the writer releases the file: a temporary file with
a second link at start means some writer (the node, or a command beside it) died between
the final name and its commit, so the archive must be checked even after a clean stop.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import os
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from node.errors import StorageError
from node.storage.uids import checked_uid
from node.vectored import write_vectored

_RESOURCE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS}
TEMP_DIR = ".tmp"
QUARANTINE_DIR = ".quarantine"
CLEAN_STOP_MARKER = ".clean-stop"  # written by a serving node that stopped cleanly
_DURABLE_CACHE = 100_000  # folders remembered as synced
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def _renameat2() -> ctypes._NamedFuncPointer | None:
    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not glibc >= 2.28, or not Linux
        return None
    func.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    func.restype = ctypes.c_int
    return func


_RENAMEAT2 = _renameat2()


def move_no_replace(source: Path, target: Path) -> None:
    """Give ``source`` the name ``target`` unless ``target`` exists (FileExistsError).

    One system call where renameat2(RENAME_NOREPLACE) works; otherwise link + unlink,
    which has the same outcome for a file no one else holds.
    """
    if _RENAMEAT2 is not None:
        old, new = os.fsencode(source), os.fsencode(target)
        if _RENAMEAT2(_AT_FDCWD, old, _AT_FDCWD, new, _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(code, os.strerror(code), str(target))
    os.link(source, target)
    source.unlink()


def write_atomic(target: Path, data: bytes) -> None:
    """Replace a small file (a sidecar, a signed copy) atomically and durably.

    Written to ``.<name>.<random>`` beside the target, fsynced, renamed over it, and the
    folder fsynced: a reader never sees a half-written file, and after a crash either the
    old or the new one is there.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with temporary.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    folder = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def instance_relpath(study_uid: str, series_uid: str, sop_instance_uid: str) -> PurePosixPath:
    """``<study>/<series>/<instance>.dcm``, built only from validated UIDs."""
    return PurePosixPath(
        checked_uid(study_uid, "Study Instance UID"),
        checked_uid(series_uid, "Series Instance UID"),
        checked_uid(sop_instance_uid, "SOP Instance UID") + ".dcm",
    )


def quarantine_relpath(sop_instance_uid: str, sha256: str) -> PurePosixPath:
    """Where a second, different copy of an instance is kept aside."""
    if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
        raise ValueError("sha256 must be 64 lowercase hex digits")
    return PurePosixPath(
        QUARANTINE_DIR, checked_uid(sop_instance_uid, "SOP Instance UID"), f"{sha256}.dcm"
    )


def unindexed_quarantine_relpath(sha256: str) -> PurePosixPath:
    """Where a file found without an index row, and not adoptable, is kept aside."""
    aside = quarantine_relpath("0", sha256)  # validates the digest
    return PurePosixPath(QUARANTINE_DIR, "unindexed", aside.name)


class HeldFile:
    """A final file its writer still owns (an exclusive flock on its inode)."""

    def __init__(
        self, store: FileStore, relpath: PurePosixPath, fd: int, temporary: Path | None = None
    ) -> None:
        self.store = store
        self.relpath = relpath
        self._fd: int | None = fd
        self._temporary = temporary  # the writer's second name, dropped at release

    def remove(self) -> None:
        """Remove the file while still owning it (its bytes were never acknowledged)."""
        self.store.remove(self.relpath)

    def release(self) -> None:
        if self._temporary is not None:
            with contextlib.suppress(OSError):  # a start-up cleanup may have taken it
                self._temporary.unlink()
            self._temporary = None
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None


@dataclass(frozen=True, slots=True)
class Leftovers:
    """Temporary files a start found: how many were removed, and how many of those
    still had a final name (their writer died before releasing it)."""

    removed: int = 0
    linked: int = 0


class FileStore:
    """The archive folder: atomic, durable, never-overwriting writes."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        self.fsync = fsync
        self._tmp = root / TEMP_DIR
        self._durable: set[Path] = set()  # folders whose entries this process synced

    def prepare(self) -> Leftovers:
        """Create the folders and remove the temporary files crashed writers left.

        A temporary file whose lock is held belongs to a live writer (a command running
        beside the node) and is left alone. Only the serving node calls this.
        """
        self.ensure_folders()
        removed = linked = 0
        for leftover in self._tmp.iterdir():
            try:
                fd = os.open(leftover, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                if os.fstat(fd).st_nlink > 1:
                    linked += 1
                leftover.unlink(missing_ok=True)
                removed += 1
            finally:
                os.close(fd)
        return Leftovers(removed, linked)

    def ensure_folders(self) -> None:
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path(self, relpath: PurePosixPath | str) -> Path:
        return self.root / relpath

    def write_new(self, relpath: PurePosixPath, chunks: Iterable[bytes]) -> None:
        """Durably write a file that must not exist yet.

        Raises FileExistsError if the final name is taken (nothing is changed then),
        StorageError for disk full or I/O errors (no residue is left).
        """
        self.write_held(relpath, chunks).release()

    def write_held(self, relpath: PurePosixPath, chunks: Iterable[bytes]) -> HeldFile:
        """:meth:`write_new`, returning the file still owned by the caller.

        Whoever finds the name taken meanwhile waits in :meth:`settle` until the caller
        releases it, so the index row can be committed before anyone compares with it.
        """
        return self._write(relpath, chunks)

    def settle(self, relpath: PurePosixPath, timeout: float) -> HeldFile | None:
        """Wait until the writer of the existing file ``relpath`` has let it go.

        Returns the file, now owned by the caller (exclusively), or None when it was
        removed or replaced meanwhile (the caller tries again). Raises StorageError if
        the writer (another process) still holds it after ``timeout`` seconds.
        """
        path = self.path(relpath)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            deadline = time.monotonic() + timeout
            pause, delay = threading.Event(), 0.001
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise StorageError(
                            f"another process is still storing {relpath.name}"
                        ) from None
                    pause.wait(delay)  # back off: the writer is fsyncing or committing
                    delay = min(delay * 2, 0.05)
            now = os.stat(path)
            held = os.fstat(fd)
        except FileNotFoundError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        if (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
            os.close(fd)
            return None
        return HeldFile(self, relpath, fd)

    def set_aside(self, held: HeldFile, target: PurePosixPath) -> None:
        """Move a held file out of its final name to ``target`` (quarantine).

        Only the serving node's recovery does this, for a file with no index row whose
        writer is gone; an identical copy already at ``target`` makes it a removal.
        """
        destination = self.path(target)
        self._make_dirs(destination.parent)
        try:
            move_no_replace(self.path(held.relpath), destination)
        except FileExistsError:
            self.path(held.relpath).unlink()
        for directory in (self.path(held.relpath).parent, destination.parent):
            self._sync_dir(directory)
        self._sync_ancestors(destination.parent)

    def take_clean_stop(self) -> bool:
        """True if the last serving node stopped cleanly; the marker is consumed, so a
        crash from here on leaves none."""
        marker = self.root / CLEAN_STOP_MARKER
        if not marker.exists():
            return False
        marker.unlink()
        self._sync_dir(self.root)
        return True

    def writes_in_progress(self) -> bool:
        """Whether any process holds a temporary file (a write not yet released)."""
        return any(self._tmp.iterdir())

    def mark_clean_stop(self) -> None:
        write_atomic(self.root / CLEAN_STOP_MARKER, b"stopped cleanly\n")

    def sha256(self, relpath: PurePosixPath | str) -> str:
        """SHA-256 of a stored file, read in 1 MiB blocks."""
        digest = hashlib.sha256()
        with self.path(relpath).open("rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
        return digest.hexdigest()

    def remove(self, relpath: PurePosixPath) -> None:
        path = self.path(relpath)
        path.unlink(missing_ok=True)
        self._sync_dir(path.parent)

    def _write(self, relpath: PurePosixPath, chunks: Iterable[bytes]) -> HeldFile:
        final = self.path(relpath)
        tmp = self._tmp / f"{os.getpid()}-{uuid.uuid4().hex}.part"
        fd, linked = -1, False
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            # Owned from before the final name exists: see the module docstring.
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._write_all(fd, list(chunks))
            if self.fsync:
                os.fsync(fd)
            self._make_dirs(final.parent)
            os.link(tmp, final)  # atomic, and fails rather than overwrite
            linked = True
            self._sync_dir(final.parent)
            self._sync_ancestors(final.parent)
        except BaseException as exc:
            # Best effort: the original error is what the caller must see.
            with contextlib.suppress(OSError):
                tmp.unlink()
            if linked:  # never durable under its name: it must not stay there
                with contextlib.suppress(OSError):
                    final.unlink()
            if fd >= 0:
                os.close(fd)
            if isinstance(exc, OSError) and not isinstance(exc, FileExistsError):
                kind = "no space left" if exc.errno in _RESOURCE_ERRNOS else "I/O error"
                raise StorageError(f"{kind}: cannot write {relpath} ({exc.strerror})") from exc
            raise
        return HeldFile(self, relpath, fd, tmp)

    def _write_all(self, fd: int, chunks: list[bytes]) -> None:
        """Write ``chunks`` in order with as few system calls as the kernel allows."""
        write_vectored(chunks, lambda views: os.writev(fd, views))

    def _make_dirs(self, directory: Path) -> None:
        """Create missing folders (another receiver may be creating them too)."""
        if not directory.is_dir():
            directory.mkdir(parents=True, exist_ok=True)

    def _sync_ancestors(self, directory: Path) -> None:
        """Make the entries of ``directory`` and its parents up to the root durable, once
        per process: a folder another writer created may not be synced yet when this
        writer's file in it is acknowledged."""
        chain: list[Path] = []
        probe = directory
        while probe != self.root and probe not in self._durable:
            chain.append(probe)
            probe = probe.parent
        for folder in chain:
            self._sync_dir(folder.parent)  # a folder's entry lives in its parent
        if len(self._durable) > _DURABLE_CACHE:
            self._durable.clear()  # only a cache: forgetting costs a few fsyncs
        self._durable.update(chain)

    def _sync_dir(self, directory: Path) -> None:
        if not self.fsync:
            return
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
