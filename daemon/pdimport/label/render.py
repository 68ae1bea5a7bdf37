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

* :func:`label_content` turns a JSON report (DESIGN.md contract) into a list
  of :class:`Line` values — pure logic;
* :func:`render_label` lays the lines out on one of :data:`SIZES` with
  reportlab and writes a PDF, or a PNG through poppler's ``pdftoppm``.

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

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


# --------------------------------------------------------------------------- words
#: status -> (Japanese, English, sub-line Japanese, sub-line English).
STATUS_WORDS: dict[str, tuple[str, str, str, str]] = {
    "imported": ("取込完了", "IMPORTED", "すべてPACSに送信済み", "all delivered to PACS"),
    "held": ("要確認", "CHECK", "保留中・PACSへ未送信", "held, nothing sent"),
    "partial": ("要確認", "CHECK", "一部のみ送信", "only partly delivered"),
    "failed": ("失敗", "FAILED", "取り込めませんでした", "nothing imported"),
    # Read safely into the spool, the PACS has not answered yet (the daemon
    # marks such reports ``delivery: "queued"``); it will be sent later.
    "queued": ("送信待ち", "QUEUED", "読取完了・PACSへ送信待ち", "read safely, will be sent later"),
    "scanned": ("確認のみ", "SCANNED", "送信していません", "inventory only, nothing sent"),
}
#: A status this module does not know is never shown as success or failure.
UNKNOWN_STATUS = ("要確認", "CHECK", "状態不明", "unknown status")

#: hold reason / derived reason -> (Japanese, English); ``{n}`` is a count,
#: ``{s}`` the English plural ending.
REASON_WORDS: dict[str, tuple[str, str]] = {
    "multi_patient": ("1枚に複数の患者 ({n}名)", "{n} patients on the disc"),
    "no_local_patient": ("当院の患者と一致しません", "no matching local patient"),
    "unreconciled": ("当院の患者と一致しません", "no matching local patient"),
    "patient_mismatch": ("患者情報が一致しません", "patient details do not match"),
    "ai": ("AI画像を保留", "AI content held"),
    "ai_held": ("AI画像を保留", "AI content held"),
    "unreadable": ("読めないファイル {n}件", "{n} unreadable file{s}"),
    "refused": ("PACSが受け付けない画像 {n}件", "{n} image{s} refused by PACS"),
    "not_sent": ("未送信の画像 {n}件", "{n} image{s} not sent yet"),
    "uid_conflict": ("同じUIDで内容の違う画像 {n}件", "{n} image{s} with conflicting UIDs"),
    "documents_only": ("DICOM画像なし (資料のみ)", "no DICOM images, documents only"),
    "unreadable_medium": ("メディアを読めません", "the medium could not be read"),
    "pacs_unreachable": ("PACSに接続できません", "PACS not reachable"),
    "empty": ("画像がありません", "no images found"),
    "scan_only": ("確認のみ・送信なし", "scan only, nothing sent"),
}

#: Problem codes that mean "a file on the medium could not be read or used".
UNREADABLE_CODES = frozenset(
    {
        "unreadable_sector",
        "truncated_extent",
        "unsafe_path",
        "too_large",
        "zip_bomb",
        "archive_encrypted",
        "archive_corrupt",
        "unreadable_directory",
        "dicomdir_unsafe_path",
        "missing_file",
        "empty_file",
        "not_dicom",
        "truncated",
        "length_exceeds_file",
        "bad_vr",
        "undefined_length_misuse",
        "nesting_too_deep",
        "tag_order",
        "ts_mismatch",
        "bad_file_meta",
        "deflate_bomb",
        "missing_attribute",
        "invalid_uid",
        "uid_mismatch",
        "pixel_length_mismatch",
        "unparsable",
    }
)
UNREACHABLE_CODES = frozenset({"association_rejected", "association_failed"})

SEX_WORDS = {"M": "男 M", "F": "女 F", "O": "他 O"}


