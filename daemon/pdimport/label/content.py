"""What the status label says, line by line — pure logic, no fonts or PDF.

The clerk never looks at a screen: the label is the user interface. It says,
large and in Japanese and English, whether everything is in the PACS
(取込完了 / IMPORTED), whether a person must look (要確認 / CHECK, with the
reasons in plain words) or whether the import failed (失敗 / FAILED); then the
patient *as on the medium* (Patient's Name with its alphabetic, ideographic and
phonetic component groups, PS3.5 §6.2.1), the studies, the markers for RT, AI
and Other Content, the source facility, the drive, the time and the job ID.

:func:`label_content` turns a JSON report (DESIGN.md contract) into a list of
:class:`Line` values; :mod:`pdimport.label.render` lays them out and draws
them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pdimport.job.lifecycle import JobState

# --------------------------------------------------------------------------- words
#: job state -> (Japanese, English, sub-line Japanese, sub-line English); a
#: word for every state a job can end a step in (a test holds it to that).
STATUS_WORDS: dict[str, tuple[str, str, str, str]] = {
    JobState.IMPORTED: ("取込完了", "IMPORTED", "すべてPACSに送信済み", "all delivered to PACS"),
    JobState.HELD: ("要確認", "CHECK", "保留中・PACSへ未送信", "held, nothing sent"),
    JobState.PARTIAL: ("要確認", "CHECK", "一部のみ送信", "only partly delivered"),
    JobState.FAILED: ("失敗", "FAILED", "取り込めませんでした", "nothing imported"),
    # Read safely into the spool, the PACS has not answered yet; it will be sent later.
    JobState.WAITING_FOR_DESTINATION: (
        "送信待ち",
        "QUEUED",
        "読取完了・PACSへ送信待ち",
        "read safely, will be sent later",
    ),
    JobState.DISCARDED: ("破棄", "DISCARDED", "送信せずに破棄しました", "discarded, nothing sent"),
    JobState.SCANNED: ("確認のみ", "SCANNED", "送信していません", "inventory only, nothing sent"),
}
#: A status this module does not know is never shown as success or failure.
UNKNOWN_STATUS = ("要確認", "CHECK", "状態不明", "unknown status")

#: hold reason / derived reason -> (Japanese, English); ``{n}`` is a count,
#: ``{s}`` the English plural ending.
REASON_WORDS: dict[str, tuple[str, str]] = {
    "multi_patient": ("1枚に複数の患者 ({n}名)", "{n} patients on the disc"),
    "unidentified_patient": ("患者を特定できない画像あり", "images that name no patient"),
    "no_local_patient": ("当院の患者と一致しません", "no matching local patient"),
    "no_match": ("当院の患者と一致しません", "no matching local patient"),
    "ambiguous_match": ("当院の患者が複数該当", "several local patients match"),
    "identity_source_down": ("患者照合先に接続できません", "patient registry not reachable"),
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
        "read_abandoned",
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
    lines += [Line(text, 6.5, wrap=True, kind="decision") for text in decision_lines(report)]
    tags = markers(report)
    if tags:
        lines.append(Line("|".join(tags), 7.0, "tags", wrap=False, kind="tags"))
    lines.append(Line(counts_line(report), 6.5, wrap=True, kind="counts"))
    lines += _footer_lines(report, drive, now)
    return lines


def label_status(report: dict[str, Any]) -> str:
    """The status word to print: the report's job state."""
    return str(report.get("status") or JobState.FAILED)


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


def decision_lines(report: dict[str, Any]) -> list[str]:
    """A person's decisions on the job, each with who took it."""
    out = []
    for d in report.get("decisions") or []:
        who, patient = d.get("operator", ""), d.get("patient") or "-"
        if d.get("action") == "discard":
            out.append(f"破棄 discarded {patient}: {d.get('reason', '')} ({who})")
        elif d.get("local_id") and d.get("local_id") != patient:
            out.append(f"承認 released {patient} → 当院ID {d['local_id']} ({who})")
        else:
            out.append(f"承認 released {patient} as on the disc ({who})")
    return out


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
    lines = [Line(first, 6.5, kind="facility")]
    token = source.get("cloudpdi")
    if token:
        lines.append(Line(cloudpdi_line(token), 6.5, kind="cloudpdi"))
    return [
        *lines,
        Line(second, 6.5, kind="where"),
        Line(f"Job {report.get('job') or '-'}", 6.5, kind="job"),
    ]


def cloudpdi_line(token: dict[str, Any]) -> str:
    """A Cloud PDI token's sender, receiver, issue date and consent."""
    parts = [f"クラウドPDI Cloud PDI {token.get('document_id') or '-'}"]
    who = " → ".join(
        x
        for x in (
            " ".join(x for x in (token.get("sending_facility"), token.get("sender")) if x),
            token.get("receiver") or "",
        )
        if x
    )
    if who:
        parts.append(f"送信 {who}")
    if token.get("issued"):
        parts.append(f"発行 issued {str(token['issued'])[:10]}")
    parts.append(f"同意 consent {token.get('consent') or '不明 unknown'}")
    return "  ".join(parts)


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
