"""Copies of one SOP Instance UID (policy/duplicates.py): pure logic, with
the pixel digests given by the test."""

from __future__ import annotations

import itertools

import pytest

from pdimport.model import Header
from pdimport.policy.duplicates import sort_copies
from pdimport.policy.group import Instance

EXPLICIT, J2K = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.90"


def _copy(sha: str, ts: str = EXPLICIT, uid: str = "1.2.3", **h: str) -> Instance:
    header = Header(
        encoding="part10",
        transfer_syntax=ts,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        sop_instance_uid=uid,
        patient_id="P1",
        **h,
    )
    return Instance(path=f"DICOM/{sha}", sha256=sha * 64, header=header)


def _digests(table: dict[str, str]):
    """sha256 -> pixel digest ("" = does not decode); records what was asked."""
    asked: list[str] = []

    def digests(copies: list[Instance]) -> dict[str, tuple[str, str]]:
        asked.extend(c.sha256[0] for c in copies)
        return {
            c.sha256: (table[c.sha256[0]], "" if table[c.sha256[0]] else "bad codestream")
            for c in copies
        }

    return digests, asked


def test_identical_bytes_are_one_instance_without_decoding():
    a, b = _copy("a"), _copy("a")
    digests, asked = _digests({})
    found = sort_copies([a, b, _copy("b", uid="9")], digests)
    assert found.identical == [b] and not found.encodings and not found.conflicts
    assert asked == []


@pytest.mark.parametrize("order", list(itertools.permutations("xyz")))
def test_encodings_are_one_instance_whatever_the_order(order):
    made = {"x": _copy("x", J2K), "y": _copy("y", J2K), "z": _copy("z", EXPLICIT)}
    digests, _ = _digests({"x": "", "y": "P", "z": "P"})  # x does not decode
    found = sort_copies([made[k] for k in order], digests)
    assert [c.path for c in found.encodings[0]] == ["DICOM/z", "DICOM/y"]  # uncompressed first
    assert [(c.path, why) for c, why in found.undecodable] == [("DICOM/x", "bad codestream")]
    assert not found.conflicts


def test_same_syntax_is_ordered_by_content_hash():
    b, a = _copy("b", J2K), _copy("a", J2K)
    digests, _ = _digests({"a": "P", "b": "P"})
    assert sort_copies([b, a], digests).encodings == [[a, b]]


def test_other_pixels_are_a_conflict_and_the_first_stays():
    first, other = _copy("a"), _copy("b", J2K)
    digests, _ = _digests({"a": "P", "b": "Q"})
    found = sort_copies([first, other], digests)
    assert found.conflicts == [other] and not found.encodings


def test_another_header_is_a_conflict_without_decoding():
    first, other = _copy("a"), _copy("b", J2K, instance_number="7")
    digests, asked = _digests({})
    assert sort_copies([first, other], digests).conflicts == [other]
    assert asked == []


def test_nothing_decodes_is_a_conflict_as_before():
    first, other = _copy("a", J2K), _copy("b", J2K)
    digests, _ = _digests({"a": "", "b": ""})
    found = sort_copies([first, other], digests)
    assert found.conflicts == [other] and not found.undecodable
