"""Commands ``studies``, ``status`` and ``audit verify``."""

from __future__ import annotations

import argparse
from typing import Any

from sqlalchemy import Engine

from node.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    add_config_option,
    existing_database,
    load,
    no_database,
)
from node.mpps import reads as mpps_reads
from node.storage import audit, index
from node.storage.recovery import census


def register(sub: Any) -> None:
    studies = sub.add_parser("studies", help="studies in the archive, with series and counts")
    add_config_option(studies)
    studies.set_defaults(func=run_studies)

    status = sub.add_parser("status", help="what the node holds and is doing")
    add_config_option(status)
    status.set_defaults(func=run_status)

    audit_cmd = sub.add_parser("audit", help="custody audit log commands")
    actions = audit_cmd.add_subparsers(dest="action", metavar="ACTION", required=True)
    verify = actions.add_parser("verify", help="check the hash chain of the audit log")
    add_config_option(verify)
    verify.set_defaults(func=run_audit_verify)


def run_studies(args: argparse.Namespace) -> int:
    config = load(args)
    engine = existing_database(config)
    if engine is None:
        print(f"no studies ({no_database(config)})")
        return EXIT_OK
    rows = index.study_summaries(engine)
    engine.dispose()
    if not rows:
        print("no studies")
        return EXIT_OK
    print(f"{'Study Instance UID':64}  {'Date':8}  {'Patient ID':16}  Series  Instances")
    for r in rows:
        print(
            f"{r.study_uid:64}  {r.study_date:8}  {r.patient_id[:16]:16}  "
            f"{r.series_count:6}  {r.instance_count:9}"
        )
    return EXIT_OK


def run_status(args: argparse.Namespace) -> int:
    config = load(args)
    engine = existing_database(config)
    print(f"node        {config.node.ae_title} on {config.node.host}:{config.node.port}")
    print(f"archive     {config.storage.archive}")
    if engine is None:
        print(f"holds       nothing ({no_database(config)})")
        return EXIT_OK
    counts = index.totals(engine)
    chain = audit.verify_chain(engine)
    print("holds       " + ", ".join(f"{n} {k}" for k, n in counts.items() if k != "duplicates"))
    print(f"duplicates  {counts['duplicates']} conflicting copies kept aside")
    disk = census(config.storage.archive, index.archived_paths(engine))
    print(
        f"on disk     {disk.instance_files} instance files ({disk.unindexed} without index "
        f"row, {disk.missing} rows without file), {disk.quarantined} quarantined, "
        f"{disk.temporary} temporary"
    )
    verdict = "intact" if chain.ok else f"BROKEN at record {chain.broken_seq}"
    print(f"audit log   {chain.count} records, chain {verdict}")
    _print_procedures(engine)
    _print_transfers(engine)
    _print_manifests(engine)
    return EXIT_OK


def _print_transfers(engine: Engine) -> None:
    """The partner queue: each transfer, its attempts and its last error."""
    from node.transfer.queue import OPEN_STATES, TransferQueue

    queue = TransferQueue(engine)
    for t in queue.all():
        counts = queue.counts(t.transfer_id)
        line = (
            f"transfer    {t.transfer_id} study {t.study_uid} to {t.partner}: {t.state}, "
            f"{counts.sent} sent, {counts.pending} pending, {counts.refused} refused, "
            f"{t.attempts} attempts"
        )
        if t.state in OPEN_STATES and t.attempts:
            line += f", next at {t.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC"
        if t.manifest_uid:
            line += f", manifest {t.manifest_uid}"
        if t.last_error:
            line += f" (last error: {t.last_error})"
        print(line)


def _print_manifests(engine: Engine) -> None:
    """Received Signed Manifests and their results (details: ``dicom-node manifests``)."""
    from node.signed_manifests.receiver import all_signed_manifests

    for m in all_signed_manifests(engine):
        line = f"manifest    {m.manifest_uid} from {m.calling_ae or '?'}: {m.state}"
        if m.missing:
            line += f", {len(m.missing)} missing"
        if m.altered:
            line += f", {len(m.altered)} altered: {' '.join(m.altered)}"
        if m.detail:
            line += f" ({m.detail})"
        print(line)


def _print_procedures(engine: Engine) -> None:
    """MPPS states, then each acquisition wait: KOS built, waiting, incomplete (missing)."""
    steps = mpps_reads.step_counts(engine)
    if steps:
        print("mpps        " + ", ".join(f"{n} {status}" for status, n in steps))
    for acq in mpps_reads.all_acquisitions(engine):
        line = f"acquisition {acq.mpps_uid}: {acq.state}"
        if acq.state == "kos-built":
            line += f", KOS {acq.kos_uid}"
        elif acq.state in ("waiting", "failed"):
            line += f" until {acq.deadline:%Y-%m-%d %H:%M:%S} UTC"
        if acq.missing and acq.state != "kos-built":
            line += f", {len(acq.missing)} missing: {' '.join(acq.missing)}"
        if acq.detail:
            line += f" ({acq.detail})"
        print(line)


def run_audit_verify(args: argparse.Namespace) -> int:
    config = load(args)
    engine = existing_database(config)
    if engine is None:
        # Nothing to verify is not "verified": a deleted index must not pass a check.
        print(f"audit chain not verified: {no_database(config)}")
        return EXIT_FAILED
    report = audit.verify_chain(engine)
    if report.ok:
        print(f"audit chain verified: {report.count} records, head {report.head}")
        return EXIT_OK
    print(f"audit chain BROKEN at record {report.broken_seq}: {report.reason}")
    return EXIT_FAILED
