"""Our own DICOMDIR reader (PS3.3 F.3, PS3.10 §8).

Never :class:`pydicom.fileset.FileSet` on a medium: it hangs for ever on a
record whose *Offset of the Next Directory Record* points to itself, recurses
without bound on a lower-level cycle and raises a bare ``KeyError`` on a
dangling offset (both seen with pydicom 3.0). Here the records are followed
iteratively with a visited set and a record cap; any fault makes the index
``valid=False`` and the caller falls back to the directory walk (M5: import =
union of DICOMDIR and walk).

File IDs are hostile (M4, CVE-2026-32711): a record whose Referenced File ID
could leave the medium root is refused, and File IDs are only ever *matched*
against the medium's own listing (:func:`match_path`), never opened.

A medium may hold more than one file-set: a DICOMDIR in a sub-folder (a
copied disc) describes that folder. Its File IDs are relative to it (PS3.10
§8.2, ``base`` of :func:`match_path`) and it indexes the files below it only
(:func:`indexed_by`); the root DICOMDIR indexes the whole medium.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pdimport.problems import FileProblem, Problem
from pdimport.scan import walker
from pdimport.scan.encoding import detect_encoding
from pdimport.scan.identify import normalise_component, normalise_path

log = logging.getLogger(__name__)

_DEFAULT_MAX_RECORDS = 1_000_000
#: PS3.10 §8.5 allows 0-9, A-Z, '_' and 8 characters per component; real
#: discs break the case and length rules, so only the dangerous forms are refused.
_FORBIDDEN_CHARS = frozenset('/\\:\0*?"<>|')


@dataclass(frozen=True)
class DirFile:
    """One directory record that references a file (PS3.3 F.3.2.2)."""

    file_id: tuple[str, ...]
    path: str  # file_id joined with '/', relative to the DICOMDIR's folder
    record_type: str
    sop_instance_uid: str = ""
    sop_class_uid: str = ""
    transfer_syntax: str = ""
    patient_id: str = ""
    patient_name: str = ""
    study_uid: str = ""
    series_uid: str = ""


@dataclass
class DicomdirIndex:
    """The files a DICOMDIR names, and what was wrong with it."""

    files: list[DirFile] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    valid: bool = True


@dataclass
class _Context:
    """Values inherited from the PATIENT / STUDY / SERIES records above."""

    patient_id: str = ""
    patient_name: str = ""
    study_uid: str = ""
    series_uid: str = ""


class _Invalid(Exception):
    """The record tree is not a tree (loop, cycle, dangling offset, cap)."""


# ------------------------------------------------------------------ reading
def read_dicomdir(path: Path, settings: Any = None) -> DicomdirIndex:
    """Read a DICOMDIR into a :class:`DicomdirIndex`; never raises for bad bytes.

    Parameters
    ----------
    path : Path
        The spooled DICOMDIR file.
    settings : Settings, optional
        Supplies ``limits.max_dicomdir_records`` (and the walker limits).
    """
    index = DicomdirIndex()
    try:
        ds = _load(path, settings)
    except FileProblem as exc:
        return _invalid(index, f"{exc.code}: {exc.detail}")
    except Exception as exc:  # noqa: BLE001 - failure is a value
        return _invalid(index, f"unreadable: {type(exc).__name__}: {exc}")
    max_records = _max_records(settings)
    try:
        _walk_records(ds, index, max_records)
    except _Invalid as exc:
        return _invalid(index, str(exc))
    except Exception as exc:  # noqa: BLE001 - odd values in a record
        log.info("DICOMDIR %s: %r", path, exc)
        return _invalid(index, f"bad record: {type(exc).__name__}: {exc}")
    return index


def _invalid(index: DicomdirIndex, detail: str) -> DicomdirIndex:
    index.valid = False
    index.problems.append(Problem("dicomdir_invalid", "", detail))
    return index


def _max_records(settings: Any) -> int:
    if settings is None:
        return _DEFAULT_MAX_RECORDS
    try:
        return int(settings.get("limits.max_dicomdir_records"))
    except (AttributeError, KeyError, TypeError):
        return _DEFAULT_MAX_RECORDS


def _load(path: Path, settings: Any) -> Any:
    """Walker first (it bounds lengths and nesting), then pydicom."""
    from pydicom import dcmread

    with open(path, "rb") as fp:
        encoding = detect_encoding(fp.read(4096))
    if encoding is None:
        raise FileProblem("not_dicom", "the DICOMDIR is not DICOM")
    walker.walk(path, encoding, settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # structural faults are the walker's job
        return dcmread(path, force=encoding != "part10")


def _offsets(ds: Any) -> dict[int, Any]:
    """Directory records by their offset from the start of the file (PS3.3
    F.3.2.1: the offsets count from the first byte of the preamble)."""
    records: dict[int, Any] = {}
    for item in ds.get("DirectoryRecordSequence", []) or []:
        offset = getattr(item, "seq_item_tell", None)
        if offset is not None:
            records[int(offset)] = item
    return records


def _walk_records(ds: Any, index: DicomdirIndex, max_records: int) -> None:
    """Follow root → next → lower-level offsets, iteratively, each record once.

    dcmtk refuses a record referenced twice (``EC_InvalidDICOMDIR``); so do we.
    """
    records = _offsets(ds)
    root = int(ds.get("OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity", 0) or 0)
    if root == 0:
        if records:
            raise _Invalid("records present but no root directory entity offset")
        return
    visited: set[int] = set()
    pending: list[tuple[int, _Context]] = [(root, _Context())]
    while pending:
        offset, ctx = pending.pop()
        while offset:
            if offset in visited:
                raise _Invalid(f"directory record at offset {offset} is referenced twice (loop)")
            if offset not in records:
                raise _Invalid(f"offset {offset} points to no directory record")
            visited.add(offset)
            if len(visited) > max_records:
                raise _Invalid(f"more than {max_records} directory records")
            record = records[offset]
            child_ctx = _record(record, ctx, index)
            lower = int(record.get("OffsetOfReferencedLowerLevelDirectoryEntity", 0) or 0)
            nxt = int(record.get("OffsetOfTheNextDirectoryRecord", 0) or 0)
            if lower:
                # Depth first, in record order: the sibling waits on the stack.
                if nxt:
                    pending.append((nxt, ctx))
                offset, ctx = lower, child_ctx
            else:
                offset = nxt


def _text(record: Any, keyword: str) -> str:
    value = record.get(keyword, "")
    return "" if value is None else str(value).rstrip(" \0")


def _record(record: Any, ctx: _Context, index: DicomdirIndex) -> _Context:
    """Collect one record; return the context its lower level inherits."""
    rtype = _text(record, "DirectoryRecordType").upper()
    if rtype == "PATIENT":
        ctx = _Context(
            patient_id=_text(record, "PatientID"), patient_name=_text(record, "PatientName")
        )
    elif rtype == "STUDY":
        ctx = _Context(ctx.patient_id, ctx.patient_name, _text(record, "StudyInstanceUID"))
    elif rtype == "SERIES":
        ctx = _Context(
            ctx.patient_id, ctx.patient_name, ctx.study_uid, _text(record, "SeriesInstanceUID")
        )
    if "ReferencedFileID" in record:
        _add_file(record, rtype, ctx, index)
    return ctx


def _add_file(record: Any, rtype: str, ctx: _Context, index: DicomdirIndex) -> None:
    raw = record.ReferencedFileID
    parts = [raw] if isinstance(raw, str) else list(raw or [])
    parts = [str(p).rstrip(" \0") for p in parts]
    reason = unsafe_file_id(parts)
    if reason:
        shown = "\\".join(parts)[:120]
        index.problems.append(
            Problem("dicomdir_unsafe_path", "", f"{rtype} record File ID {shown!r}: {reason}")
        )
        return
    index.files.append(
        DirFile(
            file_id=tuple(parts),
            path="/".join(parts),
            record_type=rtype,
            sop_instance_uid=_text(record, "ReferencedSOPInstanceUIDInFile"),
            sop_class_uid=_text(record, "ReferencedSOPClassUIDInFile"),
            transfer_syntax=_text(record, "ReferencedTransferSyntaxUIDInFile"),
            patient_id=ctx.patient_id,
            patient_name=ctx.patient_name,
            study_uid=ctx.study_uid,
            series_uid=ctx.series_uid,
        )
    )


def unsafe_file_id(parts: list[str]) -> str:
    """Why a Referenced File ID (PS3.10 §8.5, PS3.3 F.3.2.2) is refused, or "".

    Refused: no components, an empty component, '.' or '..', an absolute
    path or drive letter, separators or NUL inside a component, or control
    characters. Case and length violations are tolerated (common on discs).
    """
    if not parts:
        return "empty File ID"
    for part in parts:
        if not part:
            return "empty component"
        if part in (".", "..") or normalise_component(part) in (".", ".."):
            return "'.' or '..' component"
        bad = _FORBIDDEN_CHARS.intersection(part)
        if bad:
            return f"forbidden character {min(bad)!r}"
        if any(ord(c) < 32 or ord(c) == 127 for c in part):
            return "control character"
    return ""


# ------------------------------------------------------------------ matching
class _PathIndex:
    """Normalised medium path -> actual medium path (exact spelling wins)."""

    def __init__(self, medium_paths: list[str]) -> None:
        self.source = medium_paths
        self.length = len(medium_paths)
        self.exact = set(medium_paths)
        self.folded: dict[str, str] = {}
        for p in medium_paths:
            self.folded.setdefault(normalise_path(p), p)


_last_index: _PathIndex | None = None


def match_path(file_id_path: str, medium_paths: list[str], base: str = "") -> str | None:
    """The medium path a DICOMDIR File ID names, or None.

    Real discs need: case-insensitive matching, the ISO 9660 ';1' version
    and the trailing '.' of an empty extension ignored (ECMA-119 §7.5), and
    the path taken relative to the DICOMDIR's own folder (``base``, or
    already prefixed by the caller).

    Parameters
    ----------
    file_id_path : str
        '/'-joined File ID (optionally prefixed with the DICOMDIR's folder).
    medium_paths : list of str
        Every file path on the medium. The lookup index is kept for the last
        list passed, so calling this once per record stays linear.
    base : str
        The DICOMDIR's folder on the medium ("" = root).
    """
    global _last_index  # a memo of the last listing, not configuration
    wanted = f"{base.strip('/')}/{file_id_path}" if base.strip("/") else file_id_path
    idx = _last_index
    if idx is None or idx.source is not medium_paths or idx.length != len(medium_paths):
        idx = _last_index = _PathIndex(medium_paths)
    if wanted in idx.exact:
        return wanted
    return idx.folded.get(normalise_path(wanted))


def indexed_by(path: str, dicomdir_paths: Iterable[str]) -> bool:
    """Whether one of the DICOMDIRs at `dicomdir_paths` describes the folder
    of the medium file `path`: the DICOMDIR's own folder or one below it. A
    file so described but named by none of them is ``unindexed_file``; a
    file outside every file-set (a loose file beside a copied disc in a
    sub-folder) is no DICOMDIR's business. Compared as :func:`match_path`
    does, without regard to case or ISO 9660 versions."""
    folder = normalise_path(path).rpartition("/")[0]
    for dicomdir in dicomdir_paths:
        base = normalise_path(dicomdir).rpartition("/")[0]
        if not base or folder == base or folder.startswith(base + "/"):
            return True
    return False


def unindexed(
    paths: Iterable[str], named: set[str], dicomdir_paths: Iterable[str]
) -> list[Problem]:
    """``unindexed_file`` for each DICOM file of `paths` that a DICOMDIR at
    `dicomdir_paths` describes (:func:`indexed_by`) but does not name."""
    dicomdirs = list(dicomdir_paths)
    return [
        Problem("unindexed_file", path, "not named in the DICOMDIR; imported anyway")
        for path in paths
        if path not in named and indexed_by(path, dicomdirs)
    ]
