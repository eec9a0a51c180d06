"""DICOM Digital Signatures and secure references (PS3.3 C.12.1.1.3, PS3.15 Annex C).

Imports nothing from pynetdicom: signatures are about stored bytes, not the network.
"""

from node.signatures.check_references import (
    ReferenceCheck,
    check_document_references,
    check_reference,
    directory_lookup,
)
from node.signatures.keys import (
    Signer,
    create_key_pair,
    init_keys,
    load_certificate,
    load_private_key,
    load_signer,
    load_trust,
)
from node.signatures.profiles import Profile
from node.signatures.purposes import PURPOSES, Purpose, purpose
from node.signatures.references import (
    mac_reference,
    reference_stream,
    secure_references,
    signature_references,
)
from node.signatures.sign import (
    SignatureInfo,
    default_profile,
    load_for_signing,
    sign_dataset,
    sign_file,
)
from node.signatures.verify import (
    SignatureResult,
    VerificationReport,
    verify_dataset,
    verify_file,
)

__all__ = [
    "PURPOSES",
    "Profile",
    "Purpose",
    "ReferenceCheck",
    "SignatureInfo",
    "SignatureResult",
    "Signer",
    "VerificationReport",
    "check_document_references",
    "check_reference",
    "create_key_pair",
    "default_profile",
    "directory_lookup",
    "init_keys",
    "load_certificate",
    "load_for_signing",
    "load_private_key",
    "load_signer",
    "load_trust",
    "mac_reference",
    "purpose",
    "reference_stream",
    "secure_references",
    "sign_dataset",
    "sign_file",
    "signature_references",
    "verify_dataset",
    "verify_file",
]
