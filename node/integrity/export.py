"""Export a study with an integrity manifest per file: one use case.

For each instance of the study (its KOS documents included, they are instances of a KO
series), in series then instance order:

1. copy the archived file to ``<name>_export.dcm`` (temporary name, fsync, rename),
   checking on the way that its bytes still have the SHA-256 recorded at reception -- a
   file corrupted in the archive is not exported with a fresh manifest that vouches for it;
2. append an ``exported`` custody record (path, OS user, host, hash), committed;
3. write ``<name>_export.dcm.sig`` whose snapshot holds that record too.

``<study uid>_index.json`` is written twice: first, before any file, listing every file
the export will write (name, SOP Instance UID, size and SHA-256 from the index) with
``"complete": false``; last, once every pair is durable, with the sidecars' SHA-256 and
``"complete": true``. An interrupted export therefore leaves an index that names the
files it lacks and says it did not finish, and ``verify-manifest DIR`` fails on it
(node.integrity.folder).

Naming rule: ``<modality>_S<series number>_I<instance number>_<uid tail>``, where the
uid tail is the last 8 characters of the SOP Instance UID with dots as hyphens, e.g.
``CT_S2_I15_4-567890_export.dcm``. Missing numbers become 0, an unknown modality ``OT``;
if two instances still get one name, later ones get ``-2``, ``-3``, ... appended.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from node.errors import OperationFailed, UsageError
from node.integrity import sidecar as fmt
from node.integrity.signer import SidecarSigner
from node.storage import audit
from node.storage.audit import AuditEvent, AuditRecord
from node.storage.index import study_files_in_order
from node.storage.uids import is_valid_uid

EXPORT_SUFFIX = "_export.dcm"
INDEX_SUFFIX = "_index.json"
INDEX_FORMAT = "dicom-node-export-index"
INDEX_VERSION = 2  # 2: "complete", and the index is written first (1: written last only)
UID_TAIL = 8
_CHUNK = 1 << 20

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class ExportItem:
    """One instance to export, with what its readable name is made of."""

    sop_instance_uid: str
    study_uid: str
    path: str  # relative to the archive root
    size: int
    sha256: str
    modality: str
    series_number: str
    instance_number: str


@dataclass(frozen=True, slots=True)
class ExportedFile:
    sop_instance_uid: str
    file: Path
    sidecar: Path
    size: int
    sha256: str
    sidecar_sha256: str


@dataclass(frozen=True, slots=True)
class ExportResult:
    study_uid: str
    files: tuple[ExportedFile, ...]
    index: Path
    signer: str | None


def study_items(engine: Engine, study_uid: str) -> list[ExportItem]:
    """The study's instances with modality and numbers, in series then instance order."""
    items = [ExportItem(*row) for row in study_files_in_order(engine, study_uid)]
    # Numbers are IS strings in the index; sort them as numbers, then by UID for stability.
    return sorted(
        items,
        key=lambda i: (_number(i.series_number), _number(i.instance_number), i.sop_instance_uid),
    )


