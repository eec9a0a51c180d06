"""Integrity manifests (``.dcm.sig`` sidecars): writing, verifying, exporting a study.

Public API:

- :func:`write_sidecar` -- write ``X.dcm.sig`` beside ``X.dcm`` (also used for KOS);
- :func:`verify_sidecar` -> :class:`Verdict` (``ok``, ``reason``, ``line``, ``signer``);
- :func:`load_signer` / :class:`SidecarSigner` -- an RSA, ECDSA or Ed25519 signer;
- :func:`export_study` -- the ``dicom-node export`` use case.

The format and its canonical serialisation are described in :mod:`node.integrity.sidecar`.
"""

from node.integrity.export import ExportResult, export_study
from node.integrity.sidecar import build_sidecar, sidecar_path, write_sidecar
from node.integrity.signer import SidecarSigner, load_signer
from node.integrity.verify import Reason, Verdict, verify_sidecar

__all__ = [
    "ExportResult",
    "Reason",
    "SidecarSigner",
    "Verdict",
    "build_sidecar",
    "export_study",
    "load_signer",
    "sidecar_path",
    "verify_sidecar",
    "write_sidecar",
]
