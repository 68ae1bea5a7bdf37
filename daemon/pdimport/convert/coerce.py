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
    moment = (now or _dt.datetime.now().astimezone()).strftime("%Y%m%d%H%M%S.%f%z")

    modified = Dataset()
    modified.SeriesDescription = old_text  # zero length when it was absent or empty
    item = Dataset()
    item.AttributeModificationDateTime = moment
    item.ModifyingSystem = clip(system, "LO")
    item.SourceOfPreviousValues = clip(
        str(ds.get("InstitutionName", "")) if source is None else source, "LO"
    )
    item.ReasonForTheAttributeModification = REASON
    item.ModifiedAttributesSequence = Sequence([modified])

    if "OriginalAttributesSequence" not in ds:
        ds.OriginalAttributesSequence = Sequence()
    ds.OriginalAttributesSequence.append(item)
    ds.SeriesDescription = marked_description(old_text, prefix)
    ds.InstanceCoercionDateTime = moment
    return True