def _number(value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        return 0


def base_name(item: ExportItem) -> str:
    """``<modality>_S<series>_I<instance>_<uid tail>`` (see the module docstring)."""
    modality = re.sub(r"[^A-Z0-9]", "", item.modality.upper()) or "OT"
    tail = item.sop_instance_uid[-UID_TAIL:].replace(".", "-")
    return f"{modality}_S{_number(item.series_number)}_I{_number(item.instance_number)}_{tail}"


def export_names(items: Iterable[ExportItem]) -> list[str]:
    """A distinct ``<name>_export.dcm`` per item, in order."""
    names: list[str] = []
    seen: set[str] = set()
    for item in items:
        base = candidate = base_name(item)
        counter = 1
        while candidate in seen:
            counter += 1
            candidate = f"{base}-{counter}"
        seen.add(candidate)
        names.append(candidate + EXPORT_SUFFIX)
    return names


def export_study(
    engine: Engine,
    archive_root: Path,
    study_uid: str,
    out_dir: Path,
    *,
    ae_title: str,
    signer: SidecarSigner | None = None,
    progress: Progress | None = None,
) -> ExportResult:
    """Export every instance of the study into ``out_dir`` (see the module docstring).

    Refuses (UsageError) an unknown study or an ``out_dir`` that already holds one of the
    files: exported evidence is never overwritten. A file whose archived bytes no longer
    match their recorded hash stops the export (OperationFailed).
    """
    if not is_valid_uid(study_uid):
        raise UsageError(f"{study_uid!r} is not a valid Study Instance UID")
    items = study_items(engine, study_uid)
    if not items:
        raise UsageError(f"study {study_uid} is not in the archive")
    names = export_names(items)
    index_path = out_dir / f"{study_uid}{INDEX_SUFFIX}"
    targets = [out_dir / n for n in names]
    clashes = [p for p in (*targets, *map(fmt.sidecar_path, targets), index_path) if p.exists()]
    if clashes:
        raise UsageError(f"{clashes[0]} already exists; export into an empty folder")
    out_dir.mkdir(parents=True, exist_ok=True)

    # First the plan, so that a folder cut short says so (see the module docstring).
    planned = [
        _entry(target, item.sop_instance_uid, item.size, item.sha256, None)
        for item, target in zip(items, targets, strict=True)
    ]
    _write_index(index_path, study_uid, ae_title, planned, signer, complete=False)
    history = audit.records(engine, study_uid=study_uid)
    who = _who()
    exported: list[ExportedFile] = []
    for done, (item, target) in enumerate(zip(items, targets, strict=True), start=1):
        size, digest = _copy_checked(archive_root / item.path, target, item.sha256)
        record = _record_export(engine, item, target, size, digest, who, ae_title, signer)
        history.append(record)
        sidecar = fmt.write_sidecar(
            target, snapshot_for(history, item.sop_instance_uid), ae_title, signer
        )
        sidecar_sha = fmt.sha256_hex(sidecar.read_bytes())
        exported.append(
            ExportedFile(item.sop_instance_uid, target, sidecar, size, digest, sidecar_sha)
        )
        if progress:
            progress(done, len(items))
    written = [
        _entry(e.file, e.sop_instance_uid, e.size, e.sha256, e.sidecar_sha256) for e in exported
    ]
    _write_index(index_path, study_uid, ae_title, written, signer, complete=True)
    return ExportResult(study_uid, tuple(exported), index_path, signer.subject if signer else None)


def snapshot_for(history: Sequence[AuditRecord], sop_instance_uid: str) -> list[AuditRecord]:
    """The custody records of one instance and of its study as a whole.

    A record belongs when it names the instance, names no instance (a study-level event
    such as an MPPS step), or mentions the instance's UID anywhere in its details (a KOS
    built over it, a send that included it).
    """
    return [
        r
        for r in history
        if r.sop_instance_uid in (None, sop_instance_uid) or _mentions(r.details, sop_instance_uid)
    ]


def _mentions(value: Any, uid: str) -> bool:
    if isinstance(value, str):
        return value == uid
    if isinstance(value, dict):
        return any(_mentions(v, uid) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_mentions(v, uid) for v in value)
    return False


def _who() -> dict[str, str]:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        user = f"uid {os.getuid()}"
    return {"user": user, "host": socket.gethostname()}


def _copy_checked(source: Path, target: Path, expected_sha256: str) -> tuple[int, str]:
    """Copy durably under a temporary name, hashing as we go; rename only if intact."""
    temporary = target.with_name(f".{target.name}.tmp")
    digest = hashlib.sha256()
    size = 0
    try:
        with source.open("rb") as src, temporary.open("wb") as out:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise OperationFailed(f"cannot copy {source} to {target}: {exc.strerror or exc}") from exc
    if digest.hexdigest() != expected_sha256:
        temporary.unlink(missing_ok=True)
        raise OperationFailed(
            f"{source} no longer matches the SHA-256 recorded when it was received; "
            "not exporting it (check the archive)"
        )
    temporary.replace(target)
    return size, digest.hexdigest()


def _record_export(
    engine: Engine,
    item: ExportItem,
    target: Path,
    size: int,
    digest: str,
    who: dict[str, str],
    ae_title: str,
    signer: SidecarSigner | None,
) -> AuditRecord:
    details = {
        "path": str(target.resolve()),
        "sha256": digest,
        "size": size,
        "ae_title": ae_title,
        "signed_by": signer.subject if signer else None,
        **who,
    }
    with engine.begin() as conn:
        return audit.append(
            conn,
            AuditEvent.EXPORTED,
            study_uid=item.study_uid,
            sop_instance_uid=item.sop_instance_uid,
            details=details,
        )


def _entry(
    file: Path, sop_instance_uid: str, size: int, sha256: str, sidecar_sha256: str | None
) -> dict[str, Any]:
    return {
        "file": file.name,
        "sop_instance_uid": sop_instance_uid,
        "size": size,
        "sha256": sha256,
        "sidecar": fmt.sidecar_path(file).name,
        "sidecar_sha256": sidecar_sha256,
    }


def _write_index(
    path: Path,
    study_uid: str,
    ae_title: str,
    entries: Sequence[dict[str, Any]],
    signer: SidecarSigner | None,
    *,
    complete: bool,
) -> None:
    """Write (or replace, atomically) the study's index; ``complete`` only at the end."""
    index = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "study_uid": study_uid,
        "ae_title": ae_title,
        "created": audit.utc_now(),
        "signed_by": signer.subject if signer else None,
        "complete": complete,
        "files": list(entries),
    }
    text = json.dumps(index, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    fmt.write_atomic(path, text.encode())
