#!/usr/bin/env python3
"""C-STORE ingest benchmark: dicom-node against DCMTK storescp and Orthanc, in one run.

What it measures: the end-to-end wall time of DCMTK ``storescu`` sending a whole data set over
one association on loopback (process start to exit, every C-STORE response received), with
only the receiver changing. Receiver start-up and shutdown are not timed. Results are
instances/s and MB/s (10^6 bytes of source Part 10 files), median and min-max over the runs,
and the ratio of dicom-node's median rate to each peer's.

Data (generated deterministically with numpy and pydicom, reused when already present):
  ct512: 400 CT Image Storage instances, 512x512 int16, about 0.53 MB each
  ct64 : 2000 CT Image Storage instances, 64x64 int16, about 10 KB each (per-instance overhead)
Both are Explicit VR Little Endian, one patient, one study, four series.

Receivers:
  dicom-node  ``.venv/bin/dicom-node serve`` with a temporary configuration (port 0; readiness
              from its ``ready <AET> port <N>`` line); durability, hashing, index and audit on
  storescp    DCMTK ``storescp +xa -od DIR`` (files only)
  orthanc     Debian's ``Orthanc`` with its SQLite index and storage in a temporary folder

Method: every DCMTK and Orthanc process runs with TCP_NODELAY=1 in its environment (otherwise
Nagle's algorithm and delayed ACKs make them about 60 times slower). Each run gets a fresh
receiver with fresh state; the source files are read once beforehand to warm the page cache, and
``sync`` runs just before each send. After one warm-up round, each round runs every receiver
once, in an order rotated from round to round, so that machine drift hits all of them alike.
Each run is verified: storescu exits 0 and the receiver holds every instance. The files
of every run are deleted only after the last run: ext4 skips inodes freed in the last
minutes when it allocates new ones, so deleting a run's thousands of files right away made
the next receiver's file creations slower (seen with perf: up to a quarter of a receiver's
CPU samples in that scan). This needs about 3 GB of free space with the default sets.

Usage: bench_ingest.py [--data DIR] [--runs 3] [--sets ct512,ct64]
                       [--peers storescp,orthanc] [--markdown]
Progress goes to stderr, the result table to stdout. Exit status 1 if any run failed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import queue
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

REPO = Path(__file__).resolve().parent.parent
NODE_BIN = REPO / ".venv" / "bin" / "dicom-node"
NODE_AET = "DICOM_NODE"
SENDER_TIMEOUT_S = 600.0
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0
CLK_TCK = os.sysconf("SC_CLK_TCK")

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's root; the suffix hashes the entropy sources
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class SetSpec:
    n: int
    rows: int
    cols: int
    series: int
    seed: int


SETS: dict[str, SetSpec] = {
    "ct512": SetSpec(n=400, rows=512, cols=512, series=4, seed=512),
    "ct64": SetSpec(n=2000, rows=64, cols=64, series=4, seed=64),
}
PEERS = ("storescp", "orthanc")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data


def uid(*parts: object) -> str:
    return str(generate_uid(prefix=UID_ROOT, entropy_srcs=[str(p) for p in parts]))


def phantom(rows: int, cols: int, z: int, rng: np.random.Generator) -> np.ndarray:
    """Body-like ellipse (soft tissue) in air with a bone ring and noise; stored = HU + 1024."""
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    r = ((yy - rows / 2.0) / (rows * 0.38)) ** 2 + ((xx - cols / 2.0) / (cols * 0.45)) ** 2
    hu = np.full((rows, cols), -1000.0, dtype=np.float32)
    hu[r < 1.0] = 40.0
    hu[(r > 0.80) & (r < 0.86)] = 700.0 + 50.0 * np.sin(z / 7.0)
    hu += rng.normal(0.0, 12.0, size=(rows, cols)).astype(np.float32)
    stored: np.ndarray = np.clip(hu + 1024.0, -2000, 4000).astype(np.int16)
    return stored


def make_instance(
    setname: str, spec: SetSpec, idx: int, series_uids: list[str], rng: np.random.Generator
) -> tuple[Dataset, str]:
    """One CT Image Storage instance with a full CT header; returns it and its file name."""
    per_series = spec.n // spec.series
    s = idx // per_series
    inum = idx % per_series + 1
    sop_uid = uid(setname, "sop", idx)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(CT_IMAGE_STORAGE)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "BENCHGEN_1"

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20240115"
    ds.StudyTime = "081500"
    ds.SeriesTime = f"0816{s:02d}"
    ds.AcquisitionTime = ds.ContentTime = f"0816{s:02d}.{inum:06d}"
    ds.AccessionNumber = f"ACC{spec.seed:07d}"
    ds.Modality = "CT"
    ds.Manufacturer = "SYNTHETIC"
    ds.InstitutionName = "Bench General Hospital"
    ds.ReferringPhysicianName = "Referrer^Rita"
    ds.StationName = "CT01"
    ds.StudyDescription = f"CT CHEST ABDOMEN PELVIS (synthetic {setname})"
    ds.SeriesDescription = ["AXIAL 1.0", "AXIAL 2.5", "AXIAL 5.0", "LUNG"][s % 4]
    ds.ManufacturerModelName = "BenchScanner 9000"
    ds.PatientName = f"Synthetic^Patient^{setname}"
    ds.PatientID = f"PID-{setname.upper()}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.PatientAge = "055Y"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = "1.0"
    ds.KVP = "120"
    ds.DataCollectionDiameter = "500.0"
    ds.ReconstructionDiameter = "360.0"
    ds.GantryDetectorTilt = "0.0"
    ds.TableHeight = "150.0"
    ds.RotationDirection = "CW"
    ds.ExposureTime = "500"
    ds.XRayTubeCurrent = "250"
    ds.Exposure = "125"
    ds.ConvolutionKernel = "STANDARD"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = uid(setname, "study")
    ds.SeriesInstanceUID = series_uids[s]
    ds.StudyID = "1"
    ds.SeriesNumber = s + 1
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = inum
    z = -200.0 + inum
    ds.ImagePositionPatient = ["-180.0", "-180.0", f"{z:.1f}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = uid(setname, "for")
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = f"{z:.1f}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = spec.rows
    ds.Columns = spec.cols
    ds.PixelSpacing = [f"{360.0 / spec.rows:.6f}", f"{360.0 / spec.cols:.6f}"]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.PixelData = phantom(spec.rows, spec.cols, inum, rng).tobytes()
    return ds, f"{setname}_s{s + 1}_i{inum:05d}.dcm"


def ensure_set(root: Path, setname: str) -> Path:
    """Generate the set under ``root/setname`` unless a matching one is already there."""
    spec = SETS[setname]
    folder = root / setname
    marker = folder / ".complete"
    want = json.dumps(
        {**spec.__dict__, "generator": GENERATOR_VERSION, "pydicom": pydicom.__version__},
        sort_keys=True,
    )
    if marker.is_file() and marker.read_text() == want:
        log(f"{setname}: reusing {folder}")
        return folder
    log(f"{setname}: generating {spec.n} instances in {folder} ...")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(spec.seed)
    series_uids = [uid(setname, "series", i) for i in range(spec.series)]
    for i in range(spec.n):
        ds, name = make_instance(setname, spec, i, series_uids, rng)
        ds.save_as(folder / name, enforce_file_format=True)
    marker.write_text(want)
    return folder


def set_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.dcm"))


def warm_cache(files: list[Path]) -> None:
    for path in files:
        with path.open("rb") as fh:
            while fh.read(1 << 20):
                pass


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def dcmtk_tool(name: str) -> str | None:
    """The DCMTK binary, never pynetdicom's same-named app from a virtual environment."""
    venv_bin = str(Path(sys.prefix) / "bin")
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and d != venv_bin]
    for d in [*dirs, "/usr/bin", "/usr/sbin"]:
        path = shutil.which(name, path=d)
        if path is None or Path(path).read_bytes()[:2] == b"#!":  # skip Python entry points
            continue
        return path
    return None


