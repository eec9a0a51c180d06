"""Status enums per service, the one error-to-status mapping, the one C-STORE reply reading."""

from __future__ import annotations

import enum
import inspect

import pytest

import node.errors
from node.errors import MppsProblem, MppsRefused, NodeError
from node.net import statusmap
from node.net.status import (
    STATUSES,
    MppsStatus,
    QueryRetrieveStatus,
    Service,
    StorageStatus,
    VerificationStatus,
)
from node.net.statusmap import status_for
from node.scu.store import (
    ACKNOWLEDGED,
    BUSY,
    REFUSED,
    StoreReply,
    classify,
    reply_category,
)

ENUMS = (VerificationStatus, StorageStatus, MppsStatus, QueryRetrieveStatus)


@pytest.mark.parametrize("status_enum", ENUMS, ids=lambda e: e.__name__)
def test_no_status_enum_has_aliases(status_enum: type[enum.IntEnum]) -> None:
    # An alias would log and audit the first member's name for the other meaning.
    assert len(status_enum.__members__) == len(status_enum)
    assert len({int(m) for m in status_enum}) == len(status_enum)


def test_every_service_has_its_enum() -> None:
    assert set(STATUSES) == set(Service)


@pytest.mark.parametrize("service", [Service.MOVE, Service.GET], ids=lambda s: s.value)
def test_b000_of_a_retrieve_is_named_for_its_sub_operations(service: Service) -> None:
    # The name a C-MOVE/C-GET handler or its log line gives 0xB000 (PS3.4 C.4.2.1.5,
    # C.4.3.1.4), and the name status_for would give it: never the storage coercion.
    assert STATUSES[service](0xB000).name == "WARNING_SUBOPERATIONS_INCOMPLETE"
    assert QueryRetrieveStatus.WARNING_SUBOPERATIONS_INCOMPLETE.name == (
        "WARNING_SUBOPERATIONS_INCOMPLETE"
    )
    assert STATUSES[Service.STORAGE](0xB000).name == "WARNING_COERCION_OF_DATA_ELEMENTS"


# Every error class of node.errors (and each MPPS problem) with the status each service
# answers it with (PS3.4 B.2.3, F.7.2, C.4.1.1.4, C.4.2.1.5, C.4.3.1.4; PS3.7 Annex C).
# Columns: STORAGE, MPPS, FIND, MOVE, GET.
EXPECTED: dict[str, tuple[int, int, int, int, int]] = {
    "Exception": (0x0110, 0x0110, 0xC000, 0xC000, 0xC000),
    "NodeError": (0x0110, 0x0110, 0xC000, 0xC000, 0xC000),
    "ConfigError": (0x0110, 0x0110, 0xC000, 0xC000, 0xC000),
    "UsageError": (0x0110, 0x0110, 0xC000, 0xC000, 0xC000),
    "OperationFailed": (0x0110, 0x0110, 0xC000, 0xC000, 0xC000),
    "StorageError": (0xA700, 0x0110, 0xA700, 0xA701, 0xA701),
    "InvalidRequest": (0xC000, 0x0110, 0xA900, 0xA900, 0xA900),
    "DatasetMismatch": (0xA900, 0x0110, 0xA900, 0xA900, 0xA900),
    "NotAuthorized": (0x0124, 0x0124, 0x0124, 0x0124, 0x0124),
    "MppsRefused.INVALID_ATTRIBUTE_VALUE": (0x0110, 0x0106, 0xC000, 0xC000, 0xC000),
    "MppsRefused.PROCESSING_FAILURE": (0x0110, 0x0110, 0xC000, 0xC000, 0xC000),
    "MppsRefused.DUPLICATE_INSTANCE": (0x0110, 0x0111, 0xC000, 0xC000, 0xC000),
    "MppsRefused.NO_SUCH_INSTANCE": (0x0110, 0x0112, 0xC000, 0xC000, 0xC000),
    "MppsRefused.INVALID_INSTANCE": (0x0110, 0x0117, 0xC000, 0xC000, 0xC000),
    "MppsRefused.MISSING_ATTRIBUTE": (0x0110, 0x0120, 0xC000, 0xC000, 0xC000),
    "MppsRefused.MISSING_ATTRIBUTE_VALUE": (0x0110, 0x0121, 0xC000, 0xC000, 0xC000),
}
COLUMNS = (Service.STORAGE, Service.MPPS, Service.FIND, Service.MOVE, Service.GET)


