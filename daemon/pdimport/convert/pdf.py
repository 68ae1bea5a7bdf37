"""PDF -> Encapsulated PDF Storage (PS3.3 A.45.1).

The PDF bytes are encapsulated as they are (never parsed by a PDF library:
a report from a foreign disc is hostile input). Only the Info dictionary is
searched, with a small tolerant reader, for the document title and creation
date; when that fails the file name and the file time are used instead.
"""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import EncapsulatedPDFStorage

from pdimport.convert.context import (
    DEFAULT_LIMITS,
    ConversionError,
    Limits,
    PatientContext,
    base_name,
    clip,
    common_modules,
    empty_sequence,
    file_datetime,
    finish,
    read_capped,
    write_part10,
)

PDF_MIME = "application/pdf"
_HEADER_WINDOW = 1024  # PDF readers accept %PDF- anywhere in the first 1 KiB


def convert_pdf(
    path: Path,
    display_name: str,
    ctx: PatientContext,
    out_dir: Path,
    limits: Limits = DEFAULT_LIMITS,
) -> list[Path]:
    """Encapsulate one PDF file; returns the one Part 10 file written.

    DocumentTitle comes from the Info dictionary's /Title, else the file name;
    ContentDate/Time from /CreationDate, else the file's modification time.
    """
    data = read_capped(path, limits.max_bytes)
    check_pdf(data)
    title, created = pdf_info(data)
    ds = build_encapsulated_pdf(
        data,
        ctx,
        kind="pdf",
        display_name=display_name,
        title=title or base_name(display_name),
        content=created or file_datetime(path),
    )
    return [write_part10(ds, out_dir)]


def check_pdf(data: bytes) -> None:
    """Refuse what is not a complete PDF (ISO 32000-1 7.5.2 header, 7.5.5 trailer).

    Raises ConversionError(``decode_failed``).
    """
    if b"%PDF-" not in data[:_HEADER_WINDOW]:
        raise ConversionError("decode_failed", "no %PDF- header")
    # A truncated copy (disc read cut short, aborted download) has no %%EOF;
    # encapsulating it would hand the radiologist a document that will not open.
    if b"%%EOF" not in data[-_HEADER_WINDOW:]:
        raise ConversionError("decode_failed", "no %%EOF marker: truncated PDF")


def build_encapsulated_pdf(
    pdf: bytes,
    ctx: PatientContext,
    *,
    kind: str,
    display_name: str,
    title: str,
    content: _dt.datetime,
) -> Dataset:
    """Build an Encapsulated PDF dataset (PS3.3 A.45.1).

    Modules: Patient, General Study, Encapsulated Document Series (C.24.1),
    General Equipment, SC Equipment (C.8.6.1), Encapsulated Document (C.24.2),
    SOP Common. The document is padded to even length with a NUL, which PDF
    readers ignore after %%EOF; EncapsulatedDocumentLength keeps the real
    length so the original bytes can be recovered exactly.
    """
    ds = common_modules(
        ctx,
        kind=kind,
        display_name=display_name,
        modality="DOC",
        sop_class_uid=EncapsulatedPDFStorage,
        content=content,
    )
    # Encapsulated Document Module (C.24.2)
    ds.AcquisitionDateTime = ""
    # A referral report names the patient on every page.
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = clip(title, "ST")
    ds.ConceptNameCodeSequence = empty_sequence()
    ds.MIMETypeOfEncapsulatedDocument = PDF_MIME
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.EncapsulatedDocument = pdf + b"\x00" if len(pdf) % 2 else pdf
    finish(ds, ctx)
    return ds


# ------------------------------------------------------------ Info dictionary
_INFO_REF = re.compile(rb"/Info\s+(\d+)\s+(\d+)\s+R")
_KEY = re.compile(rb"/(Title|CreationDate|Encrypt)\b\s*")


