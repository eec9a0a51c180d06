"""Resolve archived files that have no index row, when a serving node starts.

A writer moves a file to its final name before committing its row (the order that never
acknowledges a file that is not durable), so a process killed between the two leaves a
final file without a row. That file was never acknowledged; it must neither count as
archived nor block the name. After a stop that was not clean (no marker, see
:meth:`node.storage.files.FileStore.take_clean_stop`) the serving node, holding the
archive lock, walks the archive once and, for each such file it can own (a live writer in
another process holds its lock and is left alone):

- adopts it when it is whole: a Part 10 file whose data set's structure holds, whose
  UIDs name exactly this file, and whose meta agrees (recorded as
  ``unindexed-file-adopted``, with the sender's AE title from the file meta);
- otherwise moves it to ``.quarantine/unindexed/<sha256>.dcm``
  (``unindexed-file-quarantined``, with the reason).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID
from sqlalchemy import select

from node.errors import NodeError, StorageError
from node.storage.archive import Archive, Custody, ReceivedInstance
from node.storage.database import instances
from node.storage.files import QUARANTINE_DIR, TEMP_DIR, HeldFile
from node.storage.header import read_header

log = logging.getLogger("node.recovery")


@dataclass(frozen=True, slots=True)
class Recovered:
    adopted: int = 0
    quarantined: int = 0
    busy: int = 0  # held by a live writer in another process: left to it


def instance_files(root: Path) -> list[PurePosixPath]:
    """``<study>/<series>/<instance>.dcm`` under ``root``, skipping dot-folders."""
    found: list[PurePosixPath] = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        relative = PurePosixPath(Path(folder).relative_to(root).as_posix())
        if len(relative.parts) != 2:
            continue
        found.extend(relative / n for n in names if n.endswith(".dcm"))
    return found


@dataclass(frozen=True, slots=True)
class Census:
    """What lies in the archive folder, set against the index (``dicom-node status``)."""

    instance_files: int  # <study>/<series>/<instance>.dcm
    unindexed: int  # of those, without an index row
    missing: int  # index rows whose file is absent
    quarantined: int  # files under .quarantine (conflicting copies, unindexed files)
    temporary: int  # writes in progress, or left by a crash (removed at start)


def census(root: Path, indexed_paths: set[str]) -> Census:
    """Count the archive's files and compare them with the index's paths."""
    on_disk = {str(p) for p in instance_files(root)}
    quarantine = root / QUARANTINE_DIR
    temporary = root / TEMP_DIR
    return Census(
        instance_files=len(on_disk),
        unindexed=len(on_disk - indexed_paths),
        missing=len(indexed_paths - on_disk),
        quarantined=sum(1 for p in quarantine.rglob("*.dcm")) if quarantine.is_dir() else 0,
        temporary=sum(1 for _ in temporary.iterdir()) if temporary.is_dir() else 0,
    )


def recover(archive: Archive) -> Recovered:
    """Adopt or set aside every final file without an index row; see the module doc."""
    with archive.engine.connect() as conn:
        indexed = set(conn.execute(select(instances.c.path)).scalars())
    adopted = quarantined = busy = 0
    for relpath in instance_files(archive.files.root):
        if str(relpath) in indexed:
            continue
        try:
            held = archive.files.settle(relpath, 0)
        except StorageError:
            busy += 1
            continue
        if held is None:
            continue  # its writer removed it
        try:
            if _indexed_meanwhile(archive, relpath):
                continue
            problem = _adopt(archive, held)
            if problem is None:
                adopted += 1
                log.warning("adopted %s, found without an index row", relpath)
            else:
                target = archive.set_aside_unindexed(held, problem)
                quarantined += 1
                log.warning("%s had no index row and %s: moved to %s", relpath, problem, target)
        finally:
            held.release()
    return Recovered(adopted, quarantined, busy)


def _indexed_meanwhile(archive: Archive, relpath: PurePosixPath) -> bool:
    with archive.engine.connect() as conn:
        query = select(instances.c.path).where(instances.c.path == str(relpath))
        return conn.execute(query).first() is not None


def _adopt(archive: Archive, held: HeldFile) -> str | None:
    """Index the held file if it is whole; else the reason it is not."""
    path = archive.files.path(held.relpath)
    try:
        meta = read_file_meta_info(path)
        ts = UID(str(meta.TransferSyntaxUID))
        data = path.read_bytes()
        # The archive writes its file meta with a group length (PS3.10 7.1).
        end = 144 + int(meta.FileMetaInformationGroupLength)
        header = read_header(data[end:], ts, max_inflated=archive.max_inflated)
        if str(meta.MediaStorageSOPInstanceUID).rstrip("\0") != header.sop_instance_uid:
            return "its file meta names another instance"
        item = ReceivedInstance(
            sop_class_uid=header.sop_class_uid,
            sop_instance_uid=header.sop_instance_uid,
            transfer_syntax_uid=str(ts),
            dataset=data[end:],
            custody=Custody(
                calling_ae=str(meta.get("SourceApplicationEntityTitle", "")).strip(),
                peer_address="",
                association_id="",
                via="recovery",
                extra={"reason": "final file without index row after an unclean stop"},
            ),
        )
        archive.adopt_unindexed(held, item, header, data[:end])
    except StorageError:
        raise
    except NodeError as exc:
        return f"cannot be adopted ({exc})"
    except Exception as exc:  # pydicom raises many types for a broken file meta
        return f"is not a readable Part 10 file ({type(exc).__name__}: {exc})"
    return None
