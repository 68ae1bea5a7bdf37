"""Values that flow between the stages (media -> read -> scan -> group -> send).

These are the contracts between modules. Each stage takes and returns these
plain values; none of them holds a socket, a device or a database handle.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from pdimport.problems import CodedError, Problem


# --------------------------------------------------------------------- media
@dataclass(frozen=True)
class MediumEntry:
    """One regular file on a medium.

    ``path`` is a display label only: '/'-separated, relative to the medium
    root, already checked to stay inside it. It never becomes a local path.
    ``order`` is the on-medium position (LBA for images and devices, local
    header offset for zip, walk order for folders) used to sort reads.
    """

    path: str
    size: int
    order: int = 0


class Medium(Protocol):
    """A source of files: a folder, an ISO image or device, a zip package."""

    kind: str  # "dir" | "iso" | "zip" | "device"
    path: str  # what the operator gave (display)
    label: str  # volume label / package name, "" when unknown
    problems: list[Problem]  # entries refused while listing (links, escapes, bombs)

    def entries(self) -> list[MediumEntry]:
        """Every acceptable regular file, sorted in read (on-medium) order."""
        ...

    def open(self, entry: MediumEntry) -> BinaryIO:
        """A stream of the entry's bytes. Reading raises :class:`MediumReadError`
        (never returns silently short data) on I/O errors or truncation."""
        ...

    def close(self) -> None: ...


class MediumReadError(CodedError):
    """Reading an entry failed; ``code`` is a problem code, ``lbas`` the
    sectors that stayed unreadable (empty when the error names none)."""

    def __init__(self, code: str, detail: str = "", lbas: tuple[int, ...] = ()) -> None:
        super().__init__(code, detail)
        self.lbas = lbas


# ------------------------------------------------------------ identification
@dataclass(frozen=True)
class Identity:
    """What a spooled file is.

    kind:
      ``dicom``         a DICOM dataset (subtype = encoding, see below)
      ``dicomdir``      a DICOMDIR (Media Storage Directory)
      ``other_content`` clinical non-DICOM (subtype pdf|jpeg|png|tiff|bmp|txt)
      ``ignored``       listed but not imported (subtype viewer|autorun|ihe_pdi_web|os_junk|pdi_info)
      ``unknown``       not recognised (reported as a problem)
      ``broken``        looks like DICOM but is not usable (problem holds the code)

    encoding for DICOM: ``part10`` (preamble + meta), ``implicit_le``,
    ``explicit_le``, ``explicit_be`` (raw datasets with no preamble/meta).
    """

    kind: str
    subtype: str = ""
    problem: Problem | None = None


# -------------------------------------------------------------------- scan
@dataclass
class Header:
    """Attributes of one DICOM file, as read by a scanner.

    Values are decoded Python strings ("" when absent). Offsets are byte
    offsets into the file.
    """

    encoding: str  # part10 | implicit_le | explicit_le | explicit_be
    transfer_syntax: str
    sop_class_uid: str
    sop_instance_uid: str
    dataset_offset: int = 0  # where the dataset (after preamble + meta) starts
    pixel_data_offset: int = -1
    patient_id: str = ""
    issuer_of_patient_id: str = ""
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    study_uid: str = ""
    study_date: str = ""
    study_time: str = ""
    study_description: str = ""
    accession_number: str = ""
    series_uid: str = ""
    series_number: str = ""
    series_description: str = ""
    modality: str = ""
    instance_number: str = ""
    specific_character_set: str = ""
    institution_name: str = ""
    manufacturer: str = ""
    model_name: str = ""
    image_type: str = ""
    lossy_compression: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # problem codes of severity warning

    def warn(self, code: str, detail: str = "") -> None:
        """Record warning ``code`` once; its details, joined, go to
        ``extra["problem:<code>"]`` for the report."""
        if code not in self.warnings:
            self.warnings.append(code)
        if detail:
            key = f"problem:{code}"
            self.extra[key] = f"{self.extra[key]}; {detail}" if key in self.extra else detail

    def warning_detail(self, code: str) -> str:
        """What :meth:`warn` recorded about ``code`` ("" if nothing)."""
        return self.extra.get(f"problem:{code}", "")


class Scanner(Protocol):
    """Header scanner plugin (pydicom now, numba later), like pydicom's pixel
    decoders: an availability check and one batch function."""

    name: str

    def is_available(self) -> bool: ...

    def scan(self, paths: list[Path], encodings: list[str]) -> list[Header | Problem]:
        """Scan local (spooled) files. One result per path, in order: a Header,
        or a Problem (with an empty path; the caller fills it in)."""
        ...


# ------------------------------------------------------------------- send
@dataclass(frozen=True)
class SendItem:
    """One instance to deliver. ``path`` is a local Part 10 file in the spool."""

    key: str  # journal key of the instance
    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    size: int = 0


@dataclass(frozen=True)
class SendOutcome:
    """What happened to one SendItem at one destination.

    state: ``sent`` (status 0x0000 or a warning), ``failed`` (permanent for
    this instance), ``retry`` (transient: destination down, out of resources),
    ``unknown`` (no response: resend the same bytes later).
    """

    key: str
    state: str
    status: int | None = None
    code: str = ""  # problem code when not plainly sent
    detail: str = ""
    transfer_syntax: str = ""  # what was actually sent
    converted_path: Path | None = None


def iter_chunks(fp: BinaryIO, size: int = 1 << 20) -> Iterator[bytes]:
    """Read a stream in large chunks."""
    while True:
        chunk = fp.read(size)
        if not chunk:
            return
        yield chunk
