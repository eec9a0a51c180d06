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

import logging
import uuid

from node.config import NodeConfig
from node.documents.codes import SIGNED_COMPLETE_ACQUISITION_CONTENT
from node.documents.kos import KosRequest, build_kos, patient_study_from
from node.documents.publish import DocumentPublisher, Provenance
from node.errors import NodeError
from node.mpps.reads import archived_listed_by, listed_count
from node.signatures import load_trust
from node.signatures.purposes import SOURCE
from node.storage.archive import Archive
from node.storage.index import find_instance

log = logging.getLogger("node.acquisition")

KOS_SERIES_NUMBER = 9901
TITLE = SIGNED_COMPLETE_ACQUISITION_CONTENT
_NAMESPACE = uuid.UUID("5b0f4c1e-8f3e-4a53-9d0c-6f2b1f0f6a35")


class KosEvent:
    BUILT = "kos-built"


def derived_uid(kind: str, source_uid: str) -> str:
    """A stable UID for ``kind`` of ``source_uid`` (PS3.5 B.2, UUID-derived)."""
    return f"2.25.{uuid.uuid5(_NAMESPACE, f'{kind}:{source_uid}').int}"


class AcquisitionKosBuilder:
    """The KosBuilder of :class:`node.mpps.acquisition.AcquisitionTracker`."""

    def __init__(self, config: NodeConfig, archive: Archive, publisher: DocumentPublisher) -> None:
        self.config = config
        self.archive = archive
        self.publisher = publisher

    def __call__(self, mpps_uid: str) -> str:
        kos_uid = derived_uid("kos", mpps_uid)
        engine = self.archive.engine
        with engine.connect() as conn:
            if find_instance(conn, kos_uid) is not None:
                return kos_uid  # built before a crash interrupted the bookkeeping
            listed = listed_count(conn, mpps_uid)
            found = archived_listed_by(conn, mpps_uid)
        if not listed or len(found) != listed:
            raise NodeError(f"MPPS {mpps_uid}: not every listed instance is archived")
        references = self.publisher.references(found, load_trust(self.config.trust))
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
        published = self.publisher.publish_signed(
            ds,
            SOURCE,
            Provenance(
                origin=f"mpps:{mpps_uid}",
                via="KOS builder",
                event=KosEvent.BUILT,
                details={
                    "mpps_uid": mpps_uid,
                    "title": SIGNED_COMPLETE_ACQUISITION_CONTENT.meaning,
                    "references": [row.sop_instance_uid for row in found],
                },
                custody={
                    "mpps_uid": mpps_uid,
                    "title": SIGNED_COMPLETE_ACQUISITION_CONTENT.value,
                },
            ),
        )
        # One line an administrator can find the KOS by (the custody record has the rest).
        log.info(
            "acquisition KOS built: study %s, MPPS %s, %d instances, %s",
            published.study_uid,
            mpps_uid,
            len(found),
            published.path,
        )
        return kos_uid
