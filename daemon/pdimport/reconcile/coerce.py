"""Coercion of one imported instance to the local patient identity.

IHE Import Reconciliation Workflow (RAD TF-2 RAD-61): the patient attributes
of an instance from another hospital's medium get the local values, and the
change is recorded in the instance itself (PS3.3 C.12.1.1.9), keeping the
Study, Series and SOP Instance UIDs (coercion on import does not make a new
instance). The original bytes stay in the spool; this module only writes the
coerced copy.

What changes:

- PatientID, IssuerOfPatientID, PatientName, PatientBirthDate, PatientSex
  (Patient Module, C.7.1.1) get the local values. An empty local issuer
  removes IssuerOfPatientID, which would otherwise name the foreign issuer
  for the local ID; IssuerOfPatientIDQualifiersSequence (qualifying that
  foreign issuer) moves into the Other Patient IDs item with it.
- The foreign ID goes into Other Patient IDs Sequence (0010,1002), with its
  issuer (the file's IssuerOfPatientID, else ``foreign_issuer_fallback``)
  and TypeOfPatientID ``TEXT``; never twice for the same ID and issuer.
- AccessionNumber by the ``accession`` setting: ``keep``, ``clear`` (Type 2,
  so zero length, not removed) or ``worklist`` (the matched worklist entry's,
  :attr:`LocalIdentity.accession_number`; None keeps the file's).
- Instance Origin Status (0400,0600) ``IMPORTED``. It is a Type 3 attribute
  of the SOP Common Module itself (Table C.12-1, beside Instance Coercion
  DateTime), not of the Original Attributes Sequence item; the standard
  expects an importer to overwrite a previous value (e.g. ``LOCAL``).
- One Original Attributes Sequence item (via
  :func:`pdimport.convert.coerce.record_coercion`): reason ``COERCE``, and in
  its Modified Attributes Sequence the prior value of every attribute
  replaced, added or removed (zero length for absent ones). IssuerOfPatientID
  is recorded whenever PatientID is, as C.12.1.1.9.1 advises; a sequence
  that gained an item is recorded whole (its prior value).
- Instance Coercion DateTime (0008,0015).

Source Of Previous Values (0400,0564) is "the source that provided the SOP
Instance prior to the removal or replacement of the values", e.g. the
institution it was received from (C.12.1.1.9): the foreign institution,
i.e. the file's InstitutionName, else ``foreign_issuer_fallback``. The
identity source the *new* values came from (:attr:`LocalIdentity.source`)
has no attribute here; the caller puts it in its audit record.

Character set (C.12.1.1.2): the file's Specific Character Set is kept when
the new values fit it (then every other value keeps its bytes); otherwise the
file becomes ISO_IR 192 and every text value is decoded with the old
character set and re-encoded, nested sequences and private elements of a
known text VR included. The Modified Attributes item then carries the old
Specific Character Set, so its prior values keep their original encoding and
decode as they did (PS3.5 allows Specific Character Set in a sequence item).

Idempotence: coercing a coerced file to the same identity changes nothing
(no second Original Attributes item, no second Other Patient IDs item, the
output is a byte copy). Coercing to a different identity again is a new
coercion with its own item, and the previous local ID becomes an other ID.
"""

from __future__ import annotations

import copy
import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from pdimport.convert.coerce import coercion_datetime, record_coercion
from pdimport.convert.context import SYSTEM_NAME, check_values, choose_character_set
from pdimport.reconcile.model import Candidate
from pdimport.reconcile.rewrite import rewrite_file

#: Values of the ``accession`` setting.
ACCESSION_MODES = ("keep", "clear", "worklist")
#: Instance Origin Status of an instance from another institution's medium.
IMPORTED = "IMPORTED"
#: TypeOfPatientID (0010,0022) of a foreign ID: a plain text identifier.
TYPE_OF_PATIENT_ID = "TEXT"

_QUALIFIERS = "IssuerOfPatientIDQualifiersSequence"
_OTHER_IDS = "OtherPatientIDsSequence"


