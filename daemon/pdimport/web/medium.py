"""A study on a DICOMweb server as a medium: QIDO-RS lists its instances,
WADO-RS retrieves each one, streamed into the spool.

The job that reads it is the same as a disc's (spool, scan, one-patient
rule, reconciliation, delivery, label, report, audit); the medium's identity
is the normalised intake URL (:attr:`StudyRef.key`), so importing the same
study again resumes its job, and what a destination acknowledged is never
sent again.

A connection that breaks inside an instance is taken up again
(``intake.wado_retries`` times, skipping the bytes already spooled: a
retrieve of the same stored instance gives the same bytes); after that the
instance is a ``remote_unreachable`` problem, the rest of the study is still
read, and the job ends partial, so that it is imported again later (the
daemon's poller does so).
"""

from __future__ import annotations

import logging
from typing import Any, BinaryIO

import httpx

from pdimport.media.base import LargeReads, MediumOpenError, SizeBudget
from pdimport.model import MediumEntry, MediumReadError
from pdimport.problems import CodedError, Problem
from pdimport.settings import Settings
from pdimport.web.dicomweb import (
    WADO_ACCEPT,
    RemoteError,
    StudyRef,
    check_status,
    is_uid,
    parse_url,
    search,
    transport_error,
    value,
)
from pdimport.web.http import WebConfigError, make_client
from pdimport.web.multipart_reader import MultipartError, MultipartReader, boundary_of

log = logging.getLogger(__name__)

SOP_INSTANCE_UID, SERIES_INSTANCE_UID = "00080018", "0020000E"
INSTANCE_NUMBER = "00200013"


class _Retrieve:
    """One WADO-RS retrieve of one instance: the response and its first part."""

    def __init__(self, client: httpx.Client, path: str, max_part: int) -> None:
        self.response: httpx.Response | None = None
        try:
            request = client.build_request("GET", path, headers={"Accept": WADO_ACCEPT})
            self.response = client.send(request, stream=True)
            check_status(self.response, f"WADO-RS {path}")
            boundary = boundary_of(self.response.headers.get("content-type", ""))
            self.reader = MultipartReader(self.response.iter_bytes(), boundary, max_part)
            headers = self.reader.next_part()
        except httpx.HTTPError as exc:
            self.close()
            raise transport_error(exc, f"WADO-RS {path}") from None
        except CodedError:
            self.close()
            raise
        if headers is None:
            self.close()
            raise MultipartError("multipart_malformed", f"WADO-RS {path}: no part in the answer")
        kind = headers.get("content-type", "application/dicom").split(";")[0].strip().lower()
        if kind != "application/dicom":
            self.close()
            raise MultipartError("multipart_malformed", f"WADO-RS {path}: a part of type {kind}")

    def close(self) -> None:
        if self.response is not None:
            self.response.close()


