"""Patient names as keys (pdimport.reconcile.names): one name, written the
ways Japanese media and registries write it, gives one key."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pdimport.reconcile.names import (
    fold_romaji,
    kana_to_romaji,
    name_groups,
    name_keys,
    normalise,
    same_name,
)

DISC = "Satou^Tarou=佐藤^太郎=さとう^たろう"
REGISTRY = "SATO^TARO=サトウ^タロウ"


def test_disc_with_kanji_meets_registry_with_katakana_and_other_romanisation():
    assert name_groups(DISC) == {
        "satotaro": "alphabetic",
        "佐藤太郎": "ideographic",
        "サトウタロウ": "phonetic",
    }
    assert name_groups(REGISTRY) == {"satotaro": "alphabetic", "サトウタロウ": "phonetic"}
    assert same_name(DISC, REGISTRY) == "phonetic"


def test_katakana_in_the_ideographic_position_is_phonetic():
    # media put kana in the second group; the kind is read from the text
    assert name_groups("SATO^TARO=サトウ^タロウ")["サトウタロウ"] == "phonetic"
    assert name_groups("=サトウ^タロウ")["サトウタロウ"] == "phonetic"


def test_kanji_alone_in_the_first_group_is_ideographic():
    assert name_groups("佐藤^太郎") == {"佐藤太郎": "ideographic"}
    assert same_name("佐藤^太郎", "Sato^Taro=佐藤^太郎") == "ideographic"
    assert same_name("佐藤^太郎", "SATO^TARO=サトウ^タロウ") is None  # no reading is guessed


def test_half_width_katakana():
    assert name_keys("ｻﾄｳ^ﾀﾛｳ") == name_keys("サトウ^タロウ")
    assert name_keys("ｶﾞｯｺｳ") == name_keys("ガッコウ")  # the voiced mark joins its kana
    assert same_name("ｻﾄｳ^ﾀﾛｳ", REGISTRY) == "phonetic"


def test_a_dakuten_composes_with_hiragana_made_katakana():
    # found by hypothesis: ワ + ﾞ composes to ヷ, わ + ﾞ has no precomposed form
    assert name_keys("わﾞ") == name_keys("ワﾞ") == name_keys("ヷ") == {"ヷ", "va"}


def test_full_width_latin():
    assert name_keys("ＳＡＴＯ^ＴＡＲＯ") == {"satotaro"}
    assert same_name("ＳＡＴＯ＾ＴＡＲＯ", "Sato^Taro") == "alphabetic"


def test_case_spaces_and_separators():
    keys = {"satotaro"}
    for pn in ("SATO^TARO", "sato^taro", "Sato Taro", " SATO ^ TARO ", "SaTo^TaRo^^^", "SATO TARO"):
        assert name_keys(pn) == keys, pn
    assert name_keys("佐藤　太郎") == name_keys("佐藤^太郎") == {"佐藤太郎"}  # U+3000


def test_prefix_and_suffix_are_not_the_name():
    assert name_keys("Sato^Taro^^Dr^Jr") == name_keys("Sato^Taro")
    assert name_keys("Smith^John^Paul") == {"smithjonpaul"}  # the middle name counts


def test_punctuation_is_dropped():
    assert name_keys("Shin'ichi") == name_keys("Shinichi") == name_keys("シンイチ") - {"シンイチ"}
    assert name_keys("ジョン・スミス") == name_keys("ジョンスミス")


def test_hiragana_and_katakana():
    assert name_keys("やまだ^たろう") == name_keys("ヤマダ^タロウ")
    assert name_keys("佐藤^はな") == name_keys("佐藤^ハナ")  # in a kanji group too


@pytest.mark.parametrize("spelling", ["Ohno", "Ono", "Oono", "Ōno", "Ouno", "OHNO", "Ôno", "ONO"])
def test_long_o_variants(spelling):
    assert name_keys(spelling) == {"ono"}
    assert same_name(spelling, "オオノ") == "romaji"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Satou", "Sato"),
        ("Satoh", "Sato"),
        ("Satō", "Sato"),
        ("Yuuko", "Yuko"),
        ("Yūko", "Yuko"),
        ("Yûko", "Yuko"),
        ("Okaasan", "Okasan"),
        ("Ōsaka", "Oosaka"),
        ("Niigata", "Nigata"),
        ("Īda", "Ida"),
        ("Keeko", "Keko"),
        ("Ēko", "Eko"),
        ("Tukasa", "Tsukasa"),
        ("Simizu", "Shimizu"),
        ("Tiharu", "Chiharu"),
        ("Hukuda", "Fukuda"),
        ("Zirou", "Jiro"),
        ("Syunsuke", "Shunsuke"),
        ("Tyouko", "Choko"),
        ("Zyunko", "Junko"),
        ("Jyunko", "Junko"),
        ("Homma", "Honma"),
        ("Namba", "Nanba"),
        ("Sampei", "Sanpei"),
        ("Hacchobori", "Hatchobori"),
        ("Hattyou", "Hatcho"),
    ],
)
def test_romanisation_variants_fold_together(a, b):
    assert fold_romaji(normalise(a)) == normalise(a) == normalise(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Keiko", "Keko"),  # ei is kept: えい, not a long e
        ("Ohara", "Ora"),  # h starts a syllable: お・は・ら
        ("Shuuhei", "Sufei"),  # shu is not s + hu
        ("Sato", "Saito"),
        ("Taro", "Jiro"),
        ("Mori", "Nori"),  # m only becomes n before b, p, m
    ],
)
def test_different_names_stay_apart(a, b):
    assert normalise(a) != normalise(b)


@pytest.mark.parametrize(
    ("kana", "romaji"),
    [
        ("サトウ", "satou"),
        ("キョウコ", "kyouko"),
        ("シュンスケ", "shunsuke"),
        ("チャコ", "chako"),
        ("ジュン", "jun"),
        ("ヂャ", "ja"),
        ("リョウ", "ryou"),
        ("ハッチョウ", "hatchou"),
        ("キッカワ", "kikkawa"),
        ("ホッタ", "hotta"),
        ("ホンマ", "honma"),
        ("サトー", "satoo"),
        ("ヨーコ", "yooko"),
        ("ファン", "fan"),
        ("ティナ", "tina"),
        ("ウィリアム", "wiriamu"),
        ("シェリー", "sherii"),
        ("ヴァン", "van"),
        ("ヲノ", "ono"),
        ("イスヾ", "isuzu"),
        ("ササヽ", "sasasa"),
        ("ツヅキ", "tsuzuki"),
        ("フジ", "fuji"),
    ],
)
def test_kana_to_romaji(kana, romaji):
    assert kana_to_romaji(kana) == romaji


def test_kana_without_a_romanisation_has_only_its_kana_key():
    assert kana_to_romaji("ーア") is None
    assert name_groups("ーア") == {"ーア": "phonetic"}


def test_kana_group_meets_romaji_group():
    assert same_name("サトウ^タロウ", "SATOH^TARO") == "romaji"
    assert same_name("きょうこ", "Kyoko") == "romaji"
    assert same_name("ほんま", "Homma") == "romaji"
    assert same_name("オオノ", "Ono") == "romaji"
    assert same_name("サトウ^タロウ", "Saito^Taro") is None


def test_a_match_in_one_group_is_enough():
    # romaji differ (a typo), the kanji agree
    assert same_name("Satu^Taro=佐藤^太郎", "Sato^Taro=佐藤^太郎") == "ideographic"
    # kanji differ (a variant form), the kana agree
    assert same_name("=髙橋^一郎=タカハシ^イチロウ", "=高橋^一郎=タカハシ^イチロウ") == "phonetic"


def test_the_strongest_shared_key_is_named():
    both = "Sato^Taro=佐藤^太郎=サトウ^タロウ"
    assert same_name(both, both) == "ideographic"
    assert same_name("Sato^Taro=サトウ^タロウ", "Sato^Taro=サトウ^タロウ") == "phonetic"
    assert same_name("Sato^Taro", "SATOU^TAROU") == "alphabetic"


@pytest.mark.parametrize(
    "pn", ["", "=", "==", "^", "^^^^", "=^=", " ^ = ^ ", "　", "^^^^=^^^^=^^^^"]
)
def test_empty_groups_give_no_key(pn):
    assert name_keys(pn) == frozenset()
    assert same_name(pn, pn) is None
    assert same_name(pn, "Sato^Taro") is None


def test_empty_groups_between_others_are_skipped():
    assert name_keys("Sato^Taro==サトウ^タロウ") == {"satotaro", "サトウタロウ"}
    assert name_keys("=佐藤^太郎=") == {"佐藤太郎"}


def test_only_a_given_name():
    assert name_keys("^Taro") == {"taro"}
    assert same_name("^Taro", "^TAROU") == "alphabetic"
    assert same_name("^Taro", "^たろう") == "romaji"
    # a given name alone is not the family name plus that given name
    assert same_name("^Taro", "Sato^Taro") is None


def test_other_scripts_take_the_kind_of_their_position():
    assert name_groups("Hong^Gildong=洪^吉東=홍^길동") == {
        "honggildong": "alphabetic",
        "洪吉東": "ideographic",
        "홍길동": "phonetic",
    }
    assert name_groups("Иванов^Иван") == {"ивановиван": "alphabetic"}


# --- properties ----------------------------------------------------------

_HIRAGANA = [chr(c) for c in range(0x3041, 0x3097)]
_KATAKANA = [chr(c) for c in range(0x30A1, 0x30F7)] + ["ー"]
_NAME_CHARS = st.sampled_from(
    [
        *"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        *"āīūēōâîûêôĀŌŪ'-. ^　",
        *_HIRAGANA,
        *_KATAKANA,
        *"佐藤太郎山田花子髙橋々",
        *"ｱｲｳｴｵｶｷｸｹｺｻｼｽｾｿﾀﾁﾂﾃﾄｯｬｭｮｰﾞﾟ",  # half-width katakana
        *"ＡＢＣＳＴＯａｂｃｓｔｏ",  # full-width latin
    ]
)
_GROUP = st.text(_NAME_CHARS, max_size=16)
_PN = st.lists(_GROUP, min_size=1, max_size=3).map("=".join)


@given(st.text(max_size=24))
def test_normalise_is_idempotent_for_any_text(text):
    once = normalise(text)
    assert normalise(once) == once


@given(_GROUP)
def test_normalise_is_idempotent_for_names(group):
    once = normalise(group)
    assert normalise(once) == once


@given(st.text(st.sampled_from("aiueokstnhmyrwgzdbpfjcvsh'"), max_size=20))
def test_fold_romaji_is_idempotent(text):
    assert fold_romaji(fold_romaji(text)) == fold_romaji(text)


def _swap_kana(text: str) -> str:
    """Hiragana to katakana and katakana to hiragana."""
    out = []
    for ch in text:
        code = ord(ch)
        if 0x3041 <= code <= 0x3096:
            out.append(chr(code + 0x60))
        elif 0x30A1 <= code <= 0x30F6:
            out.append(chr(code - 0x60))
        else:
            out.append(ch)
    return "".join(out)


def _widen(text: str) -> str:
    """ASCII to full width (U+FF01..U+FF5E), the other way from NFKC."""
    return "".join(
        chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" and ch not in "^=" else ch for ch in text
    )


@given(_PN)
def test_keys_survive_width_changes(pn):
    assert name_keys(unicodedata.normalize("NFKC", pn)) == name_keys(pn)
    assert name_keys(_widen(pn)) == name_keys(pn)


@given(_PN)
def test_keys_survive_hiragana_katakana_swaps(pn):
    assert name_keys(_swap_kana(pn)) == name_keys(pn)


@given(_PN)
def test_a_name_is_its_own_name(pn):
    assert (same_name(pn, pn) is None) == (not name_keys(pn))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (
            "Ono^Taro=大野^太郎=オオノ^タロウ",
            "Ono^Taro=小野^太郎=オノ^タロウ",
        ),  # kanji and kana differ
        ("Ono^Taro=オオノ^タロウ", "ONO^TARO=オノ^タロウ"),  # kana differ, romaji folded alike
    ],
)
def test_folded_latin_never_outweighs_different_kanji_or_kana(a: str, b: str) -> None:
    assert same_name(a, b) is None


def test_folded_latin_matches_when_nothing_stronger_disagrees() -> None:
    assert same_name("Ohno^Taro=大野^太郎", "ONO^TARO=オオノ^タロウ") == "alphabetic"
