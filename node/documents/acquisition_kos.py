"""Build, sign and store the "Signed Complete Acquisition Content" KOS of an MPPS.

PS3.17 Annex W case 1: every instance the COMPLETED step lists gets a Referenced SOP
Instance MAC Sequence (the configured MAC algorithm) and, where the instance carries
its own signature that verifies against the trust store, a Referenced Digital
Signature Sequence. The KOS is signed under the SR RSA profile with purpose
(14, ASTM-sigpurpose, "Source Signature"), stored like any received instance in a new
KO series, given a ``.dcm.sig`` sidecar, and recorded as a custody event.

The KOS and its series UIDs are derived from the MPPS UID (UUID v5 under 2.25), so a
rebuild after a crash finds the KOS already stored instead of making a second one.
"""

from __future__ import annotations

import uuid

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, KeyObjectSelectionDocumentStorage
from sqlalchemy import func, select

from node.config import NodeConfig
from node.documents.codes import SIGNED_COMPLETE_ACQUISITION_CONTENT
from node.documents.kos import KosRequest, Reference, build_kos, patient_study_from
from node.errors import NodeError, UsageError
from node.integrity import write_sidecar
from node.integrity.export import snapshot_for
from node.integrity.signer import ManifestSigner
from node.signatures import Profile, Signer, load_trust
from node.signatures.keycache import SignerCache
from node.signatures.parallel import gc_paused
from node.signatures.purposes import SOURCE
from node.signatures.references import secure_references_many
from node.signatures.sign import sign_encoded
from node.storage import audit
from node.storage.archive import Archive, Custody, ReceivedInstance, StoreResult
from node.storage.database import mpps_expected
from node.storage.index import InstanceRow, find_instance, instances_listed_by

KOS_SERIES_NUMBER = 9901
TITLE = SIGNED_COMPLETE_ACQUISITION_CONTENT
_NAMESPACE = uuid.UUID("5b0f4c1e-8f3e-4a53-9d0c-6f2b1f0f6a35")


class KosEvent:
    BUILT = "kos-built"


def derived_uid(kind: str, source_uid: str) -> str:
    """A stable UID for ``kind`` of ``source_uid`` (PS3.5 B.2, UUID-derived)."""
    return f"2.25.{uuid.uuid5(_NAMESPACE, f'{kind}:{source_uid}').int}"


def encode_explicit_le(ds: object) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_dataset(fp, ds)  # type: ignore[arg-type]
    return fp.getvalue()


class AcquisitionKosBuilder:
    """The KosBuilder of :class:`node.mpps.acquisition.AcquisitionTracker`."""

    def __init__(self, config: NodeConfig, archive: Archive) -> None:
        self.config = config
        self.archive = archive
        self.signers = SignerCache()  # the key is validated once, not per KOS

    def _references(
        self, rows: list[InstanceRow], trust: list[x509.Certificate]
    ) -> list[Reference]:
        paths = [self.archive.files.path(row.path) for row in rows]
        algorithm = self.config.signing.mac_algorithm.value
        secured = secure_references_many(paths, algorithm, trust)  # on a few threads
        return [_reference(row, mac, sigs) for row, (mac, sigs) in zip(rows, secured, strict=True)]

    @gc_paused()  # tens of thousands of live objects: collector passes would free nothing
    def __call__(self, mpps_uid: str) -> str:
        kos_uid = derived_uid("kos", mpps_uid)
        engine = self.archive.engine
        with engine.connect() as conn:
            if find_instance(conn, kos_uid) is not None:
                return kos_uid  # built before a crash interrupted the bookkeeping
            listed = conn.execute(
                select(func.count()).where(mpps_expected.c.mpps_uid == mpps_uid)
            ).scalar_one()
            found = instances_listed_by(conn, mpps_uid)
        if not listed or len(found) != listed:
            raise NodeError(f"MPPS {mpps_uid}: not every listed instance is archived")
        trust = load_trust(self.config.trust)
        references = self._references(found, trust)
        signing = self.config.signing
        ds = build_kos(
            KosRequest(
                title=SIGNED_COMPLETE_ACQUISITION_CONTENT,
                sop_instance_uid=kos_uid,
                series_uid=derived_uid("kos-series", mpps_uid),
                series_number=KOS_SERIES_NUMBER,
                references=references,
                patient_study=patient_study_from(self.archive.files.path(found[0].path)),
                retrieve_ae_title=self.config.node.ae_title,
                device_uid=derived_uid("device", self.config.node.ae_title),
                device_name=self.config.node.ae_title,
                performed_procedure_step_uid=mpps_uid,
            )
        )
        signer = self.signers.get(signing.key, signing.certificate, signing.passphrase_env)
        info, signed = sign_encoded(  # encoded once: the stored bytes are the signed ones
            ds,
            signer,
            profile=Profile.SR,
            purpose=SOURCE,
            mac_algorithm=signing.mac_algorithm.value,
        )
        outcome = self.archive.store(
            ReceivedInstance(
                sop_class_uid=KeyObjectSelectionDocumentStorage,
                sop_instance_uid=kos_uid,
                transfer_syntax_uid=ExplicitVRLittleEndian,
                dataset=signed,
                custody=Custody(
                    self.config.node.ae_title,
                    "local",
                    f"mpps:{mpps_uid}",
                    via="KOS builder",
                    extra={
                        "mpps_uid": mpps_uid,
                        "title": SIGNED_COMPLETE_ACQUISITION_CONTENT.value,
                    },
                ),
            )
        )
        if outcome.result is not StoreResult.STORED:
            raise NodeError(f"KOS {kos_uid} was already archived with other content")
        study_uid = outcome.header.study_uid
        with engine.begin() as conn:
            audit.append(
                conn,
                KosEvent.BUILT,
                study_uid=study_uid,
                sop_instance_uid=kos_uid,
                details={
                    "mpps_uid": mpps_uid,
                    "title": SIGNED_COMPLETE_ACQUISITION_CONTENT.meaning,
                    "references": [row.sop_instance_uid for row in found],
                    "signature_uid": info.uid,
                    "signer": signer.subject,
                },
            )
        stored = self.archive.files.path(outcome.relpath)
        history = audit.records(engine, study_uid=study_uid)
        manifest_signer = _manifest_signer(signer)
        write_sidecar(
            stored, snapshot_for(history, kos_uid), self.config.node.ae_title, manifest_signer
        )
        return kos_uid


def _reference(row: InstanceRow, mac: Dataset, signatures: list[Dataset]) -> Reference:
    return Reference(
        sop_class_uid=row.sop_class_uid,
        sop_instance_uid=row.sop_instance_uid,
        series_uid=row.series_uid,
        study_uid=row.study_uid,
        mac_items=[mac],
        signature_items=signatures,
    )


def _manifest_signer(signer: Signer) -> ManifestSigner:
    """The sidecar's signer, from the key already loaded for the KOS signature."""
    if isinstance(signer.key, dsa.DSAPrivateKey):
        raise UsageError("only RSA, ECDSA and Ed25519 keys can sign manifests")
    return ManifestSigner(signer.key, signer.certificate)
