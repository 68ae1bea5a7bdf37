"""AI marking by evidence (field fault: a SEMIAUTOMATIC SEG made in 3D Slicer
arrived as "[AI] ...", every SEG was treated as AI).

A SEG is an AI result only when a segment's Segment Algorithm Type is
AUTOMATIC or an algorithm identification names the algorithm; each AI
instance's report entry says which attribute decided (``ai_evidence``).
SEGs are built here by highdicom, then edited the way other tools write
them (3D Slicer's dcmqi: SEMIAUTOMATIC with a Segment Algorithm Name and no
Segmentation Algorithm Identification Sequence).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from test_import import run_cli
from test_policy_e2e import ai_secondary_capture, ct_study, received

from pdimport import settings as settings_mod
from pdimport.model import Header
from pdimport.policy.classify import classify_with_evidence
from pdimport.policy.group import Instance
from pdimport.policy.rules import ai_evidence, ai_rules, detect_ai

SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
AUTOMATIC = "SegmentSequence[1].SegmentAlgorithmType=AUTOMATIC"
IDENTIFIED = (
    "SegmentSequence[1].SegmentationAlgorithmIdentificationSequence[1].AlgorithmName='LesionNet'"
)
LUNIT = r"ImageType=DERIVED\SECONDARY and Manufacturer='Lunit' matches pattern '\bLunit\b'"


def make_seg(
    path: Path, source: Path, algorithm_type: str, identified: bool = False, label: str = "lesion"
) -> Path:
    """A binary SEG on one CT slice. ``identified``: with a Segmentation
    Algorithm Identification Sequence (highdicom's SEMIAUTOMATIC needs one);
    without, the Segment Algorithm Type is written as other tools write it."""
    import highdicom as hd
    import numpy as np
    from pydicom.sr.codedict import codes

    ct = dcmread(source)
    mask = np.zeros((1, ct.Rows, ct.Columns), dtype=bool)
    mask[0, 10:30, 12:40] = True
    kind = hd.seg.SegmentAlgorithmTypeValues
    algorithm = None
    if identified:
        algorithm = hd.AlgorithmIdentificationSequence(
            name="LesionNet", family=codes.cid7162.ArtificialIntelligence, version="1.0"
        )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=kind[algorithm_type] if identified else kind.MANUAL,
        algorithm_identification=algorithm,
    )
    seg = hd.seg.Segmentation(
        source_images=[ct],
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=hd.UID(),
        series_number=80,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="Slicer Community",
        manufacturer_model_name="3D Slicer",
        software_versions="5.6.2",
        device_serial_number="0001",
        series_description=f"{label} segmentation",
    )
    if not identified and algorithm_type != "MANUAL":
        [item] = seg.SegmentSequence
        item.SegmentAlgorithmType = algorithm_type
        item.SegmentAlgorithmName = "SegmentEditor"  # PS3.3: required unless MANUAL
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path)
    return path


@pytest.fixture
def source(tmp_path: Path) -> Path:
    series, _study = ct_study(tmp_path / "ct", n=1)
    return series[0]


# -------------------------------------------------------------- the rules
@pytest.mark.parametrize(
    ("algorithm_type", "identified", "kind", "evidence"),
    [
        ("MANUAL", False, "other", ""),
        ("SEMIAUTOMATIC", False, "other", ""),
        ("AUTOMATIC", False, "ai", AUTOMATIC),
        ("SEMIAUTOMATIC", True, "ai", IDENTIFIED),
        ("AUTOMATIC", True, "ai", AUTOMATIC),
    ],
    ids=["manual", "semiautomatic-slicer", "automatic", "identified", "automatic-identified"],
)
def test_a_seg_is_ai_only_by_evidence(
    tmp_path: Path, source: Path, algorithm_type: str, identified: bool, kind: str, evidence: str
) -> None:
    ds = dcmread(make_seg(tmp_path / "seg.dcm", source, algorithm_type, identified))
    assert ds.SegmentSequence[0].SegmentAlgorithmType == algorithm_type
    assert classify_with_evidence(ds) == (kind, evidence)


def test_the_rules_come_from_the_settings(tmp_path: Path, source: Path) -> None:
    semi = dcmread(make_seg(tmp_path / "semi.dcm", source, "SEMIAUTOMATIC"))
    identified = dcmread(make_seg(tmp_path / "id.dcm", source, "SEMIAUTOMATIC", identified=True))
    defaults = settings_mod.defaults()
    assert classify_with_evidence(semi, ai_rules(defaults))[0] == "other"
    wider = defaults.replace(ai__segment_algorithm_types=["AUTOMATIC", "SEMIAUTOMATIC"])
    assert classify_with_evidence(semi, ai_rules(wider)) == (
        "ai",
        "SegmentSequence[1].SegmentAlgorithmType=SEMIAUTOMATIC",
    )
    types_only = defaults.replace(ai__algorithm_identification=False)
    assert classify_with_evidence(identified, ai_rules(types_only)) == ("other", "")
    assert classify_with_evidence(identified, ai_rules(defaults))[0] == "ai"


def test_other_ai_evidence_names_the_attribute_and_the_pattern() -> None:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.Manufacturer = "Lunit"
    assert classify_with_evidence(ds) == ("ai", LUNIT)
    equipment = Dataset()
    equipment.ManufacturerModelName = "AI-Rad Companion Chest CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ContributingEquipmentSequence = [equipment]
    equipment_evidence = (
        "ContributingEquipmentSequence[1].ManufacturerModelName="
        "'AI-Rad Companion Chest CT' matches pattern 'AI-Rad Companion'"
    )
    assert classify_with_evidence(ds, ["AI-Rad Companion"]) == ("ai", equipment_evidence)
    cad = Dataset()
    cad.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.50"
    assert classify_with_evidence(cad) == (
        "ai",
        "SOPClassUID=1.2.840.10008.5.1.4.1.1.88.50 (Mammography CAD SR)",
    )


def test_detect_ai_reads_every_seg_and_notes_the_evidence(tmp_path: Path, source: Path) -> None:
    files = {
        "manual": make_seg(tmp_path / "m.dcm", source, "MANUAL"),
        "auto": make_seg(tmp_path / "a.dcm", source, "AUTOMATIC"),
    }
    instances = [
        # kind "ai" is what the SOP class table says of every SEG
        Instance(name, name, Header("part10", "", SEGMENTATION, name, image_type=""), kind="ai")
        for name in files
    ]
    for inst in instances:
        inst.send_sha256 = inst.path
    detect_ai(instances, lambda sha: files[sha], ai_rules(settings_mod.defaults()))
    manual, auto = instances
    assert (manual.kind, ai_evidence(manual)) == ("other", "")
    assert (auto.kind, ai_evidence(auto)) == ("ai", AUTOMATIC)


# ------------------------------------------------------------ end to end
def test_only_automatic_segs_arrive_marked_and_the_report_says_why(
    tmp_path: Path, storescp, capsys
) -> None:
    disc = tmp_path / "disc"
    series, study_uid = ct_study(disc, n=2)
    sub = disc / "DICOM" / "ST1"
    segs = {
        "manual": make_seg(sub / "SE2" / "IM1", series[0], "MANUAL", label="manual"),
        "slicer": make_seg(sub / "SE3" / "IM1", series[0], "SEMIAUTOMATIC", label="slicer"),
        "auto": make_seg(sub / "SE4" / "IM1", series[0], "AUTOMATIC", label="auto"),
        "identified": make_seg(
            sub / "SE5" / "IM1", series[0], "SEMIAUTOMATIC", identified=True, label="identified"
        ),
    }
    heat_map = ai_secondary_capture(sub / "SE6" / "IM1", study_uid)
    uid = {name: str(dcmread(p).SOPInstanceUID) for name, p in segs.items()}
    uid["heat_map"] = str(dcmread(heat_map).SOPInstanceUID)
    scp = storescp()
    state = tmp_path / "state"
    rc, rep = run_cli(capsys, "import", str(disc), "--dest", scp.url, "--state-dir", str(state))
    assert rc == 0, rep["problems"]
    insts = {i["sop_instance_uid"]: i for i in rep["instances"]}
    evidence = {name: insts[uid[name]].get("ai_evidence") for name in uid}
    assert {name: insts[uid[name]]["kind"] for name in uid} == {
        "manual": "other",
        "slicer": "other",
        "auto": "ai",
        "identified": "ai",
        "heat_map": "ai",
    }
    assert evidence == {
        "manual": None,
        "slicer": None,
        "auto": AUTOMATIC,
        "identified": IDENTIFIED,
        "heat_map": LUNIT,
    }
    assert all(i["state"] == "sent" for i in rep["instances"])
    got = received(scp)
    for name in ("manual", "slicer"):
        ds = got[uid[name]]
        assert ds.SeriesDescription == f"{name} segmentation"
        assert "OriginalAttributesSequence" not in ds
    for name in ("auto", "identified"):
        assert str(got[uid[name]].SeriesDescription).startswith("[AI]")
