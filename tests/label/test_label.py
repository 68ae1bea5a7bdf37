"""The status label: content (pure), PDF text through pdftotext, PNG, sizes."""

from __future__ import annotations

import copy
import io
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from pdimport.job.lifecycle import FINAL_JOB_STATES, JobState
from pdimport.label import content
from pdimport.label import render as label

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2025, 1, 5, 14, 3)
JOB = "20250105-140312-ab12cd34"

needs_poppler = pytest.mark.skipif(
    not shutil.which("pdftotext") or not shutil.which("pdftoppm"), reason="needs poppler-utils"
)


def japanese_name() -> str:
    """Patient's Name as read from a medium encoded in ISO 2022 IR 87
    (JIS X 0208 kanji/kana via ISO 2022 escapes, PS3.5 §6.1.2.5.3)."""
    ds = Dataset()
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    ds.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    ds.PatientID = "A-0012345"
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=False, little_endian=True, implicit_vr=False)
    raw = buf.getvalue()
    assert b"\x1b$B" in raw  # really escape-encoded on the "disc"
    return str(pydicom.dcmread(io.BytesIO(raw), force=True).PatientName)


def sample_report(status: str = "imported") -> dict:
    return {
        "job": JOB,
        "mode": "import",
        "source": {
            "kind": "device",
            "path": "/dev/sr0",
            "label": "PDI_20250104",
            "facility": "東京中央病院 Tokyo Central Hospital",
        },
        "status": status,
        "hold_reasons": [],
        "flags": {"multi_patient": False, "rt": True, "ai": True, "other_content": True},
        "patients": [
            {
                "id": "A-0012345",
                "issuer": "",
                "name": japanese_name(),
                "birth_date": "19700101",
                "sex": "M",
                "local_id": "0098765",
                "studies": [
                    {
                        "uid": "1.2.3",
                        "date": "20241220",
                        "description": "CT 胸部",
                        "series": [
                            {"uid": "1.2.3.1", "modality": "CT", "instances": 120},
                            {"uid": "1.2.3.2", "modality": "SR", "instances": 1},
                        ],
                    },
                    {
                        "uid": "1.2.4",
                        "date": "20241221",
                        "description": "RT Plan",
                        "series": [
                            {"uid": "1.2.4.1", "modality": "RTPLAN", "instances": 1},
                            {"uid": "1.2.4.2", "modality": "RTSTRUCT", "instances": 1},
                        ],
                    },
                ],
            }
        ],
        "counts": {
            "files": 131,
            "dicom": 123,
            "other_content": 2,
            "converted": 2,
            "sent": 123,
            "failed": 0,
            "skipped": 0,
            "held": 0,
        },
        "instances": [],
        "problems": [],
    }


def pdftext(pdf: Path) -> str:
    res = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, check=True)
    return res.stdout.decode("utf-8")


# ------------------------------------------------------------------ pure content
def test_person_name_groups_split_on_equals() -> None:
    main, alpha = content.format_person_name("Yamada^Tarou=山田^太郎=やまだ^たろう")
    assert main == "山田 太郎 (やまだ たろう)"
    assert alpha == "Yamada, Tarou"
    assert content.format_person_name("DOE^JOHN") == ("DOE, JOHN", "")
    assert content.format_person_name("=山田^太郎") == ("山田 太郎", "")
    assert content.format_person_name(
        {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}
    ) == (
        "山田 太郎",
        "Yamada, Tarou",
    )


def test_status_words_per_status() -> None:
    for status, words in (
        ("imported", "取込完了  IMPORTED"),
        ("held", "要確認  CHECK"),
        ("partial", "要確認  CHECK"),
        ("failed", "失敗  FAILED"),
    ):
        lines = content.label_content(sample_report(status), now=NOW)
        assert lines[0].text == words and lines[0].style == "band"


def test_every_state_a_job_rests_in_has_words() -> None:
    resting = set(FINAL_JOB_STATES) | {JobState.WAITING_FOR_DESTINATION}
    assert resting <= set(content.STATUS_WORDS)


def test_waiting_and_unknown_statuses_are_not_success_or_failure() -> None:
    r = sample_report("waiting_for_destination")
    assert content.label_content(r, now=NOW)[0].text == "送信待ち  QUEUED"
    r = sample_report("weird") | {"job": None}
    lines = content.label_content(r, now=NOW)
    assert lines[0].text == "要確認  CHECK" and lines[-1].text == "Job -"


def test_reasons_in_plain_words() -> None:
    r = sample_report("held")
    r["hold_reasons"] = ["multi_patient", "no_local_patient", "ai_held"]
    r["patients"].append(copy.deepcopy(r["patients"][0]) | {"id": "B-2"})
    r["problems"] = [
        {"code": "truncated", "path": "a", "detail": ""},
        {"code": "not_dicom", "path": "b", "detail": ""},
        {"code": "not_dicom", "path": "b", "detail": "twice, one file"},
    ]
    words = content.reasons(r)
    assert ("1枚に複数の患者 (2名)", "2 patients on the disc") in words
    assert ("当院の患者と一致しません", "no matching local patient") in words
    assert ("AI画像を保留", "AI content held") in words
    assert ("読めないファイル 2件", "2 unreadable files") in words


def test_study_line_counts_delivered() -> None:
    r = sample_report("partial")
    study = r["patients"][0]["studies"][0]
    assert content.study_sent(study, r) is None  # the report cannot tell
    for s, sent in zip(study["series"], (100, 1)):
        s["sent"] = sent
    line = content.study_line(study, r)
    assert line.startswith("2024-12-20  CT,SR  送信 101/121")
    fresh = sample_report("imported")
    assert content.study_sent(fresh["patients"][0]["studies"][0], fresh) == 121


