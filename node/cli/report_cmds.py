"""Commands ``report create|sign|verify``: PS3.17 Annex X dictation reports.

``create`` writes a draft Basic Text SR (TID 2005) and its equivalent CDA into the
reports folder; ``sign`` adds the Author Signature with the author's key and archives
the report; ``verify`` archives the verified report (a new instance) with the
verifier's Verification (or Validation) Signature and a new CDA.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from node.cli.common import EXIT_OK, add_config_option, load


def register(sub: Any) -> None:
    report = sub.add_parser("report", help="dictation reports: Basic Text SR + HL7 CDA")
    actions = report.add_subparsers(dest="report_command", metavar="ACTION", required=True)

    create = actions.add_parser("create", help="draft a report of a study from a transcription")
    add_config_option(create)
    create.add_argument("study_uid", metavar="STUDY_UID")
    create.add_argument(
        "--text", required=True, metavar="FILE", help="UTF-8 transcription ('-': stdin)"
    )
    create.add_argument("--title", metavar="CODE", help="CID 7000 title (default 18748-4)")
    create.add_argument("--author", metavar="NAME", help="a person of reporting.people")
    create.add_argument("--out", type=Path, metavar="DIR", help="default: reporting.output")
    create.add_argument("--partial", action="store_true", help="Completion Flag PARTIAL")
    create.add_argument(
        "--sign", action="store_true", help="add the Author Signature and archive at once"
    )
    create.set_defaults(func=create_command)

    sign = actions.add_parser("sign", help="sign a draft report and archive it")
    add_config_option(sign)
    sign.add_argument("report", metavar="SR", help="draft file, or its SOP Instance UID")
    sign.add_argument("--purpose", default="author", help="CID 7007 purpose (default author)")
    sign.add_argument("--by", metavar="NAME", help="signer (default: the report's author)")
    sign.set_defaults(func=sign_command)

    verify = actions.add_parser("verify", help="verify an archived report (new instance)")
    add_config_option(verify)
    verify.add_argument("report", metavar="SR", help="SOP Instance UID or a copy of the report")
    verify.add_argument("--by", required=True, metavar="NAME", help="the verifying person")
    verify.add_argument("--purpose", choices=("verification", "validation"), default="verification")
    verify.add_argument("--out", type=Path, metavar="DIR", help="default: reporting.output")
    verify.set_defaults(func=verify_command)


def _desk(args: argparse.Namespace) -> Any:
    from node.app import open_archive
    from node.reports.desk import ReportDesk

    config = load(args)
    return ReportDesk(config, open_archive(config))


def create_command(args: argparse.Namespace) -> int:
    from node.documents.codes import DIAGNOSTIC_IMAGING_REPORT
    from node.documents.report import document_title
    from node.documents.transcription import read_transcription
    from node.reports.create import create_report
    from node.reports.sign import sign_report

    title = document_title(args.title) if args.title else DIAGNOSTIC_IMAGING_REPORT
    text = read_transcription(args.text)
    desk = _desk(args)
    draft = create_report(
        desk,
        args.study_uid,
        text,
        title=title,
        author=args.author,
        out=args.out,
        complete=not args.partial,
    )
    flag = "PARTIAL" if args.partial else "COMPLETE"
    print(f"draft report {draft.sop_instance_uid} (UNVERIFIED, {flag}): {draft.path}")
    print(f"equivalent CDA: {draft.cda_path}")
    for note in draft.notes:
        print(f"note: {note}")
    if args.sign:
        _print_stored(sign_report(desk, str(draft.path)), "signed and archived")
    else:
        print(f"next: dicom-node report sign {draft.path}")
    return EXIT_OK


def sign_command(args: argparse.Namespace) -> int:
    from node.reports.sign import sign_report
    from node.signatures.purposes import purpose

    stored = sign_report(_desk(args), args.report, purpose=purpose(args.purpose), by=args.by)
    _print_stored(stored, "signed and archived")
    return EXIT_OK


def verify_command(args: argparse.Namespace) -> int:
    from node.reports.verify import verify_report
    from node.signatures.purposes import PURPOSES, VERIFICATION

    chosen = VERIFICATION if args.purpose == "verification" else PURPOSES[5]
    stored = verify_report(_desk(args), args.report, by=args.by, purpose=chosen, out=args.out)
    _print_stored(stored, "verified and archived")
    print(f"equivalent CDA: {stored.cda_path}")
    return EXIT_OK


def _print_stored(stored: Any, what: str) -> None:
    print(f"report {stored.sop_instance_uid} {what}: {stored.path}")
    print(f"signature {stored.signature_uid} by {stored.signer}")
