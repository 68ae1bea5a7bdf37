"""Dataset builders for the referral discs of the bench, beside the sample
disc's CT and MR (:mod:`pdimport.demo.sample`, whose patient, study and
equipment modules these share): Computed Radiography, Ultrasound, and an RT
set (structure set, plan and dose on a planning CT).

Strict when building, as the sample disc is: every builder here writes what
its IOD requires, and the tests run dciodvfy on each (tests/capacity).
"""

from __future__ import annotations

import datetime as _dt

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    RTDoseStorage,
    RTPlanStorage,
    RTStructureSetStorage,
    UltrasoundImageStorage,
    generate_uid,
)

from pdimport.demo.sample import SampleStudy, _base_dataset, _finish, set_series

#: Attributes of the sample's base dataset that belong to cross-sectional
#: images only (Frame of Reference, Image Plane, patient position).
_CROSS_SECTIONAL = (
    "PositionReferenceIndicator",
    "PatientPosition",
    "ImageOrientationPatient",
)


def _projection(
    study: SampleStudy, StudyInstanceUID: str, when: _dt.datetime, sop_class: str, number: int
) -> Dataset:
    """An image that is not a slice (CR, US): no plane or frame of reference."""
    ds = _base_dataset(study, StudyInstanceUID, when)
    for keyword in _CROSS_SECTIONAL:
        delattr(ds, keyword)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = number
    ds.ContentDate, ds.ContentTime = ds.StudyDate, ds.StudyTime
    return ds


def _non_image(study: SampleStudy, StudyInstanceUID: str, when: _dt.datetime) -> Dataset:
    """Patient, study, equipment and SOP Common, without the image pixel attributes."""
    ds = _base_dataset(study, StudyInstanceUID, when)
    for keyword in (
        *_CROSS_SECTIONAL,
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "BurnedInAnnotation",
        "BodyPartExamined",
    ):
        delattr(ds, keyword)
    return ds


# ------------------------------------------------------------------ CR
def cr_image(
    study: SampleStudy,
    StudyInstanceUID: str,
    SeriesInstanceUID: str,
    number: int,
    pixels: np.ndarray,
    when: _dt.datetime,
) -> Dataset:
    """A Computed Radiography image (PS3.3 A.2): 12 bits stored in 16."""
    ds = _projection(study, StudyInstanceUID, when, ComputedRadiographyImageStorage, number)
    set_series(ds, "CR", SeriesInstanceUID, 3, "CHEST PA")
    ds.ViewPosition = "PA"  # CR Series (C.8.1.1)
    ds.PatientOrientation = ["L", "F"]
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.BitsStored, ds.HighBit = 12, 11
    ds.WindowCenter, ds.WindowWidth = "2048", "4096"
    return _finish(ds, pixels)


def cr_pixels(size: int, rng: np.random.Generator) -> np.ndarray:
    """A chest radiograph look-alike: bright mediastinum, dark lungs, noise."""
    y, x = np.mgrid[-1.0 : 1.0 : size * 1j, -1.0 : 1.0 : size * 1j]
    img = 2600.0 - 900.0 * np.exp(-((np.abs(x) - 0.42) ** 2 / 0.06 + y**2 / 0.35))
    img += 500.0 * np.exp(-(x**2) / 0.01)
    img += rng.normal(0.0, 40.0, img.shape)
    return np.clip(img, 0, 4095)


# ------------------------------------------------------------------ US
def us_image(
    study: SampleStudy,
    StudyInstanceUID: str,
    SeriesInstanceUID: str,
    number: int,
    pixels: np.ndarray,
    when: _dt.datetime,
) -> Dataset:
    """An Ultrasound image (PS3.3 A.6), 8-bit RGB, single frame."""
    ds = _projection(study, StudyInstanceUID, when, UltrasoundImageStorage, number)
    ds.BodyPartExamined = "ABDOMEN"
    set_series(ds, "US", SeriesInstanceUID, 4, "ABDOMEN")
    ds.PatientOrientation = ""
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL", "0001"]
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.LossyImageCompression = "00"
    out = _finish(ds, pixels[..., 0])  # Rows, Columns and file meta
    out.PixelData = pixels.astype(np.uint8).tobytes()  # 8-bit RGB, colour-by-pixel
    return out


