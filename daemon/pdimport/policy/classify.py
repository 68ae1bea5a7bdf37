"""What kind of object an instance is: image, rt, ai, document, sr or other.

One table, keyed by SOP Class UID (PS3.4 Annex B.5, "Standard SOP Classes").
Finer rules (AI detection from ImageType and algorithm attributes,
configurable patterns) build on this table.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
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

#: Kinds the dataset rules may turn into ``ai``. RT objects stay ``rt`` (an
#: auto-contoured structure set must still reach the planning system) and
#: documents stay ``document``.
_AI_CANDIDATE_KINDS = ("image", "sr", "other")


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


def _names_algorithm(ds: Any, depth: int = 0) -> bool:
    """An Algorithm Identification Macro item (PS3.3 Table 10-19) naming an
    algorithm, at the top level or a few sequence levels down (SEG segments,
    functional groups). Only the first items of each sequence are looked at,
    so a 5,000-frame per-frame sequence costs no more than a small one."""
    if depth > _WALK_DEPTH or not hasattr(ds, "keys"):
        return False
    for tag in list(ds.keys()):
        # Only standard sequences are opened: converting every raw element
        # (or guessing at private ones) would cost more than the whole rule.
        if tag.is_private or _dictionary_vr(tag) != "SQ":
            continue
        elem = ds[tag]
        if not elem.value:
            continue
        items = list(elem.value)[:_WALK_ITEMS]
        if elem.keyword in _ALGORITHM_SEQUENCES and any(
            any(k in item and not item[k].is_empty for k in _ALGORITHM_NAMES) for item in items
        ):
            return True
        if any(_names_algorithm(item, depth + 1) for item in items):
            return True
    return False


def _equipment_matches(ds: Any, pattern: re.Pattern[str]) -> bool:
    """A Contributing Equipment item (PS3.3 C.12.1) naming an AI product."""
    for item in _items(ds, "ContributingEquipmentSequence"):
        fields = (
            "Manufacturer",
            "ManufacturerModelName",
            "SoftwareVersions",
            "ContributionDescription",
        )
        if any(pattern.search(_text(item, k)) for k in fields):
            return True
    return False


def _derived_secondary_matches(ds: Any, pattern: re.Pattern[str]) -> bool:
    """ImageType DERIVED\\SECONDARY plus an AI name on the instance."""
    image_type = [v.strip().upper() for v in _text(ds, "ImageType").split("\\")]
    if image_type[:2] != ["DERIVED", "SECONDARY"]:
        return False
    fields = ("Manufacturer", "ManufacturerModelName", "SeriesDescription")
    return any(pattern.search(_text(ds, k)) for k in fields)


def is_ai_dataset(ds: Any, patterns: Iterable[str | re.Pattern[str]] = DEFAULT_AI_PATTERNS) -> bool:
    """True when the attributes say the instance is an AI result (issue 5 rules)."""
    if _names_algorithm(ds):
        return True
    pattern = _compile(tuple(patterns))
    if pattern is None:
        return False
    return _equipment_matches(ds, pattern) or _derived_secondary_matches(ds, pattern)


def classify_dataset(
    ds: Any, patterns: Iterable[str | re.Pattern[str]] = DEFAULT_AI_PATTERNS
) -> str:
    """Kind of one instance from its full dataset (pydicom Dataset).

    The SOP class table decides first (SEG, Parametric Map and CAD SR are
    ``ai`` by class). An image, SR or other object becomes ``ai`` when it
    names an algorithm in an Algorithm Identification Macro sequence (e.g.
    Derivation Algorithm Sequence), when a
    Contributing Equipment item matches ``patterns``, or when ImageType is
    DERIVED\\SECONDARY and Manufacturer, model or Series Description matches
    ``patterns``. Reading is tolerant: missing or odd attributes never raise.
    """
    uid = _text(ds, "SOPClassUID")
    kind = classify(Header(encoding="", transfer_syntax="", sop_class_uid=uid, sop_instance_uid=""))
    if kind in _AI_CANDIDATE_KINDS and is_ai_dataset(ds, patterns):
        return "ai"
    return kind
