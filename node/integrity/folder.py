"""Verifying a whole export folder: every ``.dcm`` / ``.dcm.sig`` pair, and the index.

Pairs are found by name: ``X.dcm`` with ``X.dcm.sig``. A file without its sidecar, or a
sidecar without its file, fails. When the folder holds export indexes
(``*_index.json``), every file they list must be present too, so that deleting a whole
pair is noticed (the index is not signed: this catches accidents, not a forger).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509

from node.integrity import manifest as fmt
from node.integrity.export import INDEX_SUFFIX
from node.integrity.verify import Reason, Verdict, verify_sidecar


def verify_folder(
    folder: Path,
    *,
    trust: Sequence[x509.Certificate] = (),
    require_signature: bool = False,
) -> list[tuple[str, Verdict]]:
    """(file name, verdict) for every pair in ``folder``, sorted by name (not recursive)."""
    names = {p.name for p in folder.iterdir() if p.is_file()}
    files = {n for n in names if n.endswith(".dcm")}
    files |= {n.removesuffix(fmt.SIDECAR_SUFFIX) for n in names if n.endswith(".dcm.sig")}
    results = {
        name: verify_sidecar(folder / name, trust=trust, require_signature=require_signature)
        for name in files
    }
    for index in sorted(n for n in names if n.endswith(INDEX_SUFFIX)):
        for listed in _listed(folder / index):
            if listed not in results:
                results[listed] = Verdict(Reason.FILE_MISSING, f"listed in {index}, not present")
    return sorted(results.items())


def _listed(index: Path) -> list[str]:
    """File names an export index lists; nothing when it cannot be read."""
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        names = [entry["file"] for entry in data["files"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    # Only plain names beside the index count; anything else is not ours to look for.
    return [n for n in names if isinstance(n, str) and n and Path(n).name == n]
