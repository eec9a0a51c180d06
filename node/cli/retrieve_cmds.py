"""Command ``retrieve``: fetch the objects named by WADO-URI references (PS3.17 X.4.3).

Output: one line per object (``stored``, ``duplicate``, ``conflict``, ``failed``,
``missing``, then the SOP Instance UID and what happened), an indented line per KOS the
object was checked against, one line per C-GET/C-MOVE with its final status and counts,
and a verdict line. Exit 0 only when every object arrived intact, 1 otherwise, 2 for bad
URLs or usage. What the WADO parameters ask that a DICOM retrieve does not do is said on
stderr as ``note:`` lines.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from node.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, add_config_option, error, load
from node.config import NodeConfig, RemoteAE
from node.errors import OperationFailed, UsageError


def register(sub: Any) -> None:
    retrieve = sub.add_parser(
        "retrieve",
        help="retrieve the objects of WADO-URI references by C-GET or C-MOVE from a source",
        description=(
            "Retrieve the objects named by WADO-URI references (requestType=WADO, studyUID, "
            "seriesUID, objectUID) from a configured source, by C-GET or C-MOVE, into the "
            "archive. Objects of one series go in one request."
        ),
    )
    add_config_option(retrieve)
    retrieve.add_argument("urls", nargs="*", metavar="WADO_URL", help="WADO-URI references")
    retrieve.add_argument(
        "--file",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="file of WADO URLs: one per line, or an XML/HTML document such as a CDA "
        "report whose requestType=WADO links are taken (repeatable)",
    )
    retrieve.add_argument(
        "--source", metavar="NAME", help="configured source (default: the only one configured)"
    )
    retrieve.add_argument(
        "--method",
        choices=("get", "move"),
        default="get",
        help="get: the objects come back on our association (default); move: the source "
        "sends them to our storage SCP, which must be serving",
    )
    retrieve.add_argument(
        "--out", type=Path, metavar="DIR", help="also copy each retrieved object to DIR/<UID>.dcm"
    )
    retrieve.add_argument(
        "--sop-class",
        action="append",
        default=[],
        dest="sop_classes",
        metavar="UID",
        help="SOP Class UID of the objects, for the C-GET storage contexts (repeatable; "
        "default: learnt by C-FIND)",
    )
    retrieve.set_defaults(func=run_retrieve)


def run_retrieve(args: argparse.Namespace) -> int:
    from node.retrieve.wado import parse_wado_uri, read_wado_urls, requests_for
    from node.storage.uids import is_valid_uid

    config = load(args)
    urls = list(args.urls)
    for path in args.file:
        try:
            found = read_wado_urls(path.read_text(encoding="utf-8", errors="replace"))
        except OSError as exc:
            raise UsageError(f"{path}: cannot read ({exc.strerror or exc})") from exc
        if not found:
            raise UsageError(f"{path}: no WADO-URI (requestType=WADO) in it")
        urls.extend(found)
    if not urls:
        raise UsageError("give at least one WADO_URL, or --file FILE")
    references, problems = [], []
    for url in urls:
        try:
            references.append(parse_wado_uri(url))
        except UsageError as exc:
            problems.append(str(exc))
    for uid in args.sop_classes:
        if not is_valid_uid(uid):
            problems.append(f"--sop-class: not a valid UID: {uid!r}")
    if problems:
        for problem in problems:
            error(problem)
        return EXIT_USAGE
    source = choose_source(config, args.source)
    _print_notes(references)
    return _run(config, source, requests_for(references, args.sop_classes), args)


def _print_notes(references: list[Any]) -> None:
    """Each different note once, with the object it concerns or how many."""
    objects: dict[str, list[str]] = {}
    for reference in references:
        for note in reference.notes():
            objects.setdefault(note, []).append(reference.object_uid)
    for note, uids in objects.items():
        which = uids[0] if len(uids) == 1 else f"{len(uids)} objects"
        print(f"note: {note} ({which})", file=sys.stderr)


def choose_source(config: NodeConfig, name: str | None) -> RemoteAE:
    """The source named (by name or AE title), or the only one configured."""
    sources = config.sources
    known = ", ".join(s.name for s in sources) or "none"
    if name is None:
        if len(sources) != 1:
            raise UsageError(
                f"{len(sources) or 'no'} sources configured ({known}): choose one with --source"
                if sources
                else f"no sources configured in {config.source}: add one under sources:"
            )
        return sources[0]
    for match in (s for s in sources if s.name == name), (s for s in sources if s.ae_title == name):
        for source in match:
            return source
    raise UsageError(f"no source named {name!r} (configured: {known})")


def _run(
    config: NodeConfig, source: RemoteAE, requests: list[Any], args: argparse.Namespace
) -> int:
    from node.app import open_archive
    from node.retrieve.client import retrieve
    from node.retrieve.result import ObjectResult

    archive = open_archive(config)  # not prepare(): a serving node may share it

    def show(result: ObjectResult) -> None:
        label = "conflict" if result.conflict else result.outcome.value
        line = f"{label:<9} {result.sop_instance_uid}"
        print(f"{line}  {result.message}" if result.message else line, flush=True)
        for check in result.kos_checks:
            print(f"{'':9} {check.describe()}", flush=True)

    try:
        retrieved = retrieve(config, archive, source, requests, args.method, progress=show)
    finally:
        archive.engine.dispose()
    for note in retrieved.notes:
        print(f"note: {note}", file=sys.stderr)
    for request in retrieved.requests:
        print(request.describe())
    if args.out is not None:
        _copy_out(args.out, [(o.sop_instance_uid, o.path) for o in retrieved.objects if o.arrived])
    good = sum(1 for o in retrieved.objects if o.ok)
    service = f"C-{args.method.upper()}"
    verdict = f"{good} of {len(retrieved.objects)} objects retrieved intact from {source.name} "
    verdict += f"({source.ae_title}) by {service}"
    if retrieved.ok:
        print(verdict)
        return EXIT_OK
    print(f"{verdict}: retrieve FAILED")
    return EXIT_FAILED


def _copy_out(folder: Path, items: list[tuple[str, Path | None]]) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for uid, path in items:
            if path is not None:
                shutil.copyfile(path, folder / f"{uid}.dcm")
    except OSError as exc:
        raise OperationFailed(f"cannot copy to {folder}: {exc.strerror or exc}") from exc