@dataclass(frozen=True)
class LocalIdentity:
    """The local patient an instance is coerced to.

    ``name`` is a decoded PN (``Yamada^Taro=山田^太郎=やまだ^たろう``);
    ``source`` is where the identity came from (an identity source URL), for
    the caller's audit record: it is not Source Of Previous Values, which
    names the foreign institution. ``accession_number`` is the matched
    worklist entry's (None: there is none, keep the file's). Every value is
    checked against its VR on construction.
    """

    patient_id: str
    issuer: str = ""
    name: str = ""
    birth_date: str = ""
    sex: str = ""
    source: str = ""
    accession_number: str | None = None

    def __post_init__(self) -> None:
        if not self.patient_id.strip():
            raise ValueError("LocalIdentity.patient_id is empty")
        checks = [
            ("patient_id", "LO", self.patient_id),
            ("issuer", "LO", self.issuer),
            ("name", "PN", self.name),
            ("birth_date", "DA", self.birth_date),
            ("sex", "CS", self.sex),
            ("accession_number", "SH", self.accession_number or ""),
        ]
        check_values("LocalIdentity", checks, ("sex", self.sex))

    @classmethod
    def from_candidate(cls, chosen: Candidate) -> LocalIdentity:
        """The identity of a matched candidate; a candidate with no accession
        number (not from a worklist) keeps the file's."""
        return cls(
            patient_id=chosen.local_id,
            issuer=chosen.issuer,
            name=chosen.name,
            birth_date=chosen.birth_date,
            sex=chosen.sex,
            source=chosen.source,
            accession_number=chosen.accession_number or None,
        )


def coerce_file(
    src: Path,
    dst: Path,
    local: LocalIdentity,
    *,
    accession: str = "keep",
    foreign_issuer_fallback: str = "",
    system: str = SYSTEM_NAME,
    now: _dt.datetime | None = None,
) -> list[str]:
    """Write ``src`` coerced to ``local`` as ``dst``; return the keywords changed.

    Parameters
    ----------
    src
        The spooled Part 10 file (any transfer syntax; left untouched).
    dst
        The coerced copy: same transfer syntax, pixel data bytes unchanged,
        written atomically and fsync'ed. A byte copy when nothing changed.
    local
        Who the patient is here.
    accession
        ``keep``, ``clear`` or ``worklist`` (setting).
    foreign_issuer_fallback
        Issuer of the foreign ID when the file names none, typically the
        source InstitutionName; also Source Of Previous Values when the file
        has no InstitutionName.
    system
        ModifyingSystem (0400,0563).
    now
        The coercion time (default: now, local with UTC offset).

    Returns
    -------
    list of str
        Keywords of the attributes recorded in the Modified Attributes
        Sequence, in tag order; empty when the file already had the identity.

    Raises
    ------
    FileProblem
        ``unparsable`` when the file cannot be read (see
        :func:`~pdimport.reconcile.rewrite.rewrite_file`).
    """
    if accession not in ACCESSION_MODES:
        raise ValueError(f"accession {accession!r} is not one of {ACCESSION_MODES}")

    def edit(ds: Dataset) -> list[str]:
        return coerce_dataset(
            ds,
            local,
            accession=accession,
            foreign_issuer_fallback=foreign_issuer_fallback,
            system=system,
            now=now,
        )

    return rewrite_file(Path(src), Path(dst), edit)


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _new_values(ds: Dataset, local: LocalIdentity, accession: str) -> dict[str, str | None]:
    """keyword -> the value it should have (None: absent)."""
    values: dict[str, str | None] = {
        "PatientName": local.name,
        "PatientID": local.patient_id,
        "IssuerOfPatientID": local.issuer or None,
        "PatientBirthDate": local.birth_date,
        "PatientSex": local.sex,
    }
    if accession == "clear":
        values["AccessionNumber"] = ""
    elif accession == "worklist" and local.accession_number is not None:
        values["AccessionNumber"] = local.accession_number
    return values


def _differs(ds: Dataset, keyword: str, new: str | None) -> bool:
    if new is None:
        return keyword in ds
    return keyword not in ds or _text(ds, keyword) != new


