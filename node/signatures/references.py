"""Making secure references to other instances (PS3.3 C.17.2.1, Table C.17-3a; PS3.15 A.4).

Each Referenced SOP Sequence item of an evidence sequence may carry:

* a Referenced SOP Instance MAC Sequence (0400,0403), one item: MAC Calculation Transfer
  Syntax UID, MAC Algorithm, Data Elements Signed and MAC (0400,0404), the MAC computed the
  PS3.3 C.12.1.1.3 way over the referenced instance's top-level elements, unsigned and
  without any signature-item fields. This node covers every signable top-level element,
  Pixel Data included, as ``dcmsign`` does by default;
* a Referenced Digital Signature Sequence (0400,0402): Digital Signature UID and the exact
  Signature bytes of a signature the referenced instance carries.

Checking them is :mod:`node.signatures.check_references`.

Stored files are read once and walked by :mod:`node.signatures.rawscan` (the MAC hashed
straight from the file's bytes); files it cannot walk (implicit VR, deflate, damage) take
the general parser, which yields the same MAC or the proper error. The ``*_many``
function spreads instances over a few threads (:mod:`.parallel`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from struct import pack

from cryptography import x509
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRLittleEndian

from node.errors import UsageError
from node.signatures import levels, rawscan
from node.signatures.digests import CREATABLE_ALGORITHMS
from node.signatures.dsencode import EncodedElement, encoded_element
from node.signatures.encoding import Encoded, encode_dataset, read_file
from node.signatures.macstream import data_stream, select, signable_tags
from node.signatures.parallel import map_ordered
from node.signatures.verify import verify_encoded

DIGITAL_SIGNATURES = 0xFFFAFFFA
MAC_SYNTAX, MAC_ALGORITHM = BaseTag(0x04000010), BaseTag(0x04000015)
ELEMENTS_SIGNED, MAC = BaseTag(0x04000020), BaseTag(0x04000404)
Instance = Path | Dataset
SecureReferences = tuple[Dataset, list[Dataset]]


def reference_stream(instance: Instance) -> bytes:
    """The MAC stream of an instance's signable top-level elements (the dcmsign prefix)."""
    scanned = read_scanned(instance)
    if scanned is not None:
        return scanned.stream(scanned.signable_indices())
    encoded = read_encoded(instance)
    return data_stream(
        encoded, select(encoded.elements, signable_tags(encoded.elements)).elements
    ).to_bytes()


def mac_reference(instance: Instance, algorithm: str = "SHA256") -> Dataset:
    """The single item of a Referenced SOP Instance MAC Sequence (0400,0403)."""
    scanned = read_scanned(instance)
    if scanned is not None:
        return _mac_item_scanned(scanned, algorithm)
    return _mac_item(read_encoded(instance), instance, algorithm)


def signature_references(
    instance: Instance,
    trust: Sequence[x509.Certificate] | None,
    *,
    now: dt.datetime | None = None,
) -> list[Dataset]:
    """Referenced Digital Signature Sequence items for each verified main-level signature."""
    return _signature_items(read_encoded(instance), trust, now)


def secure_references(
    instance: Path,
    algorithm: str,
    trust: Sequence[x509.Certificate] | None,
    *,
    now: dt.datetime | None = None,
) -> tuple[Dataset, list[Dataset]]:
    """Both kinds of secure reference (C.17-3a) from a single read of the instance file."""
    scanned = read_scanned(instance)
    if scanned is not None and scanned.index(DIGITAL_SIGNATURES) is None:
        return _mac_item_scanned(scanned, algorithm), []
    encoded = read_encoded(instance)
    return _mac_item(encoded, instance, algorithm), _signature_items(encoded, trust, now)


def secure_references_many(
    instances: Sequence[Path],
    algorithm: str,
    trust: Sequence[x509.Certificate] | None,
    *,
    now: dt.datetime | None = None,
) -> list[SecureReferences]:
    """:func:`secure_references` of each instance, in order, on a few threads."""
    _check_algorithm(algorithm)
    return map_ordered(lambda path: secure_references(path, algorithm, trust, now=now), instances)