def pdf_info(data: bytes) -> tuple[str, _dt.datetime | None]:
    """(Title, CreationDate) from the document Info dictionary, tolerantly.

    Only a plain (uncompressed) Info object is read; an Info dictionary in an
    object stream, or an encrypted document, yields ("", None). Outline items
    also carry /Title, so the search is confined to the Info object itself.
    """
    if re.search(rb"/Encrypt\s+\d+\s+\d+\s+R|/Encrypt\s*<<", data[-65536:]):
        return "", None
    body = _info_body(data)
    if body is None:
        return "", None
    title, created = "", None
    for match in _KEY.finditer(body):
        raw = _pdf_string(body, match.end())
        if raw is None:
            continue
        if match.group(1) == b"Title":
            title = _decode_text(raw).strip()
        elif match.group(1) == b"CreationDate":
            created = pdf_date(_decode_text(raw))
    return title, created


def _info_body(data: bytes) -> bytes | None:
    refs = _INFO_REF.findall(data)
    if not refs:
        return None
    number, generation = refs[-1]  # incremental updates append newer trailers
    pattern = rb"(?<![0-9])" + number + rb"\s+" + generation + rb"\s+obj(.*?)endobj"
    bodies = re.findall(pattern, data, re.DOTALL)
    return bodies[-1] if bodies else None


_ESCAPES = {
    ord("n"): b"\n",
    ord("r"): b"\r",
    ord("t"): b"\t",
    ord("b"): b"\b",
    ord("f"): b"\f",
    ord("("): b"(",
    ord(")"): b")",
    ord("\\"): b"\\",
}


def _pdf_string(buf: bytes, pos: int) -> bytes | None:
    """A literal ``(...)`` or hex ``<...>`` string starting at ``pos`` (7.3.4)."""
    if buf[pos : pos + 1] == b"<" and buf[pos : pos + 2] != b"<<":
        end = buf.find(b">", pos)
        if end < 0:
            return None
        digits = re.sub(rb"\s", b"", buf[pos + 1 : end])
        try:
            return bytes.fromhex((digits + b"0" * (len(digits) % 2)).decode("ascii"))
        except ValueError:
            return None
    if buf[pos : pos + 1] != b"(":
        return None
    return _literal(buf, pos + 1)


def _literal(buf: bytes, i: int) -> bytes | None:
    out, depth = bytearray(), 1
    while i < len(buf):
        c = buf[i]
        if c == 0x5C:  # backslash
            i += 1
            if i >= len(buf):
                return None
            nxt = buf[i]
            if nxt in _ESCAPES:
                out += _ESCAPES[nxt]
            elif 0x30 <= nxt <= 0x37:
                octal = re.match(rb"[0-7]{1,3}", buf[i : i + 3]).group()  # type: ignore[union-attr]  # buf[i] is 0-7
                out.append(int(octal, 8) & 0xFF)
                i += len(octal) - 1
            elif nxt in b"\r\n":  # line continuation
                if nxt == 0x0D and buf[i + 1 : i + 2] == b"\n":
                    i += 1
            else:
                out.append(nxt)
        elif c == 0x28:
            depth += 1
            out.append(c)
        elif c == 0x29:
            depth -= 1
            if depth == 0:
                return bytes(out)
            out.append(c)
        else:
            out.append(c)
        i += 1
    return None


def _decode_text(raw: bytes) -> str:
    """PDF text string (ISO 32000-1 7.9.2.2): UTF-16BE with BOM, UTF-8 with
    BOM (PDF 2.0), else PDFDocEncoding (Latin-1 is close enough for a title)."""
    if raw.startswith(b"\xfe\xff"):
        return raw[2:].decode("utf-16-be", errors="replace")
    if raw.startswith(b"\xef\xbb\xbf"):
        return raw[3:].decode("utf-8", errors="replace")
    return raw.decode("latin-1")


_PDF_DATE = re.compile(r"(?:D:)?(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?")


def pdf_date(text: str) -> _dt.datetime | None:
    """Parse a PDF date ``D:YYYYMMDDHHmmSSOHH'mm'`` (7.9.4), keeping the
    writer's local clock time (DICOM ContentTime is local too)."""
    match = _PDF_DATE.match(text.strip())
    if not match:
        return None
    parts = [int(p) if p else d for p, d in zip(match.groups(), (0, 1, 1, 0, 0, 0))]
    try:
        moment = _dt.datetime(*parts)  # type: ignore[arg-type]  # six ints
    except ValueError:
        return None
    return moment if 1900 <= moment.year <= 9999 else None
