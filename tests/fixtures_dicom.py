"""DICOM test data builders: good files, every broken case, DICOMDIRs.

Plain functions (reused by other test modules) plus a few pytest fixtures.
Everything is generated here from pydicom's bundled test files or from
scratch; nothing is downloaded. Broken files are crafted by editing bytes,
because pydicom refuses to write most of them.
"""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
import warnings
import zlib
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_file_meta_info
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

__all__ = [
    "ct_file",
    "ct_series",
    "dicomdir_medium",
    "fresh_copy",
    "make_absurd_length",
    "make_bad_vr",
    "make_ct",
    "make_ct_series",
    "make_deflate_bomb",
    "make_deflated",
    "make_dicomdir",
    "make_dicomdir_dangling",
    "make_dicomdir_escape",
    "make_dicomdir_lower_cycle",
    "make_dicomdir_self_loop",
    "make_duplicate_tag",
    "make_empty",
    "make_encapsulated_no_delimiter",
    "make_implicit_body_explicit_meta",
    "make_invalid_uid",
    "make_japanese_pn",
    "make_le_body_be_meta",
    "make_missing_sop_uid",
    "make_nested",
    "make_noise_dcm",
    "make_pixel_length_mismatch",
    "make_raw",
    "make_sjis_in_latin1",
    "make_truncated_header",
    "make_truncated_pixel_data",
    "make_uid_mismatch",
    "make_undefined_ob_no_delimiter",
    "new_dataset",
    "pydicom_data_dir",
    "pydicom_test_file",
    "pydicom_test_files",
    "write_part10_bytes",
]


# ----------------------------------------------------------- pydicom's files
def pydicom_data_dir() -> Path:
    import pydicom.data

    return Path(pydicom.data.__file__).parent


def pydicom_test_file(name: str) -> Path:
    """A bundled pydicom test file by name (test_files/ or charset_files/),
    found locally: ``get_testdata_file`` would try the network for others."""
    base = pydicom_data_dir()
    for folder in ("test_files", "charset_files", "test_files/dicomdirtests"):
        candidate = base / folder / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{name} is not bundled with pydicom")


def pydicom_test_files() -> list[Path]:
    """Every bundled test file (DICOM or not), sorted."""
    base = pydicom_data_dir()
    out = [p for d in ("test_files", "charset_files") for p in (base / d).rglob("*") if p.is_file()]
    return sorted(out)


def fresh_copy(name: str, dst: Path, patient_id: str = "PAT001", **attrs: Any) -> Path:
    """A pydicom test file with fresh SOP/Series/Study UIDs and chosen
    patient attributes (DICOM keywords), written in its own encoding.

    ``dst`` may be a folder (the file keeps ``name``) or a file path. A
    bundled file without preamble and File Meta (``rtstruct.dcm``) is written
    as Part 10 in its own transfer syntax.
    """
    ds = dcmread(pydicom_test_file(name), force=True)
    if "TransferSyntaxUID" not in ds.file_meta:
        implicit, little = ds.original_encoding
        ds.file_meta = _file_meta(
            ds,
            ImplicitVRLittleEndian
            if implicit
            else ExplicitVRLittleEndian
            if little
            else ExplicitVRBigEndian,
        )
        ds.preamble = b"\0" * 128
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.PatientID = patient_id
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    if getattr(ds, "file_meta", None) is not None and "MediaStorageSOPInstanceUID" in ds.file_meta:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    dst = Path(dst)
    out = dst / name if dst.is_dir() else dst
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out)
    return out


