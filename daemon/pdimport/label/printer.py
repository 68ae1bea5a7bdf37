"""Printer back-ends for the status label (an edge module: sockets, devices,
``lp``).

Chosen by ``printer.backend``:

``zpl``
    The label rasterised to a 1-bit bitmap (so Japanese always prints, whatever
    fonts the printer has) and sent as one ZPL ``^GFA`` graphic field to
    ``tcp://host:9100`` (raw JetDirect port) or written to a device file such
    as ``/dev/usb/lp0``. No driver, no CUPS in the critical path.
``cups``
    The PDF through ``lp -d QUEUE`` (``CUPS_SERVER`` honoured), for sites with
    other printers.
``file``
    The PDF or PNG into a folder (audit copies, tests, no printer yet).
``none``
    Nothing is printed.

A printer failure never raises into the caller and never fails an import:
:func:`print_label` returns a :class:`PrintResult` that the caller records,
shows in ``pdimport status`` and may act on by reprinting.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pdimport.label import render as label_mod
from pdimport.record.audit import AuditLog, operator_name
from pdimport.settings import declared
from pdimport.store.journal import open_journal

log = logging.getLogger(__name__)

BACKENDS = ("none", "zpl", "cups", "file")


@dataclass(frozen=True)
class PrintResult:
    """The outcome of one print attempt (a value, never an exception).

    Attributes
    ----------
    ok : bool
        The printer (or queue, or folder) accepted the whole job.
    detail : str
        What happened, for the journal and ``pdimport status``.
    backend, target : str
        Where it went.
    path : str
        The file written (``file`` back-end) or ``""``.
    nbytes : int
        Bytes handed to the printer or written.
    """

    ok: bool
    detail: str
    backend: str = ""
    target: str = ""
    path: str = ""
    nbytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class PrinterError(RuntimeError):
    """Internal: a back-end failed; turned into ``PrintResult(ok=False)``."""


def _opt(settings: Any, name: str) -> Any:
    """A declared ``printer.*`` setting from :class:`~pdimport.settings.Settings`, or
    from a plain mapping (tests, callers without a config), where a missing key
    takes the table's default. An undeclared name raises."""
    setting = declared(name)
    if isinstance(settings, Mapping):
        return settings.get(name, setting.default)
    return settings.get(name)


@dataclass(frozen=True)
class PrinterConfig:
    """The ``printer.*`` settings this module reads (see :func:`config_from`)."""

    backend: str = "none"
    target: str = ""
    size: str = "62mm"
    dpi: int = 203
    fmt: str = "pdf"
    timeout: float = 10.0
    cups_options: str = ""


def config_from(settings: Mapping[str, Any] | Any) -> PrinterConfig:
    return PrinterConfig(
        backend=str(_opt(settings, "printer.backend")),
        target=str(_opt(settings, "printer.target")),
        size=str(_opt(settings, "printer.size")),
        dpi=int(_opt(settings, "printer.dpi")),
        fmt=str(_opt(settings, "printer.format")),
        timeout=float(_opt(settings, "printer.timeout")),
        cups_options=str(_opt(settings, "printer.cups_options")),
    )


def print_label(
    report: dict[str, Any], settings: Mapping[str, Any] | Any, drive: str = ""
) -> PrintResult:
    """Render and print the status label of one job with the configured back-end.

    Parameters
    ----------
    report : dict
        The job report (DESIGN.md contract).
    settings : Settings or mapping
        Reads ``printer.backend``, ``printer.target``, ``printer.size``,
        ``printer.dpi``, ``printer.format``, ``printer.timeout``,
        ``printer.cups_options``.
    drive : str
        Drive or bay printed on the label.

    Returns
    -------
    PrintResult
        ``ok=False`` with a readable ``detail`` on any failure; this function
        does not raise.
    """
    cfg = config_from(settings)
    handler = _HANDLERS.get(cfg.backend)
    if handler is None:
        return PrintResult(
            False,
            f"unknown printer.backend {cfg.backend!r}; choose one of {', '.join(BACKENDS)}",
            cfg.backend,
            cfg.target,
        )
    try:
        result = handler(report, cfg, drive)
    except (PrinterError, label_mod.LabelError, OSError, subprocess.SubprocessError) as exc:
        result = PrintResult(False, str(exc) or type(exc).__name__, cfg.backend, cfg.target)
    except Exception as exc:
        log.exception("label printing failed unexpectedly")
        result = PrintResult(False, f"internal error: {exc!r}", cfg.backend, cfg.target)
    log_fn = log.info if result.ok else log.warning
    log_fn(
        "label for job %s: %s (%s %s)", report.get("job"), result.detail, cfg.backend, cfg.target
    )
    return result