def _error_classes() -> list[type[BaseException]]:
    """Every exception class node.errors defines, found by looking, not by listing."""
    return [
        cls
        for _, cls in inspect.getmembers(node.errors, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__ == node.errors.__name__
    ]


def _errors() -> list[tuple[str, BaseException]]:
    """One instance of every error class, each MPPS problem as its own case."""
    cases: list[tuple[str, BaseException]] = [("Exception", RuntimeError("a bug"))]
    for cls in _error_classes():
        if cls is MppsRefused:
            cases += [(f"MppsRefused.{p.name}", MppsRefused(p, "refused")) for p in MppsProblem]
        elif cls is node.errors.ConfigError:
            cases.append((cls.__name__, node.errors.ConfigError(None, ["bad"])))
        else:
            cases.append((cls.__name__, cls("failed")))
    return cases


@pytest.mark.parametrize("service", list(Service), ids=lambda s: s.name)
@pytest.mark.parametrize(("name", "error"), _errors(), ids=[n for n, _ in _errors()])
def test_status_for_every_error_and_service(
    name: str, error: BaseException, service: Service
) -> None:
    # A new error class, MPPS problem or service without a row here fails: KeyError or
    # ValueError (a column missing), never a silent default.
    expected = EXPECTED[name][COLUMNS.index(service)]
    got = status_for(error, service)
    assert isinstance(got, STATUSES[service])
    assert int(got) == expected, (name, service, got)


def test_every_error_class_has_its_own_row() -> None:
    # Not inherited from a parent class: each class of node.errors is decided on.
    table = statusmap._TABLE
    for cls in _error_classes():
        assert cls in table, cls.__name__
        assert set(table[cls]) == set(Service), cls.__name__
    assert issubclass(MppsRefused, NodeError)
    assert set(statusmap._MPPS_PROBLEMS) == set(MppsProblem)


def test_an_error_defined_elsewhere_is_answered_as_its_ancestor() -> None:
    from node.storage.query.model import IdentifierError

    for service in (Service.FIND, Service.MOVE, Service.GET):
        got = status_for(IdentifierError("no level"), service)
        assert got is QueryRetrieveStatus.FAILURE_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    assert status_for(IdentifierError("x"), Service.STORAGE) is (
        StorageStatus.FAILURE_CANNOT_UNDERSTAND
    )


# A peer's C-STORE response (PS3.7 C.1, C.4; PS3.4 Table B.2-1): code ranges.
@pytest.mark.parametrize(
    ("status", "category"),
    [
        (0x0000, StoreReply.SUCCESS),
        (0x0001, StoreReply.WARNING),
        (0x0107, StoreReply.WARNING),
        (0x0116, StoreReply.WARNING),
        (0xB000, StoreReply.WARNING),
        (0xB001, StoreReply.WARNING),
        (0xB006, StoreReply.WARNING),
        (0xB007, StoreReply.WARNING),
        (0xBFFF, StoreReply.WARNING),
        (0x0002, StoreReply.FAILURE),
        (0x0110, StoreReply.FAILURE),
        (0x0122, StoreReply.FAILURE),
        (0x0124, StoreReply.FAILURE),
        (0x0213, StoreReply.FAILURE),
        (0xA700, StoreReply.FAILURE),
        (0xA7FF, StoreReply.FAILURE),
        (0xA900, StoreReply.FAILURE),
        (0xAFFF, StoreReply.FAILURE),
        (0xC000, StoreReply.FAILURE),
        (0xCFFF, StoreReply.FAILURE),
        (0xFE00, StoreReply.FAILURE),  # Cancel and Pending are no C-STORE answer
        (0xFF00, StoreReply.FAILURE),
        (0xFFFF, StoreReply.FAILURE),
    ],
)
def test_store_reply_category(status: int, category: StoreReply) -> None:
    assert reply_category(status) is category
    # Transfers read the same classification: success and warning are acknowledged.
    if category is StoreReply.FAILURE:
        assert classify(status) in (BUSY, REFUSED)
    else:
        assert classify(status) == ACKNOWLEDGED


def test_qr_counts_as_transfers_acknowledge() -> None:
    # The Q/R SCP's sub-operation tally and pynetdicom's read the same categories.
    from node.services import sub_operations as qr

    for status in (0x0000, 0x0001, 0x0107, 0xB000, 0xB001, 0xBFFF, 0xA700, 0xC000, 0x0124):
        handed = qr.counted_as(status)
        assert reply_category(handed) is reply_category(status), hex(status)
        assert (
            qr._PYNETDICOM_CATEGORIES[reply_category(status)][0]
            == (qr.PYNETDICOM_STORE_STATUSES.get(handed, ("Failure",))[0])
        ), hex(status)
