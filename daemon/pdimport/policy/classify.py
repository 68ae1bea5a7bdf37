"""What kind of object an instance is: image, rt, ai, document, sr or other.

One table, keyed by SOP Class UID (PS3.4 Annex B.5, "Standard SOP Classes").
Finer rules (AI detection from Segment Algorithm Type, algorithm
identification, ImageType and configurable patterns, :class:`AIRules`)
build on this table and say which attribute made an instance ``ai``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pdimport.model import Header

#: SOP Class UID -> kind
SOP_CLASS_KINDS: dict[str, str] = {
    # Radiotherapy (PS3.3 A.17-A.29, A.77-A.86, second generation A.8x)
    "1.2.840.10008.5.1.4.1.1.481.1": "rt",  # RT Image
    "1.2.840.10008.5.1.4.1.1.481.2": "rt",  # RT Dose
    "1.2.840.10008.5.1.4.1.1.481.3": "rt",  # RT Structure Set
    "1.2.840.10008.5.1.4.1.1.481.4": "rt",  # RT Beams Treatment Record
    "1.2.840.10008.5.1.4.1.1.481.5": "rt",  # RT Plan
    "1.2.840.10008.5.1.4.1.1.481.6": "rt",  # RT Brachy Treatment Record
    "1.2.840.10008.5.1.4.1.1.481.7": "rt",  # RT Treatment Summary Record
    "1.2.840.10008.5.1.4.1.1.481.8": "rt",  # RT Ion Plan
    "1.2.840.10008.5.1.4.1.1.481.9": "rt",  # RT Ion Beams Treatment Record
    "1.2.840.10008.5.1.4.1.1.481.10": "rt",  # RT Physician Intent
    "1.2.840.10008.5.1.4.1.1.481.11": "rt",  # RT Segment Annotation
    "1.2.840.10008.5.1.4.1.1.481.12": "rt",  # RT Radiation Set
    "1.2.840.10008.5.1.4.1.1.481.13": "rt",  # C-Arm Photon-Electron Radiation
    "1.2.840.10008.5.1.4.1.1.481.14": "rt",  # Tomotherapeutic Radiation
    "1.2.840.10008.5.1.4.1.1.481.15": "rt",  # Robotic-Arm Radiation
    "1.2.840.10008.5.1.4.1.1.481.16": "rt",  # RT Radiation Record Set
    "1.2.840.10008.5.1.4.1.1.481.17": "rt",  # RT Radiation Salvage Record
    "1.2.840.10008.5.1.4.1.1.481.18": "rt",  # Tomotherapeutic Radiation Record
    "1.2.840.10008.5.1.4.1.1.481.19": "rt",  # C-Arm Photon-Electron Radiation Record
    "1.2.840.10008.5.1.4.1.1.481.20": "rt",  # Robotic Radiation Record
    "1.2.840.10008.5.1.4.1.1.481.21": "rt",  # RT Radiation Set Delivery Instruction
    "1.2.840.10008.5.1.4.1.1.481.22": "rt",  # RT Treatment Preparation
    "1.2.840.10008.5.1.4.1.1.481.23": "rt",  # Enhanced RT Image
    "1.2.840.10008.5.1.4.1.1.481.24": "rt",  # Enhanced Continuous RT Image
    "1.2.840.10008.5.1.4.1.1.481.25": "rt",  # RT Patient Position Acquisition Instruction
    "1.2.840.10008.5.1.4.34.7": "rt",  # RT Beams Delivery Instruction
    "1.2.840.10008.5.1.4.34.10": "rt",  # RT Brachy Application Setup Delivery Instr.
    # AI / CAD results
    "1.2.840.10008.5.1.4.1.1.66.4": "ai",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.66.7": "ai",  # Label Map Segmentation
    "1.2.840.10008.5.1.4.1.1.30": "ai",  # Parametric Map
    "1.2.840.10008.5.1.4.1.1.88.50": "ai",  # Mammography CAD SR
    "1.2.840.10008.5.1.4.1.1.88.65": "ai",  # Chest CAD SR
    "1.2.840.10008.5.1.4.1.1.88.69": "ai",  # Colon CAD SR
    # Documents
    "1.2.840.10008.5.1.4.1.1.104.1": "document",  # Encapsulated PDF
    "1.2.840.10008.5.1.4.1.1.104.2": "document",  # Encapsulated CDA
    "1.2.840.10008.5.1.4.1.1.104.3": "document",  # Encapsulated STL
    "1.2.840.10008.5.1.4.1.1.104.4": "document",  # Encapsulated OBJ
    "1.2.840.10008.5.1.4.1.1.104.5": "document",  # Encapsulated MTL
}

_SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
_OTHER_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.9.",  # waveforms
    "1.2.840.10008.5.1.4.1.1.66",  # registration, fiducials, surface (SEG handled above)
    "1.2.840.10008.5.1.4.1.1.67",  # real world value mapping
    "1.2.840.10008.5.1.4.39.",  # color palettes
    "1.2.840.10008.5.1.4.1.1.200.",  # protocols
)


def classify(header: Header) -> str:
    """Return the kind of one instance from its SOP Class UID."""
    uid = header.sop_class_uid
    kind = SOP_CLASS_KINDS.get(uid)
    if kind:
        return kind
    if uid.startswith(_SR_PREFIX):
        return "sr"
    if uid.startswith(_OTHER_PREFIXES):
        return "other"
    return "image"


# ---------------------------------------------------------------- AI rules
#: Default AI product/keyword patterns (regular expressions, matched without
#: regard to case) for Manufacturer, Manufacturer's Model Name, Series
#: Description and Contributing Equipment. Configurable: pass your own list.
DEFAULT_AI_PATTERNS: tuple[str, ...] = (
    r"\bAI\b",
    r"\bCAD\b",
    r"artificial intelligence",
    r"deep learning",
    r"machine learning",
    r"neural net",
    r"heat ?map",
    r"saliency",
    # products that label their output with their own name
    r"AI-Rad Companion",
    r"\bLunit\b",
    r"\bAidoc\b",
    r"\bqXR\b",
    r"\bAnnalise\b",
    r"\bGleamer\b",
    r"\bBoneView\b",
    r"\bTranspara\b",
    r"\bicobrain\b",
    r"\bBrainomix\b",
    r"\bRapidAI\b",
    r"\bClearRead\b",
    r"\bCAD4TB\b",
    r"\bQuantib\b",
    r"\bInferRead\b",
    r"\bEIRL\b",
    r"ProFound AI",
)

#: Segment Algorithm Type values (PS3.3 C.8.20.4) that make a segmentation
#: an AI result: a segment no person drew. MANUAL and SEMIAUTOMATIC (a person
#: guiding a tool, 3D Slicer's Segment Editor) are a person's work.
DEFAULT_AI_SEGMENT_ALGORITHM_TYPES: tuple[str, ...] = ("AUTOMATIC",)

#: Segmentation and Label Map Segmentation: judged by their segments, not
#: by class (PS3.3 A.51, A.51.1a).
SEGMENTATION_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7"})

#: Names of the classes that are AI results by class alone, for the evidence.
_AI_CLASS_NAMES = {
    "1.2.840.10008.5.1.4.1.1.30": "Parametric Map",
    "1.2.840.10008.5.1.4.1.1.88.50": "Mammography CAD SR",
    "1.2.840.10008.5.1.4.1.1.88.65": "Chest CAD SR",
    "1.2.840.10008.5.1.4.1.1.88.69": "Colon CAD SR",
}

#: Kinds the dataset rules may turn into ``ai``. RT objects stay ``rt`` (an
#: auto-contoured structure set must still reach the planning system) and
#: documents stay ``document``.
_AI_CANDIDATE_KINDS = ("image", "sr", "other")

_SHOWN = 64  # characters of a value from the medium quoted in the evidence


@dataclass(frozen=True)
class AIRules:
    """What makes an instance an AI result (settings ``ai.*``).

    Attributes
    ----------
    patterns : tuple
        Regular expressions (matched without regard to case) naming AI
        products and keywords, for Contributing Equipment and for DERIVED
        SECONDARY images (``ai.patterns``).
    segment_algorithm_types : tuple of str
        Segment Algorithm Type values that make a SEG an AI result
        (``ai.segment_algorithm_types``).
    algorithm_identification : bool
        An Algorithm Identification Macro item naming an algorithm (PS3.3
        Table 10-19: Segmentation Algorithm Identification, Derivation
        Algorithm, ...) makes the instance an AI result
        (``ai.algorithm_identification``).
    """

    patterns: tuple[str | re.Pattern[str], ...] = DEFAULT_AI_PATTERNS
    segment_algorithm_types: tuple[str, ...] = DEFAULT_AI_SEGMENT_ALGORITHM_TYPES
    algorithm_identification: bool = True


Rules = AIRules | Iterable[str | re.Pattern[str]]


def as_rules(rules: Rules) -> AIRules:
    """`rules`, or the default rules with `rules` as the patterns."""
    return rules if isinstance(rules, AIRules) else AIRules(patterns=tuple(rules))


@functools.lru_cache(maxsize=16)
def _compile(patterns: tuple[str | re.Pattern[str], ...]) -> re.Pattern[str] | None:
    sources = [p.pattern if isinstance(p, re.Pattern) else p for p in patterns]
    return re.compile("|".join(f"(?:{s})" for s in sources), re.IGNORECASE) if sources else None


def _text(ds: Any, keyword: str) -> str:
    value = ds.get(keyword) if hasattr(ds, "get") else None
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def _items(ds: Any, keyword: str) -> list:
    value = ds.get(keyword) if hasattr(ds, "get") else None
    return list(value) if value else []


def _shown(value: Any) -> str:
    """A value from the medium, quoted and cut short, for a report line."""
    text = str(value)
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "…")


def _which(patterns: tuple[str | re.Pattern[str], ...], text: str) -> str:
    """The first of `patterns` that matches `text` (the evidence names it)."""
    for p in patterns:
        source = p.pattern if isinstance(p, re.Pattern) else p
        if re.search(source, text, re.IGNORECASE):
            return source
    return ""


#: Sequences whose items use the Algorithm Identification Macro (PS3.3
#: Table 10-19) for an algorithm that produced the content. Reconstruction
#: and material-decomposition algorithms are left out: they make original
#: images (CT kernels, dual-energy maps), not AI results.
_ALGORITHM_SEQUENCES = frozenset(
    {
        "DerivationAlgorithmSequence",  # (0022,1612)
        "SegmentationAlgorithmIdentificationSequence",  # (0062,0007)
        "AnnotationGroupAlgorithmIdentificationSequence",  # (006A,0008)
        "TrackingAlgorithmIdentificationSequence",  # (0066,0104)
        "SegmentSurfaceGenerationAlgorithmIdentificationSequence",  # (0066,002D)
        "SurfaceProcessingAlgorithmIdentificationSequence",  # (0066,0035)
        "ROIDerivationAlgorithmIdentificationSequence",  # (3006,0037)
    }
)
_ALGORITHM_NAMES = ("AlgorithmName", "AlgorithmNameCodeSequence", "AlgorithmFamilyCodeSequence")
_WALK_DEPTH, _WALK_ITEMS = 3, 4  # enough for SEG and functional groups, bounded


def _dictionary_vr(tag: Any) -> str:
    from pydicom.datadict import dictionary_VR

    try:
        return dictionary_VR(tag)
    except KeyError:
        return ""


def _named(item: Any, keyword: str) -> str:
    """``AlgorithmName='NoduleNet'`` or the code meaning of a code sequence."""
    value = item[keyword].value
    if keyword == "AlgorithmName":
        return f"{keyword}={_shown(value)}"
    meaning = next((str(code.get("CodeMeaning", "")) for code in value), "")
    return f"{keyword}={_shown(meaning)}"


def _algorithm_evidence(ds: Any, depth: int = 0, where: str = "") -> str | None:
    """Where an Algorithm Identification Macro item (PS3.3 Table 10-19)
    names an algorithm, at the top level or a few sequence levels down (SEG
    segments, functional groups): ``SegmentSequence[1].Segmentation
    AlgorithmIdentificationSequence[1].AlgorithmName='NoduleNet'``. Only the
    first items of each sequence are looked at, so a 5,000-frame per-frame
    sequence costs no more than a small one."""
    if depth > _WALK_DEPTH or not hasattr(ds, "keys"):
        return None
    for tag in list(ds.keys()):
        # Only standard sequences are opened: converting every raw element
        # (or guessing at private ones) would cost more than the whole rule.
        if tag.is_private or _dictionary_vr(tag) != "SQ":
            continue
        elem = ds[tag]
        if not elem.value:
            continue
        for n, item in enumerate(list(elem.value)[:_WALK_ITEMS], 1):
            here = f"{where}{elem.keyword}[{n}]"
            if elem.keyword in _ALGORITHM_SEQUENCES:
                for k in _ALGORITHM_NAMES:
                    if k in item and not item[k].is_empty:
                        return f"{here}.{_named(item, k)}"
            found = _algorithm_evidence(item, depth + 1, here + ".")
            if found:
                return found
    return None


def _segment_evidence(ds: Any, types: tuple[str, ...]) -> str | None:
    """The first segment whose Segment Algorithm Type (0062,0008) is one of
    `types`: ``SegmentSequence[2].SegmentAlgorithmType=AUTOMATIC``."""
    wanted = {t.strip().upper() for t in types}
    for n, segment in enumerate(_items(ds, "SegmentSequence"), 1):
        value = _text(segment, "SegmentAlgorithmType").strip().upper()
        if value in wanted:
            return f"SegmentSequence[{n}].SegmentAlgorithmType={value}"
    return None


def _equipment_evidence(ds: Any, patterns: tuple[str | re.Pattern[str], ...]) -> str | None:
    """A Contributing Equipment item (PS3.3 C.12.1) naming an AI product."""
    pattern = _compile(patterns)
    if pattern is None:
        return None
    fields = (
        "Manufacturer",
        "ManufacturerModelName",
        "SoftwareVersions",
        "ContributionDescription",
    )
    for n, item in enumerate(_items(ds, "ContributingEquipmentSequence"), 1):
        for k in fields:
            text = _text(item, k)
            if pattern.search(text):
                return (
                    f"ContributingEquipmentSequence[{n}].{k}={_shown(text)}"
                    f" matches pattern '{_which(patterns, text)}'"
                )
    return None


def _derived_secondary_evidence(ds: Any, patterns: tuple[str | re.Pattern[str], ...]) -> str | None:
    """ImageType DERIVED\\SECONDARY plus an AI name on the instance."""
    pattern = _compile(patterns)
    image_type = [v.strip().upper() for v in _text(ds, "ImageType").split("\\")]
    if pattern is None or image_type[:2] != ["DERIVED", "SECONDARY"]:
        return None
    for k in ("Manufacturer", "ManufacturerModelName", "SeriesDescription"):
        text = _text(ds, k)
        if pattern.search(text):
            return (
                f"ImageType=DERIVED\\SECONDARY and {k}={_shown(text)}"
                f" matches pattern '{_which(patterns, text)}'"
            )
    return None


def _dataset_evidence(ds: Any, rules: AIRules) -> str | None:
    """Why an image, SR or other object is an AI result, or None."""
    if rules.algorithm_identification:
        found = _algorithm_evidence(ds)
        if found:
            return found
    return _equipment_evidence(ds, rules.patterns) or _derived_secondary_evidence(
        ds, rules.patterns
    )


def is_ai_dataset(ds: Any, patterns: Rules = DEFAULT_AI_PATTERNS) -> bool:
    """True when the attributes say the instance is an AI result (issue 5 rules)."""
    return _dataset_evidence(ds, as_rules(patterns)) is not None


def classify_with_evidence(ds: Any, rules: Rules = DEFAULT_AI_PATTERNS) -> tuple[str, str]:
    """Kind of one instance from its full dataset, and, for ``ai``, the
    attribute that made it so (one line for the report).

    * Segmentations (:data:`SEGMENTATION_CLASSES`) are ``ai`` only when a
      segment's Segment Algorithm Type is one of
      :attr:`AIRules.segment_algorithm_types` (AUTOMATIC) or, with
      :attr:`AIRules.algorithm_identification`, an Algorithm Identification
      Macro item names the algorithm (Segmentation Algorithm Identification
      Sequence, PS3.3 C.8.20.4); otherwise they are ``other``. Segment
      Algorithm Name alone is no evidence: PS3.3 requires it of every segment
      that is not MANUAL, semi-automatic ones included.
    * Parametric Map and CAD SR are ``ai`` by class (the SOP class table).
    * An image, SR or other object becomes ``ai`` when it names an algorithm
      in an Algorithm Identification Macro sequence (e.g. Derivation Algorithm
      Sequence), when a Contributing Equipment item matches the patterns, or
      when ImageType is DERIVED\\SECONDARY and Manufacturer, model or Series
      Description matches them.

    Reading is tolerant: missing or odd attributes never raise.
    """
    rules = as_rules(rules)
    uid = _text(ds, "SOPClassUID").strip()
    if uid in SEGMENTATION_CLASSES:
        found = _segment_evidence(ds, rules.segment_algorithm_types)
        if not found and rules.algorithm_identification:
            found = _algorithm_evidence(ds)
        return ("ai", found) if found else ("other", "")
    kind = classify(Header(encoding="", transfer_syntax="", sop_class_uid=uid, sop_instance_uid=""))
    if kind == "ai":
        return kind, class_evidence(uid)
    if kind in _AI_CANDIDATE_KINDS:
        found = _dataset_evidence(ds, rules)
        if found:
            return "ai", found
    return kind, ""


def class_evidence(uid: str) -> str:
    """``SOPClassUID=1.2.840.10008.5.1.4.1.1.88.50 (Mammography CAD SR)``."""
    name = _AI_CLASS_NAMES.get(uid)
    return f"SOPClassUID={uid} ({name})" if name else f"SOPClassUID={uid}"


def classify_dataset(ds: Any, patterns: Rules = DEFAULT_AI_PATTERNS) -> str:
    """Kind of one instance from its full dataset (pydicom Dataset); see
    :func:`classify_with_evidence`."""
    return classify_with_evidence(ds, patterns)[0]
