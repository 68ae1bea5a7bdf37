"""Patient names as keys that survive the ways one name gets written.

A DICOM PN value has up to three component groups separated by ``=``
(alphabetic, ideographic, phonetic; PS3.5 §6.2.1) and up to five components
per group separated by ``^`` (family, given, middle, prefix, suffix). The same
Japanese patient reaches us as ``Satou^Tarou=佐藤^太郎=さとう^たろう`` from one
hospital and ``SATO^TARO=サトウ^タロウ`` from our own registry. Each group is
reduced to a *key*; two names are the same name when they share a key.

Normalisation of one component group (:func:`normalise`):

1. NFKC: full-width latin (``ＳＡＴＯ``) and half-width katakana (``ｻﾄｳ``)
   become their ordinary forms; CJK compatibility ideographs become the
   unified ones.
2. Only family, given and middle name are kept, in that order, joined with
   nothing. Prefix and suffix (``Dr``, ``様``) are titles, not the person;
   one medium writing them must not cost a match.
3. Case-fold; drop spaces (U+3000 included: NFKC makes it U+0020), every
   other separator, punctuation (``'`` in ``Shin'ichi``, ``-``, ``.``,
   ``・`` between the parts of a katakana foreign name) and control or
   combining characters left alone by NFKC; then NFKC once more, so a
   dakuten split off its kana by a dropped space joins it again.
4. Hiragana become katakana (``さとう`` -> ``サトウ``), in every group: a
   kanji group written partly in hiragana (``佐藤^はな``) keeps one key.
   (Done before the dakuten of step 1 are composed: ワ゛ has a precomposed
   form, ヷ, わ゛ has none.)

The kind of a group is read from its text, not from its position, because
media put katakana in the ideographic group (``SATO^TARO=サトウ^タロウ``) and
kanji in the alphabetic one (``佐藤^太郎``): all latin -> ``alphabetic``; all
katakana -> ``phonetic``; any Han ideograph -> ``ideographic``; anything
else (hangul, cyrillic) takes the kind of its position.

An alphabetic group's key is romaji-folded (:func:`fold_romaji`). A phonetic
group has two keys: its katakana, and its Hepburn romanisation, folded
(:func:`kana_to_romaji`), so a kana-only name meets a romaji-only one. A
kanji group's key is its kanji; no reading is guessed (東海林 is Shōji or
Tōkairin), and kanji variants such as 髙/高 or 﨑/崎 are not folded.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "fold_romaji",
    "kana_to_romaji",
    "name_groups",
    "name_keys",
    "normalise",
    "same_name",
]

#: Position of a component group in a PN value (PS3.5 §6.2.1).
GROUP_KINDS = ("alphabetic", "ideographic", "phonetic")

#: Which key decides when two names share several: exact kanji are the
#: strongest evidence, a romanisation the weakest.
_KIND_ORDER = ("ideographic", "phonetic", "alphabetic", "romaji")

#: family, given, middle (PS3.5 §6.2.1); prefix and suffix are dropped.
_KEPT_COMPONENTS = 3

#: ぁ..ゖ and the iteration marks ゝゞ; the katakana block is the hiragana
#: block shifted by 0x60.
_HIRA_TO_KATA = {c: c + 0x60 for c in [*range(0x3041, 0x3097), 0x309D, 0x309E]}


def _is_katakana(ch: str) -> bool:
    # ァ..ヺ, ー (long-vowel mark), ヽヾ (iteration marks)
    return "\u30a1" <= ch <= "\u30fa" or ch in "ーヽヾ"


def _is_han(ch: str) -> bool:
    return unicodedata.name(ch, "").startswith("CJK UNIFIED IDEOGRAPH") or ch in "々〆"


def _is_latin(ch: str) -> bool:
    return ch.isascii() or unicodedata.name(ch, "").startswith("LATIN")


def _dropped(ch: str) -> bool:
    """Separators, spaces, punctuation, controls and stray combining marks."""
    return ch in "^=" or unicodedata.category(ch)[0] in "ZPCM"


def _clean(group: str) -> str:
    """Steps 1-4 of the module docstring: width, components, case, separators, kana."""
    text = unicodedata.normalize("NFKC", group)
    text = "".join(text.split("^")[:_KEPT_COMPONENTS])
    # kana before composing: ワ + dakuten composes (ヷ), わ + dakuten does not
    text = unicodedata.normalize("NFKC", text.casefold().translate(_HIRA_TO_KATA))
    text = "".join(ch for ch in text if not _dropped(ch))
    return unicodedata.normalize("NFKC", text)


def _kind(text: str, position: int) -> str:
    if all(_is_latin(ch) for ch in text):
        return "alphabetic"
    if all(_is_katakana(ch) for ch in text):
        return "phonetic"
    if any(_is_han(ch) for ch in text):
        return "ideographic"
    return GROUP_KINDS[min(position, len(GROUP_KINDS) - 1)]


# --- romaji folding -------------------------------------------------------
#
# Japanese names are romanised in several systems (Hepburn, Kunrei/Nihon-shiki,
# passport Hepburn) and with or without the long vowels marked. Folding
# rewrites every spelling to one: Hepburn consonants, short vowels. Each rule
# is applied to the whole group (family and given joined), to a fixed point,
# so folding is idempotent and kana romanised by kana_to_romaji() folds the
# same way as a romaji group. Both sides of a comparison are folded alike, so
# a rule that also fires inside a non-Japanese name (``John`` -> ``jon``) costs
# little: it merges two foreign names only when they differ by such a spelling
# (Lee, Le), and birth date and sex must still agree. The price on Japanese
# names is real and accepted by the rule: 大野 Ōno and 小野 Ono fold to one
# romaji key (their kana keys, オオノ and オノ, stay apart).

#: Marked long vowels (Hepburn macrons, the circumflex of Nihon-shiki and of
#: keyboards without macrons): ``Ōno``, ``Yûko`` -> ``ono``, ``yuko``.
_MARKED_VOWELS = str.maketrans("āīūēōâîûêô", "aiueoaiueo")

_ROMAJI_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), repl)
    for pattern, repl in (
        # Kunrei/Nihon-shiki -> Hepburn consonants
        (r"sy", "sh"),  # syo -> sho (しょ)
        (r"ty", "ch"),  # tya -> cha (ちゃ)
        (r"[zj]y", "j"),  # zyun, jyun -> jun (じゅ)
        (r"si", "shi"),  # si -> shi (し)
        (r"ti", "chi"),  # ti -> chi (ち); tti -> tchi, the Hepburn sokuon
        (r"tu", "tsu"),  # tu -> tsu (つ)
        (r"(?<![sc])hu", "fu"),  # hu -> fu (ふ), but not shu/chu
        (r"zi", "ji"),  # zi -> ji (じ)
        (r"cch", "tch"),  # Hacchō -> hatcho: っち written cch or tch
        # ん before a labial: Homma/Honma, Namba/Nanba, Sampei/Sanpei
        (r"m(?=[bpm])", "n"),
        # long vowels: "oh" before a consonant or at the end (Ohno, Satoh;
        # not Ohara, where h starts a syllable)
        (r"oh(?![aiueo])", "o"),
        (r"o[ou]", "o"),  # Satou, Oono -> sato, ono
        (r"uu", "u"),  # Yuuko -> yuko
        (r"aa", "a"),  # Okaasan -> okasan
        (r"ii", "i"),  # Niigata -> nigata (also merges Iida/Ida: both are folded)
        (r"ee", "e"),  # Keeko -> keko
        # "ei" is kept as is: ei is how Hepburn writes えい (Keiko), and
        # folding it to e would merge Keiko and Keko.
    )
)


def fold_romaji(text: str) -> str:
    """Fold a romanised name to one spelling (see the rules above).

    Parameters
    ----------
    text : str
        A cleaned latin group: lower-case, no spaces or separators.

    Returns
    -------
    str
        The folded spelling; ``fold_romaji(fold_romaji(x)) == fold_romaji(x)``.
    """
    text = text.translate(_MARKED_VOWELS)
    while True:
        before = text
        for pattern, repl in _ROMAJI_RULES:
            text = pattern.sub(repl, text)
        if text == before:
            return text


# --- katakana -> Hepburn --------------------------------------------------

_KANA_ROWS = {
    "": "アイウエオ",
    "k": "カキクケコ",
    "s": "サシスセソ",
    "t": "タチツテト",
    "n": "ナニヌネノ",
    "h": "ハヒフヘホ",
    "m": "マミムメモ",
    "y": "ヤ\0ユ\0ヨ",
    "r": "ラリルレロ",
    "w": "ワヰ\0ヱヲ",
    "g": "ガギグゲゴ",
    "z": "ザジズゼゾ",
    "d": "ダヂヅデド",
    "b": "バビブベボ",
    "p": "パピプペポ",
}
#: Hepburn spellings that are not consonant + vowel.
_HEPBURN_EXCEPTIONS = {
    "si": "shi",
    "ti": "chi",
    "tu": "tsu",
    "hu": "fu",
    "zi": "ji",
    "di": "ji",
    "du": "zu",
    "wi": "i",  # ヰ, old spelling of イ
    "we": "e",  # ヱ, old spelling of エ
    "wo": "o",  # ヲ is pronounced o in names
}
_VOWELS = "aiueo"


def _kana_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for consonant, row in _KANA_ROWS.items():
        for vowel, kana in zip(_VOWELS, row, strict=True):
            if kana != "\0":
                syllable = consonant + vowel
                table[kana] = _HEPBURN_EXCEPTIONS.get(syllable, syllable)
    table["ン"] = "n"
    table["ヴ"] = "vu"
    table["ヵ"] = "ka"
    table["ヶ"] = "ke"
    table["ヷ"] = "va"
    table["ヸ"] = "vi"
    table["ヹ"] = "ve"
    table["ヺ"] = "vo"
    return table


_KANA = _kana_table()
_SMALL_Y = {"ャ": "a", "ュ": "u", "ョ": "o"}
_SMALL_VOWEL = {"ァ": "a", "ィ": "i", "ゥ": "u", "ェ": "e", "ォ": "o", "ヮ": "a"}


def kana_to_romaji(kana: str) -> str | None:
    """Romanise katakana (Hepburn), for matching a kana group against romaji.

    Small ya/yu/yo join the syllable before (キャ kya, シュ shu, チョ cho,
    ジャ ja); small vowels spell foreign sounds (ファ fa, ティ ti, ウィ wi,
    シェ she); ッ doubles the next consonant (ッチ tchi, Hepburn); ン is
    always ``n`` (the m before b/p/m is folded away anyway); ー repeats the
    vowel before it (サトー satoo, folded to sato); ヽ/ヾ repeat the kana
    before, unvoiced/voiced.

    Parameters
    ----------
    kana : str
        Katakana only, as left by :func:`normalise`.

    Returns
    -------
    str or None
        The romanisation, not yet folded; None when a character has none.
    """
    out: list[str] = []  # one romanised syllable per entry
    double_next = False
    for ch in kana:
        if ch in _SMALL_Y and out and out[-1].endswith("i") and len(out[-1]) > 1:
            stem = out[-1][:-1]  # ki -> k, shi -> sh, chi -> ch, ji -> j
            out[-1] = stem + (_SMALL_Y[ch] if stem[-1] in "hj" else "y" + _SMALL_Y[ch])
            continue
        if ch in _SMALL_VOWEL and out and out[-1][-1] in _VOWELS:
            vowel = _SMALL_VOWEL[ch]
            out[-1] = "w" + vowel if out[-1] == "u" else out[-1][:-1] + vowel
            continue
        if ch == "ッ":
            double_next = True
            continue
        if ch == "ー":
            if not out or out[-1][-1] not in _VOWELS:
                return None
            syllable = out[-1][-1]
        elif ch in "ヽヾ":
            if not out:
                return None
            syllable = _voiced(out[-1]) if ch == "ヾ" else out[-1]
        else:
            if ch in _KANA:
                syllable = _KANA[ch]
            elif ch in _SMALL_Y:  # alone: a plain ya/yu/yo
                syllable = "y" + _SMALL_Y[ch]
            elif ch in _SMALL_VOWEL:
                syllable = _SMALL_VOWEL[ch]
            else:
                return None
        if double_next and syllable[0] not in _VOWELS + "n":
            syllable = ("t" if syllable.startswith("ch") else syllable[0]) + syllable
        double_next = False
        out.append(syllable)
    return "".join(out)


_VOICING = {"k": "g", "s": "z", "sh": "j", "t": "d", "ch": "j", "ts": "z", "h": "b", "f": "b"}


def _voiced(syllable: str) -> str:
    """The dakuten form of a romanised syllable, for ヾ (ヤマヾ is rare but real)."""
    for plain in ("sh", "ch", "ts", "k", "s", "t", "h", "f"):
        if syllable.startswith(plain):
            return _VOICING[plain] + syllable[len(plain) :]
    return syllable


# --- the public functions -------------------------------------------------


def normalise(group: str) -> str:
    """One component group as its key (steps 1-4, then romaji folding for latin).

    Parameters
    ----------
    group : str
        One component group of a PN value, components separated by ``^``.

    Returns
    -------
    str
        The key; ``""`` when nothing is left. Idempotent.
    """
    text = _clean(group)
    return fold_romaji(text) if text and _kind(text, 0) == "alphabetic" else text


def name_groups(pn: str) -> dict[str, str]:
    """Every key of a PN value, with the kind of group it came from.

    The kinds are ``alphabetic``, ``ideographic``, ``phonetic`` (the group's
    own text) and ``romaji`` (a phonetic group's Hepburn romanisation). A
    latin key produced both ways is ``alphabetic``.
    """
    keys: dict[str, str] = {}
    for position, group in enumerate(pn.split("=")):
        text = _clean(group)
        if not text:
            continue
        kind = _kind(text, position)
        key = fold_romaji(text) if kind == "alphabetic" else text
        keys[key] = kind
        if kind == "phonetic":
            romaji = kana_to_romaji(text)
            if romaji:
                keys.setdefault(fold_romaji(romaji), "romaji")
    return keys


def name_keys(pn: str) -> frozenset[str]:
    """The normalised keys of every non-empty component group of a PN value.

    Parameters
    ----------
    pn : str
        A DICOM PN value, decoded (PS3.5 §6.2.1), e.g.
        ``Yamada^Taro=山田^太郎=やまだ^たろう``.

    Returns
    -------
    frozenset of str
        One key per non-empty group, plus the romaji key of a kana group.
        Two names are the same name when these sets intersect.
    """
    return frozenset(name_groups(pn))


def same_name(a: str, b: str) -> str | None:
    """Which kind of key two PN values share, or None when they share none.

    Returns ``"ideographic"``, ``"phonetic"``, ``"alphabetic"`` or ``"romaji"``
    (in that order of preference when several keys are shared). A latin key is
    ``alphabetic`` only when both names have it as written romaji; when one of
    them got it by romanising kana it is ``romaji``.
    """
    ka, kb = name_groups(a), name_groups(b)
    kinds = set()
    for key in ka.keys() & kb.keys():
        kind_a, kind_b = ka[key], kb[key]
        kinds.add(kind_a if kind_a == kind_b else "romaji")
    if kinds and not kinds & {"ideographic", "phonetic"}:
        # Latin spellings fold long vowels together (Ōno, Ono): when both
        # names also carry kanji, or both carry kana, and those differ
        # (大野 オオノ / 小野 オノ), the stronger evidence says "another person".
        for strong in ("ideographic", "phonetic"):
            mine = {k for k, kind in ka.items() if kind == strong}
            theirs = {k for k, kind in kb.items() if kind == strong}
            if mine and theirs and not mine & theirs:
                return None
    return next((kind for kind in _KIND_ORDER if kind in kinds), None)