def _check_algorithm(algorithm: str) -> None:
    if algorithm not in CREATABLE_ALGORITHMS:
        raise UsageError(f"MAC algorithm must be one of {', '.join(CREATABLE_ALGORITHMS)}")


def _mac_item_scanned(scanned: rawscan.Scanned, algorithm: str) -> Dataset:
    """The MAC item from a scanned file, its values encoded as pydicom would encode them.

    Only the MAC differs between the instances of a series, so the other three elements
    (immutable tuples) are made once and shared (:func:`_shared`).
    """
    _check_algorithm(algorithm)
    chosen = scanned.signable_indices()
    syntax = str(ExplicitVRLittleEndian)
    if scanned.has_encapsulated():
        syntax = scanned.transfer_syntax or ""
        if not syntax:
            raise UsageError("encapsulated Pixel Data but no transfer syntax is known")
    tags = tuple([scanned.tags[i] for i in chosen])
    return Dataset(
        {
            MAC_SYNTAX: _shared(MAC_SYNTAX, "UI", syntax),
            MAC_ALGORITHM: _shared(MAC_ALGORITHM, "CS", algorithm),
            ELEMENTS_SIGNED: _shared(ELEMENTS_SIGNED, "AT", tags),
            MAC: encoded_element(MAC, "OB", scanned.digest(algorithm, chosen)),  # even sizes
        }
    )


@lru_cache(maxsize=256)
def _shared(tag: int, vr: str, value: str | tuple[int, ...]) -> EncodedElement:
    if isinstance(value, tuple):
        pairs = [half for t in value for half in (t >> 16, t & 0xFFFF)]
        return encoded_element(tag, vr, pack(f"<{len(pairs)}H", *pairs))
    return encoded_element(tag, vr, _padded(value, b"\0" if vr == "UI" else b" "))


def _padded(text: str, pad: bytes) -> bytes:
    data = text.encode("ascii")
    return data + pad if len(data) % 2 else data


def _mac_item(encoded: Encoded, instance: Instance, algorithm: str) -> Dataset:
    _check_algorithm(algorithm)
    tags = signable_tags(encoded.elements)
    item = Dataset()
    item.MACCalculationTransferSyntaxUID = _mac_syntax(encoded, instance)
    item.MACAlgorithm = algorithm
    item.DataElementsSigned = tags
    item.MAC = data_stream(encoded, select(encoded.elements, tags).elements).digest(algorithm)
    return item


def _signature_items(
    encoded: Encoded, trust: Sequence[x509.Certificate] | None, now: dt.datetime | None
) -> list[Dataset]:
    if levels.find(encoded.elements, DIGITAL_SIGNATURES) is None:
        return []  # nothing to verify: most instances carry no signature of their own
    report = verify_encoded(encoded, trust=trust, now=now)
    items = []
    for result in report.signatures:
        if result.top_level and result.ok:
            item = Dataset()
            item.DigitalSignatureUID = result.uid
            item.Signature = result.signature  # exact stored bytes, pad included
            items.append(item)
    return items


def read_encoded(instance: Instance) -> Encoded:
    """An instance parsed by the general encoder (a file of any syntax, or a data set)."""
    return read_file(instance) if isinstance(instance, Path) else encode_dataset(instance)


def read_scanned(instance: Instance) -> rawscan.Scanned | None:
    """A stored file walked by the fast scanner, or None when the general parser must."""
    if not isinstance(instance, Path):
        return None
    try:
        return rawscan.read_part10(instance)
    except rawscan.NotFast:
        return None


def _mac_syntax(encoded: Encoded, instance: Instance) -> str:
    """Native data: Explicit VR LE; encapsulated Pixel Data keeps its own syntax (C.12.1.1.3)."""
    if not any(element.fragments is not None for element in encoded.elements):
        return str(ExplicitVRLittleEndian)
    syntax = encoded.transfer_syntax
    if syntax is None and isinstance(instance, Dataset):
        meta = getattr(instance, "file_meta", None)
        syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else None
    if not syntax:
        raise UsageError("encapsulated Pixel Data but no transfer syntax is known")
    return syntax
