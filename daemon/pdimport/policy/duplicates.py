"""Copies of one SOP Instance UID on a medium: one instance, or a clash.

Pure logic: instances (header values, content hashes, and on request a
digest of their decoded pixels) in, a verdict per copy out.

* identical bytes: one instance, the later copies are imported once;
* different bytes, the same header and the same pixel values once decoded:
  encodings of one instance (PS3.5 10: a transfer syntax change is not a
  new instance). All are kept as alternatives, in an order that does not
  depend on the medium (:func:`preference`); the deliverer sends the first
  one the destination takes;
* a copy that does not decode while others agree: set aside, never a reason
  to lose the instance;
* different content (header or pixels), or nothing to compare: a
  ``uid_conflict``. As before, the first copy in medium order is imported
  and the others are kept in the spool, not sent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields

from pdimport.model import Header
from pdimport.policy.group import Instance

#: Header fields that say how a copy is encoded, not what it is.
_ENCODING_FIELDS = frozenset(
    {
        "encoding",
        "transfer_syntax",
        "dataset_offset",
        "pixel_data_offset",
        "lossy_compression",  # decoded pixels equal: a lossy flag on one copy is history
        "extra",
        "warnings",
    }
)
_CONTENT_FIELDS = tuple(f.name for f in fields(Header) if f.name not in _ENCODING_FIELDS)

#: Transfer syntaxes most destinations take as they are, first (every SCP
#: supports Implicit VR Little Endian, PS3.5 10.1); lossless before lossy.
_RANK = {
    "1.2.840.10008.1.2.1": 0,  # Explicit VR Little Endian
    "1.2.840.10008.1.2": 1,  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99": 2,  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2": 3,  # Explicit VR Big Endian (retired)
    "1.2.840.10008.1.2.5": 4,  # RLE Lossless
    "1.2.840.10008.1.2.4.70": 4,  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.57": 4,  # JPEG Lossless
    "1.2.840.10008.1.2.4.80": 4,  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.90": 4,  # JPEG 2000 Lossless
}
_OTHER_RANK = 5

#: ``digests(copies) -> {sha256: (digest, why)}``: digest "" when the copy
#: has no pixels or they do not decode (``why`` says which).
Digests = Callable[[list[Instance]], dict[str, tuple[str, str]]]


@dataclass
class Copies:
    """The verdict on the copies of every SOP Instance UID of a medium."""

    #: same bytes as a copy kept: imported once
    identical: list[Instance] = field(default_factory=list)
    #: encodings of one instance, per UID, preferred first (:func:`preference`)
    encodings: list[list[Instance]] = field(default_factory=list)
    #: (copy, why): does not decode while the other copies agree; set aside
    undecodable: list[tuple[Instance, str]] = field(default_factory=list)
    #: other content than the copy kept: ``uid_conflict``
    conflicts: list[Instance] = field(default_factory=list)


def preference(inst: Instance) -> tuple[int, str]:
    """Order of alternatives: by transfer syntax rank, then content hash, so
    that the choice never depends on which copy came first on the medium."""
    return _RANK.get(inst.header.transfer_syntax, _OTHER_RANK), inst.sha256


def sort_copies(instances: list[Instance], digests: Digests) -> Copies:
    """Sort the copies of each SOP Instance UID among ``instances``.

    ``digests`` is called at most once, with the copies whose bytes differ
    from another copy of their UID with the same header (rare: most media
    have none).
    """
    by_uid: dict[str, list[Instance]] = {}
    out = Copies()
    for inst in instances:
        distinct = by_uid.setdefault(inst.uid, [])
        if any(d.sha256 == inst.sha256 for d in distinct):
            out.identical.append(inst)
        else:
            distinct.append(inst)
    clashing = [copies for copies in by_uid.values() if len(copies) > 1]
    if not clashing:
        return out
    # Only copies whose header another copy shares can be one instance.
    alike = [
        c
        for copies in clashing
        for c in copies
        if sum(_content(d.header) == _content(c.header) for d in copies) > 1
    ]
    found = digests(alike) if alike else {}
    for copies in clashing:
        _judge(copies, found, out)
    return out


def _judge(copies: list[Instance], found: dict[str, tuple[str, str]], out: Copies) -> None:
    """The copies (distinct bytes, medium order) of one UID."""
    content = {_content(c.header) for c in copies}
    decoded: dict[str, list[Instance]] = {}
    failed: list[tuple[Instance, str]] = []
    for c in copies:
        digest, why = found.get(c.sha256, ("", "not compared"))
        if digest:
            decoded.setdefault(digest, []).append(c)
        else:
            failed.append((c, why))
    if len(content) == 1 and len(decoded) == 1:
        [same] = decoded.values()
        out.undecodable.extend(failed)
    else:
        # Other content, or nothing to compare: the first copy stays the
        # instance (with the copies proven equal to it), the rest clash.
        first = copies[0]
        same = next((g for g in decoded.values() if any(c is first for c in g)), [first])
        same = [c for c in same if _content(c.header) == _content(first.header)]
        kept = {id(c) for c in same}
        out.conflicts.extend(c for c in copies if id(c) not in kept)
    if len(same) > 1:
        out.encodings.append(sorted(same, key=preference))


def _content(h: Header) -> tuple[str, ...]:
    return tuple(str(getattr(h, name)) for name in _CONTENT_FIELDS)
