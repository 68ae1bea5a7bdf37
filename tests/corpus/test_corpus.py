"""Corpus test: real files written by other software, side by side with dcmtk ``dcmsend``.

Done when (the issue): "A corpus test of real files written by other software
(public test-data packages installed by the test set-up), run as folder / ISO /
zip / DICOMDIR media against dcmtk `dcmsend` into the same storescp (`+xa`, and
uncompressed-only): pdimport delivers every instance dcmsend delivers,
byte-identical or pixel-identical after lossless decoding, never merges
patients, and `scan` matches pydicom's reading of the files."

For each medium (:mod:`corpus_media`) and each receiver flavour, dcmsend and
``pdimport import`` each send the medium to their own dcmtk storescp, started
with the same flags (``+B`` bit-preserving, so a byte comparison tests the
sender, not storescp's re-encoding; ``+xa`` or the default uncompressed-only).
One run per (medium, receiver) is cached for the session; the checks below
read it:

* every SOP Instance UID dcmsend got stored, pdimport got stored;
* each instance pdimport got stored is the data set of a file on the medium
  with that UID, byte for byte; or, when the receiver made pdimport transcode,
  the same values and the same pixels as pydicom decodes them (exact for
  lossless syntaxes; within a tolerance for lossy ones, :data:`LOSSY`, whose
  decoders may differ); or, where pdimport reports a repair of that file
  (``meta_repaired`` / ``length_repaired``), the same values;
* no patient of pdimport's report holds instances whose non-empty PatientID,
  IssuerOfPatientID, PatientName, PatientBirthDate or PatientSex (as pydicom
  reads them) disagree;
* a second import of the medium sends nothing;
* ``pdimport scan --json`` of the folder medium reports, per file, pydicom's
  SOP Instance/Class UID, Study/Series UID, Patient ID and transfer syntax.

dcmsend runs with ``+f`` (read data sets without file meta too: they are part of
the corpus) and ``-nuc`` (no UID checks: pdimport is to accept unambiguous UID
faults with a warning, so dcmsend's refusal must not hide them); it decompresses
lossless syntaxes for the uncompressed-only receiver (its default ``+dls``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import warnings
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from corpus_media import (
    LOSSY,
    PATIENT_KEYWORDS,
    Original,
    build_dicomdir,
    build_folder,
    build_zip,
    corpus_files,
    dataset_bytes,
    extract_iso,
    extract_zip,
    normalized,
    originals,
    pydicom_data_installed,
    read_quietly,
    transfer_syntax_of,
)
from fixtures_media import make_iso
from fixtures_peers import DCMTK_STORESCP, Peer, free_port, wait_for_port
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from pdimport.cli import main

MEDIA = ("folder", "iso", "zip", "dicomdir")
RECEIVERS = ("accept_all", "uncompressed")
RUNS = [pytest.param(m, r, id=f"{m}-{r}") for m in MEDIA for r in RECEIVERS]
DCMSEND = "/usr/bin/dcmsend"
#: Problem codes of a file that ends before an element's declared length: pydicom
#: reads such a file (with a short value), dcmsend refuses it ("premature end of
#: stream"), and so may pdimport.
TRUNCATED = frozenset(("truncated", "undefined_length_misuse"))
#: ``ai.prefix`` as shipped.
AI_PREFIX = "[AI]"

#: Elements a lossless decode legitimately rewrites (PS3.5 8.2: the pixel module
#: describes the encoded form), the file meta, and the retired group lengths.
_DECODE_REWRITES = frozenset(
    Tag(t)
    for t in (
        (0x7FE0, 0x0010),  # Pixel Data
        (0x0028, 0x0004),  # Photometric Interpretation (YBR_RCT/ICT -> RGB)
        (0x0028, 0x0006),  # Planar Configuration
        (0xFFFC, 0xFFFC),  # Data Set Trailing Padding
    )
)


# ------------------------------------------------------------------ the media
@dataclass
class Media:
    """The built media: where each is, and the folder form each is read in."""

    sources: dict[str, Path] = field(default_factory=dict)  # what pdimport imports
    folders: dict[str, Path] = field(default_factory=dict)  # what dcmsend sends
    originals: dict[str, list[Original]] = field(default_factory=dict)
    refused_by_fileset: list[str] = field(default_factory=list)


@pytest.fixture(scope="session")
def corpus_media(tmp_path_factory: pytest.TempPathFactory) -> Media:
    """Built once per session: the corpus as folder, ISO, zip and DICOMDIR media."""
    if not pydicom_data_installed():
        pytest.fail("pydicom-data is not installed: pip install -e '.[test]' (pyproject.toml)")
    for tool in (DCMSEND, DCMTK_STORESCP):
        if not os.access(tool, os.X_OK):
            pytest.skip(f"{tool} (dcmtk) is not installed")
    files = corpus_files()
    assert len(files) > 150, f"only {len(files)} corpus files found"
    root = tmp_path_factory.mktemp("corpus")
    media = Media()
    folder = build_folder(root / "Patient Disc (export) ä", files)
    media.sources["folder"] = media.folders["folder"] = folder
    media.sources["iso"] = make_iso(folder, root / "disc.iso", volid="CORPUS")
    media.folders["iso"] = extract_iso(media.sources["iso"], root / "iso-extracted")
    media.sources["zip"] = build_zip(folder, root / "package.zip")
    media.folders["zip"] = extract_zip(media.sources["zip"], root / "zip-extracted")
    dicomdir, media.refused_by_fileset = build_dicomdir(root / "dicomdir", files)
    media.sources["dicomdir"] = media.folders["dicomdir"] = dicomdir.parent
    for name, path in media.folders.items():
        media.originals[name] = originals(path)
    # The ISO and zip carry the folder's files under the folder's names.
    for name in ("iso", "zip"):
        assert [o.rel for o in media.originals[name]] == [o.rel for o in media.originals["folder"]]
    return media


# --------------------------------------------------------------------- peers
def _start_storescp(out_dir: Path, accept_all: bool) -> Peer:
    """dcmtk storescp as the ``storescp`` fixture starts it, but for the session."""
    port = free_port()
    out_dir.mkdir(parents=True)
    args = [DCMTK_STORESCP, "-aet", "STORESCP", "-od", str(out_dir), "+B"]
    if accept_all:
        args.append("+xa")
    # TCP_NODELAY for both senders' peers alike: with Nagle on, every C-STORE
    # of a small file waits out a delayed ACK (performance.md 3a), which is
    # most of this test's time and none of its point.
    env = {**os.environ, "TCP_NODELAY": "1"}
    proc = subprocess.Popen(
        [*args, str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_for_port(port, proc)
    return Peer("STORESCP", port, out_dir, proc)


def _stop(peer: Peer) -> None:
    proc = peer.proc
    assert proc is not None
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _snapshot(peer: Peer) -> dict[str, tuple[int, int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size) for p in peer.files()}


# ----------------------------------------------------------------------- runs
@dataclass
class Run:
    medium: str
    receiver: str
    originals: list[Original]
    dcmsend: Peer
    pdimport: Peer
    report: dict[str, Any]
    second_report: dict[str, Any]
    second_changed: list[str]
    dcmsend_log: str

    def by_uid(self) -> dict[str, list[Original]]:
        out: dict[str, list[Original]] = defaultdict(list)
        for o in self.originals:
            out[o.SOPInstanceUID].append(o)
        return out

    def by_rel(self) -> dict[str, Original]:
        return {o.rel: o for o in self.originals}


def stored(peer: Peer) -> dict[str, list[Path]]:
    """SOP Instance UID -> files the receiver stored."""
    out: dict[str, list[Path]] = defaultdict(list)
    for path in peer.files():
        out[str(read_quietly(path, stop_before_pixels=True).SOPInstanceUID)].append(path)
    return out


def run_pdimport(*args: str) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main([*args, "--json"])
    text = out.getvalue()
    return rc, (json.loads(text) if text.strip() else {})


def run_dcmsend(peer: Peer, medium: str, folder: Path) -> str:
    args = [DCMSEND, "-aec", peer.aet, "-to", "10", "-ta", "10", "+f", "-nh", "-nuc"]
    if medium == "dicomdir":
        args += ["+rd", "127.0.0.1", str(peer.port), str(folder / "DICOMDIR")]
    else:
        args += ["+sd", "+r", "127.0.0.1", str(peer.port), str(folder)]
    # -nh: it goes on past files it refuses, and then exits non-zero; what it
    # delivered is what storescp stored.
    proc = subprocess.run(args, capture_output=True, text=True, check=False, timeout=300)
    return proc.stdout + proc.stderr


class Runs:
    """One dcmsend + pdimport run per (medium, receiver), made when first asked for."""

    def __init__(self, media: Media, root: Path) -> None:
        self.media = media
        self.root = root
        self.peers: list[Peer] = []
        self.runs: dict[tuple[str, str], Run] = {}
        self.config = root / "pdimport.toml"
        # split: the corpus holds many patients; "hold" (the default) would
        # deliver nothing and leave the comparison with dcmsend empty. No
        # Other Content conversion: only the corpus files are compared. Short
        # network timeouts: a C-STORE storescp never answers costs seconds, not
        # minutes (loopback answers a good one in milliseconds), and one attempt
        # per run: a second one would meet the same storescp.
        self.config.write_text(
            "convert_other_content = false\n"
            '[policy]\nmulti_patient = "split"\n'
            "[network]\nconnection_timeout = 3.0\nacse_timeout = 5.0\n"
            "dimse_timeout = 3.0\nnetwork_timeout = 10.0\nretries = 1\n"
        )

    def get(self, medium: str, receiver: str) -> Run:
        key = (medium, receiver)
        if key not in self.runs:
            self.runs[key] = self._run(medium, receiver)
        return self.runs[key]

    def _run(self, medium: str, receiver: str) -> Run:
        where = self.root / f"{medium}-{receiver}"
        accept_all = receiver == "accept_all"
        ref = _start_storescp(where / "dcmsend-scp", accept_all)
        ours = _start_storescp(where / "pdimport-scp", accept_all)
        self.peers += [ref, ours]
        log = run_dcmsend(ref, medium, self.media.folders[medium])
        common = ["--state-dir", str(where / "state"), "--config", str(self.config)]
        source = str(self.media.sources[medium])
        _rc, report = run_pdimport("import", source, "--dest", ours.url, *common)
        if "unidentified_patient" in report.get("hold_reasons", []):
            # A person looks at the files that name no patient and sends them
            # as they are (what dcmsend does without asking).
            _rc, report = run_pdimport(
                "release",
                report["job"],
                "--patient",
                "unidentified",
                "--keep-foreign",
                "--operator",
                "corpus",
                "--dest",
                ours.url,
                *common,
            )
        before = _snapshot(ours)
        _rc, second = run_pdimport("import", source, "--dest", ours.url, *common)
        after = _snapshot(ours)
        changed = sorted(n for n in before if before[n] != after.get(n))
        return Run(
            medium,
            receiver,
            self.media.originals[medium],
            ref,
            ours,
            report,
            second,
            changed,
            log,
        )

    def close(self) -> None:
        for peer in self.peers:
            _stop(peer)


@pytest.fixture(scope="session")
def corpus_runs(corpus_media: Media, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    runs = Runs(corpus_media, tmp_path_factory.mktemp("runs"))
    yield runs
    runs.close()


# ---------------------------------------------------------------- comparisons
def _norm(value: Any) -> Any:
    """A value without the trailing padding a length repair adds (PS3.5 6.2)."""
    if isinstance(value, bytes):
        return value.rstrip(b"\0 ")
    if isinstance(value, str):
        return value.rstrip("\0 ")
    return value


def _value_differences(got: Dataset, want: Dataset, skip: frozenset = frozenset()) -> list[str]:
    """Top-level elements of ``want`` whose values ``got`` lacks or changes."""
    out = []
    for elem in want:
        tag = elem.tag
        if tag.group == 0x0002 or tag.element == 0x0000 or tag in skip:
            continue
        if tag not in got:
            out.append(f"{elem.keyword or tag} missing")
        elif _norm(got[tag].value) != _norm(elem.value):
            out.append(f"{elem.keyword or tag} differs")
    return out


def _pixels(ds: Dataset) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ds.pixel_array


def _pixel_difference(got: Dataset, want: Dataset, lossy: bool) -> str | None:
    try:
        a, b = _pixels(got), _pixels(want)
    except Exception as exc:  # noqa: BLE001  a decoder's refusal is the finding
        return f"pixels do not decode: {type(exc).__name__}: {exc}"
    if a.shape != b.shape:
        return f"pixel shape {a.shape} != {b.shape}"
    if not lossy:
        return None if np.array_equal(a, b) else "pixels differ after lossless decoding"
    # Conformant decoders of a lossy stream differ by rounding (T.83 A.1.4:
    # an IDCT within one level of the reference); allow a mean of 1 level.
    mean = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())
    return None if mean <= 1.0 else f"decoded pixels differ by {mean:.2f} levels on average"


def _faithful_to(
    ds: Dataset, body: bytes, original: Original, repaired: bool, marked: bool
) -> str | None:
    """None when the stored ``ds`` is ``original`` as delivered; else why not.

    ``repaired``: pdimport reports a repair of the file, so the same values
    will do. ``marked``: an AI result under ``ai.policy = mark`` (the default),
    whose SeriesDescription pdimport prefixes on purpose.
    """
    if body == original.dataset:
        return None
    stored_ts = transfer_syntax_of(ds)
    if stored_ts == original.transfer_syntax and not (repaired or marked):
        return f"not byte-identical (both {stored_ts}, no repair reported)"
    want = read_quietly(original.path)
    transcoded = stored_ts != original.transfer_syntax
    skip = _DECODE_REWRITES if transcoded else frozenset()
    if marked:
        if not str(ds.get("SeriesDescription", "")).startswith(AI_PREFIX):
            return f"an AI result without the {AI_PREFIX} mark"
        skip |= {Tag(0x0008, 0x103E)}
    diffs = _value_differences(ds, want, skip)
    if diffs:
        return f"{stored_ts} from {original.transfer_syntax}: " + ", ".join(diffs[:5])
    if transcoded and "PixelData" in want:
        why = _pixel_difference(ds, want, original.transfer_syntax in LOSSY)
        if why:
            return f"{stored_ts} from {original.transfer_syntax}: {why}"
    return None


def _marked_paths(report: dict[str, Any]) -> set[str]:
    return {i["path"] for i in report.get("instances", []) if i["kind"] == "ai"}


def _repaired_paths(report: dict[str, Any]) -> set[str]:
    return {
        p["path"]
        for p in report.get("problems", [])
        if p["code"] in ("meta_repaired", "length_repaired")
    }


def _diagnosis(run: Run, uid: str) -> str:
    """What pdimport's report says about the files with this UID."""
    rels = {o.rel for o in run.by_uid()[uid]}
    states = [
        f"{i['path']}={i['state']}{' ' + i['detail'] if i.get('detail') else ''}"
        for i in run.report.get("instances", [])
        if i["path"] in rels or i["sop_instance_uid"] == uid
    ]
    probs = [
        f"{p['code']}({p['path']})" for p in run.report.get("problems", []) if p["path"] in rels
    ]
    names = sorted(Path(r).name for r in rels)
    return f"{uid} {names}: report {states or 'no instance'} problems {probs}"


