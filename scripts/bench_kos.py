#!/usr/bin/env python3
"""KOS benchmark: from N-SET COMPLETED to a durable signed KOS, against plain SHA-256 hashing.

What it measures (issue 4, "Benchmark"): for a study of N instances (default 1000) that is
already stored, the wall time from the moment the N-SET COMPLETED response arrives at the
MPPS SCU until the acquisition is ``kos-built`` in the node's database AND the KOS file and
its ``.dcm.sig`` sidecar exist in the archive. The baseline is the time to hash the same N
archived files with hashlib SHA-256 (read from disk in 1 MiB blocks), in the same run. The
target is a ratio (KOS time / hashing time) of no more than 3.

How: a dicom-node runs in this process (port 0, archive, SQLite index and a development
signing key in a temporary folder, fsync on as by default). N CT Image Storage instances
(SIZE x SIZE, 16-bit noise, Explicit VR Little Endian, in 4 series of one study) are sent
once with a pynetdicom SCU over one association; sending is not timed. Each run then
warms the page cache by reading the archived files once, sends N-CREATE and an N-SET
COMPLETED that lists all N instances with a fresh MPPS UID (the KOS UID derives from the
MPPS UID, so every run builds a new KOS over the same instances) and releases the
association, as a modality does. It then waits for the node's KOS builder to return (an
event: a thread polling the database every 2 ms, or an idle association whose threads
wake every millisecond, would compete with the node for the interpreter lock and slow the
very work being measured), then polls the database every few milliseconds (a bounded
wait) until the KOS is recorded. Then it hashes the files.
The "in builder" column is the time spent inside the node's KOS builder itself (MACs,
signing, storing, audit, sidecar); the rest is scheduling and bookkeeping. The "check"
columns time what a receiver of the KOS does (issue 6, same target): verify its signature
and recompute every referenced MAC from the stored files (instances found through a dict,
so the archive index's look-ups are not part of it).

Each run checks that the KOS references all N instances, each with a MAC; ``--check``
also verifies its signature (SR profile, the node's certificate trusted) with dicom-node
and with DCMTK ``dcmsign --verify +rs +cf CERT``. DCMTK 3.6.6/3.6.7 cut the MAC stream of
a sequence nested in an item wherever their 16 KiB MAC buffer fills, so they reject
nearly every KOS whose MAC stream is longer than 16 KiB (see README). When dcmsign
fails, it signs a copy of the KOS with ``--dump`` and its stream is compared with
dicom-node's: a stream that is dicom-node's with only such cuts is reported as the DCMTK
defect ("dcmsign" column), any other difference as a failed check. A failed check is
reported (and makes the exit status 1) but does not drop the run's timing. ``--profile``
adds one more run with the builder under cProfile (not counted in the table) and prints
where the time goes to stderr.

Usage: scripts/bench_kos.py [--runs 3] [--instances 1000] [--size 256|512] [--check]
                            [--profile] [--markdown] [--keep]
Progress goes to stderr, the result table to stdout. Exit status 1 if a run failed.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import hashlib
import io
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's tests package

from node.app import Node, build_node, configure_libraries, ensure_development_key
from node.config import parse_config
from node.documents.acquisition_kos import derived_uid
from node.signatures import Profile, check_document_references, load_trust, verify_file
from node.signatures.encoding import read_file as read_encoded
from node.signatures.verify import signature_stream
from node.storage.index import find_instance
from tests.integration.mpps_scu import create_attributes  # one N-CREATE builder for both

NODE_AET = "DICOM_NODE"
SCU_AET = "CT_1"
SERIES = 4
BLOCK = 1 << 20
TARGET_RATIO = 3.0
KOS_TIMEOUT_S = 600.0
PATIENT = {"PatientName": "Bench^Kos", "PatientID": "BENCH-KOS", "PatientBirthDate": "19700101"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True, slots=True)
class Ref:
    series_uid: str
    sop_instance_uid: str


def ct_instance(study_uid: str, series_uid: str, number: int, pixels: bytes, size: int) -> Dataset:
    """One complete CT image (Explicit VR Little Endian) with the given pixel bytes."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyDate = "20261122"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACC-BENCH"
    ds.Modality = "CT"
    ds.Manufacturer = "Bench"
    ds.ReferringPhysicianName = ""
    for keyword, value in PATIENT.items():
        setattr(ds, keyword, value)
    ds.PatientSex = "O"
    ds.KVP = "120"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = int(series_uid.rsplit(".", 1)[1])
    ds.InstanceNumber = number
    ds.ImagePositionPatient = [0, 0, number]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = study_uid + ".9"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.PixelSpacing = [0.5, 0.5]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.PixelData = pixels
    return ds


