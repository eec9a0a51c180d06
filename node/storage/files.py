"""Crash-safe file writing for the archive.

A file appears under its final name only once it is complete and on disk: the bytes go
to a temporary file in ``<archive>/.tmp`` (same filesystem), are flushed and fsynced,
then moved to the final name without overwriting (``renameat2`` with RENAME_NOREPLACE
where the kernel and filesystem offer it, else a hard link and an unlink: both fail
rather than replace an existing file), and the directory is fsynced. A crash leaves at
most a temporary file, which never counts as an instance and is removed at the next
start.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import uuid
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from node.errors import StorageError
from node.storage.uids import checked_uid
from node.vectored import write_vectored

_RESOURCE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS}
TEMP_DIR = ".tmp"
QUARANTINE_DIR = ".quarantine"
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


class FileStore:
    """The archive folder: atomic, durable, never-overwriting writes."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        self.fsync = fsync
        self._tmp = root / TEMP_DIR

    def prepare(self) -> int:
        """Create the folders and remove temporary files a crash left; return how many.

        Only the serving node may call this: another process's writes in progress
        would be removed. Commands running beside it use :meth:`ensure_folders`.
        """
        self.ensure_folders()
        removed = 0
        for leftover in self._tmp.iterdir():
            leftover.unlink(missing_ok=True)
            removed += 1
        return removed

    def ensure_folders(self) -> None:
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path(self, relpath: PurePosixPath | str) -> Path:
        return self.root / relpath

    def write_new(self, relpath: PurePosixPath, chunks: Iterable[bytes]) -> None:
        """Durably write a file that must not exist yet.

        Raises FileExistsError if the final name is taken (nothing is changed then),
        StorageError for disk full or I/O errors (no residue is left).
        """
        self._write(relpath, chunks, overwrite=False)

    def replace(self, relpath: PurePosixPath, chunks: Iterable[bytes]) -> None:
        """Durably write a file, atomically replacing an unindexed one of that name."""
        self._write(relpath, chunks, overwrite=True)

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

    def _write(self, relpath: PurePosixPath, chunks: Iterable[bytes], *, overwrite: bool) -> None:
        final = self.path(relpath)
        tmp = self._tmp / f"{os.getpid()}-{uuid.uuid4().hex}.part"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                self._write_all(fd, list(chunks))
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            created = self._make_dirs(final.parent)
            if overwrite:
                os.replace(tmp, final)
            else:
                move_no_replace(tmp, final)  # atomic, and fails rather than overwrite
            for directory in (final.parent, *created):
                self._sync_dir(directory)
        except FileExistsError:
            tmp.unlink(missing_ok=True)
            raise
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            kind = "no space left" if exc.errno in _RESOURCE_ERRNOS else "I/O error"
            raise StorageError(f"cannot write {relpath}: {kind} ({exc.strerror})") from exc

    def _write_all(self, fd: int, chunks: list[bytes]) -> None:
        """Write ``chunks`` in order with as few system calls as the kernel allows."""
        write_vectored(chunks, lambda views: os.writev(fd, views))

    def _make_dirs(self, directory: Path) -> list[Path]:
        """Create missing folders; return the parents whose entries changed, deepest first."""
        changed: list[Path] = []
        missing: list[Path] = []
        probe = directory
        while not probe.exists():
            missing.append(probe)
            probe = probe.parent
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:
                continue  # another receiver made it: its creator syncs the parent
            changed.insert(0, folder.parent)
        return changed

    def _sync_dir(self, directory: Path) -> None:
        if not self.fsync:
            return
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
