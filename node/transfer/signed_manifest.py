"""The "Signed Manifest" KOS of a transfer (PS3.17 Annex W case 2, sending side).

After a set of instances was sent to a partner, the node builds a KOS titled
(113031, DCM, "Signed Manifest") that references exactly the instances the partner
acknowledged with Success or a Warning, each with a Referenced SOP Instance MAC Sequence
(and a Referenced Digital Signature Sequence where the instance carries a signature that
verifies), signs it under the SR RSA profile, and archives it with its sidecar.

Signature purpose: (14, ASTM-sigpurpose, "Source Signature"). The node signs as the
source of the shipment, attesting what it sent; it is neither the author of the images
nor a reviewer of their content (purposes 1 and 5), and PS3.17 Annex W names no other
purpose for this document. The acquisition KOS of case 1 uses the same purpose.
"""

from __future__ import annotations

from node.documents.acquisition_kos import derived_uid
from node.documents.codes import SIGNED_MANIFEST
from node.documents.kos import KosRequest, build_kos, patient_study_from
from node.documents.publish import DocumentPublisher, Provenance, Published
from node.identity import new_uid
from node.signatures import load_trust
from node.signatures.purposes import SOURCE
from node.storage.audit import AuditEvent
from node.storage.index import InstanceRow
from node.transfer.queue import Transfer

MANIFEST_SERIES_NUMBER = 9902


def build_signed_manifest(
    publisher: DocumentPublisher, transfer: Transfer, acknowledged: list[InstanceRow]
) -> Published:
    """Build, sign and archive the manifest under ``transfer.manifest_uid``."""
    if transfer.manifest_uid is None:
        raise ValueError("the manifest UID is fixed in the queue before the manifest is built")
    config, archive = publisher.config, publisher.archive
    references = publisher.references(acknowledged, load_trust(config.trust))
    ds = build_kos(
        KosRequest(
            title=SIGNED_MANIFEST,
            sop_instance_uid=transfer.manifest_uid,
            series_uid=new_uid(),
            series_number=MANIFEST_SERIES_NUMBER,
            references=references,
            patient_study=patient_study_from(archive.files.path(acknowledged[0].path)),
            retrieve_ae_title=config.node.ae_title,
            device_uid=derived_uid("device", config.node.ae_title),
            device_name=config.node.ae_title,
            description=f"Instances sent to {transfer.partner} (transfer {transfer.transfer_id})",
        )
    )
    return publisher.publish_signed(
        ds,
        SOURCE,
        Provenance(
            origin=f"transfer:{transfer.transfer_id}",
            via="manifest builder",
            event=AuditEvent.MANIFEST_BUILT,
            details={
                "transfer_id": transfer.transfer_id,
                "partner": transfer.partner,
                "title": SIGNED_MANIFEST.meaning,
                "references": [row.sop_instance_uid for row in acknowledged],
            },
            custody={"transfer_id": transfer.transfer_id, "title": SIGNED_MANIFEST.value},
        ),
    )