def store_study(port: int, study_uid: str, count: int, size: int) -> list[Ref]:
    """Generate and C-STORE ``count`` instances over one association; return their UIDs."""
    ae = AE(ae_title=SCU_AET)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AET)
    if not assoc.is_established:
        raise RuntimeError("the node refused the storage association")
    rng = np.random.default_rng(4)
    refs: list[Ref] = []
    try:
        for i in range(count):
            series_uid = f"{study_uid}.{i * SERIES // count + 1}"
            pixels = rng.integers(0, 4096, (size, size), dtype=np.uint16).tobytes()
            ds = ct_instance(study_uid, series_uid, i + 1, pixels, size)
            status = assoc.send_c_store(ds)
            if status.get("Status") != 0:
                raise RuntimeError(f"C-STORE {i} failed: {status}")
            refs.append(Ref(series_uid, str(ds.SOPInstanceUID)))
            if (i + 1) % 250 == 0:
                log(f"  stored {i + 1}/{count}")
    finally:
        if assoc.is_established:
            assoc.release()
    return refs


# --------------------------------------------------------------------------- MPPS


def completed_attributes(refs: list[Ref]) -> Dataset:
    """N-SET modification list: COMPLETED, listing every instance under its series."""
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "COMPLETED"
    ds.PerformedProcedureStepEndDate = "20261122"
    ds.PerformedProcedureStepEndTime = "103000"
    by_series: dict[str, list[str]] = {}
    for ref in refs:
        by_series.setdefault(ref.series_uid, []).append(ref.sop_instance_uid)
    items = []
    for series_uid, uids in by_series.items():
        item = Dataset()
        item.PerformingPhysicianName = ""
        item.ProtocolName = "Bench"
        item.OperatorsName = ""
        item.SeriesInstanceUID = series_uid
        item.SeriesDescription = ""
        item.RetrieveAETitle = ""
        images = Sequence()
        for uid in uids:
            image = Dataset()
            image.ReferencedSOPClassUID = CTImageStorage
            image.ReferencedSOPInstanceUID = uid
            images.append(image)
        item.ReferencedImageSequence = images
        item.ReferencedNonImageCompositeSOPInstanceSequence = Sequence()
        items.append(item)
    ds.PerformedSeriesSequence = Sequence(items)
    return ds


class MppsScu:
    """A pynetdicom MPPS SCU over one association."""

    def __init__(self, port: int) -> None:
        ae = AE(ae_title=SCU_AET)
        ae.add_requested_context(ModalityPerformedProcedureStep)
        self.assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AET)
        if not self.assoc.is_established:
            raise RuntimeError("the node refused the MPPS association")

    def create(self, attributes: Dataset) -> str:
        uid = str(generate_uid())
        status, _ = self.assoc.send_n_create(attributes, ModalityPerformedProcedureStep, uid)
        if status.get("Status") != 0:
            raise RuntimeError(f"N-CREATE failed: {status}")
        return uid

    def set(self, uid: str, modification: Dataset) -> None:
        status, _ = self.assoc.send_n_set(modification, ModalityPerformedProcedureStep, uid)
        if status.get("Status") != 0:
            raise RuntimeError(f"N-SET failed: {status}")

    def close(self) -> None:
        if self.assoc.is_established:
            self.assoc.release()


# --------------------------------------------------------------------------- measuring


