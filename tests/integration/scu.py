"""A small pynetdicom SCU for tests that need exact statuses or raw bytes on the wire."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]


@contextmanager
def association(port: int, aet: str = "TEST_SCU", **kwargs: Any) -> Iterator[Any]:
    ae = AE(ae_title=aet)
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOM_NODE", **kwargs)
    assert assoc.is_established, "association was not established"
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def store_status(assoc: Any, item: Dataset | Path) -> int:
    """Send a data set (or a Part 10 file's raw bytes) and return the response status."""
    if isinstance(item, Path):
        previous = _config.STORE_SEND_CHUNKED_DATASET
        _config.STORE_SEND_CHUNKED_DATASET = True  # send the file's bytes untouched
        try:
            response = assoc.send_c_store(item)
        finally:
            _config.STORE_SEND_CHUNKED_DATASET = previous
    else:
        response = assoc.send_c_store(item)
    assert "Status" in response, "no response (association aborted?)"
    return int(response.Status)