def us_pixels(rows: int, rng: np.random.Generator) -> np.ndarray:
    """A sector scan of speckle with a dark cyst, grey, as RGB."""
    cols = rows * 4 // 3
    y, x = np.mgrid[0.0 : 1.0 : rows * 1j, -0.66 : 0.66 : cols * 1j]
    sector = (np.abs(np.arctan2(x, y + 0.05)) < 0.6) & (y > 0.08)
    speckle = rng.rayleigh(60.0, (rows, cols))
    cyst = (x**2 + (y - 0.55) ** 2) < 0.01
    grey = np.where(sector & ~cyst, speckle, 0.0)
    grey = np.clip(grey, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


# ------------------------------------------------------------------ RT
def _rt_series(ds: Dataset, modality: str, number: int, desc: str) -> None:
    set_series(ds, modality, generate_uid(), number, desc)
    ds.OperatorsName = ""  # RT Series (C.8.8.1): type 2


def rt_set(
    study: SampleStudy,
    StudyInstanceUID: str,
    ct: list[Dataset],
    when: _dt.datetime,
    dose_size: int = 64,
) -> list[Dataset]:
    """An RT Structure Set (A.19) outlining a body and a target on the CT
    slices ``ct``, an RT Plan (A.20) on it, and an RT Dose (A.18) grid."""
    frame = str(ct[0].FrameOfReferenceUID)
    ss = _non_image(study, StudyInstanceUID, when)
    ss.SOPClassUID = RTStructureSetStorage
    ss.SOPInstanceUID = generate_uid()
    _rt_series(ss, "RTSTRUCT", 10, "RT STRUCTURES")
    ss.InstanceNumber = 1
    ss.FrameOfReferenceUID = frame  # Frame of Reference (C.7.4.1), in A.19 since 2019
    ss.PositionReferenceIndicator = ""
    ss.StructureSetLabel = "BENCH"
    ss.StructureSetDate, ss.StructureSetTime = ss.StudyDate, ss.StudyTime
    contour_images = [
        _ref(str(c.SOPClassUID), str(c.SOPInstanceUID)) for c in ct[:: max(1, len(ct) // 8)]
    ]
    series_ref = Dataset()
    series_ref.SeriesInstanceUID = ct[0].SeriesInstanceUID
    series_ref.ContourImageSequence = Sequence(contour_images)
    study_ref = _ref("1.2.840.10008.3.1.2.3.1", StudyInstanceUID)  # Detached Study Mgmt (retired)
    study_ref.RTReferencedSeriesSequence = Sequence([series_ref])
    for_ref = Dataset()
    for_ref.FrameOfReferenceUID = frame
    for_ref.RTReferencedStudySequence = Sequence([study_ref])
    ss.ReferencedFrameOfReferenceSequence = Sequence([for_ref])
    rois, contours, observations = [], [], []
    for number, (name, kind, radius, colour) in enumerate(
        (("BODY", "EXTERNAL", 150.0, [0, 255, 0]), ("PTV", "PTV", 20.0, [255, 0, 0])), start=1
    ):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = frame
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "MANUAL"
        rois.append(roi)
        planes = []
        for image, ref in zip(ct[:: max(1, len(ct) // 8)], contour_images, strict=False):
            z = float(image.ImagePositionPatient[2])
            angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
            points = np.column_stack(
                [radius * np.cos(angles), radius * np.sin(angles), np.full(16, z)]
            )
            plane = Dataset()
            plane.ContourImageSequence = Sequence(
                [_ref(ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID)]
            )
            plane.ContourGeometricType = "CLOSED_PLANAR"
            plane.NumberOfContourPoints = 16
            plane.ContourData = [f"{v:.2f}" for v in points.ravel()]
            planes.append(plane)
        contour = Dataset()
        contour.ReferencedROINumber = number
        contour.ROIDisplayColor = colour
        contour.ContourSequence = Sequence(planes)
        contours.append(contour)
        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = kind
        obs.ROIInterpreter = ""
        observations.append(obs)
    ss.StructureSetROISequence = Sequence(rois)
    ss.ROIContourSequence = Sequence(contours)
    ss.RTROIObservationsSequence = Sequence(observations)

    plan = _non_image(study, StudyInstanceUID, when)
    plan.SOPClassUID = RTPlanStorage
    plan.SOPInstanceUID = generate_uid()
    _rt_series(plan, "RTPLAN", 11, "RT PLAN")
    plan.InstanceNumber = 1
    plan.FrameOfReferenceUID = frame
    plan.PositionReferenceIndicator = ""
    plan.RTPlanLabel = "BENCH PLAN"
    plan.RTPlanDate, plan.RTPlanTime = plan.StudyDate, plan.StudyTime
    plan.RTPlanGeometry = "PATIENT"
    plan.ReferencedStructureSetSequence = Sequence(
        [_ref(str(ss.SOPClassUID), str(ss.SOPInstanceUID))]
    )
    plan.ApprovalStatus = "UNAPPROVED"

    dose = _dose(study, StudyInstanceUID, when, ct[0], plan, dose_size)
    for ds in (ss, plan):
        _finish_non_image(ds)
    return [ss, plan, dose]


def _ref(sop_class: str, sop_instance: str) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = sop_class
    ref.ReferencedSOPInstanceUID = sop_instance
    return ref


def _finish_non_image(ds: Dataset) -> None:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta


def _dose(
    study: SampleStudy,
    StudyInstanceUID: str,
    when: _dt.datetime,
    ct: Dataset,
    plan: Dataset,
    size: int,
) -> Dataset:
    """A physical dose grid (RT Dose, C.8.8.3): a Gaussian around the target."""
    frames = 8
    ds = _base_dataset(study, StudyInstanceUID, when)
    ds.SOPClassUID = RTDoseStorage
    ds.SOPInstanceUID = generate_uid()
    _rt_series(ds, "RTDOSE", 12, "RT DOSE")
    for keyword in ("BurnedInAnnotation", "PatientPosition", "BodyPartExamined"):
        delattr(ds, keyword)
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = ct.FrameOfReferenceUID
    ds.ContentDate, ds.ContentTime = ds.StudyDate, ds.StudyTime
    spacing = 300.0 / size
    ds.PixelSpacing = [f"{spacing:.4f}", f"{spacing:.4f}"]
    ds.SliceThickness = "5.0"
    ds.ImagePositionPatient = ["-150.0", "-150.0", str(ct.ImagePositionPatient[2])]
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = (0x3004, 0x000C)
    ds.GridFrameOffsetVector = [f"{5.0 * i:.1f}" for i in range(frames)]
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = "PLAN"
    ds.DoseGridScaling = "0.001"
    ds.ReferencedRTPlanSequence = Sequence([_ref(str(plan.SOPClassUID), str(plan.SOPInstanceUID))])
    y, x = np.mgrid[-1.0 : 1.0 : size * 1j, -1.0 : 1.0 : size * 1j]
    grid = np.stack(
        [60000.0 * np.exp(-(x**2 + y**2) / 0.05 - (f - frames / 2) ** 2 / 8) for f in range(frames)]
    )
    ds.Rows, ds.Columns = size, size
    out = _finish(ds, grid[0])
    out.PixelData = np.clip(grid, 0, 65535).astype("<u2").tobytes()
    return out