def first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return "?"
    lines = [ln.strip() for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
    return lines[0] if lines else "?"


def nodelay_env() -> dict[str, str]:
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    return env


def wait_for_ports(proc: subprocess.Popen[bytes], ports: list[int], what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    pending = list(ports)
    while pending:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not accepting connections on {pending} after deadline")
        if port_open(pending[0]):
            pending.pop(0)
        else:
            time.sleep(0.02)


# --------------------------------------------------------------------------- receivers


class Receiver(ABC):
    """One receiver instance with fresh state in ``rundir``."""

    name: str
    aet: str

    def __init__(self, rundir: Path, logfile: IO[bytes]) -> None:
        self.rundir = rundir
        self.logfile = logfile
        self.proc: subprocess.Popen[bytes] | None = None
        self.notes: list[str] = []

    @abstractmethod
    def start(self) -> int:
        """Start and wait until ready; return the DICOM port."""

    @abstractmethod
    def count(self) -> int:
        """How many instances the receiver holds."""

    def _spawn(self, cmd: list[str], stdout: int | IO[bytes]) -> subprocess.Popen[bytes]:
        self.logfile.write(f"$ {' '.join(cmd)}\n".encode())
        self.logfile.flush()
        self.proc = subprocess.Popen(
            cmd,
            env=nodelay_env(),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=self.logfile,
        )
        return self.proc

    def stop(self) -> int | None:
        """SIGTERM, wait (kill after a deadline); return the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.notes.append(f"did not stop within {STOP_TIMEOUT_S:.0f} s of SIGTERM; killed")
                proc.kill()
                proc.wait()
        return proc.returncode


class StorescpReceiver(Receiver):
    name = "storescp"
    aet = "STORESCP"

    def __init__(self, rundir: Path, logfile: IO[bytes], binary: str) -> None:
        super().__init__(rundir, logfile)
        self.binary = binary
        self.out = rundir / "out"

    def start(self) -> int:
        self.out.mkdir(parents=True)
        port = free_port()
        proc = self._spawn(
            [self.binary, "+xa", "-aet", self.aet, "-od", str(self.out), str(port)], self.logfile
        )
        wait_for_ports(proc, [port], self.name)
        return port

    def count(self) -> int:
        return sum(1 for p in self.out.iterdir() if p.is_file() and not p.name.startswith("."))


class OrthancReceiver(Receiver):
    name = "orthanc"
    aet = "ORTHANC"

    def __init__(self, rundir: Path, logfile: IO[bytes], binary: str) -> None:
        super().__init__(rundir, logfile)
        self.binary = binary
        self.http_port = 0

    def start(self) -> int:
        db = self.rundir / "db"
        db.mkdir(parents=True)
        port = free_port()
        self.http_port = free_port()
        while self.http_port == port:
            self.http_port = free_port()
        config = {
            "Name": "BENCH-ORTHANC",
            "StorageDirectory": str(db),
            "IndexDirectory": str(db),
            "StorageCompression": False,
            "Plugins": [],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "UnknownSopClassAccepted": True,
            "SaveJobs": False,
            "SyncStorageArea": True,
            "OverwriteInstances": False,
            "StoreMD5ForAttachments": True,
            "DicomThreadsCount": 4,
            "MaximumPduLength": 16384,
        }
        path = self.rundir / "orthanc.json"
        path.write_text(json.dumps(config, indent=1))
        proc = self._spawn([self.binary, str(path)], self.logfile)
        wait_for_ports(proc, [port, self.http_port], self.name)
        return port

    def count(self) -> int:
        url = f"http://127.0.0.1:{self.http_port}/statistics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            return int(json.loads(resp.read())["CountInstances"])


class NodeReceiver(Receiver):
    name = "dicom-node"
    aet = NODE_AET

    def __init__(self, rundir: Path, logfile: IO[bytes]) -> None:
        super().__init__(rundir, logfile)
        self.archive = rundir / "archive"
        self.config = rundir / "node.yaml"
        self._lines: queue.Queue[str | None] = queue.Queue()

    def _pump(self, stream: IO[bytes]) -> None:
        """Forward the node's stdout to the queue (until ready) and the log (always)."""
        for raw in iter(stream.readline, b""):
            self.logfile.write(raw)
            self.logfile.flush()
            self._lines.put(raw.decode(errors="replace").strip())
        self._lines.put(None)

    def start(self) -> int:
        keys = self.rundir / "keys"
        self.config.write_text(
            f"node: {{ae_title: {NODE_AET}, host: 127.0.0.1, port: 0}}\n"
            f"storage: {{archive: {self.archive}, database: {self.rundir / 'node.sqlite'}}}\n"
            f"signing: {{key: {keys / 'k.pem'}, certificate: {keys / 'c.pem'},"
            " create_if_missing: true}\n"
            "peers: []\n"
        )
        proc = self._spawn([str(NODE_BIN), "serve", "-c", str(self.config)], subprocess.PIPE)
        assert proc.stdout is not None
        threading.Thread(target=self._pump, args=(proc.stdout,), daemon=True).start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError("dicom-node printed no ready line before the deadline")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                proc.wait()
                raise RuntimeError(f"dicom-node exited with {proc.returncode} before ready")
            parts = line.split()
            if len(parts) == 4 and parts[0] == "ready" and parts[2] == "port":
                return int(parts[3])

    def count(self) -> int:
        total = 0
        for _dirpath, dirnames, filenames in os.walk(self.archive):
            dirnames[:] = [d for d in dirnames if d not in {".tmp", ".quarantine"}]
            total += sum(1 for f in filenames if f.endswith(".dcm"))
        return total

    def stop(self) -> int | None:
        code = super().stop()
        if code not in (None, 0):
            self.notes.append(f"exit status {code} after SIGTERM (expected 0)")
        return code


# --------------------------------------------------------------------------- runs


@dataclass
class Run:
    wall_s: float
    ok: bool
    detail: str
    sender_cpu_s: float
    receiver_cpu_s: float


@dataclass
class Series:
    setname: str
    receiver: str
    n: int
    nbytes: int
    runs: list[Run] = field(default_factory=list)

    @property
    def good(self) -> list[Run]:
        return [r for r in self.runs if r.ok]

    @property
    def failed(self) -> int:
        return len(self.runs) - len(self.good)

    def median_wall(self) -> float | None:
        good = self.good
        return statistics.median(r.wall_s for r in good) if good else None

    def rate(self) -> float | None:
        wall = self.median_wall()
        return self.n / wall if wall else None


@dataclass
class Tools:
    storescu: str
    storescp: str | None
    orthanc: str | None


def make_receiver(name: str, rundir: Path, logfile: IO[bytes], tools: Tools) -> Receiver:
    if name == "dicom-node":
        return NodeReceiver(rundir, logfile)
    if name == "storescp" and tools.storescp:
        return StorescpReceiver(rundir, logfile, tools.storescp)
    if name == "orthanc" and tools.orthanc:
        return OrthancReceiver(rundir, logfile, tools.orthanc)
    raise ValueError(name)


def one_run(name: str, folder: Path, n: int, rundir: Path, logpath: Path, tools: Tools) -> Run:
    """Fresh receiver, sync, time storescu over one association, verify, stop the receiver."""
    rundir.mkdir(parents=True)
    with logpath.open("ab") as logfile:
        logfile.write(f"\n===== {datetime.datetime.now().isoformat()} {rundir.name}\n".encode())
        logfile.flush()
        receiver = make_receiver(name, rundir, logfile, tools)
        wall = float("nan")
        sender_cpu = rcv_cpu = float("nan")
        problems: list[str] = []
        try:
            port = receiver.start()
            assert receiver.proc is not None
            cmd = [tools.storescu, "+sd", "+sp", "*.dcm", "-aec", receiver.aet]
            cmd += ["127.0.0.1", str(port), str(folder)]
            logfile.write(f"$ {' '.join(cmd)}\n".encode())
            logfile.flush()
            os.sync()
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            c0 = cpu_seconds(receiver.proc.pid)
            t0 = time.perf_counter()
            try:
                sent = subprocess.run(
                    cmd,
                    env=nodelay_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=logfile,
                    stderr=logfile,
                    timeout=SENDER_TIMEOUT_S,
                    check=False,
                )
                sender_rc: int | None = sent.returncode
            except subprocess.TimeoutExpired:
                sender_rc = None
            wall = time.perf_counter() - t0
            rcv_cpu = cpu_seconds(receiver.proc.pid) - c0
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            sender_cpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
            if sender_rc != 0:
                problems.append(
                    f"storescu timed out after {SENDER_TIMEOUT_S:.0f} s"
                    if sender_rc is None
                    else f"storescu exit {sender_rc}"
                )
            got = receiver.count()
            if got != n:
                problems.append(f"receiver holds {got} of {n} instances")
        except Exception as exc:  # a broken receiver is a failed run, not a crashed benchmark
            problems.append(f"{type(exc).__name__}: {exc}")
        finally:
            receiver.stop()
        for note in receiver.notes:
            log(f"    note: {name}: {note}")
        problems += [f"{name} {note}" for note in receiver.notes if "killed" in note]
    ok = not problems
    # A successful run's files stay until the whole benchmark ends (see main): deleting
    # thousands of files here would slow the next receiver's file creation.
    detail = "ok" if ok else "; ".join(problems) + f" (log {logpath}, state {rundir})"
    return Run(wall, ok, detail, sender_cpu, rcv_cpu)


def bench_set(
    setname: str,
    folder: Path,
    receivers: list[str],
    runs: int,
    work: Path,
    tools: Tools,
    finished: list[Path],
) -> list[Series]:
    """Run every round of one set; successful run folders are added to ``finished``."""
    files = set_files(folder)
    n, nbytes = len(files), sum(p.stat().st_size for p in files)
    log(f"{setname}: {n} files, {nbytes / 1e6:.1f} MB; warming the page cache")
    warm_cache(files)
    series = {r: Series(setname, r, n, nbytes) for r in receivers}
    for rnd in range(runs + 1):
        shift = rnd % len(receivers)
        order = receivers[shift:] + receivers[:shift]
        label = "warm-up" if rnd == 0 else f"round {rnd}/{runs}"
        for name in order:
            rundir = work / f"{setname}-{name}-{rnd}"
            run = one_run(name, folder, n, rundir, work / "logs" / f"{setname}-{name}.log", tools)
            if run.ok:
                finished.append(rundir)
            rate = n / run.wall_s if run.ok and run.wall_s > 0 else float("nan")
            log(
                f"  [{setname}] {label:<11} {name:<10} {run.wall_s:8.3f} s {rate:7.0f} inst/s"
                f"  cpu snd {run.sender_cpu_s:5.2f} rcv {run.receiver_cpu_s:5.2f}  {run.detail}"
            )
            if rnd > 0:
                series[name].runs.append(run)
    return [series[r] for r in receivers]


def walk_cost(folder: Path, passes: int = 3) -> tuple[float, float]:
    """Seconds per instance of the C-STORE path's structure walk (every element header,
    node.storage.header.read_header) and of SHA-256 over the same data set bytes; the
    fastest of ``passes`` passes over the set, in this process."""
    import hashlib

    from node.storage.header import read_header

    items = []
    for path in set_files(folder):
        raw = path.read_bytes()
        end = 144 + int.from_bytes(raw[140:144], "little")  # after the file meta group
        items.append(raw[end:])
    syntax = UID(ExplicitVRLittleEndian)
    walk = digest = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        for data in items:
            read_header(data, syntax)
        walk = min(walk, (time.perf_counter() - start) / len(items))
        start = time.perf_counter()
        for data in items:
            hashlib.sha256(data).digest()
        digest = min(digest, (time.perf_counter() - start) / len(items))
    return walk, digest


def walk_lines(results: list[Series], folders: dict[str, Path]) -> list[str]:
    lines = []
    for s in results:
        wall = s.median_wall()
        if s.receiver != "dicom-node" or wall is None:
            continue
        walk, digest = walk_cost(folders[s.setname])
        share = walk / (wall / s.n)
        lines.append(
            f"structure walk, {s.setname}: {walk * 1e6:.0f} us per instance = "
            f"{share:.1%} of dicom-node's time per instance "
            f"(SHA-256 of the same bytes: {digest * 1e6:.0f} us)"
        )
    return lines


# --------------------------------------------------------------------------- report


def table(results: list[Series], markdown: bool) -> str:
    header = [
        "set",
        "receiver",
        "runs ok",
        "median s",
        "inst/s median [min-max]",
        "MB/s",
        "CPU snd/rcv s",
        "dicom-node / receiver",
    ]
    rows: list[list[str]] = []
    node_rates = {s.setname: s.rate() for s in results if s.receiver == "dicom-node"}
    for s in results:
        good = s.good
        runs_ok = f"{len(good)}/{len(s.runs)}"
        wall = s.median_wall()
        if wall is None:
            rows.append([s.setname, s.receiver, runs_ok, "-", "ALL RUNS FAILED", "-", "-", "-"])
            continue
        rates = [s.n / r.wall_s for r in good]
        node_rate = node_rates.get(s.setname)
        ratio = "-"
        if s.receiver != "dicom-node" and node_rate is not None:
            ratio = f"{node_rate / (s.n / wall):.2f}"
        snd = statistics.median(r.sender_cpu_s for r in good)
        rcv = statistics.median(r.receiver_cpu_s for r in good)
        rows.append(
            [
                s.setname,
                s.receiver,
                runs_ok,
                f"{wall:.3f}",
                f"{s.n / wall:.0f} [{min(rates):.0f}-{max(rates):.0f}]",
                f"{s.nbytes / wall / 1e6:.1f}",
                f"{snd:.2f} / {rcv:.2f}",
                ratio,
            ]
        )
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    )


def describe(results: list[Series], tools: Tools, runs: int) -> str:
    sets = ", ".join(
        f"{s.setname} = {s.n} x {s.nbytes / s.n / 1e3:.1f} KB"
        for s in results
        if s.receiver == "dicom-node"
    )
    versions = [first_line([str(NODE_BIN), "--version"]), first_line([tools.storescu, "--version"])]
    if tools.orthanc:
        versions.append(first_line([tools.orthanc, "--version"]))
    return (
        f"DCMTK storescu over one association on 127.0.0.1, TCP_NODELAY=1; {sets}; "
        f"median of {runs} run(s) after 1 warm-up, receivers alternating; "
        f"{os.cpu_count()} CPUs; {datetime.date.today().isoformat()}; "
        + "; ".join(v.replace("$", "").strip() for v in versions)
    )


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    ap.add_argument(
        "--data",
        type=Path,
        default=Path(tempfile.gettempdir()) / "dicom-node-bench-data",
        help="folder for the generated sets (reused if present; default: %(default)s)",
    )
    ap.add_argument("--runs", type=int, default=3, help="measured runs per receiver (default 3)")
    ap.add_argument("--sets", default="ct512,ct64", help="comma list of: " + ",".join(SETS))
    ap.add_argument("--peers", default=",".join(PEERS), help="comma list of: " + ",".join(PEERS))
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = ap.parse_args(argv)
    args.sets = [s for s in args.sets.split(",") if s]
    args.peers = [p for p in args.peers.split(",") if p]
    for s in args.sets:
        if s not in SETS:
            ap.error(f"unknown set {s!r}; choose from {', '.join(SETS)}")
    for p in args.peers:
        if p not in PEERS:
            ap.error(f"unknown peer {p!r}; choose from {', '.join(PEERS)}")
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    return args


def on_signal(signum: int, _frame: FrameType | None) -> Any:
    raise SystemExit(128 + signum)  # unwinds through finally: blocks that stop receivers


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    storescu = dcmtk_tool("storescu")
    if storescu is None:
        log("DCMTK storescu not found (Debian package dcmtk)")
        return 2
    if not NODE_BIN.exists():
        log(f"{NODE_BIN} not found: run scripts/setup.sh first")
        return 2
    tools = Tools(storescu, dcmtk_tool("storescp"), shutil.which("Orthanc"))
    peers: list[str] = []
    for peer in args.peers:
        if peer == "storescp" and tools.storescp is None:
            log("skipping storescp: DCMTK storescp not found")
        elif peer == "orthanc" and tools.orthanc is None:
            log("skipping orthanc: no 'Orthanc' binary on PATH (Debian package orthanc)")
        else:
            peers.append(peer)
    receivers = ["dicom-node", *peers]
    work = Path(tempfile.mkdtemp(prefix="dicom-node-bench-"))
    (work / "logs").mkdir()
    log(f"work folder {work}; receivers {', '.join(receivers)}")
    results: list[Series] = []
    finished: list[Path] = []
    folders: dict[str, Path] = {}
    for setname in args.sets:
        folder = folders[setname] = ensure_set(args.data, setname)
        results += bench_set(setname, folder, receivers, args.runs, work, tools, finished)
    print(describe(results, tools, args.runs))
    print()
    print(table(results, args.markdown))
    print()
    print("\n".join(walk_lines(results, folders)))
    failed = sum(s.failed for s in results)
    for rundir in finished:
        shutil.rmtree(rundir, ignore_errors=True)
    if failed:
        log(f"{failed} run(s) failed; logs and state kept under {work}")
        return 1
    log(f"logs in {work / 'logs'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
