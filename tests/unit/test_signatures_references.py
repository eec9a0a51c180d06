"""Secure references (PS3.3 Table C.17-3): MAC and signature references, checked."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.sequence import Sequence

from node.errors import UsageError
from node.signatures import (
    Signer,
    check_document_references,
    check_reference,
    directory_lookup,
    mac_reference,
    purpose,
    reference_stream,
    sign_dataset,
    sign_file,
    signature_references,
)
from node.signatures.digests import digest
from tests.unit.signature_samples import (
    certificate,
    ct_image,
    kos,
    reference_to,
    rsa_key,
    save,
)

KEY = rsa_key()
CERT = certificate(KEY, "Reference Signer")
SIGNER = Signer(KEY, CERT)


def test_mac_reference_covers_every_signable_element(tmp_path: Path) -> None:
    path = save(ct_image(), tmp_path / "ct.dcm")
    item = mac_reference(path, "SHA384")
    tags = [int(t) for t in item.DataElementsSigned]
    assert 0x7FE00010 in tags and tags == sorted(tags)
    assert item.MACCalculationTransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert digest("SHA384", reference_stream(path)) == item.MAC
    assert len(item.MAC) == 48
    assert mac_reference(dcmread(path), "SHA384").MAC == item.MAC  # from memory, same bytes
    with pytest.raises(UsageError):
        mac_reference(path, "MD5")


def test_mac_reference_detects_a_changed_pixel(tmp_path: Path) -> None:
    instance = ct_image()
    path = save(instance, tmp_path / "ct.dcm")
    reference = reference_to(instance)
    reference.ReferencedSOPInstanceMACSequence = Sequence([mac_reference(path)])
    assert check_reference(reference, path).ok
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    check = check_reference(reference, path)
    assert not check.ok and "MAC mismatch" in check.problems[0]


def test_signature_reference_round_trip(tmp_path: Path) -> None:
    instance = ct_image()
    source = save(instance, tmp_path / "ct.dcm")
    signed = tmp_path / "signed.dcm"
    sign_file(source, signed, SIGNER, purpose=purpose(1))
    items = signature_references(signed, [CERT])
    assert len(items) == 1
    assert items[0].Signature == dcmread(signed).DigitalSignaturesSequence[0].Signature
    assert signature_references(signed, []) == []  # untrusted: no reference
    reference = reference_to(instance)
    reference.ReferencedDigitalSignatureSequence = Sequence(items)
    assert check_reference(reference, signed, trust=[CERT]).ok
    unsigned = check_reference(reference, source, trust=[CERT])
    assert "is not in the instance" in unsigned.problems[0]
    items[0].Signature = bytes(len(items[0].Signature))
    assert "differs" in check_reference(reference, signed, trust=[CERT]).problems[0]


def test_wrong_instance_and_missing_reference(tmp_path: Path) -> None:
    one, two = ct_image(seed=1), ct_image(seed=2)
    save(one, tmp_path / "one.dcm")
    path_two = save(two, tmp_path / "two.dcm")
    reference = reference_to(one)
    assert "not" in check_reference(reference, path_two).problems[0]
    reference_two = reference_to(two)
    assert check_reference(reference_two, path_two).problems == [
        "no secure reference (MAC or signature)"
    ]


def test_document_references_against_a_directory(tmp_path: Path) -> None:
    instances = [ct_image(seed=n) for n in range(3)]
    paths = [save(ds, tmp_path / "store" / f"ct{n}.dcm") for n, ds in enumerate(instances)]
    references = []
    for ds, path in zip(instances, paths, strict=True):
        reference = reference_to(ds)
        reference.ReferencedSOPInstanceMACSequence = Sequence([mac_reference(path)])
        references.append(reference)
    document = kos(references=references)
    sign_dataset(document, SIGNER, purpose=purpose(14))
    kos_path = save(document, tmp_path / "kos.dcm")
    lookup = directory_lookup(tmp_path / "store")
    checks = check_document_references(kos_path, lookup)
    assert [c.ok for c in checks] == [True, True, True]
    paths[1].write_bytes(paths[1].read_bytes().replace(b"Doe^John", b"Doe^Jack"))
    paths[2].unlink()
    checks = check_document_references(kos_path, directory_lookup(tmp_path / "store"))
    assert [c.ok for c in checks] == [True, False, False]
    assert checks[2].problems == ["referenced instance not found"]
