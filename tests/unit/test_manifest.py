"""The ``.dcm.sig`` format and its verification: each change gives its exact reason."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.integrity import Reason, sidecar_path, verify_sidecar, write_sidecar
from node.integrity import sidecar as fmt
from node.storage import audit
from tests.helpers import ct_dataset, split_part10, write_part10
from tests.unit.test_manifest_support import (
    custody_records,
    make_dicom,
    make_signer,
    read_json,
    write_json,
)

AE = "DICOM_NODE"


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    dcm = make_dicom(tmp_path)
    return dcm, write_sidecar(dcm, custody_records(tmp_path), AE)


def edit(sidecar: Path, change: Callable[[dict[str, Any]], None]) -> None:
    manifest = read_json(sidecar)
    change(manifest)
    write_json(sidecar, manifest)


def rehash(m: dict[str, Any], *, snapshot: bool = True) -> None:
    """What a careless editor or a forger does: recompute the hashes after an edit."""
    if snapshot:
        m["audit_snapshot_sha256"] = fmt.snapshot_hash(m["audit_snapshot"])
    m["manifest_sha256"] = fmt.manifest_hash(m)


# --- the format -------------------------------------------------------------------------


def test_sidecar_holds_the_documented_fields(pair: tuple[Path, Path]) -> None:
    dcm, sidecar = pair
    assert sidecar == dcm.with_name(dcm.name + ".sig") == sidecar_path(dcm)
    m = read_json(sidecar)
    assert m["format"] == "dicom-node-integrity-manifest"
    assert m["version"] == 1
    assert m["algorithm"] == "SHA-256"
    assert m["file"] == {
        "name": dcm.name,
        "size": dcm.stat().st_size,
        "sha256": fmt.file_digest(dcm)[1],
    }
    assert [r["event"] for r in m["audit_snapshot"]] == ["instance-stored", "exported"]
    assert all(len(r["hash"]) == 64 for r in m["audit_snapshot"])
    assert m["audit_snapshot_sha256"] == fmt.sha256_hex(audit.canonical_json(m["audit_snapshot"]))
    unhashed = {"audit_snapshot", "manifest_sha256", "signature"}
    envelope = {k: v for k, v in m.items() if k not in unhashed}
    assert m["manifest_sha256"] == fmt.sha256_hex(audit.canonical_json(envelope))
    assert m["ae_title"] == AE
    assert m["created"].endswith("+00:00")
    assert "signature" not in m


def test_canonical_form_is_compact_sorted_utf8() -> None:
    value = {"b": 1, "a": ["ü", {"d": None, "c": True}]}
    assert audit.canonical_json(value) == '{"a":["ü",{"c":true,"d":null}],"b":1}'.encode()


def test_unmodified_pair_verifies(pair: tuple[Path, Path]) -> None:
    verdict = verify_sidecar(pair[0])
    assert verdict.ok, verdict
    assert verdict.line == "Integrity verified"
    assert not verdict.signed
    assert verify_sidecar(pair[0], pair[1]).ok


def test_whitespace_of_the_sidecar_is_not_significant(pair: tuple[Path, Path]) -> None:
    dcm, sidecar = pair
    sidecar.write_bytes(audit.canonical_json(read_json(sidecar)))
    assert verify_sidecar(dcm).ok


def test_sidecar_given_elsewhere(pair: tuple[Path, Path], tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere" / "manifest.json"
    moved.parent.mkdir()
    shutil.move(pair[1], moved)
    assert verify_sidecar(pair[0]).reason is Reason.SIDECAR_MALFORMED
    assert verify_sidecar(pair[0], moved).ok


def test_rewriting_the_sidecar_replaces_it(pair: tuple[Path, Path], tmp_path: Path) -> None:
    dcm, sidecar = pair
    assert write_sidecar(dcm, [], "OTHER_AE") == sidecar
    assert read_json(sidecar)["ae_title"] == "OTHER_AE"
    assert not list(tmp_path.glob(".*.tmp"))


# --- the .dcm changed ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    folder = tmp_path_factory.mktemp("original")
    dcm = make_dicom(folder)
    meta, _ = split_part10(dcm.read_bytes())
    return dcm, write_sidecar(dcm, custody_records(folder), AE), len(meta)


def _flipped(original: tuple[Path, Path, int], data: st.DataObject, region: str) -> None:
    dcm, sidecar, meta_end = original
    content = bytearray(dcm.read_bytes())
    low, high = {
        "preamble": (0, 127),
        "file meta": (128, meta_end - 1),
        "data set": (meta_end, len(content) - 1),
        "anywhere": (0, len(content) - 1),
    }[region]
    position = data.draw(st.integers(low, high), label="position")
    content[position] ^= data.draw(st.integers(1, 255), label="xor mask")
    with tempfile.TemporaryDirectory() as folder:
        changed = Path(folder) / dcm.name
        changed.write_bytes(content)
        verdict = verify_sidecar(changed, sidecar)
    assert verdict.line == "Integrity check FAILED: file hash mismatch"


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), region=st.sampled_from(["preamble", "file meta", "data set", "anywhere"]))
def test_one_flipped_byte_anywhere_fails(
    original: tuple[Path, Path, int], data: st.DataObject, region: str
) -> None:
    _flipped(original, data, region)


def test_pixel_data_byte_flip_fails(original: tuple[Path, Path, int], tmp_path: Path) -> None:
    dcm, sidecar, _ = original
    content = bytearray(dcm.read_bytes())
    content[-1] ^= 0x01  # the last byte is pixel data
    changed = tmp_path / dcm.name
    changed.write_bytes(content)
    assert verify_sidecar(changed, sidecar).reason is Reason.FILE_HASH


@pytest.mark.parametrize("change", ["truncate", "append"])
def test_size_change_fails(pair: tuple[Path, Path], change: str) -> None:
    dcm = pair[0]
    data = dcm.read_bytes()
    dcm.write_bytes(data[:-2] if change == "truncate" else data + b"\0\0")
    assert verify_sidecar(dcm).reason is Reason.FILE_HASH


def test_missing_dicom_file(pair: tuple[Path, Path]) -> None:
    pair[0].unlink()
    assert verify_sidecar(pair[0], pair[1]).line == (
        "Integrity check FAILED: file missing or unreadable"
    )


# --- the sidecar changed ------------------------------------------------------------------


def test_audit_snapshot_edited(pair: tuple[Path, Path]) -> None:
    edit(pair[1], lambda m: m["audit_snapshot"][0]["details"].update(calling_ae="EVIL"))
    assert verify_sidecar(pair[0]).line == "Integrity check FAILED: audit snapshot modified"


def test_audit_record_removed(pair: tuple[Path, Path]) -> None:
    edit(pair[1], lambda m: m["audit_snapshot"].pop(0))
    assert verify_sidecar(pair[0]).reason is Reason.SNAPSHOT_MODIFIED


def test_audit_record_rewritten_with_recomputed_snapshot_hashes(pair: tuple[Path, Path]) -> None:
    def forge(m: dict[str, Any]) -> None:
        m["audit_snapshot"][1]["details"]["user"] = "mallory"
        rehash(m)

    edit(pair[1], forge)  # the record no longer matches its own chain hash
    assert verify_sidecar(pair[0]).reason is Reason.SNAPSHOT_MODIFIED


def test_snapshot_hash_field_edited_is_a_manifest_edit(pair: tuple[Path, Path]) -> None:
    edit(pair[1], lambda m: m.update(audit_snapshot_sha256="0" * 64))
    assert verify_sidecar(pair[0]).line == "Integrity check FAILED: manifest modified"


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.update(ae_title="OTHER"),
        lambda m: m.update(created="2020-01-01T00:00:00+00:00"),
        lambda m: m["file"].update(size=m["file"]["size"] + 1),
        lambda m: m["file"].update(sha256="0" * 64),
        lambda m: m["file"].update(name="other_export.dcm"),
        lambda m: m.update(manifest_sha256="f" * 64),
        lambda m: m.update(comment="added"),
    ],
    ids=["ae_title", "created", "size", "sha256", "name", "manifest_sha256", "added field"],
)
def test_manifest_edited(pair: tuple[Path, Path], change: Callable[[dict[str, Any]], None]) -> None:
    edit(pair[1], change)
    verdict = verify_sidecar(pair[0])
    assert verdict.line == "Integrity check FAILED: manifest modified"


def test_unsigned_manifest_does_not_stop_a_forger(pair: tuple[Path, Path]) -> None:
    """The documented limit: rewrite the file, recompute every hash, and it verifies."""
    dcm, sidecar = pair
    dcm.write_bytes(dcm.read_bytes() + b"forged")

    def forge(m: dict[str, Any]) -> None:
        m["file"]["size"], m["file"]["sha256"] = fmt.file_digest(dcm)
        rehash(m, snapshot=False)

    edit(sidecar, forge)
    assert verify_sidecar(dcm).ok
    assert verify_sidecar(dcm, require_signature=True).reason is Reason.SIGNATURE_MISSING


def test_sidecar_of_another_file(tmp_path: Path) -> None:
    # Two files of one size, so that only the name can tell them apart: UIDs of one
    # length (random ones vary in length, and the sizes with them), different pixels.
    first, second = (
        write_part10(
            ct_dataset(size=16, seed=n, SOPInstanceUID=f"1.2.826.0.1.3680043.10.1.{n}"),
            tmp_path / f"CT_S1_I{n}_0000-00{n}_export.dcm",
        )
        for n in (1, 2)
    )
    records = custody_records(tmp_path)
    write_sidecar(first, records, AE)
    other = write_sidecar(second, records, AE)
    assert first.stat().st_size == second.stat().st_size  # the name tells them apart
    verdict = verify_sidecar(first, other)
    assert verdict.line == "Integrity check FAILED: sidecar belongs to another file"
    assert second.name in verdict.detail


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{",
        b"[]",
        b'"text"',
        b"\xff\xfe garbage",
        b'{"format": "dicom-node-integrity-manifest", "version": 1}',
        b'{"format": "something-else", "version": 1}',
        b'{"format": "dicom-node-integrity-manifest", "version": 2}',
        b'{"format": "dicom-node-integrity-manifest", "format": "x"}',
        b'{"version": NaN}',
    ],
    ids=[
        "empty",
        "truncated",
        "array",
        "string",
        "binary",
        "fields missing",
        "other format",
        "future version",
        "duplicate key",
        "NaN",
    ],
)
def test_malformed_sidecar(pair: tuple[Path, Path], content: bytes) -> None:
    pair[1].write_bytes(content)
    verdict = verify_sidecar(pair[0])
    assert verdict.line == "Integrity check FAILED: sidecar missing or malformed"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("version", True),
        ("algorithm", "MD5"),
        ("file", {"name": "x", "size": "12", "sha256": "00"}),
        ("audit_snapshot", {}),
        ("manifest_sha256", "ABC"),
        ("created", "yesterday"),
        ("ae_title", 7),
        ("signature", {"algorithm": "Ed25519"}),
    ],
)
def test_wrong_field_types_are_malformed(pair: tuple[Path, Path], field: str, value: Any) -> None:
    edit(pair[1], lambda m: m.update({field: value}))
    assert verify_sidecar(pair[0]).reason is Reason.SIDECAR_MALFORMED


def test_missing_sidecar(pair: tuple[Path, Path]) -> None:
    pair[1].unlink()
    verdict = verify_sidecar(pair[0])
    assert verdict.line == "Integrity check FAILED: sidecar missing or malformed"
    assert "not found" in verdict.detail


def test_lone_surrogate_in_snapshot_is_malformed_not_a_crash(pair: tuple[Path, Path]) -> None:
    text = pair[1].read_text(encoding="utf-8").replace('"alice"', '"\\ud800"')
    pair[1].write_text(text, encoding="utf-8")
    assert verify_sidecar(pair[0]).reason is Reason.SIDECAR_MALFORMED


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_sidecar_byte_flip_gives_a_verdict_never_an_exception(
    original: tuple[Path, Path, int], data: st.DataObject
) -> None:
    dcm, sidecar, _ = original
    content = bytearray(sidecar.read_bytes())
    position = data.draw(st.integers(0, len(content) - 1), label="position")
    content[position] ^= data.draw(st.integers(1, 255), label="xor mask")
    with tempfile.TemporaryDirectory() as folder:
        changed = Path(folder) / sidecar.name
        changed.write_bytes(content)
        verdict = verify_sidecar(dcm, changed, require_signature=False)
    # Only a flip inside insignificant whitespace (e.g. space <-> tab) can still verify.
    if verdict.ok:
        assert json.loads(content) == json.loads(sidecar.read_bytes())
    else:
        assert verdict.line.startswith("Integrity check FAILED: ")
        assert verdict.reason in set(Reason)


def test_signed_sidecar_round_trip(tmp_path: Path) -> None:
    dcm = make_dicom(tmp_path)
    signer = make_signer("ed25519")
    write_sidecar(dcm, custody_records(tmp_path), AE, signer)
    verdict = verify_sidecar(dcm, trust=[signer.certificate], require_signature=True)
    assert verdict.ok
    assert verdict.signer == signer.subject
    assert verdict.trusted is True
