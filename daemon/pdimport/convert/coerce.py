"""Visible marking of AI results, recorded as an attribute coercion.

The one change made to an imported instance's attributes here is a prefix on
SeriesDescription, so an AI heat map or CAD overlay is never read as an
original image. The change is recorded in the Original Attributes Sequence
(PS3.3 C.12.1.1.9) of the SOP Common Module; the SOP Instance UID is kept,
as the standard allows for coercion on import.

Reason: the defined terms (C.12.1.1.9.2, Table C.12.1.1.9-1) are ``COERCE``
("replace values of attributes ... during import of media from an external
institution") and ``CORRECT`` ("replace incorrect values"). The original
SeriesDescription is not wrong; we replace it by local policy on import, so
the reason is ``COERCE``.

:func:`record_coercion` writes that record for any coercion; patient
reconciliation (:mod:`pdimport.reconcile.coerce`) uses it too, so every change
pdimport makes to an imported instance is recorded the same way.
"""

from __future__ import annotations

import datetime as _dt

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from pdimport.convert.context import SYSTEM_NAME, clip

REASON = "COERCE"
DEFAULT_PREFIX = "[AI]"
DEFAULT_REASON = "AI result marked on import"  # for logs and callers; not stored
_SERIES_DESCRIPTION_MAX = 64  # LO


def marked_description(current: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The SeriesDescription with ``prefix`` in front, within the LO limit.

    The tail of an over-long original is cut, never the prefix: the marker is
    the point, and the full original stays in Original Attributes Sequence.
    """
    current = current.strip()
    marked = f"{prefix} {current}".strip() if current else prefix
    return clip(marked, "LO")[:_SERIES_DESCRIPTION_MAX]


def mark_ai(
    ds: Dataset,
    prefix: str = DEFAULT_PREFIX,
    reason: str = DEFAULT_REASON,
    system: str = SYSTEM_NAME,
    *,
    source: str | None = None,
    now: _dt.datetime | None = None,
) -> bool:
    """Prefix SeriesDescription and record the change (PS3.3 C.12.1.1.9).

    Appends one Original Attributes Sequence item holding
    AttributeModificationDateTime, ModifyingSystem (``system``),
    SourceOfPreviousValues (``source``; default the instance's
    InstitutionName, else empty - the attribute is Type 2),
    ReasonForTheAttributeModification ``COERCE`` and a Modified Attributes
    Sequence with the old SeriesDescription. An absent SeriesDescription is
    recorded with a zero-length value, as C.12.1.1.9.1 permits for added
    attributes. Existing items are preserved. Also sets Instance Coercion
    DateTime (0008,0015).

    ``reason`` is free text for the caller's log; the standard only allows
    the defined term in ReasonForTheAttributeModification.

    Returns False (and changes nothing) when the description already starts
    with the prefix, so a resumed job never marks twice.
    """
    if not prefix.strip():
        raise ValueError("an empty prefix would mark nothing")
    old = ds.get("SeriesDescription")
    old_text = "" if old is None else str(old)
    if old_text.strip().startswith(prefix):
        return False
    moment = coercion_datetime(now)
    previous = Dataset()
    previous.SeriesDescription = old_text  # zero length when it was absent or empty
    ds.SeriesDescription = marked_description(old_text, prefix)
    record_coercion(
        ds,
        previous,
        system=system,
        source=str(ds.get("InstitutionName", "")) if source is None else source,
        moment=moment,
    )
    return True


def coercion_datetime(now: _dt.datetime | None = None) -> str:
    """A DT value for AttributeModificationDateTime and InstanceCoercionDateTime:
    ``now`` (default: the current local time, with its UTC offset)."""
    return (now or _dt.datetime.now().astimezone()).strftime("%Y%m%d%H%M%S.%f%z")


def record_coercion(
    ds: Dataset,
    previous: Dataset,
    *,
    system: str = SYSTEM_NAME,
    source: str = "",
    moment: str,
) -> None:
    """Record one coercion of ``ds`` (PS3.3 C.12.1.1.9) after the fact.

    Appends one Original Attributes Sequence item holding
    AttributeModificationDateTime ``moment``, ModifyingSystem ``system``,
    SourceOfPreviousValues ``source`` (Type 2: empty when unknown),
    ReasonForTheAttributeModification ``COERCE`` and a Modified Attributes
    Sequence whose one item is ``previous``: the attributes replaced, added
    or removed, with their prior values (zero length for ones that were
    absent, C.12.1.1.9.1). Existing items are preserved, as the standard
    requires. Sets Instance Coercion DateTime (0008,0015) to ``moment``.

    ``source`` is the source of the *previous* values (the standard's example
    is the institution imported instances came from), not of the new ones.
    """
    item = Dataset()
    item.AttributeModificationDateTime = moment
    item.ModifyingSystem = clip(system, "LO")
    item.SourceOfPreviousValues = clip(source, "LO")
    item.ReasonForTheAttributeModification = REASON
    item.ModifiedAttributesSequence = Sequence([previous])
    if "OriginalAttributesSequence" not in ds:
        ds.OriginalAttributesSequence = Sequence()
    ds.OriginalAttributesSequence.append(item)
    ds.InstanceCoercionDateTime = moment
