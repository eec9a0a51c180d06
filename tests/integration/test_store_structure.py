"""A data set whose element structure does not hold is answered 0xC000 naming the byte
offset, is never archived, and the association goes on; a deflated data set is walked in
bounded memory, and refused beyond storage.max_inflated_size. On both association paths."""

from __future__ import annotations

import struct
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]
from sqlalchemy import func, select

from node.app import Node
from node.config import NodeConfig
from node.net.status import StorageStatus, VerificationStatus
from node.storage.database import instances
from tests.helpers import ct_dataset, split_part10, write_part10


@pytest.fixture(params=[True, False], ids=["fast-path", "pynetdicom-path"])
def fast_path(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def any_node(
    fast_path: bool, make_config: Callable[..., NodeConfig], start_node: Callable[..., Node]
) -> Node:
    return start_node(make_config(node={"fast_path": fast_path}))


@contextmanager
def raw_association(port: int, syntaxes: list[str]) -> Iterator[Any]:
    ae = AE(ae_title="TEST_SCU")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, syntaxes)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOM_NODE")
    assert assoc.is_established
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def send_file(assoc: Any, path: Path) -> Any:
    """C-STORE a Part 10 file's data set bytes exactly as they lie in the file."""
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        return assoc.send_c_store(path)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous


def archived(node: Node) -> int:
    with node.archive.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(instances)).scalar_one())


def rewritten(tmp_path: Path, name: str, change: Callable[[bytes], bytes]) -> Path:
    """A good CT file (``good.dcm``) and a copy with its data set bytes changed."""
    good = write_part10(ct_dataset(size=16), tmp_path / "good.dcm")
    meta, data = split_part10(good.read_bytes())
    path = tmp_path / name
    path.write_bytes(meta + change(data))
    return path


def element_offset(data: bytes, group: int, element: int) -> int:
    return data.index(struct.pack("<HH", group, element))


def huge_length(data: bytes) -> bytes:
    at = element_offset(data, 0x0028, 0x0002)
    return (
        data[:at] + struct.pack("<HH2sHL", 0x0028, 0x0002, b"OB", 0, 0xFFFFFFF0) + data[at + 10 :]
    )


CASES: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], int]]] = {
    # name: (how the data set is broken, the offset of the element the answer must name)
    "pixel-data-short": (lambda d: d[:-10], lambda d: element_offset(d, 0x7FE0, 0x0010)),
    "bytes-after-last": (lambda d: d + b"\x01\x02\x03", len),
    "huge-length-after-0020": (huge_length, lambda d: element_offset(d, 0x0028, 0x0002)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_data_set_is_answered_0xc000_naming_the_offset(
    any_node: Node, tmp_path: Path, case: str
) -> None:
    change, where = CASES[case]
    broken = rewritten(tmp_path, f"{case}.dcm", change)
    _meta, data = split_part10((tmp_path / "good.dcm").read_bytes())
    with raw_association(any_node.port, ["1.2.840.10008.1.2.1"]) as assoc:
        response = send_file(assoc, broken)
        assert response.Status == StorageStatus.FAILURE_CANNOT_UNDERSTAND
        assert response.ErrorComment.startswith(f"malformed at byte {where(data)}: ")
        assert send_file(assoc, tmp_path / "good.dcm").Status == StorageStatus.SUCCESS
        assert assoc.send_c_echo().Status == VerificationStatus.SUCCESS
    assert archived(any_node) == 1
    assert list((any_node.archive.files.root / ".tmp").iterdir()) == []


def test_implicit_vr_bytes_on_an_explicit_vr_context(any_node: Node, tmp_path: Path) -> None:
    ds = ct_dataset(size=16)
    implicit = write_part10(ds, tmp_path / "implicit.dcm", ImplicitVRLittleEndian)
    meta, data = split_part10(implicit.read_bytes())
    explicit_meta, _ = split_part10(write_part10(ds, tmp_path / "explicit.dcm").read_bytes())
    lying = tmp_path / "lying.dcm"
    lying.write_bytes(explicit_meta + data)  # says Explicit VR, holds Implicit VR bytes
    with raw_association(any_node.port, ["1.2.840.10008.1.2.1"]) as assoc:
        response = send_file(assoc, lying)
        assert response.Status == StorageStatus.FAILURE_CANNOT_UNDERSTAND
        assert response.ErrorComment.startswith("malformed at byte 0: invalid VR")
        assert assoc.send_c_echo().Status == VerificationStatus.SUCCESS
    assert archived(any_node) == 0
    assert meta != explicit_meta


def deflate_bomb(tmp_path: Path, inflated: int) -> Path:
    """A well-formed Deflated Explicit VR CT whose Pixel Data inflates to ``inflated``
    zero bytes, from a file of about a thousandth of that."""
    ds = ct_dataset(size=8)
    path = write_part10(ds, tmp_path / "bomb.dcm", DeflatedExplicitVRLittleEndian)
    meta, deflated = split_part10(path.read_bytes())
    head = zlib.decompress(deflated, -zlib.MAX_WBITS)
    head = head[: element_offset(head, 0x7FE0, 0x0010)]
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [packer.compress(head + struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OB", 0, inflated))]
    block = bytes(1 << 24)
    parts += [packer.compress(block) for _ in range(inflated >> 24)]
    parts.append(packer.flush())
    body = b"".join(parts)
    path.write_bytes(meta + body + b"\0" * (len(body) % 2))
    return path


def test_deflate_bomb_is_stored_in_bounded_memory(any_node: Node, tmp_path: Path) -> None:
    bomb = deflate_bomb(tmp_path, 1 << 30)  # 1 GiB inflated, about 1 MB sent
    assert bomb.stat().st_size < 2 << 20
    with raw_association(any_node.port, [DeflatedExplicitVRLittleEndian]) as assoc:
        tracemalloc.start()
        try:
            response = send_file(assoc, bomb)
            _now, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert response.Status == StorageStatus.SUCCESS  # well formed, and under the 4 GiB default
    assert peak < 64 << 20, f"peak {peak >> 20} MiB while receiving the deflated instance"
    assert archived(any_node) == 1


def test_deflated_beyond_the_ceiling_is_refused(
    fast_path: bool,
    make_config: Callable[..., NodeConfig],
    start_node: Callable[..., Node],
    tmp_path: Path,
) -> None:
    node = start_node(
        make_config(node={"fast_path": fast_path}, storage={"max_inflated_size": "64MiB"})
    )
    bomb = deflate_bomb(tmp_path, 256 << 20)
    with raw_association(node.port, [DeflatedExplicitVRLittleEndian]) as assoc:
        response = send_file(assoc, bomb)
        assert response.Status == StorageStatus.FAILURE_CANNOT_UNDERSTAND
        assert "storage.max_inflated_size" in response.ErrorComment
        assert assoc.send_c_echo().Status == VerificationStatus.SUCCESS
    assert archived(node) == 0