# ---------------------------------------------------------------------- tests
@pytest.mark.parametrize(("medium", "receiver"), RUNS)
def test_delivers_every_instance_dcmsend_delivers(corpus_runs, medium, receiver):
    run = corpus_runs.get(medium, receiver)
    reference = stored(run.dcmsend)
    # The harness works: dcmsend delivered most of the medium.
    assert len(reference) > len(run.by_uid()) // 2, run.dcmsend_log[-3000:]
    missing = sorted(set(reference) - set(stored(run.pdimport)))
    assert not missing, (
        f"{len(missing)} of {len(reference)} instances dcmsend delivered, pdimport did not "
        f"(status {run.report.get('status')}, holds {run.report.get('hold_reasons')}):\n"
        + "\n".join(_diagnosis(run, uid) for uid in missing)
    )


@pytest.mark.parametrize(("medium", "receiver"), RUNS)
def test_delivered_instances_are_the_originals(corpus_runs, medium, receiver):
    run = corpus_runs.get(medium, receiver)
    by_uid = run.by_uid()
    repaired, marked = _repaired_paths(run.report), _marked_paths(run.report)
    unfaithful = []
    for uid, paths in sorted(stored(run.pdimport).items()):
        for path in paths:
            ds = read_quietly(path)
            body = dataset_bytes(path.read_bytes())
            whys = [
                _faithful_to(ds, body, o, o.rel in repaired, o.rel in marked)
                for o in by_uid.get(uid, [])
            ]
            if not whys:
                unfaithful.append(f"{uid}: no file on the medium has this UID")
            elif all(whys):
                unfaithful.append(
                    f"{uid}: "
                    + "; ".join(f"{Path(o.rel).name}: {w}" for o, w in zip(by_uid[uid], whys))
                )
    assert not unfaithful, "\n".join(unfaithful)


