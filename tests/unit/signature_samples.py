"""Test objects and keys for the signature tests, generated at test time.

Certificates are back-dated by default so that a signature made in the same second is
not "before notBefore" (brief pitfall 6); no test sleeps.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    KeyObjectSelectionDocumentStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from node.signatures.keys import Signer

NOW = dt.datetime.now(dt.UTC)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


@dataclass
class KeyFiles:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    key_path: Path
    cert_path: Path

    @property
    def signer(self) -> Signer:
        return Signer(self.key, self.cert)


def certificate(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    subject: str,
    *,
    not_before: dt.datetime = NOW - HOUR,
    not_after: dt.datetime = NOW + 30 * DAY,
    issuer: tuple[x509.Certificate, rsa.RSAPrivateKey] | None = None,
    ca: bool = False,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, signing_key = (issuer[0].subject, issuer[1]) if issuer else (name, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(signing_key, hashes.SHA256())


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def write_keys(
    directory: Path,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    cert: x509.Certificate,
    name: str = "signer",
    passphrase: bytes | None = None,
) -> KeyFiles:
    directory.mkdir(parents=True, exist_ok=True)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    key_path, cert_path = directory / f"{name}.key.pem", directory / f"{name}.cert.pem"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return KeyFiles(key, cert, key_path, cert_path)


def _meta(ds: Dataset, syntax: str = ExplicitVRLittleEndian) -> Dataset:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    return ds


def _patient_study(ds: Dataset, modality: str) -> None:
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Doe^John"
    ds.PatientID = "P1 "  # odd value: pydicom pads it when writing
    ds.StudyDate = "20260101"
    ds.Modality = modality
    ds.Manufacturer = "Example"


def ct_image(rows: int = 64, columns: int = 64, seed: int = 1) -> Dataset:
    """A CT image with 16-bit pixels."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    _patient_study(ds, "CT")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
    pixels = np.random.default_rng(seed).integers(0, 4096, (rows, columns), dtype=np.uint16)
    ds.PixelData = pixels.tobytes()
    return _meta(ds)


def secondary_capture_8bit(size: int = 16) -> Dataset:
    """An 8-bit Secondary Capture image (Pixel Data is OB)."""
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    _patient_study(ds, "OT")
    ds.ConversionType = "WSD"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes((i * 7) % 256 for i in range(size * size))
    ds["PixelData"].VR = "OB"
    return _meta(ds)


def code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def kos(references: list[Dataset] | None = None, verified: bool = False) -> Dataset:
    """A KOS with nested, undefined-length and empty sequences."""
    ds = Dataset()
    ds.SOPClassUID = KeyObjectSelectionDocumentStorage
    _patient_study(ds, "KO")
    ds.ContentDate, ds.ContentTime, ds.InstanceNumber = "20260101", "120000", 1
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([code("113000", "DCM", "Of Interest")])
    ds["ConceptNameCodeSequence"].is_undefined_length = True
    ds.ConceptNameCodeSequence[0].is_undefined_length_sequence_item = True
    template = Dataset()
    template.MappingResource, template.TemplateIdentifier = "DCMR", "2010"
    ds.ContentTemplateSequence = Sequence([template])
    ds.ContentSequence = Sequence([])
    ds.ReferencedPerformedProcedureStepSequence = Sequence([])
    refs = references if references is not None else [_reference(ct_image())]
    series = Dataset()
    series.SeriesInstanceUID = generate_uid()
    series.ReferencedSOPSequence = Sequence(refs)
    study = Dataset()
    study.StudyInstanceUID = ds.StudyInstanceUID
    study.ReferencedSeriesSequence = Sequence([series])
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([study])
    if verified:
        observer = Dataset()
        observer.VerifyingObserverName = "Smith^Ann"
        observer.VerifyingOrganization = "Example"
        observer.VerificationDateTime = "20260101120000"
        observer.VerifyingObserverIdentificationCodeSequence = Sequence([])
        ds.VerifyingObserverSequence = Sequence([observer])
        ds.VerificationFlag = "VERIFIED"
    return _meta(ds)


def _reference(instance: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = instance.SOPClassUID
    item.ReferencedSOPInstanceUID = instance.SOPInstanceUID
    return item


def reference_to(instance: Dataset) -> Dataset:
    return _reference(instance)


def save(ds: Dataset, path: Path, syntax: str | None = None) -> Path:
    if syntax is not None:
        ds.file_meta.TransferSyntaxUID = UID(syntax)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def jpeg_lossless(directory: Path) -> Path:
    """An 8-bit image compressed by DCMTK (JPEG Lossless SV1, encapsulated Pixel Data)."""
    source = save(secondary_capture_8bit(), directory / "sc8.dcm")
    target = directory / "sc8_jpeg.dcm"
    subprocess.run(["dcmcjpeg", "+e1", str(source), str(target)], check=True)
    return target


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False)