class BuilderTimer:
    """Wraps the tracker's KOS builder to time it (and optionally profile it).

    ``returned(uid)`` is an event set when the builder returns (or fails) for that MPPS.
    """

    def __init__(self, build: Callable[[str], str]) -> None:
        self.build = build
        self.seconds: dict[str, float] = {}
        self.profiler: cProfile.Profile | None = None
        self._lock = threading.Lock()
        self._returned: dict[str, threading.Event] = {}

    def returned(self, mpps_uid: str) -> threading.Event:
        with self._lock:
            return self._returned.setdefault(mpps_uid, threading.Event())

    def __call__(self, mpps_uid: str) -> str:
        started = time.perf_counter()
        try:
            if self.profiler is not None:
                return str(self.profiler.runcall(self.build, mpps_uid))
            return self.build(mpps_uid)
        finally:
            self.seconds[mpps_uid] = time.perf_counter() - started
            self.returned(mpps_uid).set()


def read_all(paths: list[Path]) -> int:
    """Read every file once (page cache warm-up); return the byte count."""
    total = 0
    for path in paths:
        with path.open("rb", buffering=0) as fh:
            while chunk := fh.read(BLOCK):
                total += len(chunk)
    return total


def hash_all(paths: list[Path]) -> float:
    """Seconds to SHA-256 every file, read in 1 MiB blocks."""
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    started = time.perf_counter()
    for path in paths:
        digest = hashlib.sha256()
        with path.open("rb", buffering=0) as fh:
            while n := fh.readinto(buf):
                digest.update(view[:n])
        digest.hexdigest()
    return time.perf_counter() - started


def kos_ready(node: Node, mpps_uid: str) -> Path | None:
    """The KOS path once the acquisition is kos-built and the KOS and its sidecar exist."""
    acq = node.workflow.tracker.get(mpps_uid)
    if acq is None:
        return None
    if acq.state == "failed":
        raise RuntimeError(f"building the KOS failed: {acq.detail}")
    if acq.state != "kos-built" or not acq.kos_uid:
        return None
    with node.archive.engine.connect() as conn:
        row = find_instance(conn, acq.kos_uid)
    if row is None:
        return None
    path = node.archive.files.path(row.path)
    return path if path.is_file() and Path(f"{path}.sig").is_file() else None


def wait_kos(node: Node, mpps_uid: str, poll: float, built: threading.Event) -> Path:
    """Wait for the builder to return, then poll until the KOS is durable (bounded)."""
    pause = threading.Event()
    deadline = time.monotonic() + KOS_TIMEOUT_S
    built.wait(KOS_TIMEOUT_S)
    while time.monotonic() < deadline:
        path = kos_ready(node, mpps_uid)
        if path is not None:
            return path
        pause.wait(poll)
    raise RuntimeError(f"no KOS for MPPS {mpps_uid} after {KOS_TIMEOUT_S:.0f} s")


DCMTK_BLOCK = 16384  # SiMACConstructor_BlockSize in dcmsign/libsrc/simaccon.cc


def check_kos(
    path: Path, mpps_uid: str, count: int, signing: tuple[Path, Path], dcmsign: str | None
) -> tuple[str, str]:
    """(problems with the KOS or "", what dcmsign said: "ok", "DCMTK defect" or "-")."""
    key, cert = signing
    kos = dcmread(path)
    problems = []
    if kos.SOPInstanceUID != derived_uid("kos", mpps_uid):
        problems.append("KOS UID is not derived from the MPPS UID")
    refs = [
        sop
        for study in kos.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    ]
    if len(refs) != count:
        problems.append(f"KOS references {len(refs)} of {count} instances")
    if any("ReferencedSOPInstanceMACSequence" not in sop for sop in refs):
        problems.append("a reference has no MAC")
    dcmtk = "-"
    if dcmsign:
        report = verify_file(path, trust=load_trust([cert]), require_profile=Profile.SR)
        if not report.ok:
            problems.append("dicom-node verify: " + "; ".join(report.problems))
        result = tool_run(dcmsign, "--verify", "+rs", "+cf", cert, path)
        if result.returncode == 0:
            dcmtk = "ok"
        elif dcmtk_cuts_only(path, key, cert, dcmsign):
            dcmtk = "DCMTK defect"
        else:
            problems.append(f"dcmsign --verify failed: {(result.stdout + result.stderr).strip()}")
    return "; ".join(problems), dcmtk