def _foreign_item(ds: Dataset, issuer_fallback: str) -> Dataset | None:
    """The Other Patient IDs item for the file's (foreign) ID, or None when
    there is no ID or an item for it is already there."""
    foreign_id = _text(ds, "PatientID")
    if not foreign_id:
        return None
    issuer = _text(ds, "IssuerOfPatientID") or issuer_fallback.strip()
    for item in ds.get(_OTHER_IDS) or []:
        if (_text(item, "PatientID"), _text(item, "IssuerOfPatientID")) == (foreign_id, issuer):
            return None
    item = Dataset()
    item.PatientID = foreign_id
    item.IssuerOfPatientID = issuer
    if _QUALIFIERS in ds:
        item[_QUALIFIERS] = copy.deepcopy(ds[_QUALIFIERS])
    item.TypeOfPatientID = TYPE_OF_PATIENT_ID
    return item


def _prior(ds: Dataset, keyword: str) -> DataElement:
    """The element as it is now, or a zero-length one when absent."""
    if keyword in ds:
        return copy.deepcopy(ds[keyword])
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    vr = dictionary_VR(tag)
    return DataElement(tag, vr, Sequence([]) if vr == "SQ" else None)


def coerce_dataset(
    ds: Dataset,
    local: LocalIdentity,
    *,
    accession: str = "keep",
    foreign_issuer_fallback: str = "",
    system: str = SYSTEM_NAME,
    now: _dt.datetime | None = None,
) -> list[str]:
    """Coerce ``ds`` in place (see the module docstring); the keywords changed.

    Pure: a dataset in, the same dataset changed. :func:`coerce_file` is the
    file edge around it.
    """
    if accession not in ACCESSION_MODES:
        raise ValueError(f"accession {accession!r} is not one of {ACCESSION_MODES}")
    targets = _new_values(ds, local, accession)
    replaced = [k for k, v in targets.items() if _differs(ds, k, v)]
    identity_changed = "PatientID" in replaced or "IssuerOfPatientID" in replaced
    other_id = _foreign_item(ds, foreign_issuer_fallback) if identity_changed else None
    origin_changed = _text(ds, "InstanceOriginStatus") != IMPORTED
    if not replaced and not origin_changed:
        return []

    source = _text(ds, "InstitutionName") or foreign_issuer_fallback.strip()
    old_charset = ds.get("SpecificCharacterSet") or ""
    old_charset_text = old_charset if isinstance(old_charset, str) else "\\".join(old_charset)
    new_texts = [v for v in targets.values() if v] + [source, system]
    if other_id is not None:
        new_texts.append(str(other_id.IssuerOfPatientID))
    charset = choose_character_set(old_charset_text, new_texts) or old_charset_text

    previous = Dataset()
    keywords = set(replaced)
    if "PatientID" in keywords:
        keywords.add("IssuerOfPatientID")  # C.12.1.1.9.1: the context of the replaced ID
    if identity_changed and _QUALIFIERS in ds:
        keywords.add(_QUALIFIERS)
    if other_id is not None:
        keywords.add(_OTHER_IDS)
    if origin_changed:
        keywords.add("InstanceOriginStatus")
    if charset != old_charset_text:
        # Decode every value with the old character set before it changes:
        # pydicom decodes lazily, with whatever set the dataset has by then.
        ds.decode()
        keywords.add("SpecificCharacterSet")
    for keyword in keywords:
        elem = _prior(ds, keyword)
        previous[elem.tag] = elem

    for keyword, value in targets.items():
        if value is None:
            ds.pop(keyword, None)
        else:
            setattr(ds, keyword, value)
    if identity_changed:
        ds.pop(_QUALIFIERS, None)
    if other_id is not None:
        if _OTHER_IDS not in ds:
            ds.OtherPatientIDsSequence = Sequence([])
        ds.OtherPatientIDsSequence.append(other_id)
    ds.InstanceOriginStatus = IMPORTED
    if charset != old_charset_text:
        ds.SpecificCharacterSet = charset
    record_coercion(ds, previous, system=system, source=source, moment=coercion_datetime(now))
    return [elem.keyword for elem in previous]


__all__ = [
    "ACCESSION_MODES",
    "IMPORTED",
    "LocalIdentity",
    "coerce_dataset",
    "coerce_file",
]
