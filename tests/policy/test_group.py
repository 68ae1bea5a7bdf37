"""Patient grouping (policy/group.py): a pure function of the set of files on
a medium that never merges two patients on the absence of a value.

The first block is the medium of the bug: a file with no Patient ID, name or
birth date followed by two named patients without IDs was delivered as one
blank patient.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures_dicom import make_ct_series
from hypothesis import given, settings
from hypothesis import strategies as st
from test_import import problems, run_cli

from pdimport.cli import main
from pdimport.model import Header
from pdimport.policy.group import Instance, Patient, group_patients, normalise_name


def inst(uid: str, study: str = "1.1", **h: str) -> Instance:
    """An instance whose identifying attributes are all absent unless given."""
    header = Header(
        encoding="part10",
        transfer_syntax="1.2.840.10008.1.2.1",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        sop_instance_uid=uid,
        study_uid=study,
        series_uid=study + ".1",
        modality="CT",
        **h,
    )
    return Instance(path=f"DICOM/{uid}", sha256="0" * 64, header=header)


def uids(patient: Patient) -> set[str]:
    return {
        i.uid
        for st_ in patient.studies.values()
        for se in st_.series.values()
        for i in se.instances
    }


def partition(patients: list[Patient]) -> set[tuple[bool, frozenset[str]]]:
    return {(p.unidentified, frozenset(uids(p))) for p in patients}


BLANK = {}
ONE = {"patient_name": "One^Patient", "patient_birth_date": "19500101"}
TWO = {"patient_name": "Two^Patient", "patient_birth_date": "19800101"}


# ------------------------------------------------------------------ the bug
def test_blank_file_then_two_named_patients_is_not_one_patient():
    medium = [inst("0", "9.0", **BLANK), inst("1", "9.1", **ONE), inst("2", "9.2", **TWO)]
    patients = group_patients(medium)
    assert [(p.name, p.unidentified, uids(p)) for p in patients] == [
        ("", True, {"0"}),
        ("One^Patient", False, {"1"}),
        ("Two^Patient", False, {"2"}),
    ]


def test_the_bug_medium_groups_the_same_in_every_order():
    import itertools

    medium = [inst("0", "9.0"), inst("1", "9.1", **ONE), inst("2", "9.2", **TWO)]
    expected = partition(group_patients(medium))
    for order in itertools.permutations(medium):
        assert partition(group_patients(list(order))) == expected


# ------------------------------------------------------------ blank files
def test_blank_file_joins_the_patient_of_its_study():
    patients = group_patients([inst("0", "9.1"), inst("1", "9.1", patient_id="A", **ONE)])
    assert [(p.id, p.unidentified, uids(p)) for p in patients] == [("A", False, {"0", "1"})]


def test_blank_file_of_a_study_two_patients_share_is_unidentified():
    medium = [inst("0", "9.1"), inst("1", "9.1", **ONE), inst("2", "9.1", **TWO)]
    assert partition(group_patients(medium)) == {
        (True, frozenset({"0"})),
        (False, frozenset({"1"})),
        (False, frozenset({"2"})),
    }


def test_blank_file_whose_sex_conflicts_with_its_study_is_unidentified():
    medium = [inst("0", "9.1", patient_sex="F"), inst("1", "9.1", patient_sex="M", **ONE)]
    assert partition(group_patients(medium)) == {
        (True, frozenset({"0"})),
        (False, frozenset({"1"})),
    }


def test_blank_files_without_a_study_link_are_one_unidentified_group():
    medium = [inst("0", "9.0"), inst("1", "9.1", **ONE), inst("2", "9.2", patient_sex="M")]
    assert partition(group_patients(medium)) == {
        (True, frozenset({"0", "2"})),
        (False, frozenset({"1"})),
    }


def test_sex_or_issuer_alone_identifies_no_one():
    [patient] = group_patients([inst("0", patient_sex="M", issuer_of_patient_id="H")])
    assert patient.unidentified


# ---------------------------------------------------------- one patient or two
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"patient_sex": "M"}, {"patient_sex": "F"}),
        ({"patient_birth_date": "19500101"}, {"patient_birth_date": "19500102"}),
        ({"patient_name": "ONE^PATIENT"}, {"patient_name": "ONE^OTHER"}),
        ({"issuer_of_patient_id": "H1"}, {"issuer_of_patient_id": "H2"}),
        ({"issuer_of_patient_id": "H1"}, {}),  # an ID without an issuer is another ID
    ],
)
def test_same_id_with_a_conflicting_value_is_two_patients(a, b):
    patients = group_patients([inst("1", patient_id="X", **a), inst("2", patient_id="X", **b)])
    assert len(patients) == 2 and not any(p.unidentified for p in patients)


def test_same_id_with_a_value_missing_on_one_file_is_one_patient():
    full = {"patient_name": "Doe^John", "patient_birth_date": "19700101", "patient_sex": "M"}
    [patient] = group_patients([inst("1", patient_id="X", **full), inst("2", patient_id="X")])
    assert (patient.id, patient.name, patient.birth_date, patient.sex) == (
        "X",
        "Doe^John",
        "19700101",
        "M",
    )


def test_id_on_one_file_only_with_the_same_name_and_birth_date_is_one_patient():
    # Decided: a file without an ID joins the ID'd patient on name AND birth date.
    [patient] = group_patients([inst("1", patient_id="X", **ONE), inst("2", "1.2", **ONE)])
    assert patient.id == "X" and uids(patient) == {"1", "2"}


def test_id_on_one_file_only_with_the_name_but_no_birth_date_is_two_patients():
    name = {"patient_name": "One^Patient"}
    patients = group_patients([inst("1", patient_id="X", **ONE), inst("2", **name)])
    assert partition(patients) == {(False, frozenset({"1"})), (False, frozenset({"2"}))}


def test_files_without_ids_same_name_and_no_birth_date_are_one_patient():
    name = {"patient_name": "One^Patient"}
    [patient] = group_patients([inst("1", **name), inst("2", patient_name="ONE^PATIENT^^")])
    assert uids(patient) == {"1", "2"}


def test_files_without_ids_different_names_same_birth_date_are_two_patients():
    medium = [inst("1", **ONE), inst("2", patient_name="Other^Name", patient_birth_date="19500101")]
    assert len(group_patients(medium)) == 2


def test_a_chain_through_a_file_without_id_does_not_join_two_ids():
    # "2" agrees with "1" and with "3" (name and birth date), but "1" and "3"
    # are different IDs: no single patient, and no file may pick a side.
    medium = [inst("1", patient_id="A", **ONE), inst("2", **ONE), inst("3", patient_id="B", **ONE)]
    assert partition(group_patients(medium)) == {
        (False, frozenset({"1"})),
        (False, frozenset({"2"})),
        (False, frozenset({"3"})),
    }


def test_a_chain_without_conflict_is_one_patient():
    medium = [inst("1", patient_id="A"), inst("2", patient_id="A", **ONE), inst("3", **ONE)]
    [patient] = group_patients(medium)
    assert uids(patient) == {"1", "2", "3"} and patient.name == "One^Patient"


def test_ideographic_group_on_one_copy_only_is_the_same_name():
    a = inst("1", patient_id="A", patient_name="Doe^John^^^")
    b = inst("2", patient_id="A", patient_name="DOE^JOHN=ドウ^ジョン")
    c = inst("3", patient_id="A", patient_name="DOE^JOHN=土井^ジョン")
    assert len(group_patients([a, b])) == 1
    assert len(group_patients([a, b, c])) == 3  # the ideographic names differ


def test_patients_and_studies_follow_medium_order():
    medium = [
        inst("1", "9.2", **TWO),
        inst("2", "9.1", patient_id="A"),
        inst("3", "9.3", **TWO),
        inst("4", "9.1", **TWO),
    ]
    patients = group_patients(medium)
    assert [p.name for p in patients] == ["Two^Patient", ""]
    assert list(patients[0].studies) == ["9.2", "9.3", "9.1"]


# ------------------------------------------------------------- the property
VALUES = {
    "patient_id": ["", "", "A", "B"],
    "issuer_of_patient_id": ["", "", "", "H"],
    "patient_name": ["", "", "One^Patient", "ONE^PATIENT^^", "One^Patient=ワン", "Two^Patient"],
    "patient_birth_date": ["", "", "19500101", "19800101"],
    "patient_sex": ["", "", "M", "F"],
}
file_values = st.fixed_dictionaries({k: st.sampled_from(v) for k, v in VALUES.items()})
media = st.lists(st.tuples(file_values, st.sampled_from(["9.1", "9.2", "9.3"])), max_size=14)


def _conflicts(patient: Patient) -> bool:
    files = [i.header for i in _instances(patient)]
    for attr in ("patient_id", "issuer_of_patient_id", "patient_birth_date", "patient_sex"):
        if len({getattr(h, attr).strip().upper() for h in files} - {""}) > 1:
            return True
    names = [normalise_name(h.patient_name).split("=") for h in files]
    return any(x and y and x != y for a in names for b in names for x, y in zip(a, b, strict=False))


def _instances(patient: Patient) -> list[Instance]:
    return [
        i for st_ in patient.studies.values() for se in st_.series.values() for i in se.instances
    ]


@settings(max_examples=300, deadline=None)
@given(media, st.randoms(use_true_random=False))
def test_grouping_is_a_function_of_the_set_of_files(medium, rnd):
    files = [inst(str(n), study, **values) for n, (values, study) in enumerate(medium)]
    first = group_patients(files)
    for _ in range(5):
        shuffled = files[:]
        rnd.shuffle(shuffled)
        assert partition(group_patients(shuffled)) == partition(first)
    # Safety: no patient holds two different non-empty values of an attribute.
    assert not any(_conflicts(p) for p in first if not p.unidentified)
    # Every file is in exactly one patient; only blank ones can be unidentified.
    assert sorted(u for p in first for u in uids(p)) == sorted(f.uid for f in files)
    for p in first:
        if p.unidentified:
            assert all(
                not (h.patient_id or h.patient_name or h.patient_birth_date)
                for h in (i.header for i in _instances(p))
            )


# ----------------------------------------------------------------- end to end
@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def test_the_bug_medium_is_held_and_nothing_is_delivered(tmp_path, state, storescp, capsys):
    disc = tmp_path / "disc"
    no_id = {"patient_id": "", "IssuerOfPatientID": ""}
    make_ct_series(disc / "A", 1, patient_name="", PatientBirthDate="", **no_id)
    make_ct_series(disc / "B", 2, patient_name="One^Patient", PatientBirthDate="19500101", **no_id)
    make_ct_series(disc / "C", 2, patient_name="Two^Patient", PatientBirthDate="19800101", **no_id)
    scp = storescp()
    rc, rep = run_cli(capsys, "import", str(disc), "--dest", scp.url, "--state-dir", str(state))
    assert rc == 1 and rep["status"] == "held"
    assert set(rep["hold_reasons"]) == {"unidentified_patient", "multi_patient"}
    assert [p["name"] for p in rep["patients"]] == ["", "One^Patient", "Two^Patient"]
    assert [p["hold_reason"] for p in rep["patients"]] == [
        "unidentified_patient",
        "multi_patient",
        "multi_patient",
    ]
    [unidentified] = problems(rep, "unidentified_patient")
    assert "A/IM0001" in unidentified["detail"]
    assert {i["state"] for i in rep["instances"]} == {"held"}
    assert scp.files() == []
    # Both named patients are "" to a decision: a release would file them as one.
    base = ["--operator", "Sato", "--dest", scp.url, "--state-dir", str(state)]
    for patient in ("", None):
        which = ["--patient", patient] if patient is not None else []
        assert main(["release", rep["job"], *which, "--keep-foreign", *base]) == 64
        assert "Traceback" not in capsys.readouterr().err
    assert scp.files() == []


def test_an_unlinked_blank_file_holds_a_one_patient_medium(tmp_path, state, storescp, capsys):
    disc = tmp_path / "disc"
    make_ct_series(disc / "A", 2, patient_id="P1")
    make_ct_series(disc / "B", 1, patient_id="", patient_name="", PatientBirthDate="")
    scp = storescp()
    rc, rep = run_cli(capsys, "import", str(disc), "--dest", scp.url, "--state-dir", str(state))
    assert rc == 1 and rep["hold_reasons"] == ["unidentified_patient"]
    assert {i["state"] for i in rep["instances"]} == {"held"}
    assert scp.files() == []
    # A person discards the files no one is named for; the patient goes.
    rc, rep = run_cli(
        capsys, "discard", rep["job"], "--reason", "no patient", "--operator", "Sato",
        "--dest", scp.url, "--state-dir", str(state),
    )  # fmt: skip
    assert rc == 0 and rep["status"] == "imported", rep
    assert len(scp.files()) == 2
    assert sorted(i["state"] for i in rep["instances"]) == ["sent", "sent", "skipped"]


def test_files_that_name_no_patient_go_only_as_they_are(tmp_path, state, storescp, capsys):
    disc = tmp_path / "disc"
    make_ct_series(disc / "A", 1, patient_id="", patient_name="", PatientBirthDate="")
    scp = storescp()
    rc, rep = run_cli(capsys, "import", str(disc), "--dest", scp.url, "--state-dir", str(state))
    assert rc == 1 and rep["hold_reasons"] == ["unidentified_patient"]
    assert [p["unidentified"] for p in rep["patients"]] == [True]
    common = ["--operator", "Sato", "--dest", scp.url, "--state-dir", str(state)]
    # Nothing says whose they are: never under a local ID ...
    assert (
        main(["release", rep["job"], "--patient", "unidentified", "--local-id", "L1", *common])
        == 64
    )
    assert "go only as they are" in capsys.readouterr().err
    assert scp.files() == []
    # ... but a person may send them as they are, as dcmsend would.
    assert (
        main(["release", rep["job"], "--patient", "unidentified", "--keep-foreign", *common]) == 0
    )
    assert len(scp.files()) == 1
