"""Daemon manners: logging reaches journald, one daemon per state directory,
read-only commands create nothing, usage errors and expected failures are one
line without a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_dicom import make_ct_series

from pdimport import cli, settings
from pdimport.appliance.daemon import daemon_main
from pdimport.appliance.lock import EXIT_LOCKED, AlreadyRunning, DaemonLock


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pdimport", *args],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
        env=env,
    )


LOG_PROBE = r"""
import logging, sys
from pdimport import logs
logs.configure(sys.argv[1], int(sys.argv[2]))
logging.getLogger("pdimport.appliance.daemon").info("pdimport daemon ready: probe")
logging.getLogger("pynetdicom.assoc").info("per-image line")
logging.getLogger("pdimport.job.importer").debug("debug detail")
"""


def probe_logs(command: str, verbose: int = 0, **env: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", LOG_PROBE, command, str(verbose)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=True,
    )
    return out.stderr


def test_daemon_info_lines_reach_stderr_and_pynetdicom_stays_quiet():
    err = probe_logs("daemon")
    assert "INFO pdimport.appliance.daemon: pdimport daemon ready: probe" in err
    assert "per-image line" not in err
    assert "debug detail" not in err


def test_under_journald_lines_carry_no_timestamp():
    journald = probe_logs("daemon", JOURNAL_STREAM="8:1234").splitlines()
    assert journald[0].startswith("INFO pdimport.appliance.daemon:")
    plain = probe_logs("daemon", JOURNAL_STREAM="").splitlines()
    assert not plain[0].startswith("INFO")  # a timestamp comes first
    assert "INFO pdimport.appliance.daemon:" in plain[0]


def test_debug_shows_pynetdicom_and_quiet_commands_hide_info():
    err = probe_logs("daemon", 1)
    assert "per-image line" in err and "debug detail" in err
    assert "ready" not in probe_logs("jobs")


def test_configure_twice_adds_no_second_handler():
    import logging

    from pdimport import logs

    before = len(logging.getLogger().handlers)
    logs.configure("jobs")
    logs.configure("daemon")
    assert len(logging.getLogger().handlers) <= before + 1


def test_second_daemon_on_one_state_dir_exits(tmp_path):
    with DaemonLock(tmp_path):
        assert (tmp_path / "daemon.lock").read_text().strip() == str(os.getpid())
        with pytest.raises(AlreadyRunning, match=str(os.getpid())):
            DaemonLock(tmp_path)
        cfg = settings.load(overrides={"state_dir": str(tmp_path)})
        assert daemon_main(cfg) == EXIT_LOCKED
        res = run("daemon", "--state-dir", str(tmp_path))
        assert res.returncode == EXIT_LOCKED
        assert f"another daemon is running on {tmp_path} (pid {os.getpid()})" in res.stderr
        assert "Traceback" not in res.stderr
    DaemonLock(tmp_path).release()  # free again once the first let go


@pytest.mark.parametrize("command", [["jobs"], ["report", "JOB"], ["status"], ["audit", "verify"]])
def test_read_only_commands_never_create_a_state_dir(tmp_path, command):
    missing = tmp_path / "typo"
    res = run(*command, "--state-dir", str(missing))
    assert res.returncode == cli.EXIT_USAGE
    assert f"no state directory at {missing}" in res.stderr
    assert "Traceback" not in res.stderr
    assert not missing.exists()


def test_jobs_on_an_empty_state_dir_creates_no_journal(tmp_path):
    res = run("jobs", "--state-dir", str(tmp_path))
    assert res.returncode == 0 and res.stdout == ""
    assert not (tmp_path / "journal.sqlite").exists()


def test_missing_source_is_a_usage_error_and_journals_nothing(tmp_path):
    state = tmp_path / "state"
    res = run(
        "import",
        str(tmp_path / "no-such.iso"),
        "--dest",
        f"file://{tmp_path}/out",
        "--state-dir",
        str(state),
    )
    assert res.returncode == cli.EXIT_USAGE
    assert "no such source" in res.stderr and "Traceback" not in res.stderr
    assert not (state / "journal.sqlite").exists()


def test_unknown_host_is_one_line_without_traceback(tmp_path):
    src = tmp_path / "disc"
    make_ct_series(src, 2)
    res = run(
        "import",
        str(src),
        "--dest",
        "dicom://PACS@no-such-host.invalid:11112",
        "--state-dir",
        str(tmp_path / "state"),
    )
    assert res.returncode in (1, 2)
    out = res.stdout + res.stderr
    assert "Traceback" not in out
    assert "no-such-host.invalid" in out and "does not resolve" in out


def test_output_into_a_closed_pipe_is_quiet(tmp_path):
    # `true` has exited before the interpreter has started: the first write
    # meets a closed pipe (EPIPE), as `pdimport jobs | head` does past a page.
    shell = (
        f"{sys.executable} -m pdimport settings --state-dir {tmp_path} | true; "
        "echo ${PIPESTATUS[0]}"
    )
    res = subprocess.run(
        ["bash", "-c", shell], capture_output=True, check=False, text=True, timeout=60
    )
    assert res.stdout.strip() == str(cli.EXIT_PIPE)
    assert "BrokenPipeError" not in res.stderr and "Traceback" not in res.stderr


def test_repository_has_no_binaries():
    root = Path(__file__).resolve().parents[2]
    tracked = subprocess.run(
        ["git", "-C", str(root), "ls-files"], capture_output=True, text=True, check=False
    ).stdout.split()
    assert not [f for f in tracked if f.endswith((".whl", ".so", ".tar.gz"))]


def test_outcome_reason_is_one_line_per_cause():
    from pdimport.appliance.drive_worker import outcome_reason

    problems = [
        {"code": "association_failed", "path": f"IM{i}", "detail": "refused by h:1"}
        for i in range(500)
    ]
    problems.append({"code": "truncated", "path": "IM9", "detail": "ends inside an element"})
    line = outcome_reason({"problems": problems})
    assert line == "association_failed x500: refused by h:1; truncated: ends inside an element"
    assert outcome_reason({"hold_reasons": ["multi_patient"], "problems": problems}) == (
        "held for multi_patient"
    )