# --------------------------------------------------------------------------- content
@dataclass(frozen=True)
class Line:
    """One line of label text.

    ``style``: ``band`` (the large inverse status), ``tags`` (boxed markers,
    text split on ``|``), ``text``. ``wrap`` lines break over several rows,
    so no identifier is ever cut; the band and tags shrink to fit instead.
    """

    text: str
    size: float
    style: str = "text"
    wrap: bool = True
    kind: str = ""  # what the line shows; lets the fitter drop study lines


def format_person_name(value: Any) -> tuple[str, str]:
    """Split a Patient's Name (PN) into a main and a secondary display string.

    PS3.5 §6.2.1: up to three component groups separated by ``=`` —
    alphabetic, ideographic, phonetic — each of up to five components
    separated by ``^`` (family, given, middle, prefix, suffix).

    Returns
    -------
    (main, secondary)
        ``main`` is the ideographic name with the phonetic one in
        parentheses when present, else the alphabetic one; ``secondary`` is
        the alphabetic name when the main line is ideographic.
    """
    alpha, ideo, phon = _pn_groups(value)
    alpha_s = _pn_join(alpha, latin=True)
    ideo_s, phon_s = _pn_join(ideo), _pn_join(phon)
    if ideo_s:
        main = f"{ideo_s} ({phon_s})" if phon_s else ideo_s
        return main, alpha_s
    if phon_s:
        return phon_s, alpha_s
    return alpha_s, ""


def _pn_groups(value: Any) -> tuple[str, str, str]:
    if isinstance(value, dict):  # DICOM JSON model, PS3.18 F.2.2
        return (
            str(value.get("Alphabetic", "")),
            str(value.get("Ideographic", "")),
            str(value.get("Phonetic", "")),
        )
    groups = (str(value or "").split("=") + ["", "", ""])[:3]
    return groups[0], groups[1], groups[2]


def _pn_join(group: str, latin: bool = False) -> str:
    parts = [p.strip() for p in group.split("^")]
    family, given = (parts + ["", ""])[:2]
    rest = [p for p in parts[2:] if p]
    if latin and family and given:
        # "Family, Given" so a Western reader cannot swap them.
        return " ".join([f"{family}, {given}", *rest])
    return " ".join(p for p in [family, given, *rest] if p)


def format_date(value: Any) -> str:
    """DA ``YYYYMMDD`` (PS3.5 §6.2) as ``YYYY-MM-DD``; anything else as is."""
    s = str(value or "").strip()
    if len(s) == 8 and s.isdigit():
        return f"{s[:4]}-{s[4:6]}-{s[6:]}"
    return s


def label_content(
    report: dict[str, Any],
    drive: str = "",
    now: datetime | None = None,
    max_studies: int | None = None,
) -> list[Line]:
    """The label's lines, top to bottom, for one JSON report (pure).

    Parameters
    ----------
    report : dict
        The job report (DESIGN.md contract).
    drive : str
        The drive or bay the medium was in; falls back to ``source.drive``.
    now : datetime, optional
        The time printed; defaults to the report's ``finished`` time, else now.
    max_studies : int, optional
        Show at most this many studies (per label), then "+N more".
    """
    ja, en, sub_ja, sub_en = STATUS_WORDS.get(label_status(report), UNKNOWN_STATUS)
    lines = [
        Line(f"{ja}  {en}", 20.0, "band", wrap=False, kind="status"),
        Line(f"{sub_ja} / {sub_en}", 7.5, kind="substatus"),
    ]
    lines += [
        Line(f"・{r_ja} / {r_en}", 7.5, wrap=True, kind="reason") for r_ja, r_en in reasons(report)
    ]
    lines += _patient_lines(report, max_studies)
    tags = markers(report)
    if tags:
        lines.append(Line("|".join(tags), 7.0, "tags", wrap=False, kind="tags"))
    lines.append(Line(counts_line(report), 6.5, wrap=True, kind="counts"))
    lines += _footer_lines(report, drive, now)
    return lines