def tool_run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [str(a) for a in args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def dcmtk_cuts_only(path: Path, key: Path, cert: Path, dcmsign: str) -> bool:
    """Whether dcmsign's own MAC stream for the KOS is ours with only buffer-boundary cuts.

    dcmsign signs a copy (a second signature) and dumps the stream it hashed; dicom-node
    computes the stream of that same signature. Every difference must be a run of our
    bytes missing from dcmsign's stream where its 16 KiB buffer was full (at or within a
    header's length before a multiple of 16384): the defect described in the README.
    """
    with tempfile.TemporaryDirectory() as tmp:
        signed, dump = Path(tmp) / "signed.dcm", Path(tmp) / "stream.bin"
        sign = tool_run(dcmsign, "--sign", key, cert, "-pw", "--mac-sha256", "--dump", dump,
                        path, signed)  # fmt: skip
        if sign.returncode != 0:
            return False
        uid = str(dcmread(signed).DigitalSignaturesSequence[-1].DigitalSignatureUID)
        ours = signature_stream(read_encoded(signed), uid)
        return cut_at_blocks(ours, dump.read_bytes())


def cut_at_blocks(ours: bytes, theirs: bytes) -> bool:
    """``theirs`` is ``ours`` with at least one run cut out, each at a 16 KiB boundary.

    A cut starts where dcmsign's buffer was full: at a multiple of 16384 in its stream,
    or up to 12 bytes before one (an element header that did not fit). The first
    differing byte may come a little after the cut when the cut-out bytes begin like the
    ones that follow, so cut starts up to 64 bytes back are tried.
    """
    i = j = cuts = 0
    while True:
        same = common_prefix(ours, i, theirs, j)
        i, j = i + same, j + same
        if j == len(theirs):
            return i == len(ours) and cuts > 0
        for start in range(j, max(j - 64, -1), -1):
            offset = start % DCMTK_BLOCK
            if offset and offset < DCMTK_BLOCK - 12:
                continue
            resume = ours.find(theirs[start : start + 64], i - (j - start) + 1)
            if resume >= 0:
                i, j, cuts = resume, start, cuts + 1
                break
        else:
            return False


def common_prefix(a: bytes, i: int, b: bytes, j: int) -> int:
    """The length of the common prefix of ``a[i:]`` and ``b[j:]``."""
    n = 0
    while i + n + 4096 <= len(a) and j + n + 4096 <= len(b):
        if a[i + n : i + n + 4096] != b[j + n : j + n + 4096]:
            break
        n += 4096
    while i + n < len(a) and j + n < len(b) and a[i + n] == b[j + n]:
        n += 1
    return n


@dataclass
class Run:
    kos_s: float
    builder_s: float
    hash_s: float
    check_s: float
    problem: str = ""
    dcmtk: str = "-"

    @property
    def ratio(self) -> float:
        return self.kos_s / self.hash_s

    @property
    def check_ratio(self) -> float:
        return self.check_s / self.hash_s


def receiver_check(path: Path, lookup: dict[str, Path], cert: Path) -> tuple[float, str]:
    """Seconds for a receiver to check the KOS (issue 6), and any problem found.

    Its signature (SR profile) and every secure reference against the stored files,
    which ``lookup`` (a dict here, so index look-ups are not timed) finds by UID.
    """
    trust = load_trust([cert])
    started = time.perf_counter()
    report = verify_file(path, trust=trust, require_profile=Profile.SR)
    checks = check_document_references(path, lookup.get, trust=trust)
    seconds = time.perf_counter() - started
    bad = [c for c in checks if not c.ok]
    if not report.ok or bad or len(checks) != len(lookup):
        found = report.problems + [p for c in bad[:3] for p in c.problems]
        return seconds, f"receiver check: {len(checks)} references; " + "; ".join(found)
    return seconds, ""


@dataclass
class Bench:
    node: Node
    timer: BuilderTimer
    study_uid: str
    refs: list[Ref]
    paths: list[Path]
    poll: float
    dcmsign: str | None
    runs: list[Run] = field(default_factory=list)

    @property
    def lookup(self) -> dict[str, Path]:
        return {ref.sop_instance_uid: path for ref, path in zip(self.refs, self.paths, strict=True)}

    def one(self, label: str) -> Run:
        read_all(self.paths)  # warm for both measurements
        scu = MppsScu(self.node.port)
        try:
            mpps_uid = scu.create(create_attributes(self.study_uid))
            scu.set(mpps_uid, completed_attributes(self.refs))
            started = time.perf_counter()  # the N-SET response has arrived
        finally:
            scu.close()  # as a modality does; its idle threads would otherwise poll each ms
        path = wait_kos(self.node, mpps_uid, self.poll, self.timer.returned(mpps_uid))
        kos_s = time.perf_counter() - started
        hash_s = hash_all(self.paths)
        signing = (self.node.config.signing.key, self.node.config.signing.certificate)
        check_s, check_problem = receiver_check(path, self.lookup, signing[1])
        problem, dcmtk = check_kos(path, mpps_uid, len(self.refs), signing, self.dcmsign)
        problem = "; ".join(p for p in (problem, check_problem) if p)
        builder_s = self.timer.seconds.get(mpps_uid, float("nan"))
        run = Run(kos_s, builder_s, hash_s, check_s, problem, dcmtk)
        log(
            f"  {label}: KOS {kos_s:.3f} s (builder {run.builder_s:.3f} s), "
            f"SHA-256 {hash_s:.3f} s, ratio {run.ratio:.2f}; receiver check {check_s:.3f} s, "
            f"ratio {run.check_ratio:.2f}  {problem or 'ok'}"
            + (f"; dcmsign: {dcmtk}" if dcmtk != "-" else "")
        )
        return run


# --------------------------------------------------------------------------- report


def spread(values: list[float], digits: int = 3) -> str:
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{mid:.{digits}f} [{low:.{digits}f}-{high:.{digits}f}]"


def table(runs: list[Run], count: int, size: int, nbytes: int, markdown: bool) -> str:
    header = [
        "instances",
        "size",
        "MB",
        "checks ok",
        "dcmsign",
        "KOS s median [min-max]",
        "in builder s",
        "SHA-256 s median [min-max]",
        "SHA-256 MB/s",
        "ratio median [min-max]",
        f"target <= {TARGET_RATIO:g}",
        "check s median",
        "check ratio median [min-max]",
    ]
    good = runs  # a failed check does not invalidate the timing; it is counted apart
    checked = sum(1 for r in runs if not r.problem)
    row = [str(count), f"{size}x{size}", f"{nbytes / 1e6:.1f}", f"{checked}/{len(runs)}"]
    verdicts = sorted({r.dcmtk for r in runs})
    row.append(", ".join(f"{v} {sum(r.dcmtk == v for r in runs)}/{len(runs)}" for v in verdicts)
               if verdicts != ["-"] else "-")  # fmt: skip
    hash_median = statistics.median(r.hash_s for r in good)
    ratio = statistics.median(r.ratio for r in good)
    row += [
        spread([r.kos_s for r in good]),
        f"{statistics.median(r.builder_s for r in good):.3f}",
        spread([r.hash_s for r in good]),
        f"{nbytes / hash_median / 1e6:.0f}",
        spread([r.ratio for r in good], 2),
        "met" if ratio <= TARGET_RATIO else "MISSED",
        f"{statistics.median(r.check_s for r in good):.3f}",
        spread([r.check_ratio for r in good], 2),
    ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines.append("| " + " | ".join(row) + " |")
        return "\n".join(lines)
    widths = [max(len(a), len(b)) for a, b in zip(header, row, strict=True)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in (header, row)
    )


def profile_report(profiler: cProfile.Profile, builder_s: float) -> str:
    """Cumulative time of the builder's main steps, then the top functions."""
    stats = pstats.Stats(profiler)
    steps = {
        "secure_references_many": "MACs of the references (read + scan + digest, threads)",
        "verify_encoded": "signature checks of references that carry their own",
        "find_instance": "index look-ups",
        "load_trust": "trust store",
        "build_kos": "KOS data set",
        "sign_encoded": "KOS encoding (once) and signature",
        "store": "archive store (write, fsync, index, audit)",
        "records": "audit history of the study",
        "snapshot_for": "custody snapshot",
        "write_sidecar": "sidecar (digest, manifest, signature, write)",
    }
    found: dict[str, float] = {}
    for (_file, _line, name), entry in stats.stats.items():  # type: ignore[attr-defined]
        if name in steps and _file.startswith(str(Path(__file__).resolve().parent.parent)):
            found[name] = max(found.get(name, 0.0), entry[3])
    lines = [f"builder under cProfile: {builder_s:.3f} s (profiling inflates Python-heavy code)"]
    for name, what in steps.items():
        if name in found:
            lines.append(f"  {found[name]:8.3f} s  {name:<22} {what}")
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("cumulative").print_stats(30)
    lines.append(out.getvalue())
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime").print_stats(20)
    lines.append(out.getvalue())
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=3, help="measured runs (default 3)")
    ap.add_argument("--instances", type=int, default=1000, help="study size (default 1000)")
    ap.add_argument("--size", type=int, default=256, help="rows = columns (default 256; 512)")
    ap.add_argument("--poll", type=float, default=0.002, help="poll interval in s (0.002)")
    ap.add_argument("--check", action="store_true", help="also verify each KOS (+ dcmsign)")
    ap.add_argument("--profile", action="store_true", help="one extra run under cProfile")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    ap.add_argument("--keep", action="store_true", help="keep the temporary node folder")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.instances < SERIES or args.size < 8:
        ap.error("--runs >= 1, --instances >= 4 and --size >= 8 please")
    return args


def start_node(root: Path, **sections: Any) -> Node:
    """A node in this process on port 0, in ``root``; ``sections`` add configuration."""
    data: dict[str, Any] = {
        "node": {"ae_title": NODE_AET, "host": "127.0.0.1", "port": 0},
        "storage": {"archive": str(root / "archive"), "database": str(root / "node.sqlite")},
        "signing": {
            "key": str(root / "keys/signer.key.pem"),
            "certificate": str(root / "keys/signer.cert.pem"),
            "create_if_missing": True,
        },
        "peers": [],
        "logging": {"level": "WARNING"},
        **sections,
    }
    config = parse_config(data, root)
    configure_libraries(config)
    ensure_development_key(config)
    node = build_node(config)
    node.start()
    return node


def archived_paths(node: Node, refs: list[Ref]) -> Iterator[Path]:
    with node.archive.engine.connect() as conn:
        for ref in refs:
            row = find_instance(conn, ref.sop_instance_uid)
            if row is None:
                raise RuntimeError(f"{ref.sop_instance_uid} is not archived")
            yield node.archive.files.path(row.path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    dcmsign = shutil.which("dcmsign") if args.check else None
    if args.check and dcmsign is None:
        log("--check needs DCMTK dcmsign (Debian package dcmtk)")
        return 2
    root = Path(tempfile.mkdtemp(prefix="dicom-node-bench-kos-"))
    node = start_node(root)
    timer = BuilderTimer(node.workflow.tracker.build_kos)
    node.workflow.tracker.build_kos = timer
    try:
        study_uid = f"2.25.{uuid.uuid4().int}"  # short enough for ".<series>" suffixes
        log(f"node on port {node.port} in {root}; storing {args.instances} instances ...")
        t0 = time.perf_counter()
        refs = store_study(node.port, study_uid, args.instances, args.size)
        paths = list(archived_paths(node, refs))
        nbytes = read_all(paths)
        log(
            f"stored {len(refs)} instances, {nbytes / 1e6:.1f} MB, "
            f"in {time.perf_counter() - t0:.1f} s"
        )
        bench = Bench(node, timer, study_uid, refs, paths, args.poll, dcmsign)
        for i in range(args.runs):
            bench.runs.append(bench.one(f"run {i + 1}/{args.runs}"))
        if args.profile:
            timer.profiler = cProfile.Profile()
            run = bench.one("profiled run (not counted)")
            print(profile_report(timer.profiler, run.builder_s), file=sys.stderr)
    finally:
        node.stop(grace=5)
        if args.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(
        f"dicom-node KOS after N-SET COMPLETED vs hashlib SHA-256 of the same files; "
        f"{args.instances} CT instances {args.size}x{args.size} 16-bit; median of "
        f"{args.runs} run(s); poll {args.poll * 1000:g} ms; {os.cpu_count()} CPUs; "
        f"{datetime.date.today().isoformat()}"
    )
    print()
    print(table(bench.runs, args.instances, args.size, nbytes, args.markdown))
    return 1 if any(r.problem for r in bench.runs) else 0


if __name__ == "__main__":
    sys.exit(main())
