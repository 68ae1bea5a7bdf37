"""Other Content -> DICOM (issue 5): every object created is checked by
dicom3tools ``dciodvfy``; JPEG and PDF are byte-identical inside; lossless
images are pixel-identical to Pillow's decode; text renders Japanese."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fixtures_dicom import dciodvfy_lines
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments
from pydicom.sequence import Sequence

from pdimport.convert import ConversionError, Limits, PatientContext, convert_file, mark_ai
from pdimport.convert.context import NEW_STUDY_DESCRIPTION, UTF8
from pdimport.convert.image import parse_jpeg
from pdimport.convert.pdf import pdf_info
from pdimport.convert.text import detect_text
from pdimport.model import Header
from pdimport.policy.classify import classify_dataset

NAME_JA = "山田太郎"
LETTER = f"紹介状\n患者: {NAME_JA} 様\n右肺上葉に結節を認めます。ご高診をお願い申し上げます。\n"


# ------------------------------------------------------------------ helpers
def dciodvfy(path: Path) -> list[str]:
    """Run dciodvfy; fail on any error; return the warning lines."""
    lines = dciodvfy_lines(path)
    errors = [ln for ln in lines if ln.startswith("Error")]
    assert not errors, f"dciodvfy errors for {path.name}:\n" + "\n".join(lines)
    return [ln for ln in lines if ln.startswith("Warning")]


def converted(src: Path, subtype: str, ctx: PatientContext, out: Path, **kw) -> list[Dataset]:
    """Convert, check every object with dciodvfy, and read them back."""
    paths = convert_file(src, f"CDROM/OTHER/{src.name}", subtype, ctx, out, **kw)
    assert paths, "a conversion returned no object"
    datasets = []
    for path in paths:
        warnings = dciodvfy(path)
        # Accepted: Laterality present but empty on SC images (unknown for a
        # photo or scan), and an empty Study ID in a study we made ourselves.
        accepted = ["Laterality"] + (["DICOMDIR - Study ID"] if ctx.new_study else [])
        assert all(any(a in w for a in accepted) for w in warnings), warnings
        datasets.append(pydicom.dcmread(path))
    for ds in datasets:
        assert ds.PatientID == ctx.PatientID
        assert ds.StudyInstanceUID == ctx.StudyInstanceUID
        assert ds.ConversionType == "WSD"
        assert not any(elem.tag.is_private for elem in ds.iterall())
    return datasets


@pytest.fixture
def ctx() -> PatientContext:
    return PatientContext(
        PatientName=f"Yamada^Taro={NAME_JA[:2]}^{NAME_JA[2:]}",
        PatientID="EXT-4711",
        IssuerOfPatientID="OTHER-HOSP",
        PatientBirthDate="19600102",
        PatientSex="M",
        SpecificCharacterSet="ISO 2022 IR 6\\ISO 2022 IR 87",
        StudyInstanceUID="1.2.826.0.1.3680043.8.498.1",
        StudyDate="20240301",
        StudyTime="093000",
        AccessionNumber="A123",
        ReferringPhysicianName="Sato^Hanako",
        StudyID="S1",
        StudyDescription="CT chest",
    )


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out"


def rng_image(shape: tuple[int, ...], dtype: str = "uint8", seed: int = 0) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.random.default_rng(seed).integers(0, info.max, shape, endpoint=True).astype(dtype)


def smooth_rgb(h: int, w: int) -> np.ndarray:
    """A gradient, so a JPEG decode can be compared with a small tolerance."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], -1).astype("uint8")


