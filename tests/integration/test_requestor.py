"""Our own C-STORE requestor (node.net.requestor) through node.scu, against DCMTK storescp.

storescp runs with ``+B`` (bit-preserving: it writes the data set as it came off the
wire), so a received file's data set can be compared byte for byte with the stored one.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from node.app import Node
from node.config import ClientTLS, NodeConfig, RemoteAE
from node.errors import OperationFailed
from node.net.requestor import Association
from node.scu.associate import store_association
from node.scu.store import NOT_NEGOTIATED, Outgoing, proposals_for, send_instance
from node.signatures.encoding import LONG_VRS
from node.storage.index import study_instances
from tests.helpers import (
    STUDY_UID,
    ct_dataset,
    dataset_bytes,
    run,
    split_part10,
    tool,
    write_part10,
)
from tests.integration.peers import DcmQrScp, _Process, free_port, port_open, wait_for
from tests.pki import issue, make_ca

pytestmark = pytest.mark.dcmtk

SCP_AE = "STORESCP"


class StoreScp(_Process):
    """DCMTK storescp on a free port, writing what it receives, bit for bit, into a folder."""

    def __init__(self, root: Path, *options: str) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.folder = root / "received"
        self.folder.mkdir()
        args = [tool("storescp"), "-d", "+B", "-aet", SCP_AE, "-od", str(self.folder)]
        self._start([*args, *options, str(self.port)], root / "storescp.log")
        wait_for(lambda: port_open(self.port), "storescp", self.proc)

    def received(self) -> dict[str, Path]:
        """Received files by SOP Instance UID."""
        return {
            str(dcmread(path, stop_before_pixels=True).SOPInstanceUID): path
            for path in self.folder.iterdir()
        }

    def remote(self) -> RemoteAE:
        return RemoteAE(name="scp", ae_title=SCP_AE, host="127.0.0.1", port=self.port)


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[Callable[..., StoreScp]]:
    """Start storescp with options; each is stopped at the end of the test."""
    started: list[StoreScp] = []

    def start(*options: str) -> StoreScp:
        scp = StoreScp(tmp_path / f"storescp-{len(started)}", *options)
        started.append(scp)
        return scp

    yield start
    for scp in started:
        scp.stop()


def outgoing(path: Path) -> Outgoing:
    ds = dcmread(path, stop_before_pixels=True)
    return Outgoing(
        path, str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.file_meta.TransferSyntaxUID)
    )


def instance(
    folder: Path, number: int, syntax: str = ExplicitVRLittleEndian, size: int = 64
) -> Path:
    ds = ct_dataset(number=number, seed=number, size=size)
    return write_part10(ds, folder / f"{number}.dcm", syntax)


def jpeg_instance(folder: Path, number: int) -> Path:
    plain = instance(folder, number)
    jpeg = folder / f"{number}.jpeg.dcm"
    run(tool("dcmcjpeg"), "+e1", plain, jpeg, check=True)
    assert dcmread(jpeg).file_meta.TransferSyntaxUID.is_compressed
    return jpeg


def with_group_length(path: Path) -> Path:
    """Add a (0008,0000) Group Length to the stored data set, in place.

    pydicom drops group lengths when it encodes a data set, so only a sender that sends
    the stored bytes untouched delivers this element.
    """
    head, body = split_part10(path.read_bytes())
    syntax = dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    explicit = syntax != ImplicitVRLittleEndian
    long_vrs = {vr.encode("ascii") for vr in LONG_VRS}
    end = 0
    while struct.unpack_from("<H", body, end)[0] == 0x0008:
        if not explicit:
            value_start, length = end + 8, struct.unpack_from("<I", body, end + 4)[0]
        elif body[end + 4 : end + 6] in long_vrs:
            value_start, length = end + 12, struct.unpack_from("<I", body, end + 8)[0]
        else:
            value_start, length = end + 8, struct.unpack_from("<H", body, end + 6)[0]
        end = value_start + length
    header = struct.pack("<HH2sH", 8, 0, b"UL", 4) if explicit else struct.pack("<HHI", 8, 0, 4)
    path.write_bytes(head + header + struct.pack("<I", end) + body)
    return path


def send_all(config: NodeConfig, remote: RemoteAE, files: list[Path]) -> list[int]:
    items = [outgoing(path) for path in files]
    with store_association(config, remote, proposals_for(items)) as assoc:
        assert isinstance(assoc, Association)  # plain TCP: our own requestor
        return [send_instance(assoc, item) for item in items]


@pytest.mark.parametrize(
    "syntax",
    [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, "jpeg"],
)
def test_stored_data_set_arrives_byte_identical(
    tmp_path: Path, make_config: Callable[..., NodeConfig], storescp: Callable[..., StoreScp],
    syntax: str,
) -> None:  # fmt: skip
    scp = storescp("+xa")  # every syntax DCMTK knows, so the stored one is accepted
    if syntax == "jpeg":
        files = [with_group_length(jpeg_instance(tmp_path, 1))]
    elif syntax == DeflatedExplicitVRLittleEndian:
        files = [instance(tmp_path, n, syntax) for n in (1, 2)]  # pydicom would inflate it
    else:
        files = [with_group_length(instance(tmp_path, n, syntax)) for n in (1, 2)]

    assert send_all(make_config(), scp.remote(), files) == [0] * len(files)

    received = scp.received()
    for path in files:
        sent = received[outgoing(path).sop_instance_uid]
        assert dcmread(sent).file_meta.TransferSyntaxUID == outgoing(path).transfer_syntax_uid
        assert dataset_bytes(sent) == dataset_bytes(path)


def test_refused_syntax_falls_back_to_implicit_with_values_unchanged(
    tmp_path: Path, make_config: Callable[..., NodeConfig], storescp: Callable[..., StoreScp]
) -> None:
    scp = storescp("+xi")  # Implicit VR Little Endian only
    path = instance(tmp_path, 1)

    assert send_all(make_config(), scp.remote(), [path]) == [0]

    (received,) = scp.received().values()
    assert dcmread(received).file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    original, copy = dcmread(path), dcmread(received)
    assert [e.tag for e in copy] == [e.tag for e in original]
    for element in original:
        assert copy[element.tag].value == element.value, element
    # Only the element headers changed: 4 bytes fewer (VR and reserved bytes) per element.
    assert len(dataset_bytes(received)) < len(dataset_bytes(path))


def test_compressed_syntax_refused_is_not_negotiated_and_not_transcoded(
    tmp_path: Path, make_config: Callable[..., NodeConfig], storescp: Callable[..., StoreScp]
) -> None:
    scp = storescp()  # uncompressed syntaxes only
    jpeg, plain = jpeg_instance(tmp_path, 1), instance(tmp_path, 2)

    # The association stays usable after the instance it could not carry.
    assert send_all(make_config(), scp.remote(), [jpeg, plain]) == [NOT_NEGOTIATED, 0]
    assert list(scp.received()) == [outgoing(plain).sop_instance_uid]


def test_fragments_fit_the_peer_maximum_pdu_length(
    tmp_path: Path, make_config: Callable[..., NodeConfig], storescp: Callable[..., StoreScp]
) -> None:
    scp = storescp("--max-pdu", "4096")
    path = instance(tmp_path, 1, size=256)  # 128 KiB of pixels: over 30 PDUs
    item = outgoing(path)

    with store_association(make_config(), scp.remote(), proposals_for([item])) as assoc:
        assert isinstance(assoc, Association)
        assert assoc.peer_max == 4096
        assert send_instance(assoc, item) == 0

    assert dataset_bytes(scp.received()[item.sop_instance_uid]) == dataset_bytes(path)


def test_message_ids_move_originator_and_release(
    tmp_path: Path, make_config: Callable[..., NodeConfig], storescp: Callable[..., StoreScp]
) -> None:
    scp = storescp()
    items = [outgoing(instance(tmp_path, n)) for n in (1, 2)]

    with store_association(make_config(), scp.remote(), proposals_for(items)) as assoc:
        assert isinstance(assoc, Association)
        assert send_instance(assoc, items[0]) == 0
        assert send_instance(assoc, items[1], originator=("MOVER", 7)) == 0
    assert not assoc.is_open

    scp.stop()  # its log is complete once it exits
    log = scp.log()
    assert "Message ID                    : 1" in log
    assert "Message ID                    : 2" in log
    assert "Move Originator AE Title      : MOVER" in log
    assert "Move Originator ID            : 7" in log
    assert log.count("Move Originator AE Title") == 1
    assert "Association Release" in log


def test_rejection_by_the_called_ae_is_operation_failed(
    tmp_path: Path, make_config: Callable[..., NodeConfig]
) -> None:
    item = outgoing(instance(tmp_path, 1))
    with DcmQrScp(tmp_path / "qr") as qr:
        wrong = RemoteAE(name="pacs", ae_title="NOT_QRSCP", host="127.0.0.1", port=qr.port)
        with (
            pytest.raises(OperationFailed) as failure,
            store_association(make_config(), wrong, proposals_for([item])),
        ):
            pass
    assert str(failure.value) == (
        f"pacs (NOT_QRSCP@127.0.0.1:{qr.port}) rejected the association "
        "(rejected-permanent, service-user: called AE title not recognized)"
    )


def test_peer_not_listening_is_operation_failed(make_config: Callable[..., NodeConfig]) -> None:
    port = free_port()  # bound once, then released: nothing listens there
    remote = RemoteAE(name="down", ae_title=SCP_AE, host="127.0.0.1", port=port)
    verification = [("1.2.840.10008.1.1", ("1.2.840.10008.1.2",))]
    with (
        pytest.raises(OperationFailed, match="could not be reached") as failure,
        store_association(make_config(), remote, verification),
    ):
        pass
    assert f"down ({SCP_AE}@127.0.0.1:{port})" in str(failure.value)


def test_abort_during_store_is_operation_failed(
    tmp_path: Path, make_config: Callable[..., NodeConfig], storescp: Callable[..., StoreScp]
) -> None:
    scp = storescp("--abort-after")
    item = outgoing(instance(tmp_path, 1))

    with store_association(make_config(), scp.remote(), proposals_for([item])) as assoc:
        with pytest.raises(OperationFailed, match=f"C-STORE of {item.sop_instance_uid} failed"):
            send_instance(assoc, item)
        assert not assoc.is_open  # the context manager then has nothing to release


def test_no_response_within_the_dimse_timeout_aborts(
    tmp_path: Path, make_config: Callable[..., NodeConfig], storescp: Callable[..., StoreScp]
) -> None:
    scp = storescp("--sleep-during", "5")
    item = outgoing(instance(tmp_path, 1))
    config = make_config(node={"dimse_timeout": "0.5s"})

    with store_association(config, scp.remote(), proposals_for([item])) as assoc:
        with pytest.raises(OperationFailed, match="no response in time"):
            send_instance(assoc, item)
        assert not assoc.is_open


def test_tls_partner_is_served_through_pynetdicom(
    tmp_path: Path, make_config: Callable[..., NodeConfig], start_node: Callable[..., Node]
) -> None:
    ca, ca_key, ca_cert = make_ca(tmp_path / "pki")
    server = issue(tmp_path / "pki", "server", ca_key, ca_cert)
    client = issue(tmp_path / "pki", "client", ca_key, ca_cert)
    tls = {"certificate": str(server.cert), "key": str(server.key), "ca": str(ca.cert)}
    partner = start_node(make_config(tls=tls))
    remote = RemoteAE(
        name="tls-partner",
        ae_title=partner.config.node.ae_title,
        host="127.0.0.1",
        port=partner.port,
        tls=ClientTLS(ca=ca.cert, certificate=client.cert, key=client.key),
    )
    path = instance(tmp_path, 1)
    item = outgoing(path)

    with store_association(make_config(), remote, proposals_for([item])) as assoc:
        assert not isinstance(assoc, Association)
        assert send_instance(assoc, item) == 0

    (row,) = study_instances(partner.archive.engine, STUDY_UID)
    assert row.sop_instance_uid == item.sop_instance_uid
    stored = partner.archive.files.path(row.path)
    assert dataset_bytes(stored) == dataset_bytes(path)
