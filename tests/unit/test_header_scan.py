"""The quick header scan of the C-STORE path reads exactly what pydicom's parser reads."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from node.storage import header
from tests.helpers import ct_dataset

SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
# No backslash: it would make a multi-valued name, which the last check does not model.
text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\\"), max_size=40
)


def encode(ds: Dataset, syntax: UID) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = syntax.is_implicit_VR
    write_dataset(buffer, ds)
    return buffer.getvalue()


def present(values: dict[int, tuple[bytes, str]]) -> dict[int, tuple[bytes, str]]:
    """Non-empty values: pydicom skips empty Implicit VR ones, the scan keeps them as b""."""
    return {tag: value for tag, value in values.items() if value[0]}


def with_sequence(ds: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    ds.ReferencedStudySequence = [item]  # (0008,1110): before the last header tag
    return ds


@pytest.mark.parametrize("syntax", SYNTAXES)
@settings(max_examples=40, deadline=None)
@given(name=text, description=text, accession=st.text("ABC123", max_size=16))
def test_scan_matches_the_parser(syntax: UID, name: str, description: str, accession: str) -> None:
    ds = with_sequence(ct_dataset(size=8, PatientName=name, StudyDescription=description))
    ds.AccessionNumber = accession
    data = encode(ds, syntax)
    scanned = header._scan_values(data, syntax.is_implicit_VR)
    assert present(scanned) == present(header._parsed_values(data, syntax))
    assert header.read_header(data, syntax).patient_name == str(ds.PatientName).strip(" ")


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_undefined_lengths_and_truncation_go_to_the_parser(syntax: UID) -> None:
    ds = with_sequence(ct_dataset(size=8))
    data = encode(ds, syntax)
    # Rewrite the sequence with undefined lengths, as many modalities send it.
    ds["ReferencedStudySequence"].is_undefined_length = True
    ds.ReferencedStudySequence[0].is_undefined_length_sequence_item = True
    undefined = encode(ds, syntax)
    assert undefined != data
    with pytest.raises(header._NotSimple):
        header._scan_values(undefined, syntax.is_implicit_VR)
    assert header._raw_values(undefined, syntax) == header._parsed_values(undefined, syntax)
    assert present(header._raw_values(undefined, syntax)) == present(
        header._scan_values(data, syntax.is_implicit_VR)
    )
    with pytest.raises(header._NotSimple):
        header._scan_values(data[:100], syntax.is_implicit_VR)
