"""End to end, issue 5: Other Content converted into the medium's study, RT
sets kept and routed, AI results marked / held / skipped - through
`pdimport import` into dcmtk storescp on 127.0.0.1.

Inputs are made here: the CT study by fixtures_dicom, the Other Content by
reportlab and Pillow, the RT set from pydicom's bundled RTSTRUCT/RTPLAN/RTDOSE
(fresh UIDs, the CT's patient and study), the SEG by highdicom.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures_dicom import dciodvfy_errors, fresh_copy, make_ct, make_ct_series
from pydicom import dcmread
from pydicom.encaps import generate_fragments
from pydicom.uid import JPEGBaseline8Bit, SecondaryCaptureImageStorage, generate_uid
from test_import import problems, run_cli

from pdimport.cli import main
from pdimport.store.spool import Spool

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
RT_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.481.2",
    "1.2.840.10008.5.1.4.1.1.481.3",
    "1.2.840.10008.5.1.4.1.1.481.5",
}
#: The CT's patient (fixtures_dicom._ct_dataset defaults).
PATIENT = {
    "PatientName": "Test^Patient",
    "IssuerOfPatientID": "TESTHOSP",
    "PatientBirthDate": "19700101",
    "PatientSex": "O",
}


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


# ------------------------------------------------------------------ builders
def ct_study(disc: Path, n: int = 3, patient_id: str = "POL001", **kw) -> tuple[list[Path], str]:
    series = make_ct_series(disc / "DICOM" / "ST1" / "SE1", n, patient_id=patient_id, **kw)
    return series, str(dcmread(series[0], stop_before_pixels=True).StudyInstanceUID)


def write_pdf(path: Path, title: str = "Referral letter") -> None:
    from reportlab.pdfgen import canvas

    path.parent.mkdir(parents=True, exist_ok=True)
    c = canvas.Canvas(str(path))
    c.setTitle(title)
    c.drawString(72, 720, "Referral: please compare with the prior CT.")
    c.showPage()
    c.save()


def write_other_content(root: Path) -> dict[str, Path]:
    """A PDF, two JPEGs, a PNG and a 3-page TIFF, as a referral disc carries them."""
    from PIL import Image, ImageDraw

    docs = root / "DOCS"
    docs.mkdir(parents=True)
    write_pdf(docs / "LETTER.PDF")

    def picture(size, colour, mode="RGB"):
        img = Image.new(mode, size, colour)
        ImageDraw.Draw(img).rectangle(
            [4, 4, size[0] // 2, size[1] // 2], fill=(255, 255, 255) if mode == "RGB" else 255
        )
        return img

    picture((96, 64), (200, 30, 30)).save(docs / "PHOTO1.JPG", "JPEG", quality=85)
    picture((40, 56), 90, mode="L").save(docs / "PHOTO2.JPG", "JPEG", quality=70)
    picture((50, 30), (10, 120, 200)).save(docs / "CHART.PNG", "PNG")
    pages = [picture((32, 48), (i * 60, 100, 50)) for i in range(3)]
    pages[0].save(docs / "SCAN.TIF", "TIFF", save_all=True, append_images=pages[1:])
    return {p.name: p for p in docs.iterdir()}


def ai_secondary_capture(path: Path, study_uid: str, patient_id: str = "POL001") -> Path:
    """A CAD heat map as products send it: Secondary Capture, DERIVED\\SECONDARY,
    the product named in Manufacturer."""
    return make_ct(
        path,
        patient_id=patient_id,
        study_uid=study_uid,
        series_uid=generate_uid(),
        SOPClassUID=SecondaryCaptureImageStorage,
        ImageType=["DERIVED", "SECONDARY"],
        Modality="OT",
        Manufacturer="Lunit",
        ManufacturerModelName="INSIGHT CXR",
        SeriesDescription="Abnormality map",
        SeriesNumber="77",
    )


def highdicom_seg(path: Path, source: Path) -> Path:
    """A binary SEG on one CT slice, built by highdicom."""
    import highdicom as hd
    import numpy as np
    from pydicom.sr.codedict import codes

    ct = dcmread(source)
    mask = np.zeros((1, ct.Rows, ct.Columns), dtype=bool)
    mask[0, 10:30, 12:40] = True
    algorithm = hd.AlgorithmIdentificationSequence(
        name="LesionNet", family=codes.cid7162.ArtificialIntelligence, version="1.0"
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="lesion",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    seg = hd.seg.Segmentation(
        source_images=[ct],
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=generate_uid(),
        series_number=78,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="LesionNet Inc.",
        manufacturer_model_name="LesionNet",
        software_versions="1.0",
        device_serial_number="0001",
        series_description="Lesion segmentation",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path)
    return path


# ------------------------------------------------------------------ helpers
def received(scp) -> dict[str, object]:
    """SOP Instance UID -> dataset of everything a storescp holds."""
    out = {}
    for path in scp.files():
        ds = dcmread(path)  # ds.filename: where the storescp wrote it
        out[str(ds.SOPInstanceUID)] = ds
    return out


def uids_of(paths) -> set[str]:
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths}


def snapshot(scp) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in scp.files()}


def by_uid(rep: dict) -> dict[str, dict]:
    return {i["sop_instance_uid"]: i for i in rep["instances"]}


# ------------------------------------------------------- 1. Other Content
def test_other_content_joins_the_study(tmp_path, state, storescp, capsys):
    disc = tmp_path / "disc"
    series, study_uid = ct_study(disc)
    sources = write_other_content(disc)
    # +xa: the JPEG Baseline SC must arrive as JPEG; +B: as the bytes we sent.
    scp = storescp(accept_all=True, bit_preserving=True)
    args = ("import", str(disc), "--dest", scp.url, "--state-dir", str(state))
    rc, rep = run_cli(capsys, *args)
    assert rc == 0, rep["problems"]
    assert rep["status"] == "imported"

    # one DICOM object per PDF / JPEG / PNG and per TIFF page
    conv = rep["converted"]
    per_file = {}
    for entry in conv:
        per_file.setdefault(entry["path"], []).append(entry)
    assert {p: len(v) for p, v in per_file.items()} == {
        "DOCS/LETTER.PDF": 1,
        "DOCS/PHOTO1.JPG": 1,
        "DOCS/PHOTO2.JPG": 1,
        "DOCS/CHART.PNG": 1,
        "DOCS/SCAN.TIF": 3,
    }
    assert rep["counts"]["converted"] == 7
    assert rep["flags"]["other_content"] is True
    assert not problems(rep, "unsupported_content")

    got = received(scp)
    converted_uids = {e["sop_instance_uid"] for e in conv}
    assert set(got) == uids_of(series) | converted_uids
    for entry in conv:
        ds = got[entry["sop_instance_uid"]]
        name = entry["path"].rsplit("/", 1)[-1]
        assert ds.StudyInstanceUID == study_uid, name  # joined the CT's study
        ct = dcmread(series[0], stop_before_pixels=True)
        assert ds.StudyID == ct.StudyID  # the study's own attributes repeated
        assert ds.PatientID == "POL001" and str(ds.PatientName) == "Test^Patient"
        assert ds.IssuerOfPatientID == "TESTHOSP"
        assert ds.ConversionType == "WSD"
        assert name in str(ds.SeriesDescription), (name, ds.SeriesDescription)
        assert ds.SOPClassUID == entry["sop_class_uid"]
        assert ds.SeriesInstanceUID not in {str(dcmread(series[0]).SeriesInstanceUID)}
        errors = dciodvfy_errors(str(ds.filename), new=True)
        assert not errors, (name, errors)
        assert by_uid(rep)[entry["sop_instance_uid"]]["state"] == "sent"
    assert got[per_file["DOCS/LETTER.PDF"][0]["sop_instance_uid"]].SOPClassUID == ENCAPSULATED_PDF

    # JPEG -> SC: the bitstream is the file, byte for byte
    for name in ("PHOTO1.JPG", "PHOTO2.JPG"):
        ds = got[per_file[f"DOCS/{name}"][0]["sop_instance_uid"]]
        assert ds.SOPClassUID == SecondaryCaptureImageStorage
        assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
        # the first item is the (empty) Basic Offset Table, then one fragment
        [bot, fragment] = list(generate_fragments(ds.PixelData))
        assert bot == b""
        source = sources[name].read_bytes()
        assert fragment in (source, source + b"\0"), name
        assert len(fragment) - len(source) == len(source) % 2

    # the same import again: the same objects, recognised, nothing sent
    before = snapshot(scp)
    rc, again = run_cli(capsys, *args)
    assert rc == 0, again["problems"]
    assert {e["sop_instance_uid"] for e in again["converted"]} == converted_uids
    assert again["counts"]["already_sent"] == len(series) + 7
    assert again["counts"]["sent"] == len(series) + 7
    assert all(i.get("previously_sent") for i in again["instances"])
    assert snapshot(scp) == before


# ---------------------------------------------------------------- 2. RT set
def rt_set(disc: Path, study_uid: str, patient_id: str = "POL001") -> list[Path]:
    return [
        fresh_copy(
            name,
            disc / "RT" / name.split(".")[0].upper(),
            patient_id=patient_id,
            StudyInstanceUID=study_uid,
            **PATIENT,
        )
        for name in ("rtstruct.dcm", "rtplan.dcm", "rtdose.dcm")
    ]


def test_rt_set_default_destination_and_rt_route(tmp_path, state, storescp, capsys):
    disc = tmp_path / "disc"
    series, study_uid = ct_study(disc)
    rt_files = rt_set(disc, study_uid)
    for path in rt_files:  # fresh_copy keeps the File Meta in step with the dataset
        ds = dcmread(path)
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    pacs, tps = storescp(aet="PACS"), storescp(aet="TPS")
    rc, rep = run_cli(
        capsys,
        "import",
        str(disc),
        "--dest",
        pacs.url,
        "--route",
        f"rt={tps.url}",
        "--state-dir",
        str(state),
    )
    assert rc == 0, rep["problems"]
    assert not problems(rep, "uid_mismatch")
    assert rep["flags"]["rt"] is True
    rt_uids, ct_uids = uids_of(rt_files), uids_of(series)
    assert set(received(pacs)) == rt_uids | ct_uids  # everything to the default
    tps_got = received(tps)
    assert set(tps_got) == rt_uids  # only the RT objects to the planning system
    assert {str(ds.SOPClassUID) for ds in tps_got.values()} == RT_CLASSES
    assert all(ds.StudyInstanceUID == study_uid for ds in tps_got.values())

    insts = by_uid(rep)
    for uid in rt_uids:
        assert insts[uid]["kind"] == "rt"
        assert insts[uid]["state"] == "sent"
        dests = insts[uid]["destinations"]
        assert len(dests) == 2 and set(dests.values()) == {"sent"}, dests
        assert any("TPS" in key for key in dests) and any("PACS" in key for key in dests)
    for uid in ct_uids:
        assert insts[uid]["kind"] == "image"
        dests = insts[uid]["destinations"]
        assert len(dests) == 1 and "PACS" in next(iter(dests)), dests


def test_bad_route_is_a_usage_error(tmp_path, state, capsys):
    disc = tmp_path / "disc"
    ct_study(disc, n=1)
    rc = main(
        [
            "import",
            str(disc),
            "--dest",
            "dicom://PACS@127.0.0.1:1",
            "--route",
            "scans=dicom://X@127.0.0.1:2",
            "--state-dir",
            str(state),
        ]
    )
    assert rc == 64
    assert "route" in capsys.readouterr().err


# ------------------------------------------------------------ 3. AI marked
def ai_medium(disc: Path, with_pdf: bool = True) -> tuple[list[Path], list[Path], str]:
    series, study_uid = ct_study(disc)
    ai = [
        ai_secondary_capture(disc / "DICOM" / "ST1" / "SE2" / "IM0001", study_uid),
        highdicom_seg(disc / "DICOM" / "ST1" / "SE3" / "IM0001", series[0]),
    ]
    if with_pdf:
        write_pdf(disc / "DOCS" / "LETTER.PDF")
    return series, ai, study_uid


def test_ai_results_arrive_marked(tmp_path, state, storescp, capsys):
    disc = tmp_path / "disc"
    series, ai, _study = ai_medium(disc, with_pdf=False)
    originals = {str(dcmread(p).SOPInstanceUID): dcmread(p) for p in ai}
    scp = storescp()
    rc, rep = run_cli(capsys, "import", str(disc), "--dest", scp.url, "--state-dir", str(state))
    assert rc == 0, rep["problems"]
    assert rep["flags"]["ai"] is True
    got = received(scp)
    assert set(got) == uids_of(series) | set(originals)
    insts = by_uid(rep)
    for uid, original in originals.items():
        assert insts[uid]["kind"] == "ai" and insts[uid]["state"] == "sent"
        ds = got[uid]  # same SOP Instance UID: a coercion, not a new object
        old = str(original.get("SeriesDescription", ""))
        assert old  # both inputs carry one, so the record below is meaningful
        assert str(ds.SeriesDescription).startswith("[AI]"), ds.SeriesDescription
        assert old in str(ds.SeriesDescription)
        [item] = ds.OriginalAttributesSequence
        assert item.ReasonForTheAttributeModification == "COERCE"
        assert str(item.ModifyingSystem).strip()
        assert item.AttributeModificationDateTime
        [modified] = item.ModifiedAttributesSequence
        assert str(modified.SeriesDescription) == old
        assert "InstanceCoercionDateTime" in ds
    seg = got[str(dcmread(ai[1]).SOPInstanceUID)]
    assert seg.SOPClassUID == SEGMENTATION
    assert not dciodvfy_errors(
        str(seg.filename), new=True
    )  # highdicom's SEG, still valid once marked
    # the original images are untouched
    for uid in uids_of(series):
        assert insts[uid]["kind"] == "image"
        assert "OriginalAttributesSequence" not in got[uid]
        assert got[uid].SeriesDescription == "AXIAL 1mm"


# ------------------------------------------------------- 4. hold and skip
def test_ai_hold_holds_everything(tmp_path, state, storescp, capsys):
    disc = tmp_path / "disc"
    ai_medium(disc)
    scp = storescp()
    rc, rep = run_cli(
        capsys, "import", str(disc), "--dest", scp.url, "--ai", "hold", "--state-dir", str(state)
    )
    assert rc == 1
    assert rep["status"] == "held"
    assert "ai_content" in rep["hold_reasons"]
    assert rep["flags"]["ai"] is True
    assert scp.files() == []
    assert rep["converted"] == [] and rep["counts"]["converted"] == 0
    assert rep["counts"]["sent"] == 0
    assert {i["state"] for i in rep["instances"]} == {"held"}
    assert not any(i.get("converted") for i in rep["instances"])


def test_ai_skip_sends_the_rest(tmp_path, state, storescp, capsys):
    disc = tmp_path / "disc"
    series, ai, study_uid = ai_medium(disc)
    ai_uids = uids_of(ai)
    scp = storescp()
    rc, rep = run_cli(
        capsys, "import", str(disc), "--dest", scp.url, "--ai", "skip", "--state-dir", str(state)
    )
    assert rc == 0, rep["problems"]
    assert rep["flags"]["ai"] is True  # the report says AI content was present
    assert rep["hold_reasons"] == []
    insts = by_uid(rep)
    for uid in ai_uids:
        assert insts[uid]["kind"] == "ai"
        assert insts[uid]["state"] == "skipped"
        assert "destinations" not in insts[uid]
        spooled = Spool(state / "spool", clean=False).path(insts[uid]["sha256"])
        assert spooled.is_file()  # kept in the spool
        assert dcmread(spooled).SOPInstanceUID == uid
    assert rep["counts"]["skipped"] == len(ai_uids)
    [pdf] = rep["converted"]
    got = received(scp)
    assert set(got) == uids_of(series) | {pdf["sop_instance_uid"]}
    assert not ai_uids & set(got)
    assert got[pdf["sop_instance_uid"]].StudyInstanceUID == study_uid


# ------------------------------------------------------ 5. multi-patient
def test_multi_patient_medium_converts_nothing(tmp_path, state, storescp, capsys):
    disc = tmp_path / "disc"
    make_ct_series(disc / "A", 2, patient_id="P-ONE", patient_name="One^Patient")
    make_ct_series(disc / "B", 2, patient_id="P-TWO", patient_name="Two^Patient")
    write_pdf(disc / "DOCS" / "LETTER.PDF")
    scp = storescp()
    rc, rep = run_cli(capsys, "import", str(disc), "--dest", scp.url, "--state-dir", str(state))
    assert rc == 1
    assert rep["status"] == "held" and rep["hold_reasons"] == ["multi_patient"]
    assert rep["flags"]["other_content"] is True
    assert rep["converted"] == [] and rep["counts"]["converted"] == 0
    assert len(rep["instances"]) == 4  # no converted object among them
    assert not any(i.get("converted") for i in rep["instances"])
    assert scp.files() == []


def test_a_medium_of_documents_only_ends_partial_for_a_person(tmp_path, state, storescp, capsys):
    disc = tmp_path / "disc"
    write_other_content(disc)  # documents, and no DICOM patient to file them with
    scp = storescp()
    rc, rep = run_cli(capsys, "import", str(disc), "--dest", scp.url, "--state-dir", str(state))
    assert rc == 1 and rep["status"] == "partial", rep["problems"]
    assert main(["jobs", "--json", "--state-dir", str(state)]) == 0
    assert '"state": "partial"' in capsys.readouterr().out
