"""Commands ``keys init``, ``sign`` and ``verify`` (PS3.15 Annex C digital signatures).

``sign`` and ``keys init`` take their defaults from the ``signing`` section of the
configuration; ``verify`` trusts the certificates of ``trust``, or those given with
``--trust``. A command that can run without the configuration (``verify --trust``,
``keys init --dir``, ``sign --key --cert``) does not need the default configuration file
to exist. Key passphrases come only from the environment variable the configuration (or
``--passphrase-env``) names, never from the command line.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.cli.common import EXIT_FAILED, EXIT_OK, add_config_option, load, optional_config
from node.config import NodeConfig
from node.errors import UsageError

if TYPE_CHECKING:
    from node.signatures.check_references import Lookup

PROFILES = ("none", "base", "creator", "authorization", "sr", "sr-verification")
CREATE_MACS = ("SHA256", "SHA384", "SHA512")


def register(sub: Any) -> None:
    keys = sub.add_parser("keys", help="manage the signing key")
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    init = actions.add_parser(
        "init", help="create an RSA-3072 signing key and a self-signed certificate"
    )
    add_config_option(init)
    init.add_argument("--dir", type=Path, help="directory for signer.key.pem/signer.cert.pem")
    init.add_argument("--subject", default=None, help="certificate subject common name")
    init.set_defaults(func=keys_init)

    sign = sub.add_parser("sign", help="add a DICOM digital signature to an object")
    add_config_option(sign)
    sign.add_argument("input", type=Path, metavar="IN")
    sign.add_argument("output", type=Path, metavar="OUT")
    sign.add_argument("--purpose", help="CID 7007 purpose: 1-18 or a name (SR default: 1)")
    sign.add_argument("--key", type=Path, help="PEM private key (default: signing.key)")
    sign.add_argument("--cert", type=Path, help="PEM certificate (default: signing.certificate)")
    sign.add_argument(
        "--passphrase-env", metavar="NAME", help="environment variable holding the passphrase"
    )
    sign.add_argument("--profile", choices=PROFILES, help="default: sr for SR/KOS, else base")
    sign.add_argument("--item", metavar="PATH", help="sign inside an item, e.g. Seq[0].Seq[1]")
    sign.add_argument("--mac", choices=CREATE_MACS, help="default: signing.mac_algorithm")
    sign.set_defaults(func=sign_command)

    verify = sub.add_parser("verify", help="verify every digital signature of files")
    add_config_option(verify)
    verify.add_argument("files", type=Path, nargs="+", metavar="FILE")
    verify.add_argument(
        "--trust", type=Path, action="append", metavar="CERT", help="trusted certificate"
    )
    verify.add_argument(
        "--require-profile",
        choices=PROFILES[1:],
        metavar="PROFILE",
        help="fail unless a signature satisfies it: " + ", ".join(PROFILES[1:]),
    )
    verify.add_argument(
        "--refs",
        type=Path,
        metavar="DIR",
        help="check SR/KOS secure references against the files in DIR",
    )
    verify.set_defaults(func=verify_command)


def keys_init(args: argparse.Namespace) -> int:
    from node.signatures.keys import DEFAULT_SUBJECT, create_key_pair, init_keys

    subject = args.subject or DEFAULT_SUBJECT
    if args.dir is not None:
        key, cert = init_keys(args.dir, subject)
    else:
        config = optional_config(args)
        if config is None:
            key, cert = init_keys(Path("var/keys"), subject)
        else:
            key, cert = config.signing.key, config.signing.certificate
            create_key_pair(key, cert, subject)
    print(f"key:         {key} (mode 0600, unencrypted: for development)")
    print(f"certificate: {cert} (self-signed; add it to 'trust' to verify with it)")
    return EXIT_OK


def sign_command(args: argparse.Namespace) -> int:
    from node.signatures.keys import load_signer
    from node.signatures.profiles import Profile
    from node.signatures.purposes import AUTHOR, purpose
    from node.signatures.sign import default_profile, load_for_signing, sign_file

    if (args.key is None) != (args.cert is None):
        raise UsageError("give --key and --cert together, or neither to use the configuration")
    if not args.input.is_file():
        raise UsageError(f"{args.input}: no such file")
    config = optional_config(args) if args.key else load(args)
    passphrase_env = args.passphrase_env or (config.signing.passphrase_env if config else None)
    key = args.key or _configured(config).signing.key
    cert = args.cert or _configured(config).signing.certificate
    signer = load_signer(key, cert, passphrase_env)
    mac = args.mac or (config.signing.mac_algorithm.value if config else "SHA256")
    chosen = purpose(args.purpose) if args.purpose else None
    profile = Profile(args.profile) if args.profile else None
    if profile is None:
        profile = default_profile(load_for_signing(args.input), signer)
    if profile is Profile.SR and chosen is None:
        chosen = AUTHOR
    info = sign_file(
        args.input,
        args.output,
        signer,
        profile=profile,
        purpose=chosen,
        mac_algorithm=mac,
        item_path=args.item,
    )
    print(
        f"{args.output}: signed at {info.location}: UID={info.uid} MAC-ID={info.mac_id} "
        f"profile={profile} purpose={info.purpose or '-'} alg={info.algorithm} "
        f"elements={info.elements_signed}"
    )
    return EXIT_OK


def _configured(config: NodeConfig | None) -> NodeConfig:
    if config is None:
        raise UsageError("no configuration: give --key and --cert")
    return config


def verify_command(args: argparse.Namespace) -> int:
    from node.signatures.check_references import directory_lookup
    from node.signatures.keys import load_trust
    from node.signatures.profiles import Profile

    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        raise UsageError(f"no such file: {', '.join(missing)}")
    # The configuration gives the trust store and the archive; neither is needed when
    # --trust and --refs are both given.
    config = optional_config(args) if not (args.trust and args.refs is not None) else None
    if args.trust:
        trust = load_trust(args.trust)
    else:
        trust = load_trust(config.trust) if config is not None else []
    if not trust:
        print("note: no trusted certificates (use --trust or 'trust' in the configuration)")
    profile = Profile(args.require_profile) if args.require_profile else None
    # PS3.17 W case 1 step 11: referenced materials are checked in DIR, else in the archive.
    lookup: Lookup | None
    if args.refs is not None:
        lookup = directory_lookup(args.refs)
    else:
        lookup = archive_lookup(config) if config is not None else None
    all_ok = True
    for path in args.files:
        all_ok &= verify_one(path, trust, profile, lookup)
    return EXIT_OK if all_ok else EXIT_FAILED


def verify_one(path: Path, trust: list[Any], profile: Any, lookup: Any) -> bool:
    """Print one line per signature (and reference), then the verdict; True when all pass."""
    from node.errors import NodeError
    from node.signatures.check_references import check_document_references
    from node.signatures.verify import verify_file

    try:
        report = verify_file(path, trust=trust, require_profile=profile)
    except NodeError as exc:
        print(f"{path}: FAILED: {exc}")
        return False
    moments = signing_moments(path)
    for number, result in enumerate(report.signatures, start=1):
        verdict = "OK" if result.ok else "FAILED: " + "; ".join(result.problems)
        print(
            f"{path}: #{number} {result.location} UID={result.uid} purpose={result.purpose} "
            f'signer="{result.signer or "?"}" alg={result.algorithm or "?"} '
            f"elements={result.elements_signed} {verdict}"
        )
        if result.uid in moments:
            print(f"{path}: #{number} {moments[result.uid]}")
    for note in report.notes:
        print(f"{path}: note: {note}")
    problems = list(report.problems)
    checked_refs = 0
    failed_refs: list[str] = []
    if lookup is not None and _is_sr(path):
        for check in check_document_references(path, lookup, trust=trust):
            checked_refs += 1
            state = "OK (" + "; ".join(check.passed) + ")" if check.ok else "FAILED: "
            state += "; ".join(check.problems)
            print(f"{path}: reference {check.sop_instance_uid}: {state}")
            problems += [f"reference {check.sop_instance_uid}: {p}" for p in check.problems]
            if not check.ok:
                failed_refs.append(check.sop_instance_uid)
    if failed_refs:
        print(f"{path}: referenced instances altered or missing: {', '.join(failed_refs)}")
    if problems:
        print(f"{path}: FAILED: {len(problems)} problem(s): " + "; ".join(problems))
        return False
    refs = f", {checked_refs} secure references" if lookup is not None else ""
    print(f"{path}: VERIFIED ({len(report.signatures)} signatures{refs})")
    return True


def archive_lookup(config: NodeConfig) -> Lookup | None:
    """Find referenced instances in the node's archive by SOP Instance UID (or None)."""
    from node.schema import open_database
    from node.storage.files import FileStore
    from node.storage.index import find_instance

    url = config.storage.database
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return None  # no archive here: do not create an empty index just to look
    engine = open_database(url)
    files = FileStore(config.storage.archive)

    def lookup(uid: str) -> Path | None:
        with engine.connect() as conn:
            row = find_instance(conn, uid)
        return files.path(row.path) if row is not None else None

    return lookup


