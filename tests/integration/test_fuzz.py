"""Bounded fuzzing of the Upper Layer and DIMSE input, on both association paths.

Each case is one TCP connection carrying hostile bytes: a random PDU, a valid
association stream (A-ASSOCIATE-RQ, C-ECHO, C-STORE, A-RELEASE-RQ) with random
mutations, a valid association with a mutated command set, or one with a mutated data
set. The client half-closes after sending and reads until the node closes, so no case
waits on a timer. After each batch the node must still answer C-ECHO, leave no
temporary file and no archived file without its index row (nor a row without its
file), keep a verifiable audit chain, and have logged no traceback.

The generator is a seeded ``random.Random``: set ``FUZZ_SEED`` to replay a failure,
whose message names the seed, the batch and the case kinds of that batch.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]
from sqlalchemy import select

from node.app import Node
from node.net import dimse, pdu
from node.net.status import StorageStatus, VerificationStatus
from node.storage import audit
from node.storage.database import instances
from tests.helpers import ct_dataset, dataset_bytes, write_part10
from tests.integration.scu import association

SEED = int(os.environ.get("FUZZ_SEED", "20261201"))
# Cases per association path: pynetdicom spends about 35 ms on a connection, the fast
# path a few; both runs together stay well under two minutes on two cores.
CASES = {True: 1500, False: 900}
BATCH = 150
CT = str(CTImageStorage)
VERIFICATION = str(Verification)
EXPLICIT = str(ExplicitVRLittleEndian)
IMPLICIT = str(ImplicitVRLittleEndian)
CONTEXTS = [
    pdu.ProposedContext(1, VERIFICATION, (EXPLICIT, IMPLICIT)),
    pdu.ProposedContext(3, CT, (EXPLICIT,)),
]
# A UID of fixed length in the template data set, replaced per case so that the
# instances that survive mutation are new ones, not duplicates.
PLACEHOLDER = "1.2.826.0.1.3680043.8.498.7.1000000000.100000"
LENGTHS = (0, 1, 2, 3, 4, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFF0, 0xFFFFFFFF)


def case_uid(seed: int, case: int) -> str:
    uid = f"1.2.826.0.1.3680043.8.498.7.1{seed % 10**9:09d}.1{case:05d}"
    assert len(uid) == len(PLACEHOLDER)
    return uid


class Generator:
    """Hostile connections, each a list of byte strings sent in order."""

    def __init__(self, seed: int, template: bytes) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.template = template

    def bytes_(self, low: int, high: int) -> bytes:
        return self.rng.randbytes(self.rng.randint(low, high))

    def mutate(self, data: bytes, rounds: int = 1) -> bytes:
        rng = self.rng
        buffer = bytearray(data)
        for _ in range(rounds):
            if not buffer:
                buffer += self.bytes_(1, 16)
                continue
            at = rng.randrange(len(buffer))
            op = rng.randrange(6)
            if op == 0:  # flip a few bytes
                for _ in range(rng.randint(1, 4)):
                    buffer[rng.randrange(len(buffer))] = rng.randrange(256)
            elif op == 1:  # truncate
                del buffer[at:]
            elif op == 2:  # insert random bytes
                buffer[at:at] = self.bytes_(1, 32)
            elif op == 3:  # delete a slice
                del buffer[at : at + rng.randint(1, 64)]
            elif op == 4:  # an extreme length where a length may be
                buffer[at : at + 4] = rng.choice(LENGTHS).to_bytes(4, rng.choice(["big", "little"]))
            else:  # repeat a slice
                buffer[at:at] = buffer[at : at + rng.randint(1, 128)]
        return bytes(buffer)

    def request(self) -> bytes:
        return pdu.encode_associate_rq("DICOM_NODE", "FUZZ", CONTEXTS, 16384, "1.2.3.4", "FUZZ")

    def dataset(self, case: int) -> bytes:
        return self.template.replace(PLACEHOLDER.encode(), case_uid(self.seed, case).encode())

    def store(self, case: int, command: bytes | None = None, data: bytes | None = None) -> bytes:
        command = command or dimse.store_request(case % 65536, CT, case_uid(self.seed, case))
        data = self.dataset(case) if data is None else data
        cid = 3 if self.rng.random() < 0.9 else self.rng.choice([1, 5, 255])
        parts = [pdu.p_data_header(cid, True, True, len(command)), command]
        size = self.rng.choice([len(data) or 1, 256, 1000])
        for head, chunk in pdu.fragments(cid, False, data, size + 6):
            parts += [head, bytes(chunk)]
        return b"".join(parts)

    def echo(self) -> bytes:
        command = dimse.encode_command(
            [
                (dimse.AFFECTED_SOP_CLASS_UID, VERIFICATION),
                (dimse.COMMAND_FIELD, dimse.C_ECHO_RQ),
                (dimse.MESSAGE_ID, 1),
                (dimse.COMMAND_DATA_SET_TYPE, dimse.NO_DATA_SET),
            ]
        )
        return pdu.p_data_header(1, True, True, len(command)) + command

    def command(self, case: int) -> bytes:
        """A C-STORE-RQ command set with random elements, values and lengths."""
        rng = self.rng
        fields: list[tuple[int, int | str]] = [
            (dimse.AFFECTED_SOP_CLASS_UID, rng.choice([CT, VERIFICATION, "", "1.2.x", "9" * 70])),
            (dimse.COMMAND_FIELD, rng.choice([1, 1, 1, 0x30, 0x20, 0x8001, 0x0FFF, 0xFFFF])),
            (dimse.MESSAGE_ID, rng.randrange(65536)),
            (dimse.PRIORITY, rng.choice([0, 1, 2, 7])),
            (dimse.COMMAND_DATA_SET_TYPE, rng.choice([0, 0, 0x0101, 0xFFFF])),
            (
                dimse.AFFECTED_SOP_INSTANCE_UID,
                rng.choice([case_uid(self.seed, case), "", "1" * 70]),
            ),
        ]
        fields = [f for f in fields if rng.random() < 0.9]
        encoded = dimse.encode_command(fields)
        return self.mutate(encoded, rng.randint(0, 2)) if rng.random() < 0.5 else encoded

    def connection(self, case: int) -> tuple[str, list[bytes]]:
        rng = self.rng
        kind = rng.choice(["raw-pdu", "stream", "command", "dataset", "request"])
        if kind == "raw-pdu":
            body = self.bytes_(0, 300)
            length = len(body) if rng.random() < 0.7 else rng.choice(LENGTHS)
            sent = [pdu.header(rng.randrange(10), length) + body]
            if rng.random() < 0.5:
                sent.insert(0, self.request())
        elif kind == "stream":
            stream = [self.request(), self.echo(), self.store(case), pdu.encode_release_rq()]
            if rng.random() < 0.3:  # the whole stream at once, mutated anywhere
                sent = [self.mutate(b"".join(stream), rng.randint(1, 4))]
            else:  # each part mutated or not, at least one
                chosen = rng.randrange(len(stream))
                sent = [
                    self.mutate(part, rng.randint(1, 3))
                    if i == chosen or rng.random() < 0.2
                    else part
                    for i, part in enumerate(stream)
                ]
        elif kind == "command":
            data = b"" if rng.random() < 0.2 else None
            sent = [self.request(), self.store(case, self.command(case), data)]
        elif kind == "dataset":
            data = self.mutate(self.dataset(case), rng.randint(1, 3))
            sent = [self.request(), self.store(case, data=data), pdu.encode_release_rq()]
        else:
            sent = [self.mutate(self.request(), rng.randint(1, 3))]
        return kind, sent


def exchange(port: int, parts: list[bytes]) -> None:
    """Send the request, wait for its answer, send the rest, half-close, read until the
    node closes (each read bounded by a safety timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(parts[0])
            if len(parts) > 1 and whole_pdu(parts[0]) and first_pdu_type(sock) == pdu.ASSOCIATE_AC:
                # After the A-ASSOCIATE-AC, as a requestor may (PS3.8 9.2, Sta5 to Sta6).
                sock.sendall(b"".join(parts[1:]))
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
        except TimeoutError:
            raise
        except OSError:
            pass  # the node aborted and closed while we were still sending


def whole_pdu(data: bytes) -> bool:
    """True when ``data`` is one PDU as long as its header says: the node will answer it
    (otherwise it rightly waits for the rest, up to ``node.acse_timeout``)."""
    return len(data) >= pdu.HEADER_LENGTH and pdu.parse_header(data)[1] == len(data) - 6


def first_pdu_type(sock: socket.socket) -> int | None:
    """The type of the node's first PDU, read whole (None if it closed first)."""
    head = sock.recv(pdu.HEADER_LENGTH, socket.MSG_WAITALL)
    if len(head) < pdu.HEADER_LENGTH:
        return None
    pdu_type, length = pdu.parse_header(head)
    remaining = min(length, 1 << 16)
    while remaining:
        chunk = sock.recv(remaining)
        if not chunk:
            return None
        remaining -= len(chunk)
    return pdu_type


def check_node(node: Node, where: str) -> None:
    """After a batch: C-ECHO answered, nothing partial on disk, the audit chain holds."""
    assert node.inflight.wait_idle(30), f"{where}: a store is still in progress"
    if node.fast_path is not None:
        assert node.fast_path.wait_idle(time.monotonic() + 30), f"{where}: fast path busy"
    with association(node.port, aet="CHECK") as assoc:
        assert assoc.send_c_echo().Status == VerificationStatus.SUCCESS, (
            f"{where}: no C-ECHO answer"
        )
        clean = ct_dataset(size=8)  # and it still archives a well-formed instance
        assert assoc.send_c_store(clean).Status == StorageStatus.SUCCESS, f"{where}: store refused"
    root = node.archive.files.root
    leftovers = list((root / ".tmp").iterdir())
    assert leftovers == [], f"{where}: temporary files left: {leftovers[:3]}"
    archived = {
        p.relative_to(root).as_posix()
        for p in root.rglob("*.dcm")
        if not p.relative_to(root).parts[0].startswith(".")
    }
    with node.archive.engine.connect() as conn:
        indexed = {row.path for row in conn.execute(select(instances.c.path))}
    assert archived - indexed == set(), f"{where}: files without an index row"
    assert indexed - archived == set(), f"{where}: index rows without a file"
    report = audit.verify_chain(node.archive.engine)
    assert report.ok, f"{where}: audit chain broken at {report.broken_seq}: {report.reason}"


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom's value warnings, as deployed
def test_fuzzed_connections_leave_the_node_whole(
    node_any_path: Node, fast_path: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    template = dataset_bytes(
        write_part10(ct_dataset(size=8, SOPInstanceUID=PLACEHOLDER), tmp_path / "t.dcm")
    )
    generator = Generator(SEED, template)
    kinds: dict[str, int] = {}
    for first in range(0, CASES[fast_path], BATCH):
        batch: list[str] = []
        for case in range(first, first + BATCH):
            kind, parts = generator.connection(case)
            batch.append(kind)
            kinds[kind] = kinds.get(kind, 0) + 1
            where = f"FUZZ_SEED={SEED} case {case} ({kind})"
            try:
                exchange(node_any_path.port, parts)
            except TimeoutError:
                pytest.fail(f"{where}: the node neither answered nor closed within 30 s")
        where = f"FUZZ_SEED={SEED} batch {first}-{first + BATCH - 1}"
        check_node(node_any_path, where)
        tracebacks = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
        assert not tracebacks, f"{where}: traceback logged: {tracebacks[0].getMessage()}"
    assert len(kinds) == 5 and min(kinds.values()) > CASES[fast_path] // 10
    # Enough fuzzed C-STOREs reached the store handler (stored, or refused with a status
    # after the structure check), so the data set cases exercised the archive's checks.
    reached = [
        r
        for r in audit.records(node_any_path.archive.engine)
        if r.event in ("instance-stored", "store-failed") and r.details.get("calling_ae") == "FUZZ"
    ]
    assert len(reached) > CASES[fast_path] // 20, "hardly any case got as far as a C-STORE"
    assert any(r.event == "instance-stored" for r in reached), "no fuzzed case was stored"