# ------------------------------------------------------------- synthetic CT
def _ct_dataset(
    patient_id: str,
    patient_name: str,
    study_uid: str,
    series_uid: str,
    number: int,
    rows: int,
    cols: int,
    **attrs: Any,
) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyDate = "20240102"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACC0001"
    ds.Modality = "CT"
    ds.Manufacturer = "PDIMPORT"
    ds.InstitutionName = "Test Hospital"
    ds.StudyDescription = "CT HEAD"
    ds.SeriesDescription = "AXIAL 1mm"
    ds.ManufacturerModelName = "Synth"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.IssuerOfPatientID = "TESTHOSP"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.SliceThickness = "1.0"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = "2"
    ds.InstanceNumber = str(number)
    ds.ImagePositionPatient = [0, 0, float(number)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = generate_uid()
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.PixelSpacing = [0.5, 0.5]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.PixelData = bytes((i * 7 + number) % 251 for i in range(rows * cols * 2))
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return ds


def _file_meta(ds: Dataset, ts: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "PDIMPORT_TEST"
    return meta


def new_dataset(sop_class: str = CTImageStorage, ts: str = ExplicitVRLittleEndian) -> Dataset:
    """An empty dataset of ``sop_class`` with a fresh SOP Instance UID and
    its File Meta, ready for ``save_as(..., enforce_file_format=True)``."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.file_meta = _file_meta(ds, ts)
    return ds


def _save(ds: Dataset, path: Path, ts: str = ExplicitVRLittleEndian) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.file_meta = _file_meta(ds, ts)
    ds.preamble = b"\0" * 128
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def make_ct(
    path: Path,
    patient_id: str = "PAT001",
    patient_name: str = "Test^Patient",
    study_uid: str | None = None,
    series_uid: str | None = None,
    number: int = 1,
    rows: int = 64,
    cols: int = 64,
    ts: str = ExplicitVRLittleEndian,
    **attrs: Any,
) -> Path:
    """One small synthetic CT instance (native pixels) written by pydicom."""
    ds = _ct_dataset(
        patient_id,
        patient_name,
        study_uid or generate_uid(),
        series_uid or generate_uid(),
        number,
        rows,
        cols,
        **attrs,
    )
    return _save(ds, path, ts)


def make_ct_series(
    dst_dir: Path,
    n: int,
    patient_id: str = "PAT001",
    patient_name: str = "Test^Patient",
    study_uid: str | None = None,
    series_uid: str | None = None,
    name: str = "IM{:04d}",
    rows: int = 64,
    cols: int = 64,
    ts: str = ExplicitVRLittleEndian,
    **attrs: Any,
) -> list[Path]:
    """``n`` synthetic CT instances of one series in ``dst_dir`` (names from
    the ``name`` pattern, e.g. ``IM0001``: valid PS3.10 File ID components)."""
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    return [
        make_ct(
            Path(dst_dir) / name.format(i),
            patient_id,
            patient_name,
            study_uid,
            series_uid,
            i,
            rows,
            cols,
            ts,
            **attrs,
        )
        for i in range(1, n + 1)
    ]


def write_part10_bytes(
    path: Path,
    body: bytes,
    ts: str = ExplicitVRLittleEndian,
    sop_instance_uid: str = "1.2.3.4",
    sop_class_uid: str = CTImageStorage,
) -> Path:
    """Preamble + DICM + File Meta (written by pydicom) + hand-made body bytes."""
    meta = FileMetaDataset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid UIDs are wanted here
        meta.MediaStorageSOPClassUID = sop_class_uid
        meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    fp = DicomBytesIO()
    write_file_meta_info(fp, meta, enforce_standard=True)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(b"\0" * 128 + b"DICM" + fp.getvalue() + body)
    return Path(path)


def _el(tag: int, vr: bytes, value: bytes, little: bool = True) -> bytes:
    """One explicit VR element (PS3.5 §7.1.2)."""
    order = "<" if little else ">"
    head = struct.pack(order + "HH", tag >> 16, tag & 0xFFFF) + vr
    if vr in (
        b"OB",
        b"OW",
        b"SQ",
        b"UN",
        b"UT",
        b"UC",
        b"UR",
        b"OD",
        b"OF",
        b"OL",
        b"OV",
        b"SV",
        b"UV",
    ):
        return head + b"\0\0" + struct.pack(order + "I", len(value)) + value
    return head + struct.pack(order + "H", len(value)) + value


def _ident_body(sop_uid: str = "1.2.3.4") -> bytes:
    """The start of a minimal explicit VR LE CT dataset."""
    uid = sop_uid.encode() + (b"\0" if len(sop_uid) % 2 else b"")
    cls = CTImageStorage.encode() + (b"\0" if len(CTImageStorage) % 2 else b"")
    return (
        _el(0x00080005, b"CS", b"ISO_IR 100")
        + _el(0x00080016, b"UI", cls)
        + _el(0x00080018, b"UI", uid)
        + _el(0x00080060, b"CS", b"CT")
        + _el(0x00100010, b"PN", b"Test^Broken ")
        + _el(0x00100020, b"LO", b"BROKEN")
    )


# -------------------------------------------------------------- broken files
def make_truncated_pixel_data(path: Path, cut: int = 1000) -> Path:
    """D1: a good CT cut ``cut`` bytes short, inside Pixel Data."""
    make_ct(path)
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:-cut])
    return Path(path)


def make_truncated_header(path: Path) -> Path:
    """D1: the file ends 2 bytes after the start of an element's tag... in
    the middle of the (0028,0010) Rows header."""
    make_ct(path)
    data = Path(path).read_bytes()
    at = data.index(b"\x28\x00\x10\x00US")
    Path(path).write_bytes(data[: at + 6])
    return Path(path)


def make_empty(path: Path) -> Path:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(b"")
    return Path(path)


def make_noise_dcm(path: Path, size: int = 4096, seed: int = 1234) -> Path:
    """D9/A11: random bytes named like DICOM."""
    rnd = random.Random(seed)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(bytes(rnd.getrandbits(8) for _ in range(size)))
    return Path(path)


def make_absurd_length(path: Path) -> Path:
    """D2: a ~300-byte file whose last element declares 0xFFFFFFF0 bytes."""
    body = _ident_body() + (
        struct.pack("<HH", 0x0040, 0xA160) + b"UT\0\0" + struct.pack("<I", 0xFFFFFFF0) + b"x" * 16
    )
    return write_part10_bytes(path, body)


def make_bad_vr(path: Path) -> Path:
    """D7: an element whose VR bytes are not a VR (after good elements)."""
    body = (
        _ident_body()
        + struct.pack("<HH", 0x0020, 0x0013)
        + b"\x00\x01"
        + struct.pack("<H", 2)
        + b"1 "
    )
    return write_part10_bytes(path, body)


def make_undefined_ob_no_delimiter(path: Path, tail: int = 1 << 16) -> Path:
    """D4: an undefined-length OB (not Pixel Data) and no delimiter, then a tail."""
    body = _ident_body() + (
        struct.pack("<HH", 0x0042, 0x0011)
        + b"OB\0\0"
        + struct.pack("<I", 0xFFFFFFFF)
        + b"\x55" * tail
    )
    return write_part10_bytes(path, body)


def make_encapsulated_no_delimiter(path: Path) -> Path:
    """Encapsulated Pixel Data whose fragments run to EOF with no sequence delimiter."""
    frag = b"\xff\xd8\xff\xe0" + b"\0" * 60
    body = (
        _ident_body()
        + _el(0x00280010, b"US", struct.pack("<H", 8))
        + _el(0x00280011, b"US", struct.pack("<H", 8))
        + struct.pack("<HH", 0x7FE0, 0x0010)
        + b"OB\0\0"
        + struct.pack("<I", 0xFFFFFFFF)
        + struct.pack("<HHI", 0xFFFE, 0xE000, 0)
        + struct.pack("<HHI", 0xFFFE, 0xE000, len(frag))
        + frag
    )
    return write_part10_bytes(path, body, ts="1.2.840.10008.1.2.4.50")


def make_nested(path: Path, depth: int) -> Path:
    """D6: ``depth`` nested undefined-length Content Sequences, built as
    bytes (pydicom's writer recurses and cannot make the deep ones)."""
    sq = struct.pack("<HH", 0x0040, 0xA730) + b"SQ\0\0" + struct.pack("<I", 0xFFFFFFFF)
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    close = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    bottom = _el(0x0040A160, b"UT", b"bottom")
    body = _ident_body() + (sq + item) * depth + bottom + close * depth
    return write_part10_bytes(path, body)


def make_le_body_be_meta(path: Path) -> Path:
    """D8: an explicit VR LE body whose File Meta says Explicit VR Big Endian."""
    make_ct(path)
    data = Path(path).read_bytes()
    old = ExplicitVRLittleEndian.encode() + b"\0"
    new = ExplicitVRBigEndian.encode() + b"\0"
    assert len(old) == len(new) and old in data
    Path(path).write_bytes(data.replace(old, new, 1))
    return Path(path)


def make_implicit_body_explicit_meta(path: Path) -> Path:
    """D8: an implicit VR body whose File Meta says Explicit VR Little Endian."""
    ds = _ct_dataset("IMPL", "Implicit^Body", generate_uid(), generate_uid(), 1, 8, 8)
    fp = DicomBytesIO()
    dcmwrite(fp, ds, implicit_vr=True, little_endian=True)
    return write_part10_bytes(path, fp.getvalue(), ExplicitVRLittleEndian, ds.SOPInstanceUID)


def make_deflated(path: Path) -> Path:
    """A valid Deflated Explicit VR LE CT (PS3.5 §A.5), written by pydicom."""
    return make_ct(path, ts=DeflatedExplicitVRLittleEndian)


def make_deflate_bomb(path: Path, inflated: int = 64 << 20) -> Path:
    """D11: a small deflated file whose private OB value inflates to ``inflated`` bytes."""
    head = _ident_body() + (
        struct.pack("<HH", 0x0009, 0x0010)
        + b"LO"
        + struct.pack("<H", 8)
        + b"BOMBTEST"
        + struct.pack("<HH", 0x0009, 0x1000)
        + b"OB\0\0"
        + struct.pack("<I", inflated)
    )
    z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [z.compress(head)]
    zeros = b"\0" * (1 << 20)
    for _ in range(inflated >> 20):
        out.append(z.compress(zeros))
    out.append(z.flush())
    return write_part10_bytes(path, b"".join(out), ts=DeflatedExplicitVRLittleEndian)


def make_uid_mismatch(path: Path) -> Path:
    """D14: File Meta Media Storage SOP Instance UID differs from the
    dataset's (pydicom's writer would repair it, so the meta is ours)."""
    ds = _ct_dataset("UIDMIS", "Uid^Mismatch", generate_uid(), generate_uid(), 1, 8, 8)
    fp = DicomBytesIO()
    dcmwrite(fp, ds, implicit_vr=False, little_endian=True)
    return write_part10_bytes(path, fp.getvalue(), ExplicitVRLittleEndian, generate_uid())


def make_invalid_uid(path: Path, uid: str = "1.2.840.abc.0..5") -> Path:
    """D14: a syntactically invalid SOP Instance UID (meta and dataset agree)."""
    return write_part10_bytes(path, _ident_body(uid), sop_instance_uid=uid)


def make_missing_sop_uid(path: Path) -> Path:
    """No SOP Instance UID in the dataset."""
    body = _el(0x00080005, b"CS", b"ISO_IR 100") + _el(0x00080060, b"CS", b"CT")
    return write_part10_bytes(path, body)


def make_duplicate_tag(path: Path) -> Path:
    """Two Patient ID elements: parsers disagree on which one counts."""
    body = _ident_body() + _el(0x00100020, b"LO", b"OTHER ")
    return write_part10_bytes(path, body)


def make_pixel_length_mismatch(path: Path) -> Path:
    """D13: Rows × Columns say 64×64×2 bytes, Pixel Data holds half of it."""
    body = (
        _ident_body()
        + _el(0x00280002, b"US", struct.pack("<H", 1))
        + _el(0x00280010, b"US", struct.pack("<H", 64))
        + _el(0x00280011, b"US", struct.pack("<H", 64))
        + _el(0x00280100, b"US", struct.pack("<H", 16))
        + _el(0x7FE00010, b"OW", b"\0" * (64 * 64))
    )
    return write_part10_bytes(path, body)


def make_raw(path: Path, encoding: str, **attrs: Any) -> Path:
    """A dataset with no preamble and no File Meta (old discs, ACR-NEMA-like):
    ``implicit_le``, ``explicit_le`` or ``explicit_be``."""
    ds = _ct_dataset("RAW", "Raw^Dataset", generate_uid(), generate_uid(), 1, 8, 8, **attrs)
    implicit = encoding == "implicit_le"
    little = encoding != "explicit_be"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, ds, implicit_vr=implicit, little_endian=little, enforce_file_format=False)
    data = Path(path).read_bytes()
    assert data[128:132] != b"DICM"
    return Path(path)


def make_sjis_in_latin1(path: Path) -> Path:
    """C3: Shift-JIS bytes in a file that declares ISO_IR 100."""
    name = "山田^太郎".encode("cp932")
    name += b" " * (len(name) % 2)
    body = (
        _el(0x00080005, b"CS", b"ISO_IR 100")
        + _el(0x00080016, b"UI", CTImageStorage.encode() + b"\0")
        + _el(0x00080018, b"UI", b"1.2.3.4")
        + _el(0x00100010, b"PN", name)
    )
    return write_part10_bytes(path, body)


def make_japanese_pn(path: Path) -> Path:
    """C1: PS3.5 H.3.2: ``ISO 2022 IR 13\\ISO 2022 IR 87`` (JIS X 0201 + 0208)."""
    ds = _ct_dataset("JP01", "", generate_uid(), generate_uid(), 1, 4, 4)
    ds.SpecificCharacterSet = ["ISO 2022 IR 13", "ISO 2022 IR 87"]
    ds.PatientName = "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"
    return _save(ds, path)


# ---------------------------------------------------------------- DICOMDIRs
def make_dicomdir(root: Path, n: int = 3, patient_id: str = "DIRPAT") -> Path:
    """A valid DICOMDIR written by pydicom's FileSet (writing is safe; only
    *reading* untrusted DICOMDIRs with FileSet is not) plus its files."""
    from pydicom.fileset import FileSet

    root = Path(root)
    staging = root.parent / (root.name + "_staging")
    paths = make_ct_series(staging, n, patient_id=patient_id)
    fs = FileSet()
    for p in paths:
        fs.add(dcmread(p))
    root.mkdir(parents=True, exist_ok=True)
    fs.write(root)
    shutil.rmtree(staging)
    return root / "DICOMDIR"


def _record_offsets(dicomdir: Path) -> list[tuple[int, str]]:
    ds = dcmread(dicomdir)
    return [
        (int(item.seq_item_tell), str(item.DirectoryRecordType))
        for item in ds.DirectoryRecordSequence
    ]


def _patch_ul(dicomdir: Path, record_offset: int, element: int, value: int) -> None:
    """Overwrite a UL offset element (0004,xxxx) inside the record at ``record_offset``."""
    data = bytearray(dicomdir.read_bytes())
    needle = struct.pack("<HH", 0x0004, element) + b"UL" + struct.pack("<H", 4)
    at = data.index(needle, record_offset)
    data[at + 8 : at + 12] = struct.pack("<I", value)
    dicomdir.write_bytes(bytes(data))


def make_dicomdir_self_loop(root: Path) -> Path:
    """M1: the first record's Offset of the Next Directory Record is itself."""
    path = make_dicomdir(root)
    first, _ = _record_offsets(path)[0]
    _patch_ul(path, first, 0x1400, first)
    return path


def make_dicomdir_lower_cycle(root: Path) -> Path:
    """M2: an IMAGE record's lower-level offset points back to the PATIENT record."""
    path = make_dicomdir(root)
    records = _record_offsets(path)
    patient = next(o for o, t in records if t == "PATIENT")
    image = next(o for o, t in records if t == "IMAGE")
    _patch_ul(path, image, 0x1420, patient)
    return path


def make_dicomdir_dangling(root: Path) -> Path:
    """M3: a next-record offset that points to no record."""
    path = make_dicomdir(root)
    first, _ = _record_offsets(path)[0]
    _patch_ul(path, first, 0x1400, 0x7FFFFFF0)
    return path


def make_dicomdir_escape(root: Path, file_id: bytes = b"..\\..\\etc\\passwd") -> Path:
    """M4: one record's Referenced File ID rewritten in place to escape the root."""
    path = make_dicomdir(root)
    data = bytearray(path.read_bytes())
    needle = struct.pack("<HH", 0x0004, 0x1500) + b"CS"
    at = data.index(needle)
    length = struct.unpack("<H", data[at + 6 : at + 8])[0]
    assert len(file_id) <= length, "the new File ID must fit in place"
    data[at + 8 : at + 8 + length] = file_id.ljust(length, b" ")
    path.write_bytes(bytes(data))
    return path


# ------------------------------------------------------------------ fixtures
@pytest.fixture
def ct_file(tmp_path: Path) -> Path:
    return make_ct(tmp_path / "IM0001")


@pytest.fixture
def ct_series(tmp_path: Path) -> list[Path]:
    return make_ct_series(tmp_path / "DICOM", 5)


@pytest.fixture
def dicomdir_medium(tmp_path: Path) -> Path:
    """A folder holding a pydicom-written DICOMDIR and its files."""
    root = tmp_path / "medium"
    make_dicomdir(root)
    return root


def dciodvfy_lines(path: Path | str, *, new: bool = False) -> list[str]:
    """dicom3tools' report on one file, a line each (``-new``: the newest
    edition's rules)."""
    assert shutil.which("dciodvfy"), "dicom3tools dciodvfy is required (DESIGN.md)"
    args = ["dciodvfy", *(["-new"] if new else []), str(path)]
    proc = subprocess.run(args, check=False, capture_output=True, text=True, timeout=60)
    return [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]


def dciodvfy_errors(path: Path | str, *, new: bool = False) -> list[str]:
    """dciodvfy's Error (and Abort) lines for one file."""
    return [ln for ln in dciodvfy_lines(path, new=new) if ln.startswith(("Error", "Abort"))]
