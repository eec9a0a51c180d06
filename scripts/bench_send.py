#!/usr/bin/env python3
"""Send benchmark (issue 6): a study to DCMTK storescp, and checking a received manifest.

Part 1, sending: a study of N instances (default 400, CT 512x512 16-bit, about 0.5 MB
each, Explicit VR Little Endian) is stored once in a dicom-node archive (not timed). Then,
in rounds, the same archived files go to a fresh DCMTK ``storescp`` (``-od`` a temporary
folder, TCP_NODELAY=1) twice:
  * by DCMTK ``storescu`` over one association (process start to exit);
  * by dicom-node: a queued transfer run to the end, that is every C-STORE, then the
    Signed Manifest built over the acknowledged instances (a MAC per instance, signed,
    archived with its sidecar) and sent last. The time to the last instance's answer is
    shown too. The partner has no TLS, so the C-STOREs go through dicom-node's own
    association requestor (node.net.requestor), not pynetdicom.
The ratio is storescu's time divided by dicom-node's; the target is 0.5 or more.

Part 2, checking: a Signed Manifest referencing M instances (default 1000, CT 256x256) is
checked as a receiving node does (the manifest's signature against the trust store, every
referenced instance looked up in the index and its MAC recomputed from the stored file),
against hashing the same M files with SHA-256 in the same run. The ratio is check time
divided by hashing time; the target is 3 or less. Files are read once beforehand, so
both sides find them in the page cache.

Usage: scripts/bench_send.py [--runs 3] [--instances 400] [--manifest-instances 1000]
                             [--markdown]
Progress goes to stderr, the results to stdout. Exit status 1 if a run failed.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, for scripts.*
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ingest import dcmtk_tool, free_port, nodelay_env, wait_for_ports
from bench_kos import archived_paths, hash_all, log, read_all, store_study
from bench_kos import start_node as start_kos_node

from node.app import Node
from node.signatures import load_trust
from node.signed_manifests.check import examine
from node.storage.index import study_instances
from node.transfer.queue import COMPLETED, PENDING, TransferQueue
from node.transfer.sender import TransferSender
from node.transfer.signed_manifest import build_signed_manifest

SEND_TARGET = 0.5
CHECK_TARGET = 3.0
PARTNER_AET = "STORESCP"


def start_node(root: Path, partner_port: int) -> Node:
    partner = {"name": "bench", "ae_title": PARTNER_AET, "host": "127.0.0.1"}
    return start_kos_node(
        root,
        trust=[str(root / "keys/signer.cert.pem")],
        partners=[{**partner, "port": partner_port, "retry": {"attempts": 1}}],
    )


class Storescp:
    """A fresh DCMTK storescp on a free port, writing into its own folder."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.folder = root / f"storescp-{self.port}"
        self.folder.mkdir()
        self.proc = subprocess.Popen(
            [_tool("storescp"), "-aet", PARTNER_AET, "-od", str(self.folder), str(self.port)],
            env=nodelay_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_ports(self.proc, [self.port], "storescp")

    def received(self) -> int:
        return sum(1 for _ in self.folder.iterdir())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        shutil.rmtree(self.folder, ignore_errors=True)


def _tool(name: str) -> str:
    found = dcmtk_tool(name)
    if found is None:
        raise SystemExit(f"DCMTK {name} is needed (Debian package dcmtk)")
    return found


@dataclass
class SendRun:
    storescu_s: float
    node_s: float
    node_instances_s: float


def time_storescu(root: Path, files: list[Path]) -> float:
    partner = Storescp(root)
    try:
        started = time.perf_counter()
        result = subprocess.run(
            [
                _tool("storescu"),
                "-aec",
                PARTNER_AET,
                "127.0.0.1",
                str(partner.port),
                *map(str, files),
            ],
            env=nodelay_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - started
        if result.returncode != 0 or partner.received() != len(files):
            raise RuntimeError(f"storescu failed: {result.stderr[-500:]}")
        return elapsed
    finally:
        partner.stop()


def time_node(root: Path, node: Node, study_uid: str) -> tuple[float, float]:
    partner = Storescp(root)
    try:
        config = node.config
        bench = config.partners[0].model_copy(update={"port": partner.port})
        sender_config = config.model_copy(update={"partners": (bench,)})
        queue = TransferQueue(node.archive.engine)
        sender = TransferSender(sender_config, node.archive, queue, node.transfers.sender.publisher)
        transfer_id, queued = queue.enqueue(study_uid, "bench", "benchmark")
        last: list[float] = []

        def progress(done: int, total: int) -> None:
            if done == total:
                last.append(time.perf_counter())

        started = time.perf_counter()
        state = sender.run(transfer_id, progress)
        elapsed = time.perf_counter() - started
        if state != COMPLETED or partner.received() != queued + 1:
            transfer = queue.get(transfer_id)
            raise RuntimeError(f"transfer {state}: {transfer.last_error if transfer else '?'}")
        return elapsed, (last[0] - started) if last else float("nan")
    finally:
        partner.stop()


def build_sidecar(node: Node, study_uid: str) -> tuple[Path, int]:
    """Build a Signed Manifest over the study (as a sender would) and return its file."""
    queue = TransferQueue(node.archive.engine)
    transfer_id, _ = queue.enqueue(study_uid, "bench", "benchmark")
    queue.set_manifest(transfer_id, f"2.25.{time.time_ns()}")
    transfer = queue.get(transfer_id)
    assert transfer is not None
    rows, _ = queue.archived_items(transfer_id, PENDING)
    published = build_signed_manifest(node.transfers.sender.publisher, transfer, rows)
    return published.path, len(rows)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--instances", type=int, default=400)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--manifest-instances", type=int, default=1000)
    parser.add_argument("--manifest-size", type=int, default=256)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    failed = False
    with tempfile.TemporaryDirectory(prefix="bench-send-") as tmp:
        root = Path(tmp)
        node = start_node(root / "node", free_port())
        try:
            log(f"storing {args.instances} instances of {args.size}x{args.size} (not timed)")
            send_study = "2.25.1" + str(time.time_ns())
            refs = store_study(node.port, send_study, args.instances, args.size)
            files = list(archived_paths(node, refs))
            nbytes = read_all(files)
            runs: list[SendRun] = []
            for n in range(args.runs):
                try:
                    if n % 2:
                        node_s, inst_s = time_node(root, node, send_study)
                        scu_s = time_storescu(root, files)
                    else:
                        scu_s = time_storescu(root, files)
                        node_s, inst_s = time_node(root, node, send_study)
                except RuntimeError as exc:
                    log(f"run {n + 1} failed: {exc}")
                    failed = True
                    continue
                runs.append(SendRun(scu_s, node_s, inst_s))
                log(f"run {n + 1}: storescu {scu_s:.3f} s, dicom-node {node_s:.3f} s")

            log(f"storing {args.manifest_instances} instances for the manifest check (not timed)")
            check_study = "2.25.2" + str(time.time_ns())
            crefs = store_study(node.port, check_study, args.manifest_instances, args.manifest_size)
            cfiles = list(archived_paths(node, crefs))
            cbytes = read_all(cfiles)
            manifest, referenced = build_sidecar(node, check_study)
            trust = load_trust(node.config.trust)

            checks: list[tuple[float, float]] = []
            for n in range(args.runs):
                hashed = hash_all(cfiles)
                started = time.perf_counter()
                # As the receiver does: the listed instances' paths from one index query.
                paths = {
                    row.sop_instance_uid: node.archive.files.path(row.path)
                    for row in study_instances(node.archive.engine, check_study)
                }
                findings = examine(manifest, paths.get, trust)
                elapsed = time.perf_counter() - started
                verdict = findings.verdict(waiting_allowed=False)
                if verdict != "verified" or len(findings.referenced) != referenced:
                    log(f"check run {n + 1}: {verdict} ({findings})")
                    failed = True
                checks.append((elapsed, hashed))
                log(f"check run {n + 1}: {elapsed:.3f} s, hashing {hashed:.3f} s")
        finally:
            node.stop(grace=2)

    print_results(args, runs, nbytes, checks, cbytes)
    return 1 if failed or not runs else 0


def print_results(
    args: argparse.Namespace,
    runs: list[SendRun],
    nbytes: int,
    checks: list[tuple[float, float]],
    cbytes: int,
) -> None:
    bar = "|" if args.markdown else " "
    print(f"Sending {args.instances} instances ({nbytes / 1e6:.0f} MB) to DCMTK storescp")
    if runs:
        scu = [r.storescu_s for r in runs]
        node = [r.node_s for r in runs]
        inst = [r.node_instances_s for r in runs]
        ratio = statistics.median(scu) / statistics.median(node)
        print(f"{bar} storescu                      {bar} {spread(scu)} s {bar}")
        print(f"{bar} dicom-node, instances only    {bar} {spread(inst)} s {bar}")
        print(f"{bar} dicom-node, with the manifest {bar} {spread(node)} s {bar}")
        verdict = "meets" if ratio >= SEND_TARGET else "MISSES"
        print(f"ratio storescu/dicom-node = {ratio:.2f} ({verdict} the target >= {SEND_TARGET})")
    print()
    print(f"Checking a {args.manifest_instances}-instance Signed Manifest ({cbytes / 1e6:.0f} MB)")
    if checks:
        check = [c for c, _ in checks]
        hashed = [h for _, h in checks]
        ratio = statistics.median(check) / statistics.median(hashed)
        print(f"{bar} manifest check {bar} {spread(check)} s {bar}")
        print(f"{bar} SHA-256 only   {bar} {spread(hashed)} s {bar}")
        verdict = "meets" if ratio <= CHECK_TARGET else "MISSES"
        print(f"ratio check/hashing = {ratio:.2f} ({verdict} the target <= {CHECK_TARGET})")


if __name__ == "__main__":
    raise SystemExit(main())
