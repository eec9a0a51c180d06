"""Commands ``studies``, ``status`` and ``audit verify``."""

from __future__ import annotations

import argparse
from typing import Any

from node.cli.common import EXIT_FAILED, EXIT_OK, add_config_option, load
from node.storage import audit, index
from node.storage.database import open_database


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
    engine = open_database(load(args).storage.database)
    rows = index.study_summaries(engine)
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
    engine = open_database(config.storage.database)
    counts = index.totals(engine)
    chain = audit.verify_chain(engine)
    print(f"node        {config.node.ae_title} on {config.node.host}:{config.node.port}")
    print(f"archive     {config.storage.archive}")
    print("holds       " + ", ".join(f"{n} {k}" for k, n in counts.items() if k != "duplicates"))
    print(f"duplicates  {counts['duplicates']} conflicting copies kept aside")
    verdict = "intact" if chain.ok else f"BROKEN at record {chain.broken_seq}"
    print(f"audit log   {chain.count} records, chain {verdict}")
    return EXIT_OK


def run_audit_verify(args: argparse.Namespace) -> int:
    engine = open_database(load(args).storage.database)
    report = audit.verify_chain(engine)
    if report.ok:
        print(f"audit chain verified: {report.count} records, head {report.head}")
        return EXIT_OK
    print(f"audit chain BROKEN at record {report.broken_seq}: {report.reason}")
    return EXIT_FAILED