def signing_moments(path: Path) -> dict[str, str]:
    """Per signature UID: when it was made and the certificate's validity then (W step 10).

    The check itself is part of every verification (node.signatures.verify); this only
    shows the facts next to the verdict.
    """
    from pydicom import dcmread
    from pydicom.dataset import Dataset
    from pydicom.errors import InvalidDicomError

    from node.signatures.keys import certificate_from_dicom
    from node.signatures.verify import parse_datetime

    found: dict[str, str] = {}

    def walk(ds: Dataset) -> None:
        for element in ds:
            if element.VR != "SQ":
                continue
            for item in element.value:
                if element.tag == 0xFFFAFFFA:
                    found.update(_moment(item))
                walk(item)

    def _moment(item: Dataset) -> dict[str, str]:
        uid = str(item.get("DigitalSignatureUID", ""))
        when = parse_datetime(str(item.get("DigitalSignatureDateTime", "")))
        try:
            cert = certificate_from_dicom(bytes(item.get("CertificateOfSigner") or b""))
        except ValueError:
            return {}
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        verdict = (
            "certificate valid at signing"
            if when is not None and start <= when <= end
            else "certificate NOT valid at signing"
        )
        signed = f"{when:%Y-%m-%d %H:%M:%S} UTC" if when is not None else "at an unknown time"
        return {uid: f"signed {signed}; certificate valid {start:%Y-%m-%d %H:%M:%S} to "
                f"{end:%Y-%m-%d %H:%M:%S} UTC: {verdict}"}  # fmt: skip

    try:
        walk(dcmread(path, stop_before_pixels=True))
    except (InvalidDicomError, OSError, ValueError, AttributeError, TypeError, KeyError):
        return {}  # the verification above already reports an unreadable file
    return found


def _is_sr(path: Path) -> bool:
    from pydicom import dcmread

    from node.signatures.profiles import SR_CLASS_PREFIX

    header = dcmread(path, stop_before_pixels=True, specific_tags=[0x00080016])
    return str(header.get("SOPClassUID", "")).startswith(SR_CLASS_PREFIX)
