"""The streaming multipart/related reader (RFC 2046 §5.1) on well-formed and
hostile bodies: every part whole, or a problem code, never short data."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pdimport.web.multipart_reader import MultipartError, MultipartReader, boundary_of

B = b"xyzBOUNDARYzyx"


def body(*parts: bytes, boundary: bytes = B, close: bool = True, preamble: bytes = b"") -> bytes:
    out = preamble
    for part in parts:
        out += b"--" + boundary + b"\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n"
    if close:
        out += b"--" + boundary + b"--\r\n"
    return out


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def parse(data: bytes, size: int = 7, max_part: int = 1 << 20) -> list[bytes]:
    reader = MultipartReader(iter(pieces(data, size)), B, max_part)
    return [part for _headers, part in reader.parts()]


def test_parts_whole_whatever_the_chunking():
    a, b = b"\x00DICM" * 100, b"--xyzBOUNDARYzy not quite\r\n--" * 3
    for size in (1, 2, 3, 17, 4096):
        assert parse(body(a, b, preamble=b"ignored preamble\r\n"), size) == [a, b]


def test_headers_are_read():
    data = body(b"abc")
    reader = MultipartReader(iter([data]), B, 100)
    assert reader.next_part() == {"content-type": "application/dicom"}
    assert reader.read() == b"abc" and reader.read() == b""
    assert reader.next_part() is None


def test_a_part_over_the_cap_is_too_large():
    with pytest.raises(MultipartError) as e:
        parse(body(b"x" * 101), max_part=100)
    assert e.value.code == "too_large"
    assert parse(body(b"x" * 100), max_part=100) == [b"x" * 100]


@pytest.mark.parametrize(
    "data",
    [
        body(b"abc")[:-25],  # truncated inside the part
        body(b"abc", close=False),  # no close delimiter: the body ends in a part
        b"no delimiter at all" * 10,
        body(b"abc", boundary=b"other"),  # another boundary than announced
        b"--" + B + b"\r\nContent-Type: application/dicom\r\n",  # headers never end
        b"--" + B + b"junk\r\n\r\nabc\r\n--" + B + b"--",  # text after the delimiter
        b"--" + B + b"\r\nno colon here\r\n\r\nabc\r\n--" + B + b"--",
    ],
)
def test_hostile_bodies_are_multipart_malformed(data):
    with pytest.raises(MultipartError) as e:
        parse(data)
    assert e.value.code == "multipart_malformed"


def test_endless_headers_are_refused_bounded():
    data = b"--" + B + b"\r\nX: " + b"a" * 100_000
    with pytest.raises(MultipartError) as e:
        parse(data, size=1000)
    assert e.value.code == "multipart_malformed"


@pytest.mark.parametrize(
    ("value", "boundary"),
    [
        ('multipart/related; type="application/dicom"; boundary=abc', b"abc"),
        ('Multipart/Related; boundary="a b:c"; type=application/dicom', b"a b:c"),
    ],
)
def test_boundary_of(value, boundary):
    assert boundary_of(value) == boundary


@pytest.mark.parametrize(
    "value",
    [
        "application/dicom",
        "multipart/related",
        "multipart/related; boundary=",
        "multipart/related; boundary=" + "a" * 71,
        'multipart/related; boundary="ends in space "',
    ],
)
def test_no_valid_boundary(value):
    with pytest.raises(MultipartError) as e:
        boundary_of(value)
    assert e.value.code == "multipart_malformed"


@settings(max_examples=200, deadline=None)
@given(
    parts=st.lists(st.binary(max_size=300), min_size=1, max_size=4),
    size=st.integers(min_value=1, max_value=64),
)
def test_fuzz_round_trip(parts, size):
    # the boundary never occurs inside a part (RFC 2046 §5.1.1: the sender's duty)
    parts = [p.replace(B, b"") for p in parts]
    assert parse(body(*parts), size) == parts


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), size=st.integers(min_value=1, max_value=64))
def test_fuzz_garbage_is_parts_or_a_coded_error(data, size):
    try:
        got = parse(b"--" + B + b"\r\n" + data, size, max_part=200)
    except MultipartError as exc:
        assert exc.code in ("multipart_malformed", "too_large")
    else:
        assert all(len(p) <= 200 for p in got)


@settings(max_examples=100, deadline=None)
@given(parts=st.lists(st.binary(max_size=200), min_size=1, max_size=3), cut=st.integers(1, 60))
def test_fuzz_truncation_is_never_a_short_part(parts, cut):
    parts = [p.replace(B, b"") for p in parts]
    data = body(*parts)
    # cut inside the last part or its close delimiter: never a quietly short part
    data = data[: len(data) - min(cut, len(parts[-1]) + 4 + len(B) + 4)]
    try:
        got = parse(data, 5)
    except MultipartError as exc:
        assert exc.code == "multipart_malformed"
    else:
        assert got == parts  # only the epilogue or close delimiter was lost


def test_memory_stays_bounded_on_a_large_part():
    """A 64 MiB part in 1 MiB chunks: the reader never holds much more than
    one chunk (the study is streamed, never held)."""
    chunk = b"\x5a" * (1 << 20)
    peak = 0

    def chunks():
        nonlocal peak
        yield b"--" + B + b"\r\n\r\n"
        for _ in range(64):
            peak = max(peak, len(reader._buf))
            yield chunk
        yield b"\r\n--" + B + b"--"

    reader = MultipartReader(chunks(), B, 1 << 30)
    assert reader.next_part() == {}
    total = 0
    while data := reader.read(1 << 20):
        total += len(data)
    assert total == 64 << 20
    assert peak <= (1 << 20) + len(B) + 4
