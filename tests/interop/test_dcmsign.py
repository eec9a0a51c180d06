"""Interoperability with DCMTK ``dcmsign`` 3.6.7, the reference peer (brief section 7).

Both directions: our signatures verify in dcmsign, dcmsign's verify in ours; our MAC
stream equals ``dcmsign --dump``; tampering and certificate problems fail in both.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian

from node.signatures import Profile, purpose, reference_stream, sign_file, verify_file
from node.signatures.encoding import read_file
from node.signatures.verify import signature_stream
from tests.unit.signature_samples import (
    DAY,
    NOW,
    KeyFiles,
    certificate,
    ct_image,
    jpeg_lossless,
    kos,
    rsa_key,
    run,
    save,
    secondary_capture_8bit,
    write_keys,
)

pytestmark = pytest.mark.dcmtk
SIGNATURE_ITEM_START = bytes.fromhex("0004050055530200")  # (0400,0005) US, length 2
ITEM_PATH = "CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]"


@pytest.fixture(scope="module")
def rsa_files(tmp_path_factory: pytest.TempPathFactory) -> KeyFiles:
    key = rsa_key()
    return write_keys(tmp_path_factory.mktemp("rsa"), key, certificate(key, "Interop Signer"))


def dcmsign_verify(path: Path, cert: Path, *extra: str) -> tuple[int, str]:
    done = run("dcmsign", "--verify", "+cf", cert, *extra, path)
    return done.returncode, done.stdout + done.stderr


def dcmsign_sign(source: Path, target: Path, files: KeyFiles, *options: str) -> None:
    done = run(
        "dcmsign", "--sign", files.key_path, files.cert_path, "-pw", *options, source, target
    )
    assert done.returncode == 0, done.stderr


def private_object() -> Dataset:
    ds = ct_image()
    ds.private_block(0x0009, "EXAMPLE", create=True).add_new(0x01, "LO", "private value")
    return ds


SAMPLES: dict[str, Callable[[Path], Path]] = {
    "ct": lambda d: save(ct_image(), d / "ct.dcm"),
    "kos": lambda d: save(kos(), d / "kos.dcm"),
    "jpeg": jpeg_lossless,
    "deflated": lambda d: save(kos(), d / "deflated.dcm", DeflatedExplicitVRLittleEndian),
    "private": lambda d: save(private_object(), d / "private.dcm"),
}


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_our_signatures_verify_in_dcmsign(tmp_path: Path, rsa_files: KeyFiles, sample: str) -> None:
    source = SAMPLES[sample](tmp_path)
    target = tmp_path / "signed.dcm"
    sign_file(source, target, rsa_files.signer, purpose=purpose(1))
    status, output = dcmsign_verify(target, rsa_files.cert_path)
    assert status == 0 and "Verification : OK" in output, output
    if sample in ("kos", "deflated"):
        assert dcmsign_verify(target, rsa_files.cert_path, "+rs")[0] == 0


def test_we_add_to_dcmsign_signatures_and_sign_items(tmp_path: Path, rsa_files: KeyFiles) -> None:
    source = save(kos(), tmp_path / "kos.dcm")
    theirs = tmp_path / "theirs.dcm"
    dcmsign_sign(source, theirs, rsa_files, "--mac-sha256", "+pr", "+sp", "1")
    both = tmp_path / "both.dcm"
    sign_file(theirs, both, rsa_files.signer, purpose=purpose(5), mac_algorithm="SHA512")
    nested = tmp_path / "nested.dcm"
    sign_file(both, nested, rsa_files.signer, profile=Profile.BASE, item_path=ITEM_PATH)
    status, output = dcmsign_verify(nested, rsa_files.cert_path, "-v")
    assert status == 0 and "3 signatures verified in dataset, 0 corrupted" in output, output
    assert dcmsign_verify(nested, rsa_files.cert_path, "+rs")[0] == 0
    assert [s.mac_id for s in verify_file(nested, trust=[rsa_files.cert]).signatures] == [0, 1, 2]


@pytest.mark.parametrize(
    ("option", "algorithm"),
    [
        ("+m2", "SHA256"),
        ("+m3", "SHA384"),
        ("+m5", "SHA512"),
        (None, "RIPEMD160"),
        ("+ms", "SHA1"),
        ("+mm", "MD5"),
    ],
)
def test_dcmsign_signatures_verify_in_ours(
    tmp_path: Path, rsa_files: KeyFiles, option: str | None, algorithm: str
) -> None:
    source = SAMPLES["kos"](tmp_path)
    target = tmp_path / "theirs.dcm"
    dcmsign_sign(source, target, rsa_files, *([option] if option else []), "+sp", "14")
    report = verify_file(target, trust=[rsa_files.cert])
    assert report.ok, report.problems
    assert report.signatures[0].algorithm == algorithm
    assert report.signatures[0].purpose == "14 (Source Signature)"


def test_dcmsign_ecdsa_and_item_signatures_verify_in_ours(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    files = write_keys(tmp_path / "ec", key, certificate(key, "EC Signer"))
    source = SAMPLES["kos"](tmp_path)
    target = tmp_path / "ec.dcm"
    dcmsign_sign(source, target, files, "+m2")
    nested = tmp_path / "ec_nested.dcm"
    done = run(
        "dcmsign",
        "--sign-item",
        files.key_path,
        files.cert_path,
        ITEM_PATH,
        "-pw",
        "+m2",
        target,
        nested,
    )
    assert done.returncode == 0, done.stderr
    report = verify_file(nested, trust=[files.cert])
    assert report.ok, report.problems
    assert [s.location for s in report.signatures] == ["(main)", ITEM_PATH]
    assert not verify_file(nested, trust=[files.cert], require_profile=Profile.BASE).ok


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_our_streams_equal_dcmsign_dump(tmp_path: Path, rsa_files: KeyFiles, sample: str) -> None:
    source = SAMPLES[sample](tmp_path)
    target, dump = tmp_path / "theirs.dcm", tmp_path / "stream.bin"
    dcmsign_sign(source, target, rsa_files, "+m2", "+sp", "1", "--dump", str(dump))
    expected = dump.read_bytes()
    uid = dcmread(target).DigitalSignaturesSequence[0].DigitalSignatureUID
    assert signature_stream(read_file(target), uid) == expected
    # Brief 4.3: the Referenced SOP Instance MAC stream is the prefix before the item part.
    # dcmsign normalised excess string padding ("P1  ") in what it signed and wrote, so
    # the instance it saw is its output (signatures are excluded from the stream).
    prefix = expected[: expected.rindex(SIGNATURE_ITEM_START)]
    assert reference_stream(target) == prefix
    assert len(prefix) > 0.5 * len(expected)


def tamper_byte(path: Path) -> None:
    path.write_bytes(path.read_bytes().replace(b"Doe^John", b"Doe^Jane"))


def tamper_remove(path: Path) -> None:
    assert run("dcmodify", "-nb", "-e", "(0010,0010)", path).returncode == 0


def tamper_add_in_sequence(path: Path) -> None:
    ds = dcmread(path)
    ds.ConceptNameCodeSequence[0].CodingSchemeVersion = "01"
    ds.save_as(path)


def tamper_reorder(path: Path) -> None:
    ds = dcmread(path)
    series = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    series.ReferencedSOPSequence = Sequence(list(reversed(series.ReferencedSOPSequence)))
    ds.save_as(path)


def kos_two_references(directory: Path) -> Path:
    return save(kos(references=[_ref(n) for n in range(2)]), directory / "kos2.dcm")


def _ref(n: int) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.ReferencedSOPInstanceUID = f"1.2.3.4.{n}"
    return item


@pytest.mark.parametrize(
    ("make", "tamper"),
    [
        (SAMPLES["kos"], tamper_byte),
        (SAMPLES["kos"], tamper_remove),
        (SAMPLES["kos"], tamper_add_in_sequence),
        (kos_two_references, tamper_reorder),
    ],
    ids=["byte", "removed", "added-in-sequence", "reordered"],
)
@pytest.mark.parametrize("signer", ["ours", "dcmsign"])
def test_tampering_fails_in_both(
    tmp_path: Path,
    rsa_files: KeyFiles,
    make: Callable[[Path], Path],
    tamper: Callable[[Path], None],
    signer: str,
) -> None:
    source, target = make(tmp_path), tmp_path / "signed.dcm"
    if signer == "ours":
        sign_file(source, target, rsa_files.signer, purpose=purpose(1))
    else:
        dcmsign_sign(source, target, rsa_files, "+m2")
    assert dcmsign_verify(target, rsa_files.cert_path)[0] == 0
    tamper(target)
    status, output = dcmsign_verify(target, rsa_files.cert_path)
    assert status == 101 and "corrupted" in output, output
    report = verify_file(target, trust=[rsa_files.cert])
    assert any("document corrupted" in p for p in report.problems), report.problems


def test_implicit_vr_round_trip_fails_in_both(tmp_path: Path, rsa_files: KeyFiles) -> None:
    source = save(secondary_capture_8bit(), tmp_path / "sc.dcm")
    target, implicit = tmp_path / "signed.dcm", tmp_path / "implicit.dcm"
    sign_file(source, target, rsa_files.signer, purpose=purpose(1))
    assert run("dcmconv", "+ti", target, implicit).returncode == 0
    status, output = dcmsign_verify(implicit, rsa_files.cert_path)
    assert status == 101 and "corrupted" in output, output
    assert any("corrupted" in p for p in verify_file(implicit, trust=[rsa_files.cert]).problems)


def test_untrusted_certificate_fails_in_both(tmp_path: Path, rsa_files: KeyFiles) -> None:
    source, target = SAMPLES["ct"](tmp_path), tmp_path / "signed.dcm"
    sign_file(source, target, rsa_files.signer, purpose=purpose(1))
    done = run("dcmsign", "--verify", target)
    assert done.returncode == 101 and "self-signed" in done.stderr + done.stdout
    assert any("not trusted" in p for p in verify_file(target, trust=[]).problems)


@pytest.mark.parametrize(
    ("not_before", "not_after", "dcmtk_says", "we_say"),
    [
        (NOW + DAY, NOW + 9 * DAY, "not yet valid", "not yet valid at signature creation"),
        (NOW - 9 * DAY, NOW - DAY, "expired", "expired"),
    ],
    ids=["not-yet-valid-at-signing", "expired"],
)
def test_certificate_validity_problems_in_both(
    tmp_path: Path, not_before: object, not_after: object, dcmtk_says: str, we_say: str
) -> None:
    key = rsa_key()
    cert = certificate(key, "Bad Dates", not_before=not_before, not_after=not_after)  # type: ignore[arg-type]
    files = write_keys(tmp_path / "bad", key, cert)
    source, target = SAMPLES["kos"](tmp_path), tmp_path / "signed.dcm"
    dcmsign_sign(source, target, files, "+m2")  # dcmsign does not check dates when signing
    status, output = dcmsign_verify(target, files.cert_path)
    assert status == 101 and dcmtk_says in output, output
    found = verify_file(target, trust=[cert]).problems
    assert any(we_say in p for p in found), found


def test_dcmsign_is_the_debian_build() -> None:
    assert shutil.which("dcmsign"), "dcmtk must be installed by the setup script"
    assert "3.6" in run("dcmsign", "--version").stdout