def test_facility_falls_back_to_studies() -> None:
    r = sample_report()
    del r["source"]["facility"]
    assert content.facility_of(r) == ""
    r["patients"][0]["studies"][1]["institution"] = "Osaka General"
    assert content.facility_of(r) == "Osaka General"


# ------------------------------------------------------------------ rendering
@needs_poppler
@pytest.mark.parametrize("size", ["62mm", "4x2"])
def test_japanese_label_text_found_by_pdftotext(tmp_path: Path, size: str) -> None:
    r = sample_report("partial")
    r["counts"].update(sent=121, failed=2)
    r["problems"] = [{"code": "truncated", "path": "DICOM/I1", "detail": ""}]
    pdf = label.render_label(r, size, tmp_path / "l.pdf", "pdf", drive="bay 2", now=NOW)
    text = pdftext(pdf)
    squashed = text.replace(" ", "")
    assert "山田太郎" in squashed  # kanji name
    assert "やまだたろう" in squashed  # phonetic group
    assert "Yamada, Tarou" in text
    assert "要確認" in text and "CHECK" in text
    assert "sent 121/123" in text and "refused 2" in text and "unreadable 1" in text
    assert "A-0012345" in text and "0098765" in text and "1970-01-01" in text
    assert "東京中央病院" in text and "bay 2" in text and JOB in text
    assert "RT" in text and "AI" in text and "Other content 2" in text


@needs_poppler
def test_imported_and_failed_words(tmp_path: Path) -> None:
    text = pdftext(label.render_label(sample_report("imported"), "4x2", tmp_path / "a.pdf"))
    assert "取込完了" in text and "IMPORTED" in text
    text = pdftext(label.render_label(sample_report("failed"), "62mm", tmp_path / "b.pdf"))
    assert "失敗" in text and "FAILED" in text


@needs_poppler
def test_page_sizes(tmp_path: Path) -> None:
    r = sample_report()
    for size, width_mm, height_mm in (("4x2", 101.6, 50.8), ("62mm", 62.0, None)):
        pdf = label.render_label(r, size, tmp_path / f"{size}.pdf")
        info = subprocess.run(
            ["pdfinfo", str(pdf)], check=True, capture_output=True, text=True
        ).stdout
        w, h = [float(v) for v in info.split("Page size:")[1].split("pts")[0].split("x")]
        assert abs(w / label.MM - width_mm) < 0.1
        if height_mm:
            assert abs(h / label.MM - height_mm) < 0.1
        else:
            assert h > 40 * label.MM  # continuous: as long as the content


@needs_poppler
def test_many_studies_still_fit_a_4x2_label(tmp_path: Path) -> None:
    r = sample_report()
    st = r["patients"][0]["studies"][0]
    r["patients"][0]["studies"] = [dict(st, uid=f"1.2.{i}") for i in range(30)]
    text = pdftext(label.render_label(r, "4x2", tmp_path / "x.pdf"))
    assert "more studies" in text
    assert JOB in text  # the footer is never pushed off the label


@needs_poppler
def test_qr_code_encodes_job_id(tmp_path: Path) -> None:
    zbar = shutil.which("zbarimg")
    png = label.render_label(sample_report(), "4x2", tmp_path / "q.png", "png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if not zbar:
        pytest.skip("zbarimg not installed: QR drawn but not decoded")
    out = subprocess.run(
        [zbar, "--raw", "-q", str(png)], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == JOB


@needs_poppler
def test_example_png_for_readme(tmp_path: Path) -> None:
    """Writes hardware/label-example.png (shown in the README)."""
    r = sample_report("partial")
    r["counts"].update(sent=121, failed=2)
    r["problems"] = [{"code": "truncated", "path": "DICOM/I1", "detail": ""}]
    for s, sent in zip(r["patients"][0]["studies"][0]["series"], (118, 1)):
        s["sent"] = sent
    for s in r["patients"][0]["studies"][1]["series"]:
        s["sent"] = 1
    out = REPO / "hardware" / "label-example.png"
    label.render_label(r, "4x2", out, "png", drive="bay 2 (/dev/sr0)", now=NOW, dpi=300)
    assert out.stat().st_size > 10_000


def test_no_font_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(label, "_font_path", None)
    monkeypatch.setattr(label, "_font_candidates", lambda: ["/nonexistent/font.ttf"])
    with pytest.raises(label.LabelError, match="no Japanese TrueType font"):
        label.find_cjk_font()


def test_bad_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(label.LabelError, match="unknown label size"):
        label.render_label(sample_report(), "A4", tmp_path / "x.pdf")


def test_decisions_are_on_the_label_with_who_took_them() -> None:
    r = sample_report("imported") | {
        "decisions": [
            {"patient": "F123", "action": "release", "local_id": "L0001", "operator": "Tanaka"},
            {"patient": "F456", "action": "release", "local_id": None, "operator": "Tanaka"},
            {"patient": "F789", "action": "discard", "reason": "wrong disc", "operator": "Sato"},
        ]
    }
    texts = [line.text for line in content.label_content(r, now=NOW) if line.kind == "decision"]
    assert texts == [
        "承認 released F123 → 当院ID L0001 (Tanaka)",
        "承認 released F456 as on the disc (Tanaka)",
        "破棄 discarded F789: wrong disc (Sato)",
    ]
