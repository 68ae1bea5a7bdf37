"""The match decision (pdimport.reconcile.match): birth date, sex and one
shared name key pick exactly one local patient, or none is picked."""

from __future__ import annotations

import pytest

from pdimport.reconcile.match import match
from pdimport.reconcile.model import Candidate, Demographics, MatchKind

DISC_NAME = "Satou^Tarou=佐藤^太郎=さとう^たろう"
RIS = "mwl://RIS@127.0.0.1:4242"
REGISTRY = "hl7://EMPI@127.0.0.1:2575"


def disc(name: str = DISC_NAME, birth_date: str = "19700101", sex: str = "M") -> Demographics:
    return Demographics(
        name=name, birth_date=birth_date, sex=sex, patient_id="EXT-1", issuer="OTHERHOSP"
    )


def local(
    local_id: str = "L100",
    name: str = "SATO^TARO=サトウ^タロウ",
    birth_date: str = "19700101",
    sex: str = "M",
    source: str = REGISTRY,
    issuer: str = "HERE",
) -> Candidate:
    return Candidate(
        local_id=local_id,
        name=name,
        birth_date=birth_date,
        sex=sex,
        source=source,
        issuer=issuer,
    )


def test_kanji_disc_matches_katakana_and_romaji_registry_entry():
    sato = local()
    result = match(disc(), [sato])
    assert result.kind is MatchKind.MATCH
    assert result.chosen == sato
    assert result.candidates == (sato,)
    assert result.rule == "birth_date+sex+name:phonetic"
    assert "L100" in result.detail


@pytest.mark.parametrize(
    ("disc_name", "local_name", "kind"),
    [
        ("佐藤^太郎", "Sato^Taro=佐藤^太郎", "ideographic"),
        ("ｻﾄｳ^ﾀﾛｳ", "SATO^TARO=サトウ^タロウ", "phonetic"),
        ("ＳＡＴＯ^ＴＡＲＯ", "Sato^Taro", "alphabetic"),
        ("sato taro", "SATO^TARO", "alphabetic"),
        ("Satoh^Tarou", "=サトウ^タロウ", "romaji"),
    ],
)
def test_the_rule_names_the_group_that_matched(disc_name, local_name, kind):
    result = match(disc(disc_name), [local(name=local_name)])
    assert result.kind is MatchKind.MATCH
    assert result.rule == f"birth_date+sex+name:{kind}"


def test_others_with_the_same_birth_date_do_not_spoil_a_match():
    sato = local()
    others = [
        local("L200", name="SUZUKI^ICHIRO=スズキ^イチロウ"),
        local("L300", sex="F", name="SATO^HANAKO=サトウ^ハナコ"),
        local("L400", birth_date="19800101"),
    ]
    result = match(disc(), [*others, sato])
    assert result.kind is MatchKind.MATCH
    assert result.chosen == sato
    assert result.candidates == (sato,)


def test_two_local_patients_are_ambiguous_and_both_are_listed():
    a = local("L100", name="SATO^TARO")
    b = local("L555", name="=佐藤^太郎", source=RIS)
    result = match(disc(), [a, b])
    assert result.kind is MatchKind.AMBIGUOUS
    assert result.chosen is None
    assert result.candidates == (a, b)
    assert "L100" in result.detail
    assert "L555" in result.detail


def test_romaji_folding_can_make_two_patients_ambiguous():
    # 大野 and 小野 fold to one romaji key; a person must choose
    ohno = local("L1", name="OHNO^TARO=オオノ^タロウ")
    ono = local("L2", name="ONO^TARO=オノ^タロウ")
    result = match(disc("Ono^Taro"), [ohno, ono])
    assert result.kind is MatchKind.AMBIGUOUS
    assert result.candidates == (ohno, ono)


def test_same_patient_from_two_sources_is_one_match():
    from_registry = local(source=REGISTRY)
    from_worklist = local(name="Sato^Taro", source=RIS)
    result = match(disc(), [from_registry, from_worklist])
    assert result.kind is MatchKind.MATCH
    assert result.chosen == from_registry  # the first source tried
    assert result.candidates == (from_registry, from_worklist)
    assert RIS in result.detail
    assert REGISTRY in result.detail


