"""A retrieve sub-operation the peer answers with a warning counts as a warning.

PS3.4 C.4.2.1.5 and C.4.3.1.4 count sub-operations as completed, failed or warning;
a C-STORE response of 0x0001 or 0xBxxx is a warning (PS3.7 C.1, PS3.4 Table B.2-1):
the instance is kept. The Q/R SCP reads the peer's answer as transfers do
(:func:`node.scu.store.reply_category`), in the final response's counts and in the
custody records alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from node.app import Node
from node.config import NodeConfig
from node.net.status import StorageStatus
from node.storage.audit import AuditEvent, records
from tests.helpers import ct_dataset
from tests.integration.scu import association, store_status

QR_PEER = {"ae_title": "QRSCU", "host": "127.0.0.1", "roles": ["query", "retrieve"]}
STORE_PEER = {"ae_title": "STORESCU", "host": "127.0.0.1", "roles": ["store"]}
WARNINGS = [0xB000, 0x0001, 0xB001]


class Destination:
    """A pynetdicom Storage SCP answering every C-STORE with ``status``."""

    def __init__(self) -> None:
        self.status = 0x0000
        self.received: list[str] = []
        ae = AE(ae_title="DEST")
        ae.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
        self.server = ae.start_server(
            ("127.0.0.1", 0),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._on_store)],
        )
        self.port = int(self.server.server_address[1])

    def _on_store(self, event: Any) -> int:
        self.received.append(str(event.request.AffectedSOPInstanceUID))
        return self.status


@pytest.fixture
def dest() -> Iterator[Destination]:
    destination = Destination()
    yield destination
    destination.server.shutdown()


@pytest.fixture
def qr_node(
    make_config: Callable[..., NodeConfig], start_node: Callable[..., Node], dest: Destination
) -> Node:
    destination = {"ae_title": "DEST", "host": "127.0.0.1", "port": dest.port, "roles": ["store"]}
    return start_node(make_config(peers=[QR_PEER, STORE_PEER, destination]))


@pytest.fixture
def stored(qr_node: Node) -> Dataset:
    ds = ct_dataset(seed=3)
    with association(qr_node.port, aet="STORESCU") as assoc:
        assert store_status(assoc, ds) == StorageStatus.SUCCESS
    return ds


def _identifier(ds: Dataset) -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "SERIES"
    identifier.StudyInstanceUID = ds.StudyInstanceUID
    identifier.SeriesInstanceUID = ds.SeriesInstanceUID
    return identifier


def _check(node: Node, final: Dataset, failed: Dataset | None, ds: Dataset, event: str) -> None:
    counts = (
        final.NumberOfCompletedSuboperations,
        final.NumberOfWarningSuboperations,
        final.NumberOfFailedSuboperations,
    )
    assert counts == (0, 1, 0)
    assert final.Status == 0xB000  # sub-operations complete, one or more warnings
    assert failed is None or not failed.get("FailedSOPInstanceUIDList")  # none listed
    history = records(node.archive.engine)
    (served,) = [r for r in history if r.event == event]
    assert (served.details["warning"], served.details["failed"]) == (1, 0)
    assert served.details["failed_sop_instance_uids"] == []
    sent = [r for r in history if r.event == AuditEvent.INSTANCE_SENT]
    assert [r.sop_instance_uid for r in sent] == [ds.SOPInstanceUID]


@pytest.mark.parametrize("status", WARNINGS, ids=lambda s: f"0x{s:04X}")
def test_move_sub_operation_answered_with_a_warning_is_a_warning(
    qr_node: Node, dest: Destination, stored: Dataset, status: int
) -> None:
    dest.status = status
    ae = AE(ae_title="QRSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", qr_node.port, ae_title="DICOM_NODE")
    assert assoc.is_established
    try:
        responses = list(
            assoc.send_c_move(
                _identifier(stored), "DEST", StudyRootQueryRetrieveInformationModelMove
            )
        )
    finally:
        assoc.release()
    final, failed = responses[-1]
    assert dest.received == [stored.SOPInstanceUID]
    _check(qr_node, final, failed, stored, AuditEvent.C_MOVE_SERVED)


@pytest.mark.parametrize("status", WARNINGS, ids=lambda s: f"0x{s:04X}")
def test_get_sub_operation_answered_with_a_warning_is_a_warning(
    qr_node: Node, stored: Dataset, status: int
) -> None:
    ae = AE(ae_title="QRSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return status

    assoc = ae.associate(
        "127.0.0.1",
        qr_node.port,
        ae_title="DICOM_NODE",
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    try:
        responses = list(
            assoc.send_c_get(_identifier(stored), StudyRootQueryRetrieveInformationModelGet)
        )
    finally:
        assoc.release()
    final, failed = responses[-1]
    assert received == [stored.SOPInstanceUID]
    _check(qr_node, final, failed, stored, AuditEvent.C_GET_SERVED)