def label_status(report: dict[str, Any]) -> str:
    """The status word to print: the report's, unless delivery is still queued."""
    if report.get("status") == "waiting_for_destination" or (
        report.get("delivery") == "queued" and report.get("status") != "held"
    ):
        return "queued"
    return str(report.get("status") or "failed")


def reasons(report: dict[str, Any]) -> list[tuple[str, str]]:
    """Why a person must look, in plain Japanese and English words.

    The hold reasons come first, then what the counts and problems imply
    (unreadable files, refusals by the PACS, unreachable PACS).
    """
    out: list[tuple[str, str]] = []
    n_patients = max(len(report.get("patients") or []), 2)
    for code in report.get("hold_reasons") or []:
        out.append(_reason(code, n_patients if code == "multi_patient" else 0))
    counts = report.get("counts") or {}
    codes = {p.get("code", "") for p in report.get("problems") or []}
    derived = [
        ("unreadable_medium", "unreadable_medium" in codes, 0),
        ("unreadable", unreadable_count(report) > 0, unreadable_count(report)),
        ("pacs_unreachable", bool(codes & UNREACHABLE_CODES), 0),
        (
            "refused",
            counts.get("failed", 0) > 0 and not codes & UNREACHABLE_CODES,
            counts.get("failed", 0),
        ),
        ("uid_conflict", counts.get("conflict", 0) > 0, counts.get("conflict", 0)),
    ]
    out += [_reason(code, n) for code, on, n in derived if on]
    if report.get("mode") == "scan":
        out.append(_reason("scan_only", 0))
    if not out and label_status(report) in ("partial", "failed"):
        docs = counts.get("other_content", 0) and not counts.get("dicom", 0)
        out.append(_reason("documents_only" if docs else "empty", 0))
    return _unique(out)


def _reason(code: str, n: int) -> tuple[str, str]:
    ja, en = REASON_WORDS.get(code, (code, code.replace("_", " ")))
    return ja.format(n=n), en.format(n=n, s="" if n == 1 else "s")