def minimal_pdf(title: bytes, created: bytes, pad_to_odd: bool = True) -> bytes:
    """A valid one-page PDF with an Info dictionary, written by hand."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
        b"<< /Title " + title + b" /CreationDate " + created + b" /Producer (test) >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 4 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    if pad_to_odd and len(out) % 2 == 0:
        out += b"\n"
    return bytes(out)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares a huge image over a tiny IDAT (a bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


# ===================================================================== JPEG
@pytest.mark.parametrize(
    ("mode", "subsampling", "photometric"),
    [
        ("RGB", 2, "YBR_FULL_422"),  # 4:2:0, Pillow's default
        ("RGB", 1, "YBR_FULL_422"),  # 4:2:2
        ("RGB", 0, "YBR_FULL_422"),  # 4:4:4: see jpeg_photometric
        ("L", 0, "MONOCHROME2"),
    ],
)
def test_jpeg_bitstream_is_encapsulated_unchanged(
    tmp_path, out, ctx, mode, subsampling, photometric
):
    pixels = smooth_rgb(61, 83)  # odd sizes: the stream length is odd half the time
    img = Image.fromarray(pixels if mode == "RGB" else pixels[..., 0])
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = "2023:04:05 06:07:08"
    src = tmp_path / "photo.jpg"
    img.save(src, quality=92, subsampling=subsampling, exif=exif.tobytes())
    data = src.read_bytes()

    (ds,) = converted(src, "jpeg", ctx, out)

    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert ds.PhotometricInterpretation == photometric
    assert (ds.Rows, ds.Columns) == (61, 83)
    assert ds.LossyImageCompression == "01"
    fragments = list(generate_fragments(ds.PixelData))
    assert fragments[0] == b"", "the Basic Offset Table item comes first, empty"
    assert len(fragments) == 2, "exactly one fragment after the offset table"
    fragment = fragments[1]
    if len(data) % 2:
        assert fragment == data + b"\x00"
    else:
        assert fragment == data
    assert (ds.ContentDate, ds.ContentTime) == ("20230405", "060708")
    # The label is right only if a decoder reading it sees Pillow's picture.
    decoded = ds.pixel_array.astype(int)
    expected = np.asarray(Image.open(src).convert(mode)).astype(int)
    assert np.abs(decoded - expected).mean() < 2.0


def test_jpeg_file_date_used_without_exif(tmp_path, out, ctx):
    src = tmp_path / "plain.jpg"
    Image.fromarray(smooth_rgb(16, 16)).save(src)
    stamp = dt.datetime(2021, 7, 8, 9, 10, 11).timestamp()
    os.utime(src, (stamp, stamp))
    (ds,) = converted(src, "jpeg", ctx, out)
    assert (ds.ContentDate, ds.ContentTime) == ("20210708", "091011")


def test_progressive_jpeg_stored_native_and_flagged_lossy(tmp_path, out, ctx):
    src = tmp_path / "web.jpg"
    Image.fromarray(smooth_rgb(20, 30)).save(src, progressive=True)
    assert parse_jpeg(src.read_bytes()).sof == 0xC2
    (ds,) = converted(src, "jpeg", ctx, out)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert ds.LossyImageCompression == "01"
    assert np.array_equal(ds.pixel_array, np.asarray(Image.open(src).convert("RGB")))


@pytest.mark.parametrize("data", [b"", b"\xff\xd8\xff\xe0\x00", b"not a jpeg at all"])
def test_broken_jpeg_refused(tmp_path, out, ctx, data):
    src = tmp_path / "bad.jpg"
    src.write_bytes(data)
    with pytest.raises(ConversionError) as exc:
        convert_file(src, "bad.jpg", "jpeg", ctx, out)
    assert exc.value.code == "decode_failed"


def test_truncated_jpeg_refused(tmp_path, out, ctx):
    src = tmp_path / "cut.jpg"
    Image.fromarray(smooth_rgb(64, 64)).save(src)
    src.write_bytes(src.read_bytes()[:-200])
    with pytest.raises(ConversionError) as exc:
        convert_file(src, "cut.jpg", "jpeg", ctx, out)
    assert exc.value.code == "decode_failed"
    assert not out.exists() or not list(out.iterdir()), "nothing half-written"


def test_jpeg_declaring_huge_size_refused_without_decoding(tmp_path, out, ctx):
    src = tmp_path / "big.jpg"
    Image.fromarray(smooth_rgb(8, 8)).save(src)
    data = bytearray(src.read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)  # rows, columns
    src.write_bytes(bytes(data))
    with pytest.raises(ConversionError) as exc:
        convert_file(src, "big.jpg", "jpeg", ctx, out)
    assert exc.value.code == "too_large"


# ====================================================================== PDF
def test_pdf_round_trips_byte_identical(tmp_path, out, ctx):
    src = tmp_path / "report.pdf"
    data = minimal_pdf(
        b"<FEFF" + "紹介状 Referral".encode("utf-16-be").hex().encode() + b">",
        b"(D:20230405060708+09'00')",
    )
    assert len(data) % 2 == 1, "odd length exercises the padding"
    src.write_bytes(data)

    (ds,) = converted(src, "pdf", ctx, out)

    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1"
    assert ds.Modality == "DOC"
    assert ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert len(ds.EncapsulatedDocument) % 2 == 0
    assert ds.EncapsulatedDocument[: ds.EncapsulatedDocumentLength] == data
    assert ds.EncapsulatedDocumentLength == len(data)
    assert ds.DocumentTitle == "紹介状 Referral"
    assert (ds.ContentDate, ds.ContentTime) == ("20230405", "060708")
    assert "report.pdf" in ds.SeriesDescription
    assert ds.SpecificCharacterSet == ["ISO 2022 IR 6", "ISO 2022 IR 87"]


def test_pdf_title_falls_back_to_file_name(tmp_path, out, ctx):
    src = tmp_path / "scan_0001.pdf"
    data = minimal_pdf(b"()", b"(garbage)")
    src.write_bytes(data.replace(b"/Info 4 0 R", b""))
    (ds,) = converted(src, "pdf", ctx, out)
    assert ds.DocumentTitle == "scan_0001.pdf"


def test_pdf_info_reader_handles_escapes():
    data = minimal_pdf(rb"(A \(nested\) title\041)", b"(D:2001)")
    title, created = pdf_info(data)
    assert title == "A (nested) title!"
    assert created == dt.datetime(2001, 1, 1)


@pytest.mark.parametrize("data", [b"<html>not a pdf</html>", minimal_pdf(b"()", b"()")[:-40]])
def test_not_a_complete_pdf_refused(tmp_path, out, ctx, data):
    src = tmp_path / "x.pdf"
    src.write_bytes(data)
    with pytest.raises(ConversionError) as exc:
        convert_file(src, "x.pdf", "pdf", ctx, out)
    assert exc.value.code == "decode_failed"


# ========================================================== PNG, BMP, TIFF
@pytest.mark.parametrize(
    ("name", "subtype", "array", "mode", "photometric"),
    [
        ("rgb.png", "png", rng_image((37, 51, 3)), "RGB", "RGB"),
        ("grey.png", "png", rng_image((40, 33)), "L", "MONOCHROME2"),
        ("grey16.png", "png", rng_image((21, 19), "uint16"), "I;16", "MONOCHROME2"),
        ("rgb.bmp", "bmp", rng_image((17, 23, 3), seed=1), "RGB", "RGB"),
        ("grey.bmp", "bmp", rng_image((17, 23), seed=2), "L", "MONOCHROME2"),
    ],
)
def test_lossless_images_are_pixel_identical(
    tmp_path, out, ctx, name, subtype, array, mode, photometric
):
    src = tmp_path / name
    Image.fromarray(array).save(src)
    (ds,) = converted(src, subtype, ctx, out)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert ds.PhotometricInterpretation == photometric
    assert ds.LossyImageCompression == "00"
    assert np.array_equal(ds.pixel_array, np.asarray(Image.open(src)))
    assert np.array_equal(ds.pixel_array, array)


def test_palette_and_alpha_become_rgb(tmp_path, out, ctx):
    pal = tmp_path / "pal.bmp"
    Image.fromarray(rng_image((12, 14, 3))).quantize(16).save(pal)
    (ds,) = converted(pal, "bmp", ctx, out)
    assert np.array_equal(ds.pixel_array, np.asarray(Image.open(pal).convert("RGB")))

    rgba = tmp_path / "alpha.png"
    array = rng_image((10, 12, 4), seed=3)
    array[..., 3] = 255
    array[0, 0, 3] = 0  # one transparent pixel shows the white background
    Image.fromarray(array, "RGBA").save(rgba)
    (ds,) = converted(rgba, "png", ctx, out)
    assert np.array_equal(ds.pixel_array[1:], array[1:, :, :3])
    assert tuple(ds.pixel_array[0, 0]) == (255, 255, 255)


def test_multipage_tiff_one_sc_per_page_in_one_series(tmp_path, out, ctx):
    pages = [
        rng_image((30, 40, 3), seed=4),
        rng_image((50, 20), seed=5),
        rng_image((10, 12), "uint16", seed=6),
    ]
    src = tmp_path / "scan.tif"
    first, *rest = [Image.fromarray(p) for p in pages]
    first.save(src, save_all=True, append_images=rest, compression="tiff_lzw")
    stamp = dt.datetime(2020, 1, 2, 3, 4, 5)
    with Image.open(src) as img:  # TIFF DateTime is only written with exif
        assert img.n_frames == 3
    tagged = tmp_path / "tagged.tif"
    exif = Image.Exif()
    exif[0x0132] = stamp.strftime("%Y:%m:%d %H:%M:%S")
    first.save(tagged, save_all=True, append_images=rest, exif=exif)

    datasets = converted(src, "tiff", ctx, out)

    assert len(datasets) == 3
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
    assert [int(ds.InstanceNumber) for ds in datasets] == [1, 2, 3]
    with Image.open(src) as img:
        for number, ds in enumerate(datasets):
            img.seek(number)
            assert np.array_equal(ds.pixel_array, np.asarray(img)), f"page {number + 1}"
            assert np.array_equal(ds.pixel_array, pages[number])
    (tagged_ds, *_) = converted(tagged, "tiff", ctx, out)
    assert (tagged_ds.ContentDate, tagged_ds.ContentTime) == ("20200102", "030405")


@pytest.mark.parametrize(("width", "height"), [(100_000, 100_000), (9_000, 9_000)])
def test_decompression_bomb_png_refused(tmp_path, out, ctx, width, height):
    # 10^10 px trips Pillow's own bomb error; 81 Mpx is under Pillow's limit
    # but over ours (64 Mpx): both must be refused before any decoding.
    src = tmp_path / "bomb.png"
    src.write_bytes(png_declaring(width, height))
    with pytest.raises(ConversionError) as exc:
        convert_file(src, "bomb.png", "png", ctx, out)
    assert exc.value.code == "too_large"
    assert "bomb" in exc.value.detail


def test_page_cap(tmp_path, out, ctx):
    src = tmp_path / "many.tif"
    frames = [Image.fromarray(rng_image((4, 4), seed=s)) for s in range(5)]
    frames[0].save(src, save_all=True, append_images=frames[1:])
    with pytest.raises(ConversionError) as exc:
        convert_file(src, "many.tif", "tiff", ctx, out, limits=Limits(max_pages=4))
    assert exc.value.code == "too_large"


def test_wrong_content_refused(tmp_path, out, ctx):
    src = tmp_path / "fake.png"
    src.write_bytes(b"GIF89a" + b"\x00" * 100)
    with pytest.raises(ConversionError) as exc:
        convert_file(src, "fake.png", "png", ctx, out)
    assert exc.value.code == "decode_failed"


def test_unknown_subtype_is_unsupported(tmp_path, out, ctx):
    src = tmp_path / "movie.mp4"
    src.write_bytes(b"\x00\x00\x00\x18ftypmp42")
    with pytest.raises(ConversionError) as exc:
        convert_file(src, "movie.mp4", "mp4", ctx, out)
    assert exc.value.code == "unsupported_content"


# ===================================================================== text
@pytest.mark.parametrize("encoding", ["utf-8", "shift_jis", "euc_jp", "iso2022_jp"])
def test_detect_text(encoding):
    text, found = detect_text(LETTER.encode(encoding))
    assert text == LETTER
    assert found == encoding


def test_detect_text_refuses_binary_and_junk():
    with pytest.raises(ConversionError) as exc:
        detect_text(b"\x00\x01\x02binary")
    assert exc.value.code == "unsupported_content"
    with pytest.raises(ConversionError) as exc:
        detect_text(b"\x81\x20\xff\xfe\x80\x81")
    assert exc.value.code == "decode_failed"


@pytest.mark.parametrize("encoding", ["utf-8", "shift_jis", "euc_jp"])
def test_text_renders_japanese_pdf(tmp_path, out, ctx, encoding):
    assert shutil.which("pdftotext"), "poppler-utils pdftotext is required"
    src = tmp_path / f"letter-{encoding}.txt"
    src.write_bytes(LETTER.encode(encoding))

    (ds,) = converted(src, "txt", ctx, out)

    assert ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert ds.DocumentTitle == src.name
    pdf = tmp_path / "rendered.pdf"
    pdf.write_bytes(ds.EncapsulatedDocument[: ds.EncapsulatedDocumentLength])
    text = subprocess.run(
        ["pdftotext", "-enc", "UTF-8", str(pdf), "-"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert NAME_JA in text
    assert "紹介状" in text
    assert "ご高診をお願い申し上げます" in text.replace("\n", "")


# ================================================================= context
def _header(study: str, patient: str = "P1") -> Header:
    return Header(
        encoding="part10",
        transfer_syntax="1.2.840.10008.1.2.1",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        sop_instance_uid="1.2.3",
        patient_id=patient,
        patient_name="Doe^Jane",
        study_uid=study,
        study_date="20240101",
        study_description="CT",
        accession_number="ACC",
    )


def test_context_joins_the_one_study():
    ctx = PatientContext.from_headers([_header("1.2.3.4"), _header("1.2.3.4")])
    assert ctx.StudyInstanceUID == "1.2.3.4"
    assert ctx.AccessionNumber == "ACC"
    assert not ctx.new_study


def test_context_makes_new_study_for_several(tmp_path, out):
    ctx = PatientContext.from_headers([_header("1.2.3.4"), _header("1.2.3.5")])
    assert ctx.new_study
    assert ctx.StudyInstanceUID not in ("1.2.3.4", "1.2.3.5")
    assert ctx.StudyDescription == NEW_STUDY_DESCRIPTION
    assert ctx.AccessionNumber == ""
    src = tmp_path / "a.png"
    Image.fromarray(rng_image((8, 8))).save(src)
    (ds,) = converted(src, "png", ctx, out)
    assert ds.StudyDescription == NEW_STUDY_DESCRIPTION


def test_context_refuses_two_patients():
    with pytest.raises(ValueError):
        PatientContext.from_headers([_header("1.2.3.4", "P1"), _header("1.2.3.4", "P2")])


def test_context_from_dataset_and_series_layout(tmp_path, out):
    ds = pydicom.examples.ct
    ctx = PatientContext.from_dataset(ds, series_by_kind=True)
    assert ctx.PatientID == ds.PatientID
    assert ctx.StudyInstanceUID == ds.StudyInstanceUID
    paths = []
    for n in range(2):
        src = tmp_path / f"p{n}.png"
        Image.fromarray(rng_image((8, 8), seed=n)).save(src)
        paths.append(src)
    first, second = (converted(p, "png", ctx, out)[0] for p in paths)
    assert first.SeriesInstanceUID == second.SeriesInstanceUID
    assert [int(first.InstanceNumber), int(second.InstanceNumber)] == [1, 2]
    assert "p1.png" in second.ImageComments


def test_charset_falls_back_to_utf8_when_source_cannot_hold_a_name(tmp_path, out, ctx):
    src = tmp_path / "café_😀.png"  # neither ASCII nor JIS X 0208 holds the emoji
    Image.fromarray(rng_image((8, 8))).save(src)
    (ds,) = converted(src, "png", ctx, out)
    assert ds.SpecificCharacterSet == UTF8
    assert str(ds.PatientName) == ctx.PatientName
    assert "café_😀.png" in ds.SeriesDescription


def test_each_source_file_gets_its_own_series(tmp_path, out, ctx):
    uids = set()
    for n in range(2):
        src = tmp_path / f"img{n}.png"
        Image.fromarray(rng_image((8, 8), seed=n)).save(src)
        (ds,) = converted(src, "png", ctx, out)
        uids.add(ds.SeriesInstanceUID)
        assert ds.SeriesDescription == f"PNG: img{n}.png"
    assert len(uids) == 2


# ================================================================== AI marks
def _ai_secondary_capture(tmp_path: Path, out: Path, ctx: PatientContext) -> Path:
    src = tmp_path / "heat.png"
    Image.fromarray(rng_image((16, 16, 3))).save(src)
    (path,) = convert_file(src, "heat.png", "png", ctx, out)
    ds = pydicom.dcmread(path)
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.Manufacturer = "Lunit"
    ds.SeriesDescription = "Lung nodule heat map"
    ds.InstitutionName = "Other Hospital"
    ds.save_as(path)
    return path


def test_mark_ai_prefixes_and_records_original(tmp_path, out, ctx):
    path = _ai_secondary_capture(tmp_path, out, ctx)
    ds = pydicom.dcmread(path)
    assert classify_dataset(ds, ["Lunit"]) == "ai"

    assert mark_ai(ds, prefix="[AI]", reason="AI result", system="pdimport")
    assert ds.SeriesDescription == "[AI] Lung nodule heat map"
    (item,) = ds.OriginalAttributesSequence
    assert item.ReasonForTheAttributeModification == "COERCE"
    assert item.ModifyingSystem == "pdimport"
    assert item.SourceOfPreviousValues == "Other Hospital"
    assert item.AttributeModificationDateTime
    (modified,) = item.ModifiedAttributesSequence
    assert modified.SeriesDescription == "Lung nodule heat map"
    assert "InstanceCoercionDateTime" in ds

    assert not mark_ai(ds), "marking twice changes nothing"
    assert len(ds.OriginalAttributesSequence) == 1
    marked = tmp_path / "marked.dcm"
    ds.save_as(marked)
    dciodvfy(marked)


def test_mark_ai_without_series_description_keeps_earlier_items(tmp_path, out, ctx):
    path = _ai_secondary_capture(tmp_path, out, ctx)
    ds = pydicom.dcmread(path)
    del ds.SeriesDescription
    earlier = Dataset()
    earlier.AttributeModificationDateTime = "20200101000000"
    earlier.ModifyingSystem = "OTHER PACS"
    earlier.SourceOfPreviousValues = ""
    earlier.ReasonForTheAttributeModification = "CORRECT"
    old = Dataset()
    old.PatientID = "OLD"
    earlier.ModifiedAttributesSequence = Sequence([old])
    ds.OriginalAttributesSequence = Sequence([earlier])

    assert mark_ai(ds, prefix="[AI]", source="")
    assert ds.SeriesDescription == "[AI]"
    assert len(ds.OriginalAttributesSequence) == 2
    assert ds.OriginalAttributesSequence[0].ModifyingSystem == "OTHER PACS"
    recorded = ds.OriginalAttributesSequence[1].ModifiedAttributesSequence[0]
    assert recorded["SeriesDescription"].is_empty
    marked = tmp_path / "marked.dcm"
    ds.save_as(marked)
    dciodvfy(marked)


def test_mark_ai_keeps_prefix_when_description_is_long(tmp_path, out, ctx):
    ds = pydicom.dcmread(_ai_secondary_capture(tmp_path, out, ctx))
    ds.SeriesDescription = "X" * 64
    mark_ai(ds, prefix="[AI]")
    assert ds.SeriesDescription.startswith("[AI] X")
    assert len(ds.SeriesDescription) == 64
    assert (
        ds.OriginalAttributesSequence[0].ModifiedAttributesSequence[0].SeriesDescription == "X" * 64
    )


# ============================================================ classification
def test_classify_dataset_rules(tmp_path, out, ctx):
    ds = pydicom.dcmread(_ai_secondary_capture(tmp_path, out, ctx))
    assert classify_dataset(ds) == "ai"  # default patterns know Lunit
    ds.Manufacturer = "ACME"
    ds.SeriesDescription = "Main result"  # "AI" inside a word is no match
    assert classify_dataset(ds) == "image"
    ds.SeriesDescription = "CAD marks"
    assert classify_dataset(ds) == "ai"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    assert classify_dataset(ds) == "image", "keywords alone do not make an original AI"

    algo = Dataset()
    algo.AlgorithmName = "NoduleNet"
    ds.DerivationAlgorithmSequence = Sequence([algo])
    assert classify_dataset(ds, []) == "ai"
    del ds.DerivationAlgorithmSequence
    segment = Dataset()  # nested, as in a SEG's Segment Sequence
    segment.SegmentationAlgorithmIdentificationSequence = Sequence([algo])
    ds.SegmentSequence = Sequence([segment])
    assert classify_dataset(ds, []) == "ai"
    del ds.SegmentSequence
    recon = Dataset()
    recon.AlgorithmName = "FBP"
    ds.ReconstructionAlgorithmSequence = Sequence([recon])
    assert classify_dataset(ds, []) == "image", "a reconstruction kernel is not AI"
    del ds.ReconstructionAlgorithmSequence

    equipment = Dataset()
    equipment.Manufacturer = "Siemens Healthineers"
    equipment.ManufacturerModelName = "AI-Rad Companion Chest CT"
    ds.ContributingEquipmentSequence = Sequence([equipment])
    assert classify_dataset(ds) == "ai"
    assert classify_dataset(ds, []) == "image"


def test_classify_dataset_keeps_rt_and_plain_conversions():
    assert classify_dataset(pydicom.examples.rt_plan) == "rt"
    assert classify_dataset(pydicom.examples.ct) == "image"
    seg = Dataset()
    seg.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    assert classify_dataset(seg) == "other", "a SEG is AI by its segments, not by class"


def test_converted_objects_are_not_mistaken_for_ai(tmp_path, out, ctx):
    src = tmp_path / "AI_CAD_summary.png"  # a name full of keywords
    Image.fromarray(rng_image((8, 8))).save(src)
    (ds,) = converted(src, "png", ctx, out)
    assert classify_dataset(ds) == "image"
