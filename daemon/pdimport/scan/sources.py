"""The byte sources the structure walker (:mod:`~pdimport.scan.walker`)
reads a dataset from: a seekable file, or the inflated stream of a Deflated
Explicit VR Little Endian dataset (PS3.5 §A.5), bounded in memory and in
output.
"""

from __future__ import annotations

import os
import zlib
from typing import BinaryIO

from pdimport.problems import FileProblem

_INFLATE_CHUNK = 1 << 16


class _FileSource:
    """A seekable file whose size is known; ``skip`` never reads."""

    def __init__(self, fp: BinaryIO, size: int, pos: int) -> None:
        self._fp = fp
        self.size = size
        self.pos = pos
        fp.seek(pos)

    def remaining(self) -> int | None:
        return self.size - self.pos

    def read(self, n: int) -> bytes:
        data = self._fp.read(n)
        self.pos += len(data)
        return data

    def skip(self, n: int) -> int:
        # The caller has checked n <= remaining(): seeking is safe and free.
        self._fp.seek(n, os.SEEK_CUR)
        self.pos += n
        return n


class _InflateSource:
    """The inflated stream of a Deflated Explicit VR Little Endian dataset
    (PS3.5 §A.5: raw deflate, RFC 1951, no zlib header).

    Inflates in ``max_length`` chunks so memory stays bounded, and stops with
    ``deflate_bomb`` once ``cap`` bytes have come out.
    """

    def __init__(self, fp: BinaryIO, start: int, cap: int) -> None:
        self._fp = fp
        fp.seek(start)
        self._z = zlib.decompressobj(-zlib.MAX_WBITS)
        self._buf = b""
        self._off = 0  # read position in _buf (slicing per header would copy 64 KiB)
        self._cap = cap
        self._produced = 0
        self.pos = start  # stream coordinates start at the dataset offset
        self._eof = False

    def remaining(self) -> int | None:
        return None  # unknown until inflated

    def _fill(self, want: int) -> None:
        if len(self._buf) - self._off >= want:
            return
        self._buf = self._buf[self._off :]
        self._off = 0
        while len(self._buf) < want and not self._eof:
            if self._z.unconsumed_tail:
                data = self._z.unconsumed_tail
            else:
                data = self._fp.read(_INFLATE_CHUNK)
                if not data:
                    self._finish()
                    return
            try:
                out = self._z.decompress(data, _INFLATE_CHUNK)
            except zlib.error as exc:
                raise FileProblem(
                    "ts_mismatch", f"deflated dataset does not inflate: {exc}"
                ) from None
            self._account(len(out))
            self._buf += out
            if self._z.eof:
                self._eof = True

    def _finish(self) -> None:
        try:
            out = self._z.flush()
        except zlib.error as exc:  # pragma: no cover - flush rarely fails
            raise FileProblem("ts_mismatch", f"deflated dataset does not inflate: {exc}") from None
        self._account(len(out))
        self._buf += out
        self._eof = True
        if not self._z.eof:
            raise FileProblem("truncated", "the deflate stream ends early")

    def _account(self, n: int) -> None:
        self._produced += n
        if self._produced > self._cap:
            raise FileProblem("deflate_bomb", f"inflates beyond {self._cap} bytes")

    def read(self, n: int) -> bytes:
        self._fill(n)
        data = self._buf[self._off : self._off + n]
        self._off += len(data)
        self.pos += len(data)
        return data

    def skip(self, n: int) -> int:
        done = 0
        while done < n:
            chunk = self.read(min(n - done, _INFLATE_CHUNK))
            if not chunk:
                break
            done += len(chunk)
        return done
