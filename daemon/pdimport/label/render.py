"""The status label printed when a medium is ejected (and on every reprint).

The clerk never looks at a screen: the label is the user interface. It says,
large and in Japanese and English, whether everything is in the PACS
(取込完了 / IMPORTED), whether a person must look (要確認 / CHECK, with the
reasons in plain words) or whether the import failed (失敗 / FAILED); then the
patient *as on the medium* (Patient's Name with its alphabetic, ideographic and
phonetic component groups, PS3.5 §6.2.1), the studies, the markers for RT, AI
and Other Content, the source facility, the drive, the time and the job ID as
text and as a QR code.

Two layers, so the content is tested without fonts or PDF:

* :func:`~pdimport.label.content.label_content` turns a JSON report
  (DESIGN.md contract) into a list of :class:`~pdimport.label.content.Line`
  values — pure logic, in :mod:`pdimport.label.content`;
* :func:`render_label` (this module) lays the lines out on one of
  :data:`SIZES` with reportlab and writes a PDF, or a PNG through poppler's
  ``pdftoppm``.

Japanese must always print, so a CJK TrueType font is found at run time
(:func:`find_cjk_font`) and embedded; without one rendering fails loudly
rather than printing empty boxes.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from pdimport.label.content import Line, label_content

log = logging.getLogger(__name__)

MM = 72.0 / 25.4  # PDF points per millimetre
FONT_NAME = "PdimportCJK"

#: Fonts tried in order. reportlab reads TrueType outlines only, so the
#: CFF-based Noto CJK OTC files are tried last and may be refused.
FONT_CANDIDATES: tuple[str, ...] = (
    "/usr/share/fonts/opentype/ipaexfont-gothic/ipaexg.ttf",
    "/usr/share/fonts/truetype/ipaexfont-gothic/ipaexg.ttf",
    "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf",
    "/usr/share/fonts/truetype/fonts-japanese-gothic.ttf",
    "/usr/share/fonts/truetype/takao-gothic/TakaoPGothic.ttf",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
)


class LabelError(RuntimeError):
    """The label cannot be rendered (no CJK font, no rasteriser, bad size)."""


# --------------------------------------------------------------------------- sizes
@dataclass(frozen=True)
class LabelSize:
    """Geometry of one label stock, in points.

    ``height`` None means continuous tape: the label is as long as its
    content (Brother/Zebra 62 mm rolls).
    """

    name: str
    width: float
    height: float | None
    margin: float
    qr: float  # side of the QR code
    band: float  # font size of the status band


SIZES: dict[str, LabelSize] = {
    "62mm": LabelSize("62mm", 62 * MM, None, 2.5 * MM, 17 * MM, 17.0),
    "4x2": LabelSize("4x2", 4 * 72.0, 2 * 72.0, 2.0 * MM, 19 * MM, 19.0),
}


# --------------------------------------------------------------------------- fonts
_font_path: str | None = None


def find_cjk_font() -> str:
    """Register a Japanese TrueType font with reportlab; return its path.

    ``$PDIMPORT_LABEL_FONT`` wins, then the known Debian paths
    (fonts-ipaexfont-gothic, Noto CJK), then whatever ``fc-match`` proposes
    for Japanese.

    Raises
    ------
    LabelError
        No usable font: the label would print empty boxes for kanji.
    """
    global _font_path
    if _font_path:
        return _font_path
    for path in _font_candidates():
        if _register(path):
            _font_path = path
            return path
    raise LabelError(
        "no Japanese TrueType font found: install fonts-ipaexfont-gothic "
        "(or set PDIMPORT_LABEL_FONT to a .ttf file)"
    )


def _font_candidates() -> list[str]:
    found = [os.environ.get("PDIMPORT_LABEL_FONT", ""), *FONT_CANDIDATES]
    if shutil.which("fc-match"):
        try:
            res = subprocess.run(
                ["fc-match", "-f", "%{file}\n", "sans:lang=ja"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            found += res.stdout.split()
        except (OSError, subprocess.SubprocessError):
            pass
    return [p for p in found if p and os.path.exists(p)]


def _register(path: str) -> bool:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFError, TTFont

    try:
        font = (
            TTFont(FONT_NAME, path, subfontIndex=0)
            if path.endswith(".ttc")
            else TTFont(FONT_NAME, path)
        )
        pdfmetrics.registerFont(font)
    except (TTFError, OSError, ValueError) as exc:  # CFF-flavoured OpenType is refused
        log.debug("font %s not usable: %s", path, exc)
        return False
    return True


# --------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class Placed:
    """A line placed on the page: baseline ``y`` from the top, in points."""

    line: Line
    x: float
    y: float
    width: float
    size: float


def _width(text: str, size: float) -> float:
    from reportlab.pdfbase.pdfmetrics import stringWidth

    return stringWidth(text, FONT_NAME, size)


def _fit(text: str, size: float, width: float) -> tuple[str, float]:
    """Shrink to 75 % of the size, then cut with an ellipsis, to fit ``width``."""
    floor = size * 0.75
    while size > floor and _width(text, size) > width:
        size -= 0.25
    if _width(text, size) <= width:
        return text, size
    while text and _width(text + "…", size) > width:
        text = text[:-1]
    return text + "…", size


def _wrap(text: str, size: float, width: float) -> list[str]:
    """Greedy wrap by character (Japanese has no spaces), preferring spaces."""
    rows: list[str] = []
    while text:
        cut = len(text)
        while cut > 1 and _width(text[:cut], size) > width:
            cut -= 1
        if cut < len(text):
            cut = _break_at(text, cut)
        rows.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    return rows


@dataclass(frozen=True)
class Layout:
    """Placed lines, the page height, the type scale and the QR box (top, side)."""

    placed: list[Placed]
    height: float
    scale: float
    qr_top: float
    qr_side: float


def _break_at(text: str, cut: int) -> int:
    """A nicer break before ``cut``: between the Japanese and English halves
    (" / "), else at a space in the second half of the row."""
    slash = text.rfind(" / ", 0, cut)
    if slash > cut // 3:
        return slash + 1
    space = text.rfind(" ", 0, cut)
    return space + 1 if space > cut // 2 else cut


def layout(lines: Sequence[Line], size: LabelSize, scale: float = 1.0) -> Layout:
    """Place lines top-down; lines beside the QR code are narrower.

    The QR code sits at the top right, just under the status band. The
    height includes the margins.
    """
    m = size.margin
    full = size.width - 2 * m
    placed: list[Placed] = []
    y = m
    qr_top = qr_bottom = None
    for line in lines:
        fs = (size.band if line.style == "band" else line.size) * scale
        lead = fs * (1.5 if line.style == "band" else 1.22)
        if line.style == "band":
            text, fs = _fit(line.text, fs, full - fs * 0.6)
            placed.append(Placed(replace(line, text=text), m, y + lead * 0.78, full, fs))
            y += lead + m * 0.6
            qr_top, qr_bottom = y, y + size.qr * scale
            continue
        for row in _rows(line, fs, size, y, lead, qr_top, qr_bottom):
            placed.append(row)
            y += lead
    bottom = max(y, qr_bottom or 0.0) + m
    return Layout(placed, bottom, scale, qr_top or m, size.qr * scale)


def _rows(
    line: Line,
    fs: float,
    size: LabelSize,
    y: float,
    lead: float,
    qr_top: float | None,
    qr_bottom: float | None,
) -> list[Placed]:
    m = size.margin
    full = size.width - 2 * m

    def avail(row_y: float) -> float:
        beside_qr = qr_top is not None and qr_bottom is not None and row_y < qr_bottom
        return full - ((qr_bottom - qr_top) + m) if beside_qr else full  # type: ignore[operator]

    if line.wrap:
        out, row_y, text = [], y, line.text
        while text:
            row = _wrap(text, fs, avail(row_y))[0]
            out.append(Placed(replace(line, text=row), m, row_y + lead * 0.8, avail(row_y), fs))
            text = text[len(row) :].lstrip()
            row_y += lead
        return out
    text, fitted = _fit(line.text, fs, avail(y) - (4 * fs if line.style == "tags" else 0))
    return [Placed(replace(line, text=text), m, y + lead * 0.8, avail(y), fitted)]


def fit_lines(report: dict[str, Any], size: LabelSize, drive: str, now: datetime | None) -> Layout:
    """Choose the layout: continuous labels grow; fixed ones shrink the type,
    then show fewer studies, until everything fits."""
    n_studies = sum(len(p.get("studies") or []) for p in report.get("patients") or [])
    if size.height is None:
        lay = layout(label_content(report, drive, now, max_studies=12), size)
        return replace(lay, height=max(lay.height, 40 * MM))
    for max_studies in range(n_studies, -1, -1):
        lines = label_content(report, drive, now, max_studies=max_studies)
        # Largest type that fits first: the clerk reads it at arm's length.
        for scale in (1.3, 1.2, 1.1, 1.0, 0.92, 0.85, 0.78, 0.72):
            lay = layout(lines, size, scale)
            if lay.height <= size.height:
                return replace(lay, height=size.height)
    log.warning("label content does not fit %s; the bottom is cut", size.name)
    return replace(lay, height=size.height)


# --------------------------------------------------------------------------- drawing
def render_label(
    report: dict[str, Any],
    size: str = "62mm",
    out: Path | None = None,
    fmt: str = "pdf",
    drive: str = "",
    *,
    now: datetime | None = None,
    dpi: int = 300,
) -> Path:
    """Render the status label of a job to a PDF or PNG file.

    Parameters
    ----------
    report : dict
        The job report (DESIGN.md contract).
    size : {"62mm", "4x2"}
        Label stock: 62 mm continuous tape or a 4 x 2 inch die-cut label.
    out : Path
        File to write.
    fmt : {"pdf", "png"}
        Output format; PNG goes through ``pdftoppm`` at ``dpi``.
    drive : str
        Drive or bay to print.

    Returns
    -------
    Path
        ``out``.
    """
    if size not in SIZES:
        raise LabelError(f"unknown label size {size!r}; choose one of {', '.join(SIZES)}")
    if fmt not in ("pdf", "png"):
        raise LabelError(f"unknown label format {fmt!r}; choose pdf or png")
    if out is None:
        raise LabelError("render_label needs an output path")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "pdf":
        return draw_pdf(report, SIZES[size], out, drive, now)
    with tempfile.TemporaryDirectory(prefix="pdimport-label-") as tmp:
        pdf = draw_pdf(report, SIZES[size], Path(tmp) / "label.pdf", drive, now)
        rasterise(pdf, out, dpi=dpi, mono=False)
    return out


def draw_pdf(
    report: dict[str, Any], size: LabelSize, out: Path, drive: str, now: datetime | None
) -> Path:
    """Draw the label with reportlab on a page of the label's size."""
    from reportlab.pdfgen.canvas import Canvas

    find_cjk_font()
    lay = fit_lines(report, size, drive, now)
    c = Canvas(str(out), pagesize=(size.width, lay.height), pageCompression=1)
    c.setTitle(f"pdimport label {report.get('job') or ''}")
    c.setAuthor("pdimport")
    for p in lay.placed:
        _draw_line(c, p, lay.height, size)
    _draw_qr(
        c,
        str(report.get("job") or ""),
        size.width - size.margin - lay.qr_side,
        lay.height - lay.qr_top - lay.qr_side,
        lay.qr_side,
    )
    c.showPage()
    c.save()
    return out


