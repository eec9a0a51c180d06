"""Sign a document the node built, archive it, record it, and give it a sidecar.

One pipeline for every signed document the node makes itself (PS3.17 Annex W): the KOS
"Signed Complete Acquisition Content" and "Signed Manifest"; reports (signed by people,
not by the node) use its second half, :func:`archive_document`. Order: sign (PS3.15
C.1, SR profile), store the signed bytes through the archive's one durable write path as
a received instance whose custody names the builder, append the custody event, then
write the node's ``.dcm.sig`` sidecar (:mod:`node.integrity`) over the stored file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from node.config import NodeConfig
from node.documents.kos import Reference
from node.errors import NodeError, UsageError
from node.integrity import load_signer as load_sidecar_signer
from node.integrity import write_sidecar
from node.integrity.export import snapshot_for
from node.integrity.signer import SidecarSigner
from node.signatures import Profile, Signer
from node.signatures.dsencode import encode_explicit_le  # pydicom's bytes, faster
from node.signatures.keycache import SignerCache
from node.signatures.purposes import Purpose
from node.signatures.references import secure_references, secure_references_many
from node.signatures.sign import sign_encoded
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


@dataclass(frozen=True, slots=True)
class Provenance:
    """What a document was made for and by: custody and audit fields.

    ``origin`` becomes the custody's association id (e.g. ``transfer:12``), ``via`` names
    the builder, ``event`` is the audit event, ``details`` its fields; ``custody`` are the
    (short) extra custody fields of the stored instance.
    """

    origin: str
    via: str
    event: str
    details: dict[str, Any] = field(default_factory=dict)
    custody: dict[str, Any] = field(default_factory=dict)


def archive_document(
    config: NodeConfig,
    archive: Archive,
    ds: Dataset,
    provenance: Provenance,
    *,
    encoded: bytes | None = None,
    sidecar_signer: SidecarSigner | None = None,
) -> Archived:
    """Store a finished document (``encoded``, else ``ds`` encoded now), record, sidecar."""
    uid = str(ds.SOPInstanceUID)
    outcome = archive.store(
        ReceivedInstance(
            sop_class_uid=str(ds.SOPClassUID),
            sop_instance_uid=uid,
            transfer_syntax_uid=ExplicitVRLittleEndian,
            dataset=encoded if encoded is not None else encode_explicit_le(ds),
            custody=Custody(
                config.node.ae_title,
                "local",
                provenance.origin,
                via=provenance.via,
                extra=provenance.custody,
            ),
        )
    )
    if outcome.result is not StoreResult.STORED:
        raise NodeError(f"document {uid} was already archived with other content")
    study_uid = outcome.header.study_uid
    with archive.engine.begin() as conn:
        audit.append(
            conn, provenance.event, study_uid=study_uid, sop_instance_uid=uid,
            details=provenance.details,
        )  # fmt: skip
    stored = archive.files.path(outcome.relpath)
    history = audit.records(archive.engine, study_uid=study_uid)
    if sidecar_signer is None:
        signing = config.signing
        sidecar_signer = load_sidecar_signer(
            signing.key, signing.certificate, signing.passphrase_env
        )
    write_sidecar(stored, snapshot_for(history, uid), config.node.ae_title, sidecar_signer)
    return Archived(uid, study_uid, stored)


class DocumentPublisher:
    """Makes the node's own signed documents; one per node, so the key is loaded once."""

    def __init__(self, config: NodeConfig, archive: Archive) -> None:
        self.config = config
        self.archive = archive
        self.signers = SignerCache()

    def references(
        self, rows: Sequence[InstanceRow], trust: Sequence[x509.Certificate]
    ) -> list[Reference]:
        """Secure references (MAC, verified signatures) to archived instances, threaded."""
        paths = [self.archive.files.path(row.path) for row in rows]
        algorithm = self.config.signing.mac_algorithm.value
        secured = secure_references_many(paths, algorithm, trust)
        return [_reference(row, *found) for row, found in zip(rows, secured, strict=True)]

    def publish_signed(self, ds: Dataset, purpose: Purpose, provenance: Provenance) -> Published:
        """Sign ``ds`` with the node's key (SR profile) and archive exactly the signed bytes."""
        signing = self.config.signing
        signer = self.signers.get(signing.key, signing.certificate, signing.passphrase_env)
        info, signed = sign_encoded(
            ds, signer, profile=Profile.SR, purpose=purpose,
            mac_algorithm=signing.mac_algorithm.value,
        )  # fmt: skip
        details = {**provenance.details, "signature_uid": info.uid, "signer": signer.subject}
        signed_provenance = dataclasses.replace(provenance, details=details)
        archived = archive_document(
            self.config,
            self.archive,
            ds,
            signed_provenance,
            encoded=signed,
            sidecar_signer=_sidecar_signer(signer),
        )
        return Published(
            archived.sop_instance_uid, archived.study_uid, archived.path, info.uid, signer.subject
        )


def secure_reference(
    archive: Archive, row: InstanceRow, algorithm: str, trust: Sequence[x509.Certificate]
) -> Reference:
    """A secure reference to one archived instance (for many, use the publisher's)."""
    return _reference(row, *secure_references(archive.files.path(row.path), algorithm, trust))


def _reference(row: InstanceRow, mac: Dataset, signatures: list[Dataset]) -> Reference:
    return Reference(
        sop_class_uid=row.sop_class_uid,
        sop_instance_uid=row.sop_instance_uid,
        series_uid=row.series_uid,
        study_uid=row.study_uid,
        mac_items=[mac],
        signature_items=signatures,
    )


def _sidecar_signer(signer: Signer) -> SidecarSigner:
    """The sidecar's signer, from the key already loaded for the DICOM signature."""
    if isinstance(signer.key, dsa.DSAPrivateKey):
        raise UsageError("only RSA, ECDSA and Ed25519 keys can sign manifests")
    return SidecarSigner(signer.key, signer.certificate)
