"""Integrity manifests (``.dcm.sig`` sidecars): writing, verifying, exporting a study.

Public API:

- :func:`write_sidecar` -- write ``X.dcm.sig`` beside ``X.dcm`` (also used for KOS);
- :func:`verify_sidecar` -> :class:`Verdict` (``ok``, ``reason``, ``line``, ``signer``);
- :func:`load_signer` / :class:`ManifestSigner` -- an RSA, ECDSA or Ed25519 signer;
- :func:`export_study` -- the ``dicom-node export`` use case.

The format and its canonical serialisation are described in :mod:`node.integrity.manifest`.
"""

from node.integrity.export import ExportResult, export_study
from node.integrity.manifest import build_manifest, sidecar_path, write_sidecar
from node.integrity.signer import ManifestSigner, load_signer
from node.integrity.verify import Reason, Verdict, verify_sidecar

__all__ = [
    "ExportResult",
    "ManifestSigner",
    "Reason",
    "Verdict",
    "build_manifest",
    "export_study",
    "load_signer",
    "sidecar_path",
    "verify_sidecar",
    "write_sidecar",
]
