"""Sign a document the node built, archive it, record it, and give it a sidecar.

One pipeline for every signed document the node makes itself (PS3.17 Annex W): the KOS
"Signed Complete Acquisition Content" and "Signed Manifest". Order: sign (PS3.15 C.1, SR
profile), store through the archive's one durable write path as a received instance
whose custody names the builder, append the custody event, then write the ``.dcm.sig``
sidecar (PRODUCT.md "Integrity manifest sidecar") over the stored file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian

from node.config import NodeConfig
from node.documents.kos import Reference
from node.errors import NodeError
from node.integrity import load_signer as load_manifest_signer
from node.integrity import write_sidecar
from node.integrity.export import snapshot_for
from node.signatures import Profile, load_signer, secure_references, sign_dataset
from node.signatures.purposes import Purpose
from node.storage import audit
from node.storage.archive import Archive, Custody, ReceivedInstance, StoreResult
from node.storage.index import InstanceRow


@dataclass(frozen=True, slots=True)
class Archived:
    sop_instance_uid: str
    study_uid: str
    path: Path


@dataclass(frozen=True, slots=True)
class Published:
    sop_instance_uid: str
    study_uid: str
    path: Path
    signature_uid: str
    signer: str


def encode_explicit_le(ds: Dataset) -> bytes:
    """The data set as Explicit VR Little Endian bytes, the syntax documents are stored in."""
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_dataset(fp, ds)
    return fp.getvalue()


def secure_reference(
    archive: Archive, row: InstanceRow, algorithm: str, trust: list[x509.Certificate]
) -> Reference:
    """A reference to an archived instance with its MAC and verified-signature items."""
    mac, signatures = secure_references(archive.files.path(row.path), algorithm, trust)
    return Reference(
        sop_class_uid=row.sop_class_uid,
        sop_instance_uid=row.sop_instance_uid,
        series_uid=row.series_uid,
        study_uid=row.study_uid,
        mac_items=[mac],
        signature_items=signatures,
    )


def archive_document(
    config: NodeConfig,
    archive: Archive,
    ds: Dataset,
    *,
    origin: str,
    via: str,
    event: str,
    details: dict[str, Any],
) -> Archived:
    """Store a finished (signed) document the node made, record ``event``, write its sidecar.

    ``origin`` names what the document was made for (it becomes the custody's association
    id, e.g. ``transfer:12``); ``via`` names the builder.
    """
    uid = str(ds.SOPInstanceUID)
    outcome = archive.store(
        ReceivedInstance(
            sop_class_uid=str(ds.SOPClassUID),
            sop_instance_uid=uid,
            transfer_syntax_uid=ExplicitVRLittleEndian,
            dataset=encode_explicit_le(ds),
            custody=Custody(config.node.ae_title, "local", origin, via=via, extra=details),
        )
    )
    if outcome.result is not StoreResult.STORED:
        raise NodeError(f"document {uid} was already archived with other content")
    study_uid = outcome.header.study_uid
    with archive.engine.begin() as conn:
        audit.append(conn, event, study_uid=study_uid, sop_instance_uid=uid, details=details)
    stored = archive.files.path(outcome.relpath)
    history = audit.records(archive.engine, study_uid=study_uid)
    signing = config.signing
    manifest_signer = load_manifest_signer(signing.key, signing.certificate, signing.passphrase_env)
    write_sidecar(stored, snapshot_for(history, uid), config.node.ae_title, manifest_signer)
    return Archived(uid, study_uid, stored)


def publish_signed(
    config: NodeConfig,
    archive: Archive,
    ds: Dataset,
    *,
    purpose: Purpose,
    origin: str,
    via: str,
    event: str,
    details: dict[str, Any],
) -> Published:
    """Sign ``ds`` with the node's key (SR profile), then :func:`archive_document` it."""
    signing = config.signing
    signer = load_signer(signing.key, signing.certificate, signing.passphrase_env)
    info = sign_dataset(
        ds, signer, profile=Profile.SR, purpose=purpose, mac_algorithm=signing.mac_algorithm.value
    )
    signed = {**details, "signature_uid": info.uid, "signer": signer.subject}
    archived = archive_document(
        config, archive, ds, origin=origin, via=via, event=event, details=signed
    )
    return Published(
        archived.sop_instance_uid, archived.study_uid, archived.path, info.uid, signer.subject
    )
