"""Domain errors to DIMSE statuses: the one place where that translation happens.

Every handler (Storage SCP and C-GET/C-MOVE arrivals, MPPS, C-FIND, C-MOVE, C-GET) asks
:func:`status_for` which status of *its* service answers an error (PS3.4 B.2.3, F.7.2,
C.4.1.1.4, C.4.2.1.5, C.4.3.1.4; general statuses PS3.7 Annex C). Each error class of
:mod:`node.errors` has its own row, so a new class must be given its statuses here.
"""

from __future__ import annotations

from typing import Literal, overload

from pydicom.dataset import Dataset

from node.errors import (
    ConfigError,
    DatasetMismatch,
    InvalidRequest,
    MppsProblem,
    MppsRefused,
    NodeError,
    NotAuthorized,
    OperationFailed,
    StorageError,
    UsageError,
)
from node.net.status import AnyStatus, MppsStatus, QueryRetrieveStatus, Service, StorageStatus

# Error Comment is LO: at most 64 characters (PS3.7 C.4, PS3.5 Table 6.2-1).
_COMMENT_LIMIT = 64


def _row(
    storage: StorageStatus,
    mpps: MppsStatus,
    find: QueryRetrieveStatus,
    retrieve: QueryRetrieveStatus,
) -> dict[Service, AnyStatus]:
    """One error's status per service; C-MOVE and C-GET share ``retrieve``."""
    return {
        Service.STORAGE: storage,
        Service.MPPS: mpps,
        Service.FIND: find,
        Service.MOVE: retrieve,
        Service.GET: retrieve,
    }


# What went wrong in the node itself, or an error no service has a closer status for:
# Processing Failure (PS3.7 C.4.1) or Unable to Process (PS3.4 C.4.1.1.4).
_PROCESSING = _row(
    StorageStatus.FAILURE_PROCESSING,
    MppsStatus.FAILURE_PROCESSING,
    QueryRetrieveStatus.FAILURE_UNABLE_TO_PROCESS,
    QueryRetrieveStatus.FAILURE_UNABLE_TO_PROCESS,
)

_TABLE: dict[type[BaseException], dict[Service, AnyStatus]] = {
    Exception: _PROCESSING,  # not a domain error: a bug, or a library's exception
    NodeError: _PROCESSING,
    ConfigError: _PROCESSING,
    UsageError: _PROCESSING,
    OperationFailed: _PROCESSING,
    # The archive cannot store (B.2.3 A700) or cannot read its index (C.4.1.1.4 A700,
    # C.4.2.1.5/C.4.3.1.4 A701); an MPPS step has no out-of-resources status.
    StorageError: _row(
        StorageStatus.FAILURE_OUT_OF_RESOURCES,
        MppsStatus.FAILURE_PROCESSING,
        QueryRetrieveStatus.FAILURE_OUT_OF_RESOURCES,
        QueryRetrieveStatus.FAILURE_UNABLE_TO_CALCULATE_MATCHES,
    ),
    # A data set that cannot be understood (C000); in a Q/R request the identifier is
    # what cannot be used (A900). An MPPS request's faults are MppsRefused.
    InvalidRequest: _row(
        StorageStatus.FAILURE_CANNOT_UNDERSTAND,
        MppsStatus.FAILURE_PROCESSING,
        QueryRetrieveStatus.FAILURE_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
        QueryRetrieveStatus.FAILURE_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
    ),
    DatasetMismatch: _row(
        StorageStatus.FAILURE_DATASET_DOES_NOT_MATCH_SOP_CLASS,
        MppsStatus.FAILURE_PROCESSING,
        QueryRetrieveStatus.FAILURE_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
        QueryRetrieveStatus.FAILURE_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
    ),
    NotAuthorized: _row(
        StorageStatus.FAILURE_REFUSED_NOT_AUTHORIZED,
        MppsStatus.FAILURE_REFUSED_NOT_AUTHORIZED,
        QueryRetrieveStatus.FAILURE_REFUSED_NOT_AUTHORIZED,
        QueryRetrieveStatus.FAILURE_REFUSED_NOT_AUTHORIZED,
    ),
    # Only an MPPS request is refused this way; its status is the problem's (below).
    MppsRefused: _PROCESSING,
}

# N-CREATE / N-SET failures (PS3.7 10.1.3.1.9, 10.1.5.1.9; PS3.4 F.7.2).
_MPPS_PROBLEMS: dict[MppsProblem, MppsStatus] = {
    MppsProblem.INVALID_ATTRIBUTE_VALUE: MppsStatus.FAILURE_INVALID_ATTRIBUTE_VALUE,
    MppsProblem.PROCESSING_FAILURE: MppsStatus.FAILURE_PROCESSING,
    MppsProblem.DUPLICATE_INSTANCE: MppsStatus.FAILURE_DUPLICATE_SOP_INSTANCE,
    MppsProblem.NO_SUCH_INSTANCE: MppsStatus.FAILURE_NO_SUCH_SOP_INSTANCE,
    MppsProblem.INVALID_INSTANCE: MppsStatus.FAILURE_INVALID_SOP_INSTANCE,
    MppsProblem.MISSING_ATTRIBUTE: MppsStatus.FAILURE_MISSING_ATTRIBUTE,
    MppsProblem.MISSING_ATTRIBUTE_VALUE: MppsStatus.FAILURE_MISSING_ATTRIBUTE_VALUE,
}


@overload
def status_for(error: BaseException, service: Literal[Service.STORAGE]) -> StorageStatus: ...
@overload
def status_for(error: BaseException, service: Literal[Service.MPPS]) -> MppsStatus: ...
@overload
def status_for(
    error: BaseException, service: Literal[Service.FIND, Service.MOVE, Service.GET]
) -> QueryRetrieveStatus: ...
@overload
def status_for(error: BaseException, service: Service) -> AnyStatus: ...
def status_for(error: BaseException, service: Service) -> AnyStatus:
    """The named status of ``service`` that answers a failure of kind ``error``.

    An error class defined outside :mod:`node.errors` (say ``IdentifierError``, an
    ``InvalidRequest``) is answered as its nearest ancestor in the table.
    """
    if service is Service.MPPS and isinstance(error, MppsRefused):
        return _MPPS_PROBLEMS[error.problem]
    for kind in type(error).__mro__:
        row = _TABLE.get(kind)
        if row is not None:
            return row[service]
    return _PROCESSING[service]  # a BaseException that is no Exception


def status_dataset(status: AnyStatus, comment: str | None = None) -> Dataset:
    """A response status data set, with an Error Comment cut to its VR's length."""
    ds = Dataset()
    ds.Status = int(status)
    if comment:
        ds.ErrorComment = comment.encode("ascii", "replace").decode()[:_COMMENT_LIMIT]
    return ds
