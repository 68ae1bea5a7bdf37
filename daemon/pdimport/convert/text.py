"""Plain text -> Encapsulated PDF (PS3.3 A.45.1), rendered with a Japanese font.

Referral letters on Japanese discs are plain text in UTF-8, Shift_JIS (in
practice Windows code page 932), EUC-JP or ISO-2022-JP. :func:`detect_text`
finds the encoding; :func:`render_pdf` typesets the text with reportlab and
the first Japanese-capable TrueType font found at run time.
"""

from __future__ import annotations

import codecs
import functools
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pdimport.convert.context import (
    DEFAULT_LIMITS,
    ConversionError,
    Limits,
    PatientContext,
    base_name,
    file_datetime,
    read_capped,
    write_part10,
)
from pdimport.convert.pdf import build_encapsulated_pdf

#: Fonts tried in order. reportlab embeds TrueType outlines only, so the
#: OpenType/CFF Noto Sans CJK collections cannot be used; IPAex Gothic can.
FONT_CANDIDATES: tuple[tuple[str, int], ...] = (
    ("/usr/share/fonts/opentype/ipaexfont-gothic/ipaexg.ttf", 0),
    ("/usr/share/fonts/truetype/fonts-japanese-gothic.ttf", 0),
    ("/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf", 0),
    ("/usr/share/fonts/truetype/noto/NotoSansJP-Regular.ttf", 0),
    ("/usr/share/fonts/truetype/vlgothic/VL-Gothic-Regular.ttf", 0),
    ("/usr/share/fonts/truetype/takao-gothic/TakaoGothic.ttf", 0),
    ("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf", 0),
)
_FONT_NAME = "PdimportJapanese"
_PAGE_W, _PAGE_H = 595.27, 841.89  # A4 in points
_MARGIN, _FONT_SIZE, _LEADING = 50.0, 10.0, 14.0
_TAB = 4

_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
#: Japanese legacy encodings tried after UTF-8; cp932 is Shift_JIS as Windows
#: writes it (NEC/IBM extensions such as circled numbers).
_JAPANESE = ("cp932", "euc_jp")


# ================================================================ detection
def detect_text(data: bytes) -> tuple[str, str]:
    """Decode text of unknown encoding; returns (text, encoding name).

    Order: a byte-order mark; strict UTF-8; ISO-2022-JP when the bytes are
    7-bit with escape sequences; then Shift_JIS (cp932) and EUC-JP, keeping
    the valid decodings and preferring the one that reads as more Japanese.
    Raises ConversionError(``decode_failed``) when nothing decodes cleanly,
    and (``unsupported_content``) for binary data.
    """
    for bom, name in _BOMS:
        if data.startswith(bom):
            return _decode(data, name), name
    if b"\x00" in data:
        raise ConversionError("unsupported_content", "binary data (NUL bytes), not text")
    # ISO-2022-JP is 7-bit, so it would pass as UTF-8: look for its escapes
    # (ESC $ @, ESC $ B: JIS X 0208; ESC ( I: half-width katakana) first.
    if data.isascii() and (b"\x1b$" in data or b"\x1b(I" in data):
        return _decode(data, "iso2022_jp_ext"), "iso2022_jp"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    candidates = []
    for name in _JAPANESE:
        try:
            # the tuple's middle term makes Shift_JIS win a tie
            candidates.append((japanese_score(data.decode(name)), name == "cp932", name))
        except UnicodeDecodeError:
            continue
    if not candidates:
        raise ConversionError(
            "decode_failed", "text is not UTF-8, Shift_JIS, EUC-JP or ISO-2022-JP"
        )
    _, _, name = max(candidates)
    return data.decode(name), "shift_jis" if name == "cp932" else name


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode(name)
    except UnicodeDecodeError as exc:
        raise ConversionError("decode_failed", f"invalid {name} text: {exc}") from None


def japanese_score(text: str) -> float:
    """How much a decoding reads as ordinary Japanese.

    Kana and common kanji count for it; half-width katakana, private-use and
    rarely used characters count against it. A Shift_JIS file decoded as
    EUC-JP (or the reverse) lands in those rare ranges, so the right reading
    scores higher. Ties prefer Shift_JIS, by far the most common on discs.
    """
    score = 0.0
    for ch in text:
        code = ord(ch)
        if 0x3040 <= code <= 0x30FF or 0x4E00 <= code <= 0x9FFF or 0x3000 <= code <= 0x303F:
            score += 1
        elif (
            0xFF61 <= code <= 0xFF9F
            or 0xE000 <= code <= 0xF8FF
            or (code < 0x20 and ch not in "\t\r\n\f")
        ):
            score -= 2
        elif 0x80 <= code <= 0x2FFF:
            score -= 0.5
    return score


