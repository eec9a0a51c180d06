"""Shared test helpers: synthetic DICOM objects, Part 10 splitting, peer tools."""

from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
SERIES_UID = "1.2.826.0.1.3680043.8.498.1.1"


def ct_dataset(
    *,
    size: int = 64,
    bits: int = 16,
    study_uid: str = STUDY_UID,
    series_uid: str = SERIES_UID,
    number: int = 1,
    seed: int = 0,
    **extra: Any,
) -> Dataset:
    """A small but complete CT image with noisy pixels (deterministic per seed)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyDate = "20261122"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACC1"
    ds.Modality = "CT"
    ds.Manufacturer = "Test"
    ds.ReferringPhysicianName = ""
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "PID-1"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.KVP = "120"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.ImagePositionPatient = [0, 0, number]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = study_uid + ".9"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.PixelSpacing = [0.5, 0.5]
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    rng = np.random.default_rng(seed)
    dtype = np.uint16 if bits == 16 else np.uint8
    ds.PixelData = rng.integers(0, 2**bits - 1, (size, size), dtype=dtype).tobytes()
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def write_part10(ds: Dataset, path: Path, transfer_syntax: UID = ExplicitVRLittleEndian) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True, implicit_vr=transfer_syntax.is_implicit_VR)
    return path


def split_part10(data: bytes) -> tuple[bytes, bytes]:
    """(preamble + file meta, data set bytes) of a Part 10 file."""
    assert data[128:132] == b"DICM"
    # (0002,0000) UL group length: tag 4 + VR 2 + length 2 + value 4 = 12 bytes.
    assert data[132:136] == b"\x02\x00\x00\x00"
    group_length = struct.unpack("<I", data[140:144])[0]
    end = 144 + group_length
    return data[:end], data[end:]


def dataset_bytes(path: Path) -> bytes:
    return split_part10(path.read_bytes())[1]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tool(name: str) -> str:
    """Path of a peer tool; its absence is a failure (setup installs it), never a skip."""
    found = shutil.which(name)
    assert found, f"{name} is not installed: run scripts/setup.sh --test"
    return found


def run(
    *args: str | Path, check: bool = False, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {"TCP_NODELAY": "1", "PATH": "/usr/local/bin:/usr/bin:/bin"}
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{args[0]} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result
