"""Compressed frames and files built here, then damaged: the inputs of the
codestream checks, the decode pool's memory tests, the fuzz test and the
import of a damaged disc.

Every codestream comes from a real encoder: OpenJPEG (pylibjpeg-openjpeg)
for JPEG 2000, Pillow (libjpeg-turbo) for JPEG baseline, CharLS (pyjpegls)
for JPEG-LS, pydicom for RLE.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
from fixtures_dicom import new_dataset
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

#: name -> transfer syntax of the inputs built here.
SYNTAXES = {
    "j2k": JPEG2000Lossless,
    "jpeg": JPEGBaseline8Bit,
    "jpegls": JPEGLSLossless,
    "rle": RLELossless,
}


def noise(size: int = 64, bits: int = 12, seed: int = 0) -> np.ndarray:
    """Uniform noise: no codec gets an easy ride, so codestreams are long
    enough to damage (a 64x64 12-bit J2K is about 6.8 KB)."""
    rng = np.random.default_rng(seed)
    dtype = np.uint8 if bits <= 8 else np.uint16
    return rng.integers(0, 1 << bits, (size, size)).astype(dtype)


def image_dataset(pixels: np.ndarray, patient_id: str = "DMG1") -> Dataset:
    """A CT-like dataset for `pixels` (monochrome), not yet compressed."""
    ds = new_dataset()
    ds.PatientID, ds.PatientName, ds.Modality = patient_id, "Damaged^Disc", "CT"
    ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Rows, ds.Columns = pixels.shape
    bits = 8 if pixels.dtype == np.uint8 else 16
    stored = 8 if bits == 8 else 12
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, stored, stored - 1
    ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = pixels.tobytes()
    return ds


def encode_frame(name: str, pixels: np.ndarray) -> bytes:
    """One codestream of `pixels` in syntax `name` (see :data:`SYNTAXES`)."""
    if name == "j2k":
        from openjpeg.utils import encode_array

        bits = 8 if pixels.dtype == np.uint8 else 12
        return bytes(encode_array(pixels, bits_stored=bits, photometric_interpretation=2))
    if name == "jpeg":
        from PIL import Image

        out = io.BytesIO()
        Image.fromarray(pixels.astype(np.uint8)).save(out, "JPEG", quality=90)
        return out.getvalue()
    ds = image_dataset(pixels)
    ds.compress(SYNTAXES[name])
    return next(generate_frames(ds.PixelData, number_of_frames=1))


def compressed_dataset(name: str, frames: list[bytes], pixels: np.ndarray) -> Dataset:
    """A dataset whose Pixel Data are `frames`, encapsulated as they are."""
    ds = image_dataset(pixels)
    ds.file_meta.TransferSyntaxUID = SYNTAXES[name]
    if name == "jpeg":
        ds.BitsStored, ds.HighBit = 8, 7
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    ds.PixelData = encapsulate([f + b"\0" if len(f) % 2 else f for f in frames])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def pixels_for(name: str, size: int = 64, seed: int = 0) -> np.ndarray:
    return noise(size, 8 if name == "jpeg" else 12, seed)


# ------------------------------------------------------------------ damage
def zero_second_half(frame: bytes) -> bytes:
    """The issue's damage: the second half of the codestream zeroed."""
    half = len(frame) // 2
    return frame[:half] + bytes(len(frame) - half)


def j2k_siz(frame: bytes, columns: int, rows: int) -> bytes:
    """`frame` with SIZ declaring `columns` x `rows` pixels in one tile
    (ISO 15444-1 A.5.1: Xsiz at byte 8, Ysiz 12, XTsiz 24, YTsiz 28)."""
    out = bytearray(frame)
    struct.pack_into(">II", out, 8, columns, rows)
    struct.pack_into(">II", out, 24, columns, rows)
    return bytes(out)


def hostile_j2k_file(path: Path, declared: int = 30000) -> Path:
    """The issue's 6 KB file: a 64x64 J2K whose SIZ says `declared` squared."""
    pixels = pixels_for("j2k")
    frame = j2k_siz(encode_frame("j2k", pixels), declared, declared)
    return save(compressed_dataset("j2k", [frame], pixels), path)


def damaged_j2k_file(path: Path) -> tuple[Path, np.ndarray]:
    """A 64x64 J2K file with the second half of its codestream zeroed, and its pixels.

    The codestream is of even length, as the issue's was: OpenJPEG then
    decodes it without an error (a padding byte after the zeros makes it
    fail for other reasons).
    """
    seed = 0
    while len(frame := encode_frame("j2k", pixels := pixels_for("j2k", seed=seed))) % 2:
        seed += 1
    return save(compressed_dataset("j2k", [zero_second_half(frame)], pixels), path), pixels


def good_file(name: str, path: Path, seed: int = 0) -> tuple[Path, np.ndarray]:
    pixels = pixels_for(name, seed=seed)
    ds = compressed_dataset(name, [encode_frame(name, pixels)], pixels)
    return save(ds, path), pixels


__all__ = [
    "SYNTAXES",
    "ExplicitVRLittleEndian",
    "compressed_dataset",
    "damaged_j2k_file",
    "encode_frame",
    "good_file",
    "hostile_j2k_file",
    "image_dataset",
    "j2k_siz",
    "noise",
    "pixels_for",
    "save",
    "zero_second_half",
]
