"""The integrity manifest (``.dcm.sig`` sidecar): its format, hashes and writer.

Format ``dicom-node-integrity-manifest`` version 1, a JSON object::

    {
      "format": "dicom-node-integrity-manifest",
      "version": 1,
      "algorithm": "SHA-256",
      "file": {"name": "CT_S1_I1_1-2-3456_export.dcm", "size": 8664, "sha256": "<hex>"},
      "audit_snapshot": [<audit record>, ...],
      "audit_snapshot_sha256": "<hex>",
      "created": "2026-11-22T10:15:00.000000+00:00",
      "ae_title": "DICOM_NODE",
      "manifest_sha256": "<hex>",
      "signature": {"algorithm": "...", "certificate": "<PEM>", "value": "<base64>"}
    }

Canonical serialisation (what is hashed and signed): the JSON of the value with keys
sorted, separators ``,`` and ``:`` without spaces, non-ASCII characters as UTF-8 (not
``\\u`` escapes), no trailing newline; exactly :func:`node.storage.audit.canonical_json`.
All numbers are integers. The sidecar on disk is the same object indented for people to
read; its whitespace is not significant.

The hashes, each lowercase hex SHA-256:

- ``file.sha256``: the bytes of the file, all of them (preamble, meta, data set);
- ``audit_snapshot_sha256``: the canonical ``audit_snapshot`` list;
- ``manifest_sha256``: the canonical manifest without ``audit_snapshot``,
  ``manifest_sha256`` and ``signature``. It covers ``audit_snapshot_sha256``, so the
  snapshot is bound through its hash; an edit of the snapshot shows as "audit snapshot
  modified", an edit of anything else as "manifest modified".
- ``signature.value``: the signature of the canonical manifest without ``signature``.

Each audit record keeps its own chain hash (``hash``, ``prev_hash``), so a snapshot can
also be compared with the node's audit log, and a later truncation of the log is
revealed by the records the sidecar holds.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from node.integrity.signer import SidecarSigner
from node.storage import audit
from node.storage.audit import AuditRecord
from node.storage.files import write_atomic

FORMAT = "dicom-node-integrity-manifest"
VERSION = 1
ALGORITHM = "SHA-256"
SIDECAR_SUFFIX = ".sig"
# Fields the manifest hash leaves out: the snapshot (bound by its own hash), the hash
# itself, and the signature (which covers the manifest hash).
UNHASHED = frozenset({"audit_snapshot", "manifest_sha256", "signature"})
_CHUNK = 1 << 20


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> tuple[int, str]:
    """(size, SHA-256 hex) of a file, read in chunks so large objects need little memory."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def sidecar_path(dcm_path: Path) -> Path:
    """``X.dcm`` -> ``X.dcm.sig``, beside the file."""
    return dcm_path.with_name(dcm_path.name + SIDECAR_SUFFIX)


def snapshot_hash(snapshot: Any) -> str:
    return sha256_hex(audit.canonical_json(snapshot))


def manifest_hash(manifest: Mapping[str, Any]) -> str:
    return sha256_hex(
        audit.canonical_json({k: v for k, v in manifest.items() if k not in UNHASHED})
    )


def signed_bytes(manifest: Mapping[str, Any]) -> bytes:
    """What the signature covers: the canonical manifest without its signature block."""
    return audit.canonical_json({k: v for k, v in manifest.items() if k != "signature"})


def build_sidecar(
    *,
    name: str,
    size: int,
    sha256: str,
    snapshot_records: Sequence[AuditRecord | Mapping[str, Any]],
    ae_title: str,
    created: str | None = None,
    signer: SidecarSigner | None = None,
) -> dict[str, Any]:
    """The manifest of a file already hashed, with its hashes and, given a signer, signed."""
    snapshot = [r.as_dict() if isinstance(r, AuditRecord) else dict(r) for r in snapshot_records]
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "algorithm": ALGORITHM,
        "file": {"name": name, "size": size, "sha256": sha256},
        "audit_snapshot": snapshot,
        "audit_snapshot_sha256": snapshot_hash(snapshot),
        "created": created or audit.utc_now(),
        "ae_title": ae_title,
    }
    manifest["manifest_sha256"] = manifest_hash(manifest)
    if signer is not None:
        manifest["signature"] = {
            "algorithm": signer.algorithm,
            "certificate": signer.certificate_pem(),
            "value": base64.b64encode(signer.sign(signed_bytes(manifest))).decode("ascii"),
        }
    return manifest


def render(manifest: Mapping[str, Any]) -> bytes:
    """The sidecar file's bytes: keys sorted, indented, UTF-8, one final newline.

    Only for people reading the file: verification re-serialises canonically.
    """
    return (json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def write_sidecar(
    dcm_path: Path,
    snapshot_records: Sequence[AuditRecord | Mapping[str, Any]],
    ae_title: str,
    signer: SidecarSigner | None = None,
    *,
    created: str | None = None,
) -> Path:
    """Write ``<dcm_path>.sig`` for the file as it is now; return the sidecar's path.

    ``snapshot_records`` are the custody records to freeze into the manifest (audit
    records or their ``as_dict()``), in log order; ``ae_title`` is the node's. With a
    ``signer`` the manifest is signed. The sidecar appears atomically (written to a
    temporary name, flushed, renamed), replacing an older sidecar of the same file.
    """
    size, digest = file_digest(dcm_path)
    manifest = build_sidecar(
        name=dcm_path.name,
        size=size,
        sha256=digest,
        snapshot_records=snapshot_records,
        ae_title=ae_title,
        created=created,
        signer=signer,
    )
    target = sidecar_path(dcm_path)
    write_atomic(target, render(manifest))
    return target
