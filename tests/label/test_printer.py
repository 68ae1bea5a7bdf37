"""Printer back-ends: a real private cupsd, ZPL to a TCP sink, files, failures."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

import pytest
from fixtures_cups import *
from fixtures_cups import CupsServer, TcpSink, free_port
from test_label import JOB, needs_poppler, sample_report

from pdimport.label import printer
from pdimport.label.printer import PrintResult, print_label

ZPL_RE = re.compile(
    rb"^\^XA\^PW(\d+)\^LL(\d+)\^LH0,0\^FO0,0\^GFA,(\d+),(\d+),(\d+),"
    rb"([0-9A-F]+)\^FS\^XZ\n$"
)


def check_zpl(job: bytes) -> tuple[int, int, bytes]:
    """Assert a well-formed ZPL label with one ^GFA field; return (w, h, bits)."""
    m = ZPL_RE.match(job)
    assert m, job[:120]
    width, height, total, count, row = (int(m.group(i)) for i in range(1, 6))
    data = m.group(6)
    assert total == count == row * height  # ^GFA byte counts match the bitmap
    assert row == (width + 7) // 8
    assert len(data) == 2 * total  # hex: two characters per byte
    bits = bytes.fromhex(data.decode())
    assert any(bits), "an all-white label"
    return width, height, bits


@needs_poppler
def test_cups_prints_through_real_cupsd(cups_server: CupsServer) -> None:
    settings = {
        "printer.backend": "cups",
        "printer.target": cups_server.queue,
        "printer.size": "4x2",
        "printer.timeout": 30.0,
    }
    result = print_label(sample_report(), settings, drive="bay 1")
    assert result.ok, (result, cups_server.log()[-3000:])
    assert result.detail.startswith("request id is Label-")
    jobs = cups_server.sink.wait(1, timeout=90)
    assert jobs and len(jobs[0]) > 1000, cups_server.log()[-3000:]
    # CUPS' rastertolabel speaks ZPL: the PDF arrived rasterised as a ~DG graphic.
    assert b"^XA" in jobs[0] and b"~DG" in jobs[0] and b"^XZ" in jobs[0]


def test_cups_unknown_queue_is_a_value(cups_server: CupsServer) -> None:
    result = print_label(
        sample_report(), {"printer.backend": "cups", "printer.target": "NoSuchQueue"}
    )
    assert not result.ok and "NoSuchQueue" in result.detail


@needs_poppler
@pytest.mark.parametrize("size,dpi", [("62mm", 203), ("4x2", 300)])
def test_zpl_to_tcp_sink(tcp_sink: TcpSink, size: str, dpi: int) -> None:
    settings = {
        "printer.backend": "zpl",
        "printer.target": f"tcp://127.0.0.1:{tcp_sink.port}",
        "printer.size": size,
        "printer.dpi": dpi,
    }
    result = print_label(sample_report(), settings)
    assert result.ok, result
    (job,) = tcp_sink.wait(1)
    assert len(job) == result.nbytes
    width, height, _ = check_zpl(job)
    expected = {"62mm": 62 / 25.4, "4x2": 4.0}[size] * dpi
    assert abs(width - expected) <= 2
    if size == "4x2":
        assert abs(height - 2 * dpi) <= 2


@needs_poppler
def test_zpl_to_device_file(tmp_path: Path) -> None:
    dev = tmp_path / "lp0"
    result = print_label(sample_report(), {"printer.backend": "zpl", "printer.target": str(dev)})
    assert result.ok, result
    check_zpl(dev.read_bytes())


def test_zpl_graphic_field_matches_bitmap() -> None:
    # 10 x 2 pixels: row bytes = 2; first row all black, second row white.
    pbm = b"P4\n# made by hand\n10 2\n" + bytes([0xFF, 0xC0, 0x00, 0x00])
    job = printer.zpl_job(pbm)
    width, height, bits = check_zpl(job)
    assert (width, height, bits) == (10, 2, bytes([0xFF, 0xC0, 0x00, 0x00]))


def test_connection_refused_returns_failure_without_raising() -> None:
    port = free_port()  # nothing listens there
    result = print_label(
        sample_report(),
        {
            "printer.backend": "zpl",
            "printer.target": f"tcp://127.0.0.1:{port}",
            "printer.timeout": 3.0,
        },
    )
    assert isinstance(result, PrintResult)
    assert result.ok is False
    assert "refused" in result.detail.lower()


def test_unwritable_device_and_bad_backend_are_values(tmp_path: Path) -> None:
    result = print_label(
        sample_report(), {"printer.backend": "zpl", "printer.target": "/dev/nonexistent-lp9"}
    )
    assert not result.ok and "nonexistent-lp9" in result.detail
    result = print_label(sample_report(), {"printer.backend": "laser"})
    assert not result.ok and "unknown printer.backend" in result.detail
    result = print_label(sample_report(), {"printer.backend": "file"})
    assert not result.ok and "printer.target" in result.detail


def test_render_failure_is_a_value(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def boom(*a, **k):
        raise RuntimeError("reportlab exploded")

    monkeypatch.setattr(printer.label_mod, "render_label", boom)
    result = print_label(
        sample_report(), {"printer.backend": "file", "printer.target": str(tmp_path)}
    )
    assert not result.ok and "reportlab exploded" in result.detail


@needs_poppler
@pytest.mark.parametrize("fmt", ["pdf", "png"])
def test_file_backend(tmp_path: Path, fmt: str) -> None:
    result = print_label(
        sample_report(),
        {
            "printer.backend": "file",
            "printer.target": str(tmp_path / "labels"),
            "printer.format": fmt,
        },
    )
    assert result.ok
    out = Path(result.path)
    assert out == tmp_path / "labels" / f"{JOB}.{fmt}"
    assert out.read_bytes()[:4] in (b"%PDF", b"\x89PNG")
    assert not list((tmp_path / "labels").glob(".*.tmp"))


@needs_poppler
def test_label_main_renders_stored_report(tmp_path: Path) -> None:
    from pdimport.record.auditchain import verify
    from pdimport.store.journal import Journal

    journal = Journal(tmp_path / "journal.sqlite")
    job = journal.create_job("k", "iso", "/x.iso", "PDI")
    report = sample_report()
    report["job"] = job.id
    journal.save_report(job.id, report)
    journal.close()
    out = tmp_path / "reprint.pdf"
    assert printer.label_main(tmp_path, job.id, out) == 0
    text = subprocess.run(
        ["pdftotext", str(out), "-"], check=True, capture_output=True
    ).stdout.decode()
    assert job.id in text
    assert printer.label_main(tmp_path, "no-such-job", out) == 2
    ok, _, _ = verify(tmp_path / "audit")  # the reprint was audited
    assert ok and (tmp_path / "audit").is_dir()


def test_tcp_send_waits_for_printer_close() -> None:
    # A printer that reads everything then closes: send_raw returns after the
    # close, so "ok" means the printer really read the job.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    got = bytearray()

    import threading

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            while data := conn.recv(65536):
                got.extend(data)

    t = threading.Thread(target=serve)
    t.start()
    printer.send_raw(f"tcp://127.0.0.1:{srv.getsockname()[1]}", b"^XA^XZ" * 50_000, 10)
    t.join(5)
    srv.close()
    assert len(got) == 6 * 50_000


def test_lp_missing_is_a_value(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_lp(*a, **k):
        raise FileNotFoundError(2, "No such file or directory", "lp")

    monkeypatch.setattr(printer.subprocess, "run", no_lp)
    monkeypatch.setattr(
        printer.label_mod,
        "render_label",
        lambda r, s, out, *a, **k: (out.write_bytes(b"%PDF-1.4"), out)[1],
    )
    result = print_label(sample_report(), {"printer.backend": "cups", "printer.target": "Q"})
    assert not result.ok and "No such file" in result.detail
    assert isinstance(subprocess.run, object)