class InstanceStream(LargeReads):
    """The bytes of one instance, as :meth:`Medium.open` promises: complete,
    or a :class:`MediumReadError` with a problem code, never short data."""

    def __init__(self, medium: DicomwebMedium, entry: MediumEntry, path: str) -> None:
        super().__init__()
        self._medium = medium
        self._entry = entry
        self._path = path
        self._count = 0
        self._retries = medium.retries
        self._current: _Retrieve | None = None
        self._done = False

    def _connect(self) -> _Retrieve:
        current = _Retrieve(self._medium.client, self._path, self._medium.max_part)
        skip = self._count
        try:
            while skip:  # a retrieve taken up again: the bytes spooled already
                chunk = current.reader.read(min(skip, self.CHUNK))
                if not chunk:
                    raise MultipartError(
                        "multipart_malformed", f"{self._path}: shorter than before"
                    )
                skip -= len(chunk)
        except BaseException:
            current.close()
            raise
        return current

    def readinto(self, buf: Any) -> int:
        if self._done:
            return 0
        while True:
            try:
                if self._current is None:
                    self._current = self._connect()
                data = self._current.reader.read(min(len(buf), self.CHUNK))
                break
            except httpx.HTTPError as exc:
                self._drop()
                if self._retries <= 0:
                    raise self._coded(transport_error(exc, f"WADO-RS {self._path}")) from None
                self._retries -= 1
                log.info("%s: %s; retrieving again from byte %d", self._path, exc, self._count)
            except RemoteError as exc:
                self._drop()
                if exc.code != "remote_unreachable" or self._retries <= 0:
                    raise self._coded(exc) from None
                self._retries -= 1
            except CodedError as exc:
                self._drop()
                raise self._coded(exc) from None
        if not data:
            self._done = True
            self._finish()
            return 0
        self._count += len(data)
        self._medium.charge(len(data), self._entry.path)
        buf[: len(data)] = data
        return len(data)

    def _finish(self) -> None:
        """The part is complete: the close delimiter is read too, so that the
        connection goes back to the keep-alive pool."""
        current, self._current = self._current, None
        if current is None:
            return
        try:
            if current.reader.next_part() is not None:
                log.warning("%s: more than one part in the answer; the first is used", self._path)
        except (httpx.HTTPError, CodedError) as exc:
            log.info("%s: after the instance: %s", self._path, exc)
        finally:
            current.close()

    def _coded(self, exc: CodedError) -> MediumReadError:
        return MediumReadError(exc.code, f"{self._entry.path}: {exc.detail}")

    def _drop(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None

    def close(self) -> None:
        self._drop()
        super().close()


class DicomwebMedium:
    """A study, or one series of it, on a DICOMweb server.

    Parameters
    ----------
    source : str
        ``dicomweb+http(s)://host/path/studies/UID[/series/UID]``.
    settings : Settings
        The ``web.*`` client settings, ``limits.*`` and ``intake.*``.

    Raises
    ------
    MediumOpenError
        The URL is not an intake URL (``unreadable_medium``), the ``web.*``
        settings cannot work (``unreadable_medium``), or the search failed
        (``remote_unreachable``, ``remote_refused``, ``remote_answer_invalid``).
    """

    kind = "dicomweb"

    def __init__(self, source: str, settings: Settings) -> None:
        try:
            self.ref: StudyRef = parse_url(source)
        except ValueError as exc:
            raise MediumOpenError("unreadable_medium", str(exc)) from None
        self.path = self.ref.url
        #: the journal's identity of the source (read by the importer)
        self.source_key = self.ref.key
        self.label = self.ref.root.split("://", 1)[1].split("/", 1)[0]
        self.problems: list[Problem] = []
        self.retries = int(settings.get("intake.wado_retries"))
        budget = SizeBudget.from_settings(settings)
        self.max_part = budget.max_file_size
        self._max_total = budget.max_medium_size
        self._total = 0
        try:
            self.client = make_client(settings, self.ref.root)
        except WebConfigError as exc:
            raise MediumOpenError("unreadable_medium", str(exc)) from None
        try:
            self._entries = self._list(budget, int(settings.get("intake.qido_page_size")))
        except RemoteError as exc:
            self.client.close()
            raise MediumOpenError(exc.code, exc.detail) from None
        self._paths = {e.path: p for e, p in zip(self._entries, self._wado_paths, strict=True)}

    def _list(self, budget: SizeBudget, page_size: int) -> list[MediumEntry]:
        """The instances QIDO-RS lists, each once, with checked UIDs."""
        fields = [("includefield", SERIES_INSTANCE_UID), ("includefield", INSTANCE_NUMBER)]
        found = search(
            self.client, f"{self.ref.path}/instances", fields, page_size, budget.max_files + 1
        )
        entries: list[MediumEntry] = []
        self._wado_paths: list[str] = []
        seen: set[str] = set()
        for ds in found:
            sop = value(ds, SOP_INSTANCE_UID)
            series = value(ds, SERIES_INSTANCE_UID) or self.ref.series
            if not (is_uid(sop) and is_uid(series)):
                self.problems.append(
                    Problem(
                        "remote_answer_invalid",
                        "",
                        f"QIDO-RS listed an instance without valid UIDs: {sop[:80]!r} "
                        f"in series {series[:80]!r}",
                    )
                )
                continue
            if sop in seen:
                continue
            seen.add(sop)
            label = f"{series}/{sop}.dcm"
            limit, why = budget.admit(0)  # sizes are known only while retrieving
            if limit:
                self.problems.append(Problem("too_large", label, why))
                continue
            entries.append(MediumEntry(label, 0, len(entries)))
            self._wado_paths.append(f"studies/{self.ref.study}/series/{series}/instances/{sop}")
        if not entries and not self.problems:
            log.info("%s: QIDO-RS lists no instances", self.path)
        return entries

    def charge(self, n: int, label: str) -> None:
        """Count ``n`` more bytes retrieved against ``limits.max_medium_size``."""
        self._total += n
        if self._total > self._max_total:
            raise MediumReadError(
                "too_large", f"{label}: the study exceeds limits.max_medium_size={self._max_total}"
            )

    # ----------------------------------------------------------- Medium API
    def entries(self) -> list[MediumEntry]:
        return list(self._entries)

    def open(self, entry: MediumEntry) -> BinaryIO:
        return InstanceStream(self, entry, self._paths[entry.path])  # type: ignore[return-value]

    def close(self) -> None:
        self.client.close()