def _unique(items: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    seen: set[tuple[str, str]] = set()
    return [i for i in items if not (i in seen or seen.add(i))]  # type: ignore[func-returns-value]


def unreadable_count(report: dict[str, Any]) -> int:
    """Distinct files with a read/parse error problem (not delivery errors)."""
    paths = {
        p.get("path", "") for p in report.get("problems") or [] if p.get("code") in UNREADABLE_CODES
    }
    return len(paths)


def markers(report: dict[str, Any]) -> list[str]:
    """The RT / AI / Other-Content markers, bilingual and short."""
    flags = report.get("flags") or {}
    counts = report.get("counts") or {}
    out = []
    if flags.get("rt"):
        out.append("RT 放射線治療")
    if flags.get("ai"):
        out.append("AI 支援画像")
    if flags.get("other_content"):
        out.append(f"資料 Other content {counts.get('other_content', '')}".rstrip())
    return out


def counts_line(report: dict[str, Any]) -> str:
    """Delivered, held, refused and unreadable counts, in both languages."""
    c = report.get("counts") or {}
    parts = [f"送信 sent {c.get('sent', 0)}/{c.get('dicom', 0)}"]
    for key, ja, en in (
        ("held", "保留", "held"),
        ("failed", "拒否", "refused"),
        ("conflict", "UID重複", "conflict"),
    ):
        if c.get(key):
            parts.append(f"{ja} {en} {c[key]}")
    unreadable = unreadable_count(report)
    if unreadable:
        parts.append(f"読めない unreadable {unreadable}")
    parts.append(f"ファイル files {c.get('files', 0)}")
    return " · ".join(parts)


def _patient_lines(report: dict[str, Any], max_studies: int | None) -> list[Line]:
    lines: list[Line] = []
    patients = report.get("patients") or []
    shown = 0
    for p in patients:
        main, alpha = format_person_name(p.get("name", ""))
        lines.append(Line(main or "(氏名なし / no name)", 11.0, kind="name"))
        if alpha:
            lines.append(Line(alpha, 7.5, kind="name2"))
        lines.append(Line(_patient_ids(p), 7.0, kind="ids"))
        for study in p.get("studies") or []:
            if max_studies is not None and shown >= max_studies:
                continue
            lines.append(Line(study_line(study, report), 6.5, kind="study"))
            shown += 1
    total = sum(len(p.get("studies") or []) for p in patients)
    if total > shown:
        lines.append(
            Line(f"他 {total - shown} 検査 / +{total - shown} more studies", 6.5, kind="more")
        )
    return lines


def _patient_ids(p: dict[str, Any]) -> str:
    parts = [f"ID {p.get('id') or '-'}"]
    if p.get("issuer"):
        parts[0] += f" ({p['issuer']})"
    if p.get("birth_date"):
        parts.append(f"生年月日 DOB {format_date(p['birth_date'])}")
    if p.get("sex"):
        parts.append(f"性別 {SEX_WORDS.get(p['sex'], p['sex'])}")
    if p.get("local_id"):
        parts.append(f"→ 当院ID local {p['local_id']}")
    return "  ".join(parts)


def study_line(study: dict[str, Any], report: dict[str, Any]) -> str:
    """``date  modalities  sent n/total  description`` for one study."""
    series = study.get("series") or []
    modalities = sorted({s.get("modality") or "?" for s in series})
    total = sum(int(s.get("instances") or 0) for s in series)
    sent = study_sent(study, report)
    count = f"送信 {sent}/{total}" if sent is not None else f"{total} 枚"
    text = f"{format_date(study.get('date')) or '----'}  {','.join(modalities)}  {count}"
    if study.get("description"):
        text += f"  {study['description']}"
    return text


def study_sent(study: dict[str, Any], report: dict[str, Any]) -> int | None:
    """Instances of one study delivered, or None when the report cannot tell.

    Uses per-series ``sent`` counts when the report has them, else the
    instances list when it names the study, else the job status: a job
    ``imported`` delivered everything.
    """
    series = study.get("series") or []
    if series and all("sent" in s for s in series):
        return sum(int(s["sent"] or 0) for s in series)
    insts = [i for i in report.get("instances") or [] if i.get("study_uid") == study.get("uid")]
    if insts:
        return sum(1 for i in insts if i.get("state") == "sent")
    if report.get("status") == "imported":
        return sum(int(s.get("instances") or 0) for s in series)
    if report.get("status") in ("held", "failed"):
        return 0
    return None


def facility_of(report: dict[str, Any]) -> str:
    """The source facility (InstitutionName): ``source.facility``, else the
    first one found on a patient or study."""
    source = report.get("source") or {}
    if source.get("facility"):
        return str(source["facility"])
    for p in report.get("patients") or []:
        for holder in [p, *(p.get("studies") or [])]:
            for key in ("facility", "institution", "institution_name"):
                if holder.get(key):
                    return str(holder[key])
    return ""


def _footer_lines(report: dict[str, Any], drive: str, now: datetime | None) -> list[Line]:
    source = report.get("source") or {}
    when = now or _report_time(report) or datetime.now().astimezone()
    facility = facility_of(report)
    volume = source.get("label") or ""
    first = f"施設 From: {facility or '不明 unknown'}"
    where = drive or source.get("drive") or ""
    second = "  ".join(
        x
        for x in (
            f"ドライブ {where}" if where else "",
            f"ディスク {volume}" if volume else "",
            when.strftime("%Y-%m-%d %H:%M"),
        )
        if x
    )
    return [
        Line(first, 6.5, kind="facility"),
        Line(second, 6.5, kind="where"),
        Line(f"Job {report.get('job') or '-'}", 6.5, kind="job"),
    ]


def _report_time(report: dict[str, Any]) -> datetime | None:
    for key in ("finished", "time"):
        value = report.get(key)
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(value).astimezone()
        if isinstance(value, str) and value:
            try:
                return datetime.fromisoformat(value)
            except ValueError:
                continue
    return None


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