# ================================================================ rendering
@functools.lru_cache(maxsize=1)
def japanese_font() -> str:
    """Register and return the name of a Japanese-capable TrueType font.

    Raises ConversionError(``internal_error``): a missing font is a fault of
    the installation, not of the file being converted.
    """
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFError, TTFont

    for path, index in FONT_CANDIDATES:
        if not Path(path).is_file():
            continue
        try:
            pdfmetrics.registerFont(TTFont(_FONT_NAME, path, subfontIndex=index))
        except (TTFError, OSError):
            continue
        return _FONT_NAME
    raise ConversionError(
        "internal_error", "no Japanese TrueType font (install fonts-ipaexfont-gothic)"
    )


def wrap_lines(text: str, width: float, measure: Callable[[str], float]) -> list[str]:
    """Split text into lines no wider than ``width`` points.

    Japanese has no spaces between words, so lines break between any two
    characters; tabs expand to spaces, form feeds start a new page ("\\f").
    """
    lines: list[str] = []
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        for page_part in _split_keep(raw.expandtabs(_TAB), "\f"):
            if page_part == "\f":
                lines.append("\f")
                continue
            line = ""
            for ch in page_part:
                if not ch.isprintable() and ch != " ":
                    ch = " "
                if line and measure(line + ch) > width:
                    lines.append(line)
                    line = ""
                line += ch
            lines.append(line)
    return lines


def _split_keep(text: str, sep: str) -> list[str]:
    parts = text.split(sep)
    out = [parts[0]]
    for part in parts[1:]:
        out += [sep, part]
    return [p for p in out if p or p == out[0]]


def render_pdf(text: str, title: str, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Typeset text on A4 pages; returns the PDF bytes.

    Each page carries a small header naming the source file, so a reader in
    PACS knows the document is a rendering of a text file, not the original.
    Raises ConversionError(``too_large``) beyond ``limits.max_pages``.
    """
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfgen import canvas

    font = japanese_font()

    def measure(s: str) -> float:
        return pdfmetrics.stringWidth(s, font, _FONT_SIZE)

    lines = wrap_lines(text, _PAGE_W - 2 * _MARGIN, measure)
    per_page = int((_PAGE_H - 2 * _MARGIN - 2 * _LEADING) // _LEADING)
    pages = _paginate(lines, per_page)
    if len(pages) > limits.max_pages:
        raise ConversionError("too_large", f"{len(pages)} pages exceeds the cap")
    out = io.BytesIO()
    pdf = canvas.Canvas(out, pagesize=(_PAGE_W, _PAGE_H), invariant=True)
    pdf.setTitle(title)
    pdf.setCreator("pdimport")
    for number, page in enumerate(pages, 1):
        _draw_page(pdf, font, page, f"{title} ({number}/{len(pages)})")
    pdf.save()
    return out.getvalue()


def _paginate(lines: list[str], per_page: int) -> list[list[str]]:
    pages: list[list[str]] = [[]]
    for line in lines:
        if line == "\f" or len(pages[-1]) >= per_page:
            pages.append([])
            if line == "\f":
                continue
        pages[-1].append(line)
    return pages


def _draw_page(pdf: Any, font: str, lines: list[str], header: str) -> None:
    pdf.setFont(font, 8)
    pdf.setFillGray(0.45)
    pdf.drawString(_MARGIN, _PAGE_H - _MARGIN + 12, header)
    pdf.setFillGray(0)
    pdf.setFont(font, _FONT_SIZE)
    y = _PAGE_H - _MARGIN - _LEADING
    for line in lines:
        pdf.drawString(_MARGIN, y, line)
        y -= _LEADING
    pdf.showPage()


# ================================================================ conversion
def convert_text(
    path: Path,
    display_name: str,
    ctx: PatientContext,
    out_dir: Path,
    limits: Limits = DEFAULT_LIMITS,
) -> list[Path]:
    """Render one text file as an Encapsulated PDF; DocumentTitle is its name."""
    data = read_capped(path, limits.max_text_bytes)
    text, _encoding = detect_text(data)
    name = base_name(display_name)
    pdf = render_pdf(text, name, limits)
    ds = build_encapsulated_pdf(
        pdf, ctx, kind="txt", display_name=display_name, title=name, content=file_datetime(path)
    )
    return [write_part10(ds, out_dir)]
