"""Domain errors to DIMSE statuses: the one place where that translation happens."""

from __future__ import annotations

from pydicom.dataset import Dataset

from node.errors import DatasetMismatch, InvalidRequest, NotAuthorized, StorageError
from node.net.status import Status

# Error Comment is LO: at most 64 characters (PS3.7 C.4, PS3.5 Table 6.2-1).
_COMMENT_LIMIT = 64


def status_for(exc: BaseException) -> Status:
    """The named status that answers a failure of kind ``exc``."""
    if isinstance(exc, StorageError):
        return Status.FAILURE_OUT_OF_RESOURCES
    if isinstance(exc, DatasetMismatch):
        return Status.FAILURE_DATASET_DOES_NOT_MATCH_SOP_CLASS
    if isinstance(exc, InvalidRequest):
        return Status.FAILURE_CANNOT_UNDERSTAND
    if isinstance(exc, NotAuthorized):
        return Status.FAILURE_REFUSED_NOT_AUTHORIZED
    return Status.FAILURE_PROCESSING


def status_dataset(status: Status, comment: str | None = None) -> Dataset:
    """A response status data set, with an Error Comment cut to its VR's length."""
    ds = Dataset()
    ds.Status = int(status)
    if comment:
        ds.ErrorComment = comment.encode("ascii", "replace").decode()[:_COMMENT_LIMIT]
    return ds