def _patients_of(report: dict[str, Any]) -> dict[tuple[str, str], list[int]]:
    """(study UID, series UID) -> indexes of the report's patients that hold it."""
    out: dict[tuple[str, str], list[int]] = defaultdict(list)
    for n, patient in enumerate(report["patients"]):
        for study in patient["studies"]:
            for series in study["series"]:
                out[(study["uid"], series["uid"])].append(n)
    return out


_REPORT_FIELDS = {
    "PatientID": "id",
    "IssuerOfPatientID": "issuer",
    "PatientName": "name",
    "PatientBirthDate": "birth_date",
    "PatientSex": "sex",
}


def _reported(patient: dict[str, Any], kw: str) -> str:
    return normalized(kw, patient.get(_REPORT_FIELDS[kw]) or "")


def _agrees(patient: dict[str, Any], original: Original) -> bool:
    return all(
        not _reported(patient, kw)
        or not original.patient[kw]
        or _reported(patient, kw) == original.patient[kw]
        for kw in _REPORT_FIELDS
    )


@pytest.mark.parametrize(("medium", "receiver"), RUNS)
def test_never_merges_patients(corpus_runs, medium, receiver):
    run = corpus_runs.get(medium, receiver)
    report, by_rel = run.report, run.by_rel()
    where = _patients_of(report)
    members: dict[int, list[Original]] = defaultdict(list)
    faults = []
    for inst in report["instances"]:
        original = by_rel.get(inst["path"])
        holders = where.get((inst["study_uid"], inst["series_uid"]), [])
        if original is None or not holders:
            continue  # not grouped (skipped, refused): nothing merged
        fitting = [n for n in holders if _agrees(report["patients"][n], original)]
        if not fitting:
            who = [
                {kw: _reported(report["patients"][n], kw) for kw in _REPORT_FIELDS} for n in holders
            ]
            faults.append(f"{inst['path']}: {original.patient} filed under {who}")
        elif len(fitting) == 1:  # a series split between patients: cannot tell which
            members[fitting[0]].append(original)
    for n, group in sorted(members.items()):
        for kw in PATIENT_KEYWORDS:
            values = defaultdict(list)
            for o in group:
                if o.patient[kw]:
                    values[o.patient[kw]].append(Path(o.rel).name)
            if len(values) > 1:
                shown = {v: sorted(names)[:3] for v, names in values.items()}
                faults.append(f"patient #{n} {report['patients'][n]['id']!r}: {kw} {shown}")
    assert not faults, "\n".join(faults)


