"""Rewrite the attributes of one Part 10 file, its pixel data streamed unchanged.

The edge between a file and a coercion: :func:`rewrite_file` reads the
dataset up to the pixel data with pydicom, hands it to an edit function, and
writes the result in the same transfer syntax. The pixel data element (native
or encapsulated, defined or undefined length) is never parsed: its bytes are
copied from the source in chunks, so memory stays bounded whatever the size of
the file, and a compressed bitstream is never decoded or re-encoded.

pydicom's ``defer_size`` alone does not bound memory: an undefined-length
(encapsulated) Pixel Data is read whole, and writing loads every deferred
value. So the dataset is read with ``stop_before_pixels`` semantics
(:func:`pydicom.filereader.read_partial` stopping at (7FE0,0008/0009/0010)),
other long values are deferred, and the rest of the file is copied.

Data elements after the pixel data (trailing padding, a private group above
7FE0) are copied unchanged, unless the edit changed the Specific Character
Set: then they are parsed and their text re-encoded like the rest.

A Deflated Explicit VR Little Endian file (PS3.5 A.5) is one deflate stream,
so it is read, edited and written whole.
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from pydicom.charset import convert_encodings
from pydicom.dataset import Dataset, FileDataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomFileLike
from pydicom.filereader import dcmread, read_dataset, read_partial
from pydicom.filewriter import dcmwrite, write_dataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, DeflatedExplicitVRLittleEndian

from pdimport.problems import FileProblem
from pdimport.store.fsutil import atomic_write

#: Values longer than this are read from the source only when written.
DEFER_SIZE = 256 << 10
_CHUNK = 1 << 20
_PIXEL_TAGS = frozenset((0x7FE00008, 0x7FE00009, 0x7FE00010))
# explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2)
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_ITEM, _SEQUENCE_DELIMITER = 0xFFFEE000, 0xFFFEE0DD

#: The edit: change the dataset in place, return the keywords it changed.
Edit = Callable[[Dataset], list[str]]


def _at_pixel_data(tag: int, vr: str | None, length: int) -> bool:
    return tag in _PIXEL_TAGS


def read_head(fp: BinaryIO, defer_size: int = DEFER_SIZE) -> tuple[FileDataset, int | None]:
    """The dataset before the pixel data, and the offset of the pixel data
    element in ``fp`` (None when the file has none)."""
    ds = read_partial(fp, stop_when=_at_pixel_data, defer_size=defer_size)
    at = fp.tell()
    return ds, (at if fp.read(4) else None)


def _charset(ds: Dataset) -> list[str]:
    value = ds.get("SpecificCharacterSet") or ""
    return convert_encodings(value if isinstance(value, str) else list(value))


def _stamp_meta(ds: FileDataset) -> None:
    # PS3.10 7.1: the Implementation Class UID names the implementation that
    # wrote the file; Source Application Entity Title keeps its sender.
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta.ImplementationVersionName = "PDIMPORT_01"


def rewrite_file(src: Path, dst: Path, edit: Edit, *, defer_size: int = DEFER_SIZE) -> list[str]:
    """Apply ``edit`` to the dataset of ``src`` and write it to ``dst``.

    ``dst`` is written under a temporary name, fsync'ed and renamed
    (:func:`~pdimport.store.fsutil.atomic_write`). When ``edit`` changes
    nothing, ``dst`` is a byte copy of ``src``. Returns what ``edit`` returned.

    Raises
    ------
    FileProblem
        ``unparsable`` when pydicom cannot read the file up to its pixel data.
    """
    with open(src, "rb") as fp:
        try:
            ds, pixel_at = read_head(fp, defer_size)
        except (InvalidDicomError, EOFError, ValueError, struct.error) as exc:
            raise FileProblem("unparsable", f"{src.name}: {exc}") from None
        if ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
            return _rewrite_whole(src, dst, edit)
        before = _charset(ds)
        changed = edit(ds)
        if not changed:
            fp.seek(0)
            with atomic_write(dst) as out:
                shutil.copyfileobj(fp, out, _CHUNK)
            return changed
        _stamp_meta(ds)
        implicit, little = ds.original_encoding
        after = _charset(ds)
        with atomic_write(dst) as out:
            dcmwrite(out, ds, enforce_file_format=True)
            if pixel_at is not None:
                recode = None if after == before else (before, after)
                _copy_rest(fp, out, pixel_at, bool(implicit), bool(little), recode)
    return changed


def _rewrite_whole(src: Path, dst: Path, edit: Edit) -> list[str]:
    ds = dcmread(src)
    changed = edit(ds)
    if not changed:
        with open(src, "rb") as fp, atomic_write(dst) as out:
            shutil.copyfileobj(fp, out, _CHUNK)
        return changed
    _stamp_meta(ds)
    with atomic_write(dst) as out:
        dcmwrite(out, ds, enforce_file_format=True)
    return changed


def _copy_range(fp: BinaryIO, out: BinaryIO, start: int, end: int | None) -> None:
    fp.seek(start)
    if end is None:
        shutil.copyfileobj(fp, out, _CHUNK)
        return
    left = end - start
    while left > 0:
        chunk = fp.read(min(_CHUNK, left))
        if not chunk:
            break
        out.write(chunk)
        left -= len(chunk)


def _copy_rest(
    fp: BinaryIO,
    out: BinaryIO,
    pixel_at: int,
    implicit: bool,
    little: bool,
    recode: tuple[list[str], list[str]] | None,
) -> None:
    """Copy the pixel data element and what follows it; re-encode the text
    of the elements after it when the character set changed (``recode`` is
    ``(old, new)`` encodings)."""
    end = None if recode is None else pixel_element_end(fp, pixel_at, implicit, little)
    _copy_range(fp, out, pixel_at, end)
    if end is None or recode is None:
        return
    fp.seek(end)
    if not fp.read(1):
        return
    fp.seek(end)
    try:
        tail = read_dataset(fp, implicit, little, parent_encoding=recode[0])
        tail.decode()
    except (EOFError, ValueError, struct.error):
        _copy_range(fp, out, end, None)  # not elements: keep the bytes as they were
        return
    target = DicomFileLike(out)
    target.is_implicit_VR, target.is_little_endian = implicit, little
    write_dataset(target, tail, parent_encoding=recode[1])


def pixel_element_end(fp: BinaryIO, at: int, implicit: bool, little: bool) -> int | None:
    """Offset just past the pixel data element starting at ``at``, found
    from its header (and, for an undefined length, its item headers) without
    reading the pixel bytes. None when it runs to the end of the file
    without a sequence delimiter."""
    order = "<" if little else ">"
    fp.seek(at + 4)
    if implicit:
        (length,) = struct.unpack(order + "I", fp.read(4))
        start = at + 8
    else:
        vr = fp.read(2)
        if vr in _LONG_VRS:
            (length,) = struct.unpack(order + "2xI", fp.read(6))
            start = at + 12
        else:
            (length,) = struct.unpack(order + "H", fp.read(2))
            start = at + 8
    if length != 0xFFFFFFFF:
        return start + length
    pos = start
    while True:
        fp.seek(pos)
        head = fp.read(8)
        if len(head) < 8:
            return None
        group, element, length = struct.unpack(order + "HHI", head)
        tag = group << 16 | element
        if tag == _SEQUENCE_DELIMITER:
            return pos + 8
        if tag != _ITEM or length == 0xFFFFFFFF:
            return None
        pos += 8 + length