# --------------------------------------------------------------------------- none / file
def _print_none(report: dict[str, Any], cfg: PrinterConfig, drive: str) -> PrintResult:
    return PrintResult(True, "printing disabled (printer.backend = none)", "none")


def _print_file(report: dict[str, Any], cfg: PrinterConfig, drive: str) -> PrintResult:
    if not cfg.target:
        raise PrinterError("printer.target must name a folder for the file back-end")
    folder = Path(cfg.target)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{_safe(report.get('job', 'label'))}.{cfg.fmt}"
    # Render beside the final name and rename: a watcher never sees half a file.
    tmp = folder / f".{final.name}.tmp"
    label_mod.render_label(report, cfg.size, tmp, cfg.fmt, drive)
    os.replace(tmp, final)
    size = final.stat().st_size
    return PrintResult(True, f"written to {final}", "file", cfg.target, str(final), size)


def _safe(name: Any) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(name)) or "label"


# --------------------------------------------------------------------------- cups
def _print_cups(report: dict[str, Any], cfg: PrinterConfig, drive: str) -> PrintResult:
    if not cfg.target:
        raise PrinterError("printer.target must name a CUPS queue for the cups back-end")
    with tempfile.TemporaryDirectory(prefix="pdimport-lp-") as tmp:
        pdf = label_mod.render_label(report, cfg.size, Path(tmp) / "label.pdf", "pdf", drive)
        args = ["lp", "-d", cfg.target, "-t", f"pdimport {report.get('job', '')}"]
        for opt in cfg.cups_options.split():
            args += ["-o", opt]
        res = subprocess.run(
            [*args, str(pdf)],
            capture_output=True,
            text=True,
            timeout=cfg.timeout,
            check=False,
            env=os.environ.copy(),
        )
        nbytes = pdf.stat().st_size
    if res.returncode != 0:
        raise PrinterError(
            f"lp -d {cfg.target} failed ({res.returncode}): {(res.stderr or res.stdout).strip()}"
        )
    return PrintResult(True, res.stdout.strip() or "queued", "cups", cfg.target, "", nbytes)


# --------------------------------------------------------------------------- zpl
def zpl_job(pbm: bytes) -> bytes:
    """Wrap a binary PBM (P4) bitmap as one ZPL II label with a ``^GFA`` field.

    PBM rows are packed MSB first with 1 = black, padded to whole bytes: the
    same layout as ZPL's graphic field, so the bytes are copied as hex.
    ``^GFA,b,c,d,data``: b = c = total bytes, d = bytes per row.
    """
    width, height, bits = parse_pbm(pbm)
    row = (width + 7) // 8
    total = row * height
    header = f"^XA^PW{width}^LL{height}^LH0,0^FO0,0^GFA,{total},{total},{row},"
    return header.encode("ascii") + bits[:total].hex().upper().encode("ascii") + b"^FS^XZ\n"


def parse_pbm(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, packed bits) of a binary PBM (Netpbm P4) image."""
    tokens: list[bytes] = []
    pos = 0
    while len(tokens) < 3:
        while pos < len(data) and data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while end < len(data) and not data[end : end + 1].isspace():
            end += 1
        tokens.append(data[pos:end])
        pos = end
    if tokens[0] != b"P4":
        raise PrinterError("rasteriser did not produce a binary PBM")
    width, height = int(tokens[1]), int(tokens[2])
    bits = data[pos + 1 :]  # exactly one whitespace byte after the height
    if len(bits) < ((width + 7) // 8) * height:
        raise PrinterError("PBM bitmap is shorter than its header says")
    return width, height, bits


def render_zpl(report: dict[str, Any], size: str, dpi: int, drive: str = "") -> bytes:
    """The ZPL job for a report: PDF label -> 1-bit bitmap at the printer's dpi."""
    with tempfile.TemporaryDirectory(prefix="pdimport-zpl-") as tmp:
        pdf = label_mod.render_label(report, size, Path(tmp) / "label.pdf", "pdf", drive)
        pbm = label_mod.rasterise(pdf, Path(tmp) / "label.pbm", dpi=dpi, mono=True)
        return zpl_job(pbm.read_bytes())


