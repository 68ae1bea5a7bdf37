"""Generated folders for the header-scan benchmarks (bench/bench_scan.py).

* ``scan_ct_dir``: 2,000 thin-slice CT files, 512×512×16 bit, Explicit VR LE,
  headers of about 4 kB like a real scanner's: Japanese names in
  ``\\ISO 2022 IR 87`` (PS3.5 H.3.1), GE-like private groups 0009/0019/0027/0043
  with OB blobs, nested sequences of defined and undefined length.
* ``scan_mr_dir``: 500 MR files, 256×256×16 bit, ``ISO_IR 100`` names and
  Siemens-like CSA OB blobs (~7 kB) in group 0029: headers of about 10 kB.

Generated once into ``$PDIMPORT_BENCH_CACHE`` (default
``/tmp/pdimport-bench-cache``) and reused while the marker file says the
same version; delete the folder to regenerate.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

_VERSION = "scan-corpus-v1"
CT_FILES = int(os.environ.get("BENCH_SCAN_CT_FILES", "2000"))
MR_FILES = int(os.environ.get("BENCH_SCAN_MR_FILES", "500"))


def cache_root() -> Path:
    return Path(os.environ.get("PDIMPORT_BENCH_CACHE", "/tmp/pdimport-bench-cache"))


def _pixels(size: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    body = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (0.4 * size) ** 2
    return (
        (np.where(body, 1040, 24) + rng.normal(0, 12, (size, size)))
        .clip(0, 4095)
        .astype(np.uint16)
        .tobytes()
    )


def _item(**kw: object) -> Dataset:
    ds = Dataset()
    for k, v in kw.items():
        setattr(ds, k, v)
    return ds


def _common(ds: Dataset, number: int, size: int) -> None:
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20241126"
    ds.StudyTime, ds.SeriesTime = "101500", "101812"
    ds.ContentTime = f"1018{number % 60:02d}"
    ds.AccessionNumber = "A20241126001"
    ds.InstanceNumber = str(number)
    ds.ImagePositionPatient = [-250.0, -250.0, -0.625 * number]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = str(-0.625 * number)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.PixelSpacing = [0.488281, 0.488281]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0


def _ct(study: str, series: str, frame: str, number: int, pixels: bytes) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    ds.Modality, ds.Manufacturer = "CT", "GE MEDICAL SYSTEMS"
    ds.InstitutionName = "Tokyo General Hospital"
    ds.ReferringPhysicianName = "Suzuki^Ichiro=鈴木^一郎=すずき^いちろう"
    ds.StationName = "CTAWP00001"
    ds.StudyDescription = "胸部 CT 造影"
    ds.SeriesDescription = "0.625mm STND"
    ds.ManufacturerModelName = "Revolution CT"
    ds.ReferencedStudySequence = Sequence(
        [
            _item(
                ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.1",
                ReferencedSOPInstanceUID=frame[:-2] + ".9",
            )
        ]
    )
    ds.ProcedureCodeSequence = Sequence(
        [
            _item(
                CodeValue="CT0123",
                CodingSchemeDesignator="99GE",
                CodeMeaning="CT CHEST WITH CONTRAST",
            )
        ]
    )
    ds.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    ds.PatientID, ds.IssuerOfPatientID = "0012345678", "TOKYOGH"
    ds.PatientBirthDate, ds.PatientSex, ds.PatientAge = "19560412", "M", "068Y"
    ds.PatientWeight = "63.5"
    ds.ContrastBolusAgent = "OMNIPAQUE 300"
    ds.SliceThickness, ds.KVP = "0.625", "120"
    ds.DataCollectionDiameter, ds.ReconstructionDiameter = "500", "360"
    ds.GantryDetectorTilt, ds.TableHeight = "0", "148.5"
    ds.RotationDirection, ds.ExposureTime, ds.XRayTubeCurrent = "CW", "500", "285"
    ds.ConvolutionKernel, ds.PatientPosition = "STANDARD", "FFS"
    # nested sequences: an undefined-length one holding a defined-length one
    inner = _item(
        CodeValue="113691", CodingSchemeDesignator="DCM", CodeMeaning="IEC Body Dosimetry Phantom"
    )
    ds.CTExposureSequence = Sequence(
        [
            _item(
                ExposureTimeInms=500.0,
                XRayTubeCurrentInmA=285.0,
                CTDIPhantomTypeCodeSequence=Sequence([inner]),
            )
        ]
    )
    ds["CTExposureSequence"].is_undefined_length = True
    ds.CTExposureSequence[0].is_undefined_length_sequence_item = True
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.StudyID, ds.SeriesNumber, ds.AcquisitionNumber = "7001", "3", "1"
    ds.FrameOfReferenceUID = frame
    ds.PositionReferenceIndicator = "SN"
    _common(ds, number, 512)
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
    for group, creator, blob in (
        (0x0009, "GEMS_IDEN_01", 900),
        (0x0019, "GEMS_ACQU_01", 700),
        (0x0027, "GEMS_IMAG_01", 300),
        (0x0043, "GEMS_PARM_01", 500),
    ):
        block = ds.private_block(group, creator, create=True)
        block.add_new(0x01, "LO", "CT_LIGHTSPEED")
        block.add_new(0x02, "SS", 3)
        block.add_new(0x40, "OB", bytes((number + k) % 251 for k in range(blob)))
    ds.PixelData = pixels
    ds["PixelData"].VR = "OW"
    return ds


def _mr(study: str, series: str, frame: str, number: int, pixels: bytes) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, generate_uid()
    ds.Modality, ds.Manufacturer = "MR", "SIEMENS"
    ds.InstitutionName, ds.StationName = "Universitätsklinikum", "MRC40123"
    ds.StudyDescription, ds.SeriesDescription = "Kopf^Routine", "t2_tse_tra"
    ds.ManufacturerModelName = "Skyra"
    ds.PatientName, ds.PatientID = "Müller^Jürgen", "MR0004711"
    ds.PatientBirthDate, ds.PatientSex = "19630704", "M"
    ds.ScanningSequence, ds.SequenceVariant, ds.MRAcquisitionType = "SE", "SK\\SP\\OSP", "2D"
    ds.SliceThickness, ds.RepetitionTime, ds.EchoTime = "5", "4000", "96"
    ds.MagneticFieldStrength = "3"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.StudyID, ds.SeriesNumber = "1", "5"
    ds.FrameOfReferenceUID = frame
    _common(ds, number, 256)
    block = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    block.add_new(0x08, "CS", "IMAGE NUM 4")
    block.add_new(0x10, "OB", bytes((number + k) % 253 for k in range(4600)))
    block.add_new(0x18, "CS", "MR")
    block.add_new(0x20, "OB", bytes((number * 3 + k) % 241 for k in range(4400)))
    ds.PixelData = pixels
    ds["PixelData"].VR = "OW"
    return ds


def _write(folder: Path, count: int, make, size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    pixels = _pixels(size, 7)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    paths = []
    for n in range(1, count + 1):
        ds = make(study, series, frame, n, pixels)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = folder / f"IM{n:06d}"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _cached(name: str, count: int, make, size: int) -> list[Path]:
    folder = cache_root() / f"{name}-{count}"
    marker = folder / ".complete"
    if marker.is_file() and marker.read_text() == _VERSION:
        return sorted(p for p in folder.iterdir() if p.name.startswith("IM"))
    if folder.exists():
        for p in folder.iterdir():
            p.unlink()
    paths = _write(folder, count, make, size)
    marker.write_text(_VERSION)
    return paths


@pytest.fixture(scope="session")
def scan_ct_files() -> list[Path]:
    """The 2,000-file CT folder's files, sorted."""
    return _cached("ct", CT_FILES, _ct, 512)


@pytest.fixture(scope="session")
def scan_mr_files() -> list[Path]:
    """The 500-file MR folder's files (large private headers), sorted."""
    return _cached("mr", MR_FILES, _mr, 256)
