"""Commands ``export`` and ``verify-manifest`` (integrity manifests, ``.dcm.sig``).

``verify-manifest`` is what a recipient runs, usually without a node configuration: the
configuration is read only when one is named or the default file exists, and ``--trust``
replaces its ``trust`` list. Its verdict line is exactly ``Integrity verified`` or
``Integrity check FAILED: <reason>``; details follow on indented lines.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from node.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    add_config_option,
    existing_database,
    load,
    no_database,
    optional_config,
    progress,
)
from node.errors import UsageError


def register(sub: Any) -> None:
    export = sub.add_parser(
        "export",
        help="export a study as <name>_export.dcm files with .dcm.sig integrity manifests",
    )
    add_config_option(export)
    export.add_argument("study_uid", metavar="STUDY_UID")
    export.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    export.set_defaults(func=run_export)

    verify = sub.add_parser(
        "verify-manifest",
        help="check a file (or an export folder) against its .dcm.sig integrity manifest",
    )
    add_config_option(verify)
    verify.add_argument("path", type=Path, metavar="FILE.dcm|DIR")
    verify.add_argument("sidecar", type=Path, nargs="?", metavar="FILE.dcm.sig")
    verify.add_argument(
        "--trust",
        type=Path,
        action="append",
        metavar="CERT",
        help="trusted signer or CA certificate (repeatable; default: the configuration's trust)",
    )
    verify.add_argument(
        "--require-signature",
        action="store_true",
        help="fail unless the manifest carries a valid signature",
    )
    verify.set_defaults(func=run_verify)


def run_export(args: argparse.Namespace) -> int:
    from node.integrity import export_study, load_signer
    from node.storage.uids import is_valid_uid

    config = load(args)
    if not is_valid_uid(args.study_uid):
        raise UsageError(f"{args.study_uid!r} is not a valid Study Instance UID")
    engine = existing_database(config)
    if engine is None:
        raise UsageError(f"study {args.study_uid} is not in the archive ({no_database(config)})")
    signing = config.signing
    signer = None
    if signing.key.exists():
        signer = load_signer(signing.key, signing.certificate, signing.passphrase_env)
    else:
        print(
            f"dicom-node: warning: no signing key at {signing.key}; the manifests are "
            "unsigned and detect corruption only, not deliberate modification",
            file=sys.stderr,
        )
    try:
        result = export_study(
            engine,
            config.storage.archive,
            args.study_uid,
            args.out_dir,
            ae_title=config.node.ae_title,
            signer=signer,
            progress=lambda done, total: progress(done, total, "exported"),
        )
    finally:
        engine.dispose()
    print(f"exported {len(result.files)} files of study {result.study_uid} to {args.out_dir}")
    print(f"index     {result.index}")
    print(f"signed by {result.signer}" if result.signer else "unsigned")
    return EXIT_OK


def run_verify(args: argparse.Namespace) -> int:
    from node.integrity import verify_sidecar
    from node.integrity.folder import verify_folder

    trust = _trust(args)
    path: Path = args.path
    if path.is_dir():
        if args.sidecar is not None:
            raise UsageError("give either a folder or FILE.dcm [FILE.dcm.sig], not both")
        results = verify_folder(path, trust=trust, require_signature=args.require_signature)
        return _report_folder(path, results)
    if args.sidecar is None and path.name.endswith(".dcm.sig"):
        path = path.with_name(path.name.removesuffix(".sig"))  # given the sidecar alone
    verdict = verify_sidecar(
        path, args.sidecar, trust=trust, require_signature=args.require_signature
    )
    print(verdict.line)
    for line in _details(verdict):
        print(f"  {line}")
    return EXIT_OK if verdict.ok else EXIT_FAILED


def _details(verdict: Any) -> list[str]:
    lines = []
    if verdict.signer is not None:
        if verdict.trusted is None:
            lines.append(f"signature claims signer {verdict.signer}")
        else:
            trusted = "trusted" if verdict.trusted else "NOT trusted"
            lines.append(f"signed by {verdict.signer} ({trusted})")
    if verdict.detail:
        lines.append(verdict.detail)
    return lines


def _report_folder(folder: Path, results: list[tuple[str, Any]]) -> int:
    if not results:
        print(f"Integrity check FAILED: no .dcm/.dcm.sig files in {folder}")
        return EXIT_FAILED
    failed = 0
    for name, verdict in results:
        print(f"{name}: {verdict.line}")
        for line in _details(verdict):
            print(f"  {line}")
        failed += not verdict.ok
    if failed:
        print(f"Integrity check FAILED: {failed} of {len(results)} files failed")
        return EXIT_FAILED
    print(f"{len(results)} files verified")
    print("Integrity verified")
    return EXIT_OK


def _trust(args: argparse.Namespace) -> list[Any]:
    from node.signatures.keys import load_trust

    if args.trust:
        return load_trust(args.trust)
    config = optional_config(args)
    return load_trust(config.trust) if config else []