def _draw_line(c: Any, p: Placed, height: float, size: LabelSize) -> None:
    y = height - p.y
    if p.line.style == "band":
        # Inverse band: the outcome reads from across the room.
        c.setFillGray(0)
        c.rect(0, y - p.size * 0.45, size.width, p.size * 1.5, stroke=0, fill=1)
        c.setFillGray(1)
        c.setFont(FONT_NAME, p.size)
        c.drawString(p.x + p.size * 0.3, y, p.line.text)
        c.setFillGray(0)
        return
    c.setFont(FONT_NAME, p.size)
    if p.line.style == "tags":
        _draw_tags(c, p, y)
        return
    c.drawString(p.x, y, p.line.text)


def _draw_tags(c: Any, p: Placed, y: float) -> None:
    x = p.x
    pad = p.size * 0.35
    for tag in p.line.text.split("|"):
        w = _width(tag, p.size)
        c.setLineWidth(0.8)
        c.rect(x, y - p.size * 0.3, w + 2 * pad, p.size * 1.3, stroke=1, fill=0)
        c.drawString(x + pad, y, tag)
        x += w + 3 * pad


def _draw_qr(c: Any, data: str, x: float, y: float, side: float) -> None:
    """The job ID as a QR code (ISO/IEC 18004), error correction M."""
    from reportlab.graphics import renderPDF
    from reportlab.graphics.barcode.qr import QrCodeWidget
    from reportlab.graphics.shapes import Drawing

    widget = QrCodeWidget(data or "-", barLevel="M", barBorder=0)
    x0, y0, x1, y1 = widget.getBounds()
    drawing = Drawing(side, side, transform=[side / (x1 - x0), 0, 0, side / (y1 - y0), 0, 0])
    drawing.add(widget)
    renderPDF.draw(drawing, c, x, y)


