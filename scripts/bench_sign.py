#!/usr/bin/env python3
"""Benchmark: signing, verifying and reference MACs, dicom-node against dcmsign and hashlib.

In one run:
  * sign and verify N CT instances (512x512, 16-bit, generated) with dicom-node (in
    process) and with DCMTK dcmsign (one process per file, as a user would run it);
  * compute the Referenced SOP Instance MAC (SHA-256) of M instances from their files, and
    hash the same files with hashlib SHA-256 (read + hash), reported in MB/s.

Usage: scripts/bench_sign.py [--instances 100] [--macs 1000] [--keep DIR]
Not a test; the target is MAC throughput >= 50% of raw SHA-256.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from node.signatures import init_keys, load_signer, mac_reference, purpose, sign_file, verify_file
from node.signatures.encoding import read_file
from node.signatures.macstream import data_stream, select, signable_tags


def ct(index: int, study: str, series: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientName, ds.PatientID, ds.Modality = "Bench^Patient", "BENCH1", "CT"
    ds.InstanceNumber = index + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = 512
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    rng = np.random.default_rng(index)
    ds.PixelData = rng.integers(0, 4096, (512, 512), dtype=np.uint16).tobytes()
    return ds


def timed(label: str, count: int, action: Callable[[int], None]) -> tuple[str, float, int]:
    start = time.perf_counter()
    for i in range(count):
        action(i)
    return label, time.perf_counter() - start, count


def run(*args: object) -> None:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{args[0]} failed ({done.returncode}): {done.stderr.strip()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--macs", type=int, default=1000)
    parser.add_argument("--keep", type=Path, help="work here and keep the files")
    options = parser.parse_args()
    if shutil.which("dcmsign") is None:
        sys.exit("dcmsign not found (install the Debian package dcmtk)")
    work = options.keep or Path(tempfile.mkdtemp(prefix="bench_sign."))
    for sub in ("in", "ours", "dcmtk"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    n = options.instances
    key_path, cert_path = work / "keys/signer.key.pem", work / "keys/signer.cert.pem"
    if not key_path.exists():
        init_keys(work / "keys", "Bench Signer")
    signer = load_signer(key_path, cert_path)
    trust = [signer.certificate]
    study, series = generate_uid(), generate_uid()
    inputs = [work / "in" / f"ct{i:04d}.dcm" for i in range(n)]
    for i, path in enumerate(inputs):
        ct(i, study, series).save_as(path, enforce_file_format=True)
    # init_keys back-dates the certificate, so dcmsign accepts it at once (pitfall 6).

    def ours_sign(i: int) -> None:
        sign_file(inputs[i], work / "ours" / inputs[i].name, signer, purpose=purpose(1))

    def ours_verify(i: int) -> None:
        if not verify_file(work / "ours" / inputs[i].name, trust=trust).ok:
            sys.exit(f"verification failed for {inputs[i].name}")

    def dcmtk_sign(i: int) -> None:
        run(
            "dcmsign",
            "--sign",
            key_path,
            cert_path,
            "-pw",
            "+m2",
            "+sp",
            "1",
            inputs[i],
            work / "dcmtk" / inputs[i].name,
        )

    def dcmtk_verify(i: int) -> None:
        run("dcmsign", "--verify", "+cf", cert_path, work / "dcmtk" / inputs[i].name)

    rows = [
        timed("dicom-node sign", n, ours_sign),
        timed("dcmsign    sign", n, dcmtk_sign),
        timed("dicom-node verify", n, ours_verify),
        timed("dcmsign    verify", n, dcmtk_verify),
    ]
    print(f"\n{n} CT instances, 512x512x16-bit, RSA-3072, SHA-256 MAC ({work})")
    print(f"{'operation':<20}{'total s':>10}{'ms/instance':>14}")
    for label, seconds, count in rows:
        print(f"{label:<20}{seconds:>10.2f}{1000 * seconds / count:>14.2f}")
    for what in ("sign", "verify"):
        ours = next(s for label, s, _ in rows if label.startswith("dicom-node") and what in label)
        theirs = next(s for label, s, _ in rows if label.startswith("dcmsign") and what in label)
        print(f"{what}: dcmsign / dicom-node time = {theirs / ours:.2f}")

    m = options.macs
    sizes = [p.stat().st_size for p in inputs]
    stream_sizes = []
    for path in inputs:
        encoded = read_file(path)
        chosen = select(encoded.elements, signable_tags(encoded.elements)).elements
        stream_sizes.append(
            sum(len(piece) for piece in data_stream(encoded, chosen).finish().pieces)
        )

    def reference(i: int) -> None:
        mac_reference(inputs[i % n])

    def raw_sha256(i: int) -> None:
        hashlib.sha256(inputs[i % n].read_bytes()).digest()

    for path in inputs:  # warm the page cache for both
        path.read_bytes()
    _, mac_s, _ = timed("reference MAC", m, reference)
    _, sha_s, _ = timed("hashlib", m, raw_sha256)
    mac_mb = sum(stream_sizes[i % n] for i in range(m)) / 1e6
    file_mb = sum(sizes[i % n] for i in range(m)) / 1e6
    print(f"\nReference MACs of {m} instances (files in page cache)")
    print(f"{'method':<34}{'MB':>10}{'s':>8}{'MB/s':>10}")
    for label, mb, seconds in (
        ("dicom-node mac_reference SHA256", mac_mb, mac_s),
        ("hashlib sha256 (read + hash file)", file_mb, sha_s),
    ):
        print(f"{label:<34}{mb:>10.1f}{seconds:>8.2f}{mb / seconds:>10.0f}")
    ratio = (mac_mb / mac_s) / (file_mb / sha_s)
    print(f"MAC throughput / raw SHA-256 = {ratio:.0%} (target >= 50%)")
    if options.keep is None:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
