"""A bare dataset (no preamble, no File Meta) behind correct Part 10 framing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

from pdimport.model import Header


def wrap_part10(src: Path, dst: Path, header: Header) -> None:
    """Write ``src``'s dataset bytes, unchanged, behind a preamble and File
    Meta Information (PS3.10 §7.1) so it can be sent and stored as Part 10."""

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(header.sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(header.sop_instance_uid)
    meta.TransferSyntaxUID = UID(header.transfer_syntax)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "PDIMPORT_01"
    with open(dst, "wb") as out, open(src, "rb") as fp:
        out.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(DicomFileLike(out), meta, enforce_standard=True)
        fp.seek(header.dataset_offset)
        shutil.copyfileobj(fp, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())