# --------------------------------------------------------------------------- raster
def rasterise(pdf: Path, out: Path, dpi: int, mono: bool) -> Path:
    """Render page 1 of a PDF to PNG (or to PBM with ``mono``) with pdftoppm.

    Anti-aliasing is off for mono output: a thermal head prints dots, and
    grey edges would only dither into noise.
    """
    exe = shutil.which("pdftoppm")
    if exe is None:
        raise LabelError("pdftoppm not found: install poppler-utils")
    args = [exe, "-r", str(dpi), "-singlefile", "-f", "1", "-l", "1"]
    args += ["-mono", "-aa", "no", "-aaVector", "no"] if mono else ["-png"]
    # pdftoppm picks the file name (stem + extension): render in a private
    # dir, then move, so any ``out`` name works.
    with tempfile.TemporaryDirectory(prefix="pdimport-raster-") as tmp:
        stem = Path(tmp) / "page"
        res = subprocess.run(
            [*args, str(pdf), str(stem)], capture_output=True, text=True, timeout=60, check=False
        )
        produced = stem.with_suffix(".pbm" if mono else ".png")
        if res.returncode != 0 or not produced.exists():
            raise LabelError(f"pdftoppm failed ({res.returncode}): {res.stderr.strip()}")
        shutil.move(str(produced), str(out))
    return out
