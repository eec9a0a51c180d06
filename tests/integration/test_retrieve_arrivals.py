"""C-GET arrivals are received as the Storage SCP receives a C-STORE (PS3.4 B.2.3).

A pynetdicom Q/R SCP is the source: its C-GET sends a well-formed CT image and one
without a Series Instance UID. The good one is stored; the other is answered 0xC000
Cannot understand, and, as on the Storage SCP, a ``store-failed`` custody record says
what was refused, from whom and how it came.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
)

from node.app import configure_libraries
from node.config import parse_config
from node.net.status import StorageStatus
from node.retrieve.client import RetrieveRequest, retrieve
from node.retrieve.result import Outcome
from node.storage import audit
from node.storage.archive import Archive
from node.storage.audit import AuditEvent
from node.storage.database import open_database
from node.storage.files import FileStore
from node.storage.index import find_instance
from tests.conftest import config_dict
from tests.helpers import SERIES_UID, STUDY_UID, ct_dataset


class GetSource:
    """A Q/R SCP whose C-GET sends ``datasets`` and records each C-STORE status."""

    def __init__(self, datasets: list[Dataset]) -> None:
        self.datasets = datasets
        self.statuses: list[int] = []
        ae = AE(ae_title="PACS")
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_supported_context(
            CTImageStorage,
            [ExplicitVRLittleEndian, ImplicitVRLittleEndian],
            scu_role=True,
            scp_role=True,
        )
        self.server = ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_GET, self._on_get)]
        )
        self.port = int(self.server.server_address[1])

    def _on_get(self, event: Any) -> Iterator[Any]:
        yield len(self.datasets)
        for ds in self.datasets:
            yield 0xFF00, ds


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    files = FileStore(tmp_path / "archive")
    files.prepare()
    opened = Archive(files, open_database(f"sqlite:///{tmp_path / 'node.sqlite'}"))
    yield opened
    opened.engine.dispose()


def test_a_get_arrival_refused_as_the_storage_scp_refuses_it(
    tmp_path: Path, archive: Archive
) -> None:
    good = ct_dataset(seed=1)
    bad = ct_dataset(number=2, seed=2)
    del bad.SeriesInstanceUID  # Type 1 in the General Series module: not indexable
    source = GetSource([good, bad])
    try:
        sources = [{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": source.port}]
        config = parse_config(config_dict(tmp_path, sources=sources), tmp_path)
        configure_libraries(config)
        request = RetrieveRequest(
            STUDY_UID,
            SERIES_UID,
            (str(good.SOPInstanceUID), str(bad.SOPInstanceUID)),
            (str(CTImageStorage),),
        )
        report = retrieve(config, archive, config.sources[0], [request], "get")
    finally:
        source.server.shutdown()
    outcomes = {o.sop_instance_uid: o for o in report.objects}
    assert outcomes[good.SOPInstanceUID].outcome is Outcome.STORED
    failed = outcomes[bad.SOPInstanceUID]
    assert failed.outcome is Outcome.FAILED
    assert "Series Instance UID" in failed.message
    with archive.engine.connect() as conn:
        assert find_instance(conn, str(bad.SOPInstanceUID)) is None
    refused = [r for r in audit.records(archive.engine) if r.event == AuditEvent.STORE_FAILED]
    assert [r.sop_instance_uid for r in refused] == [bad.SOPInstanceUID]
    (record,) = refused
    assert record.details["status"] == StorageStatus.FAILURE_CANNOT_UNDERSTAND.name
    assert record.details["calling_ae"] == "PACS"
    assert record.details["via"] == "C-GET"
    assert record.details["source"] == "pacs"
    assert "Series Instance UID" in record.details["reason"]
    assert audit.verify_chain(archive.engine).ok