@pytest.mark.parametrize(("medium", "receiver"), RUNS)
def test_second_import_sends_nothing(corpus_runs, medium, receiver):
    """Nothing the first import delivered is sent again (the journal knows);
    what it could not deliver may be. (Files that name no patient are held
    again by the second import: a new job, no decision yet; held is not sent.)"""
    run = corpus_runs.get(medium, receiver)
    first_sent = {i["path"] for i in run.report["instances"] if i["state"] == "sent"}
    assert first_sent, run.report["counts"]
    resent = [
        i["path"]
        for i in run.second_report["instances"]
        if i["path"] in first_sent and i["state"] == "sent" and not i.get("previously_sent")
    ]
    assert not resent, f"sent again: {resent[:10]} ({run.second_report['counts']})"
    assert not run.second_changed, f"stored again: {run.second_changed[:10]}"


def test_scan_matches_pydicom(corpus_media, tmp_path):
    folder = corpus_media.folders["folder"]
    _rc, report = run_pdimport("scan", str(folder), "--state-dir", str(tmp_path / "state"))
    where = _patients_of(report)
    scanned = {i["path"]: i for i in report["instances"]}
    faults = []
    for o in corpus_media.originals["folder"]:
        inst = scanned.get(o.rel)
        said = {p["code"]: p["detail"] for p in report["problems"] if p["path"] == o.rel}
        if inst is None and said.keys() & TRUNCATED:
            continue  # pydicom reads a short value silently; dcmsend refuses these too
        if inst is None:
            faults.append(f"{o.rel}: not an instance in the scan {said}")
            continue
        want = {
            "sop_instance_uid": o.SOPInstanceUID,
            "sop_class_uid": o.SOPClassUID,
            "study_uid": o.StudyInstanceUID,
            "series_uid": o.SeriesInstanceUID,
            "transfer_syntax": o.transfer_syntax,
        }
        for key, value in want.items():
            if inst[key] != value:
                faults.append(f"{o.rel}: {key} {inst[key]!r}, pydicom {value!r}")
        ids = {
            report["patients"][n]["id"]
            for n in where.get((o.StudyInstanceUID, o.SeriesInstanceUID), [])
        }
        if o.patient["PatientID"] not in ids:
            faults.append(f"{o.rel}: PatientID {sorted(ids)}, pydicom {o.patient['PatientID']!r}")
    assert not faults, f"{len(faults)} disagreements:\n" + "\n".join(faults)
