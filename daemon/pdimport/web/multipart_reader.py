"""A streaming reader of ``multipart/related`` bodies (RFC 2046 §5.1, RFC 2387),
as WADO-RS answers a retrieve (PS3.18 §8.6.1.2).

Pure bytes in, values out: it takes an iterator of byte chunks (httpx's
``iter_bytes``) and never holds more than one chunk plus a delimiter's length
of a part in memory, whatever the size of the study. The body is the
sender's: a part over the size cap, a missing or wrong boundary, headers that
never end and a body that stops inside a part are each refused with a
:class:`MultipartError` carrying a problem code, never a short part passed on
as if complete.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from pdimport.problems import CodedError

#: Header block of one part; real WADO-RS parts have two or three short lines.
MAX_HEADER_BYTES = 16384
#: RFC 2046 §5.1.1: a boundary is 1 to 70 characters.
_BOUNDARY = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$")
_PARAM = re.compile(r';\s*([!#$%&\'*+\-.^_`|~0-9A-Za-z]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)')


class MultipartError(CodedError):
    """The body is not the ``multipart/related`` it claims to be; ``code`` is
    ``multipart_malformed`` or ``too_large``."""


def content_type_params(value: str) -> tuple[str, dict[str, str]]:
    """The media type of a ``Content-Type`` value, lower-cased, and its
    parameters (names lower-cased, quoted values unquoted; RFC 9110 §5.6.6)."""
    kind, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for name, raw in _PARAM.findall(";" + rest):
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[name.lower()] = raw
    return kind.strip().lower(), params


def boundary_of(content_type: str) -> bytes:
    """The boundary of a ``multipart/related`` Content-Type.

    Raises
    ------
    MultipartError
        ``multipart_malformed``: not multipart/related, or no valid boundary.
    """
    kind, params = content_type_params(content_type)
    if kind != "multipart/related":
        raise MultipartError("multipart_malformed", f"Content-Type is {content_type!r}")
    boundary = params.get("boundary", "")
    if not _BOUNDARY.match(boundary):
        raise MultipartError("multipart_malformed", f"no valid boundary in {content_type!r}")
    return boundary.encode("ascii")


class MultipartReader:
    """Parts of one ``multipart/related`` body, one after the other.

    :meth:`next_part` moves to the next part and returns its headers (None
    after the close delimiter); :meth:`read` then gives that part's bytes.

    Parameters
    ----------
    chunks : iterator of bytes
        The body as it arrives.
    boundary : bytes
        From :func:`boundary_of`.
    max_part : int
        Bytes allowed in one part (``limits.max_file_size``).

    Raises
    ------
    MultipartError
        From :meth:`next_part` and :meth:`read`, as described above.
    """

    def __init__(self, chunks: Iterator[bytes], boundary: bytes, max_part: int) -> None:
        self._chunks = chunks
        # The first delimiter may open the body without a CRLF before it
        # (RFC 2046 §5.1.1); a virtual CRLF makes it look like the others.
        self._buf = bytearray(b"\r\n")
        self._delim = b"\r\n--" + boundary
        self._max_part = max_part
        self._eof = False
        self._in_part = False
        self._done = False
        self._part_bytes = 0
        self._started = False

    def _fill(self) -> bool:
        """One more chunk into the buffer; False at the end of the body."""
        if self._eof:
            return False
        for chunk in self._chunks:
            if chunk:
                self._buf += chunk
                return True
        self._eof = True
        return False

    def _skip_to_delimiter(self) -> None:
        """The preamble (or the rest of an unread part): skipped, bounded."""
        while True:
            at = self._buf.find(self._delim)
            if at >= 0:
                del self._buf[: at + len(self._delim)]
                return
            keep = len(self._delim) - 1
            if len(self._buf) > keep:
                dropped = len(self._buf) - keep
                if self._in_part:
                    self._count(dropped)
                del self._buf[:dropped]
            if not self._fill():
                what = "a part" if self._in_part else "the body"
                if not self._started:
                    what = "the body: no boundary delimiter"
                raise MultipartError("multipart_malformed", f"the body ends inside {what}")

    def _line(self, limit: int) -> bytes:
        while (at := self._buf.find(b"\r\n")) < 0:
            if len(self._buf) > limit or not self._fill():
                raise MultipartError("multipart_malformed", "a delimiter line never ends")
        line = bytes(self._buf[:at])
        del self._buf[: at + 2]
        return line

    def next_part(self) -> dict[str, str] | None:
        """Skip what is left of the current part; the next part's headers
        (names lower-cased), or None after the close delimiter."""
        if self._done:
            return None
        self._skip_to_delimiter()
        self._started = True
        self._in_part = False
        while len(self._buf) < 2 and self._fill():
            pass
        if self._buf[:2] == b"--":
            self._done = True  # the epilogue is ignored (RFC 2046 §5.1.1)
            return None
        rest = self._line(1024)
        if rest.strip(b" \t"):  # only transport padding may follow a boundary
            raise MultipartError("multipart_malformed", "text after a boundary delimiter")
        headers = self._headers()
        self._in_part = True
        self._part_bytes = 0
        return headers

    def _headers(self) -> dict[str, str]:
        while (end := self._buf.find(b"\r\n\r\n")) < 0 and not self._buf.startswith(b"\r\n"):
            if len(self._buf) > MAX_HEADER_BYTES:
                raise MultipartError("multipart_malformed", "a part's headers never end")
            if not self._fill():
                raise MultipartError("multipart_malformed", "the body ends inside part headers")
        if self._buf.startswith(b"\r\n"):
            del self._buf[:2]
            return {}
        block = bytes(self._buf[:end])
        del self._buf[: end + 4]
        if len(block) > MAX_HEADER_BYTES:
            raise MultipartError("multipart_malformed", "a part's headers never end")
        headers: dict[str, str] = {}
        for line in block.split(b"\r\n"):
            name, colon, value = line.partition(b":")
            if not colon or not name.strip():
                raise MultipartError("multipart_malformed", f"bad part header {line[:80]!r}")
            headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
        return headers

    def _count(self, n: int) -> None:
        self._part_bytes += n
        if self._part_bytes > self._max_part:
            raise MultipartError(
                "too_large", f"a part exceeds limits.max_file_size={self._max_part}"
            )

    def read(self, size: int = 1 << 20) -> bytes:
        """Up to ``size`` bytes of the current part; b"" at its end."""
        if not self._in_part:
            return b""
        while True:
            at = self._buf.find(self._delim)
            if at >= 0:
                n = min(at, size)
            else:
                n = min(len(self._buf) - len(self._delim) + 1, size)
            if n > 0 or at == 0:
                break
            if not self._fill():
                raise MultipartError("multipart_malformed", "the body ends inside a part")
        if at == 0:
            self._in_part = False  # the delimiter stays for next_part()
            return b""
        out = bytes(self._buf[:n])
        del self._buf[:n]
        self._count(n)
        return out

    def parts(self) -> Iterator[tuple[dict[str, str], bytes]]:
        """Every part whole (headers, bytes): for small bodies and tests."""
        while (headers := self.next_part()) is not None:
            body = bytearray()
            while chunk := self.read():
                body += chunk
            yield headers, bytes(body)