def _print_zpl(report: dict[str, Any], cfg: PrinterConfig, drive: str) -> PrintResult:
    if not cfg.target:
        raise PrinterError("printer.target must be tcp://host:9100 or a device file for zpl")
    job = render_zpl(report, cfg.size, cfg.dpi, drive)
    send_raw(cfg.target, job, cfg.timeout)
    return PrintResult(True, f"sent {len(job)} bytes of ZPL", "zpl", cfg.target, "", len(job))


def send_raw(target: str, data: bytes, timeout: float) -> None:
    """Send a raw printer job to ``tcp://host[:port]`` (port 9100 by default)
    or write it to a device/file path."""
    if target.startswith("tcp://"):
        url = urlsplit(target)
        if not url.hostname:
            raise PrinterError(f"no host in printer target {target!r}")
        _send_tcp(url.hostname, url.port or 9100, data, timeout)
        return
    path = target.removeprefix("file://")
    _write_device(Path(path), data)


def _send_tcp(host: str, port: int, data: bytes, timeout: float) -> None:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(data)
            # Half-close and wait for the printer's close, so "ok" means the
            # printer read the whole job, not only that our kernel buffered it.
            sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and sock.recv(4096):
                pass
    except OSError as exc:
        raise PrinterError(f"printer {host}:{port}: {exc.strerror or exc}") from exc


def _write_device(path: Path, data: bytes) -> None:
    try:
        # O_APPEND without O_CREAT for character devices: a typo in the
        # target must not silently create a regular file in /dev.
        flags = os.O_WRONLY | (os.O_APPEND | os.O_CREAT if not str(path).startswith("/dev/") else 0)
        fd = os.open(path, flags, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
    except OSError as exc:
        raise PrinterError(f"printer device {path}: {exc.strerror or exc}") from exc


_HANDLERS: dict[str, Callable[[dict[str, Any], PrinterConfig, str], PrintResult]] = {
    "none": _print_none,
    "zpl": _print_zpl,
    "cups": _print_cups,
    "file": _print_file,
}


# --------------------------------------------------------------------------- CLI
def label_main(cfg_state_dir: Any, job_id: str, out: Path | None = None) -> int:
    """``pdimport label JOB [--out FILE]``: render or reprint a stored label.

    Parameters
    ----------
    cfg_state_dir : Settings or Path
        The settings (then, without ``out``, the label is printed with the
        configured back-end) or just the state directory (then, without
        ``out``, it is written to ``STATE_DIR/labels/JOB.pdf``).
    job_id : str
        The job whose stored report is used.
    out : Path, optional
        Write the label here (``.png`` gives a PNG, anything else a PDF).

    Returns
    -------
    int
        0 done, 1 printing failed (reported), 2 no such job or no report.
    """
    settings = cfg_state_dir if hasattr(cfg_state_dir, "state_path") else None
    state = Path(settings.state_path if settings is not None else cfg_state_dir)
    report = _stored_report(state, job_id, settings)
    if report is None:
        print(f"pdimport label: no report for job {job_id!r} in {state}", flush=True)
        return 2
    if out is None and settings is not None and config_from(settings).backend != "none":
        result = print_label(report, settings, drive=str(report.get("source", {}).get("drive", "")))
    else:
        result = _render_to(
            report,
            out or state / "labels" / f"{_safe(job_id)}.pdf",
            config_from(settings or {}).size,
        )
    _audit_label(state, report, result, settings)
    print(("printed: " if result.ok else "FAILED: ") + result.detail, flush=True)
    return 0 if result.ok else 1


def _stored_report(state: Path, job_id: str, settings: Any) -> dict[str, Any] | None:
    journal = open_journal(settings, state)
    try:
        return journal.report(job_id)
    finally:
        journal.close()


def _render_to(report: dict[str, Any], out: Path, size: str) -> PrintResult:
    fmt = "png" if out.suffix.lower() == ".png" else "pdf"
    try:
        label_mod.render_label(report, size, out, fmt)
    except (label_mod.LabelError, OSError) as exc:
        return PrintResult(False, str(exc), "file", str(out))
    return PrintResult(True, f"written to {out}", "file", str(out), str(out), out.stat().st_size)


def _audit_label(state: Path, report: dict[str, Any], result: PrintResult, settings: Any) -> None:
    try:
        AuditLog.from_settings(state, settings).append(
            "label_printed",
            job=report.get("job"),
            actor=operator_name(),
            reprint=True,
            ok=result.ok,
            detail=result.detail,
            printer=result.backend,
        )
    except OSError as exc:
        log.warning("could not record the reprint in the audit log: %s", exc)