def test_same_local_id_with_another_issuer_is_another_patient():
    here = local(issuer="HERE")
    there = local(issuer="BRANCH")
    result = match(disc(), [here, there])
    assert result.kind is MatchKind.AMBIGUOUS
    assert result.candidates == (here, there)


def test_wrong_sex_is_no_match():
    wrong = local(sex="F")
    result = match(disc(), [wrong])
    assert result.kind is MatchKind.NO_MATCH
    assert result.chosen is None
    assert result.candidates == (wrong,)  # same birth date: shown as close


@pytest.mark.parametrize(("disc_sex", "local_sex"), [("O", "O"), ("f", "F "), (" M", "m")])
def test_sex_is_compared_as_a_value(disc_sex, local_sex):
    result = match(disc(sex=disc_sex), [local(sex=local_sex)])
    assert result.kind is MatchKind.MATCH


def test_other_sex_matches_only_other():
    assert match(disc(sex="O"), [local(sex="M")]).kind is MatchKind.NO_MATCH


def test_wrong_birth_date_is_no_match():
    result = match(disc(), [local(birth_date="19700102")])
    assert result.kind is MatchKind.NO_MATCH
    assert result.candidates == ()  # nobody with that birth date
    assert "19700101" in result.detail


def test_birth_date_is_compared_after_stripping():
    assert (
        match(disc(birth_date=" 19700101 "), [local(birth_date="19700101 ")]).kind
        is MatchKind.MATCH
    )


def test_candidate_without_birth_date_never_matches():
    assert match(disc(), [local(birth_date="")]).kind is MatchKind.NO_MATCH


def test_candidate_without_sex_never_matches():
    assert match(disc(), [local(sex="")]).kind is MatchKind.NO_MATCH


@pytest.mark.parametrize("birth_date", ["", "   ", "1970", "197001", "1970-01-01"])
def test_missing_birth_date_on_the_medium_never_matches(birth_date):
    sato = local()
    result = match(disc(birth_date=birth_date), [sato, local("L200", name="Suzuki^Ichiro")])
    assert result.kind is MatchKind.NO_MATCH
    assert result.chosen is None
    assert result.candidates == (sato,)  # the ones whose name matches
    assert "birth date" in result.detail


@pytest.mark.parametrize("sex", ["", " "])
def test_missing_sex_on_the_medium_never_matches(sex):
    sato = local()
    result = match(disc(sex=sex), [sato])
    assert result.kind is MatchKind.NO_MATCH
    assert result.candidates == (sato,)
    assert "sex" in result.detail


@pytest.mark.parametrize("name", ["", "==", "^^=^", " "])
def test_empty_name_on_the_medium_never_matches(name):
    result = match(disc(name), [local(name=name), local("L2")])
    assert result.kind is MatchKind.NO_MATCH
    assert len(result.candidates) == 2
    assert "name" in result.detail


def test_candidate_with_empty_name_never_matches():
    assert match(disc(), [local(name="=^=")]).kind is MatchKind.NO_MATCH


def test_only_a_given_name():
    assert match(disc("^Taro"), [local(name="^TAROU")]).kind is MatchKind.MATCH
    # a given name alone does not stand for a full name
    assert match(disc("^Taro"), [local(name="Sato^Taro")]).kind is MatchKind.NO_MATCH


def test_the_foreign_patient_id_is_never_used():
    # the local ID equals the foreign one, the name does not match: no match
    who = Demographics("Suzuki^Ichiro", "19700101", "M", patient_id="L100", issuer="HERE")
    assert match(who, [local("L100")]).kind is MatchKind.NO_MATCH
    # a different foreign ID changes nothing
    for pid in ("", "L100", "X"):
        who = Demographics(DISC_NAME, "19700101", "M", patient_id=pid, issuer="HERE")
        assert match(who, [local()]).chosen == local()


def test_candidate_without_local_id_is_never_chosen():
    assert match(disc(), [local(local_id=" ")]).kind is MatchKind.NO_MATCH


def test_no_candidates():
    result = match(disc(), [])
    assert result.kind is MatchKind.NO_MATCH
    assert result.candidates == ()
