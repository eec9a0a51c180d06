"""Commands ``send`` (queue a study for a partner) and ``manifests`` (received ones)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from node.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    add_config_option,
    existing_database,
    load,
    no_database,
    progress,
)
from node.errors import UsageError


def register(sub: Any) -> None:
    send = sub.add_parser(
        "send",
        help="send a study to a partner, then a signed 'Signed Manifest' KOS (queued, retried)",
        description=(
            "Queue the study for the partner and make the first attempt now. If it cannot "
            "be delivered now, the transfer stays queued and the serving node retries it "
            "with the partner's backoff. Exit 0 when the study and its manifest were "
            "delivered (or queued, with --queue-only), 1 otherwise."
        ),
    )
    add_config_option(send)
    send.add_argument("study_uid", metavar="STUDY_UID")
    send.add_argument("partner", metavar="PARTNER", help="partner name or AE title")
    send.add_argument(
        "--queue-only",
        action="store_true",
        help="only queue it; the serving node sends it at its next poll",
    )
    send.set_defaults(func=run_send)

    manifests = sub.add_parser(
        "manifests", help="received Signed Manifests and the result of checking them"
    )
    add_config_option(manifests)
    manifests.set_defaults(func=run_manifests)


def run_send(args: argparse.Namespace) -> int:
    from node.app import configure_libraries, open_archive
    from node.documents.publish import DocumentPublisher
    from node.storage.index import study_instances
    from node.transfer.queue import COMPLETED, PARTIAL, REFUSED, RETRYING, TransferQueue
    from node.transfer.sender import TransferSender

    config = load(args)
    partner = config.partner(args.partner)
    if partner is None:
        known = ", ".join(p.name for p in config.partners) or "none configured"
        raise UsageError(f"no partner {args.partner!r} in {config.source} (partners: {known})")
    archive = open_archive(config)
    try:
        if not study_instances(archive.engine, args.study_uid):
            raise UsageError(f"study {args.study_uid} is not in the archive")
        queue = TransferQueue(archive.engine)
        transfer_id, count = queue.enqueue(
            args.study_uid, partner.name, "command", claimed=not args.queue_only
        )
        print(
            f"transfer {transfer_id}: {count} instances of study {args.study_uid} queued for "
            f"{partner.name} ({partner.ae_title}@{partner.host}:{partner.port})"
        )
        if args.queue_only:
            return EXIT_OK
        configure_libraries(config)
        sender = TransferSender(config, archive, queue, DocumentPublisher(config, archive))
        state = sender.run(
            transfer_id, lambda done, total: progress(done, total, "sent"), claimed=True
        )
        transfer = queue.get(transfer_id)
        assert transfer is not None
        counts = queue.counts(transfer_id)
        if state in (COMPLETED, PARTIAL):
            print(
                f"transfer {transfer_id}: {state}: {counts.sent} instances acknowledged, "
                f"{counts.refused} refused; Signed Manifest {transfer.manifest_uid} delivered"
            )
            for uid, _status, detail in queue.items(transfer_id, REFUSED):
                print(f"  refused {uid}: {detail}", file=sys.stderr)
            return EXIT_OK if state == COMPLETED else EXIT_FAILED
        when = f"{transfer.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC"
        if state == RETRYING:
            print(
                f"transfer {transfer_id}: not delivered yet ({transfer.last_error}); "
                f"attempt {transfer.attempts} of {partner.retry.attempts}, the serving node "
                f"retries at {when}"
            )
        else:
            print(f"transfer {transfer_id}: {state}: {transfer.last_error}")
        return EXIT_FAILED
    finally:
        archive.engine.dispose()


def run_manifests(args: argparse.Namespace) -> int:
    from node.signed_manifests.receiver import all_signed_manifests

    config = load(args)
    engine = existing_database(config)
    if engine is None:
        print(f"no Signed Manifests received ({no_database(config)})")
        return EXIT_OK
    try:
        found = all_signed_manifests(engine)
    finally:
        engine.dispose()
    if not found:
        print("no Signed Manifests received")
        return EXIT_OK
    for m in found:
        print(
            f"{m.manifest_uid}  {m.state:10}  from {m.calling_ae or '?'}  study {m.study_uid}  "
            f"{m.referenced} referenced"
        )
        if m.signer:
            print(f"    signer   {m.signer}")
        if m.missing:
            label = "missing " if m.state != "waiting" else "awaiting"
            print(f"    {label} {len(m.missing)}: {' '.join(m.missing)}")
            if m.state == "waiting":
                print(f"    waiting  until {m.deadline:%Y-%m-%d %H:%M:%S} UTC")
        for uid, problems in m.altered.items():
            print(f"    altered  {uid}: {'; '.join(problems)}")
        if m.detail:
            print(f"    problem  {m.detail}")
        if m.report:
            print(f"    report   {m.report}")
    return EXIT_OK
