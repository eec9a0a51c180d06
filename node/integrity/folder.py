"""Verifying a whole export folder: every ``.dcm`` / ``.dcm.sig`` pair, and the index.

Pairs are found by name: ``X.dcm`` with ``X.dcm.sig``. A file without its sidecar, or a
sidecar without its file, fails. The folder is complete only when the export says so:

- every pair must be listed by an export index (``<study>_index.json``) in the folder:
  a folder without its study's index is an export cut short (or put together by hand);
- every file an index lists must be present, so that deleting a whole pair is noticed;
- the index must say ``"complete": true`` (version 2; node.integrity.export writes it
  first with ``false`` and last with ``true``). A version 1 index was written only
  once every file was, so it is complete by construction.

The index is not signed: these checks catch accidents and interruptions, not a forger
(who would have to forge the signed manifests of the files as well).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from node.integrity import sidecar as fmt
from node.integrity.export import INDEX_FORMAT, INDEX_SUFFIX, INDEX_VERSION
from node.integrity.verify import Reason, Verdict, verify_sidecar

MAX_INDEX_BYTES = 256 << 20  # a million files stay far below; refuses absurd inputs early


@dataclass(frozen=True, slots=True)
class _Index:
    files: list[str]
    complete: bool


def verify_folder(
    folder: Path,
    *,
    trust: Sequence[x509.Certificate] = (),
    require_signature: bool = False,
) -> list[tuple[str, Verdict]]:
    """(file name, verdict) for every pair and index in ``folder``, by name (not recursive)."""
    names = {p.name for p in folder.iterdir() if p.is_file()}
    files = {n for n in names if n.endswith(".dcm")}
    files |= {n.removesuffix(fmt.SIDECAR_SUFFIX) for n in names if n.endswith(".dcm.sig")}
    results = {
        name: verify_sidecar(folder / name, trust=trust, require_signature=require_signature)
        for name in files
    }
    indexed: set[str] = set()
    for name in sorted(n for n in names if n.endswith(INDEX_SUFFIX)):
        index = _read_index(folder / name)
        if isinstance(index, str):
            results[name] = Verdict(Reason.INDEX_MALFORMED, index)
            continue
        indexed.update(index.files)
        missing = [f for f in index.files if f not in files]
        for listed in missing:
            results[listed] = Verdict(Reason.FILE_MISSING, f"listed in {name}, not present")
        if not index.complete:
            results[name] = Verdict(
                Reason.EXPORT_INCOMPLETE,
                f"the export did not finish ({len(missing)} of {len(index.files)} listed "
                "files absent); export the study again into an empty folder",
            )
    for name in files - indexed:
        if results[name].ok:  # a failure found already is the first reason, and stays
            results[name] = Verdict(
                Reason.NOT_INDEXED,
                f"no *{INDEX_SUFFIX} in the folder lists it: its study's index is missing "
                "(an interrupted or incomplete export)",
            )
    return sorted(results.items())


def _read_index(path: Path) -> _Index | str:
    """The files an export index lists and whether it is complete, or why it is unusable."""
    try:
        if path.stat().st_size > MAX_INDEX_BYTES:
            return "the index is implausibly large"
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != INDEX_FORMAT:
            return f"format is not {INDEX_FORMAT!r}"
        version = data.get("version")
        if version not in (1, INDEX_VERSION) or isinstance(version, bool):
            return f"unsupported version {version!r} (this node reads 1 and {INDEX_VERSION})"
        complete = True if version == 1 else data.get("complete")
        if not isinstance(complete, bool):
            return "complete must be true or false"
        names = [entry["file"] for entry in data["files"]]
    except OSError as exc:
        return f"cannot read it: {exc.strerror or exc}"
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"not a readable export index: {type(exc).__name__}"
    if not all(isinstance(n, str) and n and Path(n).name == n for n in names):
        return "it lists something other than plain file names beside it"
    return _Index(names, complete)
