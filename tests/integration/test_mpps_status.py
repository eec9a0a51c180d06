"""Every MPPS status code, from a real N-CREATE or N-SET over an association."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydicom.tag import Tag

from node.app import Node
from node.net.status import MppsStatus
from tests.helpers import ct_dataset
from tests.integration.mpps_scu import MppsClient, create_attributes, final_attributes


def attribute_tags(status) -> list:
    value = status.AttributeIdentifierList
    return list(value) if isinstance(value, list) else [value]


@pytest.fixture
def client(node: Node) -> Iterator[MppsClient]:
    mpps = MppsClient(node.port)
    yield mpps
    mpps.close()


def test_create_then_complete(client: MppsClient) -> None:
    status, uid = client.create(create_attributes())
    assert status.Status == MppsStatus.SUCCESS
    done = client.set(uid, final_attributes({"1.2.3.4": [ct_dataset()]}))
    assert done.Status == MppsStatus.SUCCESS


def test_create_not_in_progress_is_invalid_value(client: MppsClient) -> None:
    status, _ = client.create(create_attributes(PerformedProcedureStepStatus="COMPLETED"))
    assert status.Status == MppsStatus.FAILURE_INVALID_ATTRIBUTE_VALUE
    # pynetdicom's N-CREATE response carries no Attribute Identifier List: the comment names it.
    assert "IN PROGRESS" in status.ErrorComment


def test_duplicate_create(client: MppsClient) -> None:
    status, uid = client.create(create_attributes())
    assert status.Status == MppsStatus.SUCCESS
    again, _ = client.create(create_attributes(), uid=uid)
    assert again.Status == MppsStatus.FAILURE_DUPLICATE_SOP_INSTANCE


def test_set_of_unknown_instance(client: MppsClient) -> None:
    status = client.set("1.2.3.999", final_attributes({"1.2.3": []}, status="IN PROGRESS"))
    assert status.Status == MppsStatus.FAILURE_NO_SUCH_SOP_INSTANCE


def test_set_after_final_state(client: MppsClient) -> None:
    _, uid = client.create(create_attributes())
    assert client.set(uid, final_attributes({"1.2.3": []}, "DISCONTINUED")).Status == 0
    late = client.set(uid, final_attributes({"1.2.3": []}))
    assert late.Status == MppsStatus.FAILURE_PROCESSING
    assert late.ErrorID == 0xA710


def test_set_of_attribute_fixed_at_create(client: MppsClient) -> None:
    _, uid = client.create(create_attributes())
    change = final_attributes({"1.2.3": []}, "IN PROGRESS")
    change.PatientID = "OTHER"
    status = client.set(uid, change)
    assert status.Status == MppsStatus.FAILURE_INVALID_ATTRIBUTE_VALUE
    assert attribute_tags(status) == [Tag("PatientID")]


def test_missing_type1_attribute(client: MppsClient) -> None:
    status, _ = client.create(create_attributes(PerformedStationAETitle=None))
    assert status.Status == MppsStatus.FAILURE_MISSING_ATTRIBUTE
    assert "PerformedStationAETitle" in status.ErrorComment


def test_empty_type1_attribute(client: MppsClient) -> None:
    status, _ = client.create(create_attributes(PerformedProcedureStepID=""))
    assert status.Status == MppsStatus.FAILURE_MISSING_ATTRIBUTE_VALUE


def test_completed_needs_end_time(client: MppsClient) -> None:
    _, uid = client.create(create_attributes())
    change = final_attributes({"1.2.3": []})
    del change.PerformedProcedureStepEndTime
    status = client.set(uid, change)
    assert status.Status in (
        MppsStatus.FAILURE_MISSING_ATTRIBUTE,
        MppsStatus.FAILURE_MISSING_ATTRIBUTE_VALUE,
    )
