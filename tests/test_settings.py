"""The settings table drives the CLI, the config loader and its errors."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from pdimport import cli, settings
from pdimport.settings import SETTINGS, SettingsError, UndeclaredSetting, load


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_flag_in_the_table_is_generated_for_its_commands() -> None:
    subs = _subparsers(cli.build_parser())
    flagged = [s for s in SETTINGS if s.flag]
    assert flagged, "the table declares flags"
    for s in flagged:
        assert s.commands, s.name
        for command in subs:
            options = {o for a in subs[command]._actions for o in a.option_strings}
            assert (s.flag in options) == (command in s.commands), (s.name, command)


def test_existing_flags_keep_working(tmp_path: Path) -> None:
    p = cli.build_parser()
    args = p.parse_args(
        [
            "import",
            "a",
            "b",
            "--dest",
            "file:///x",
            "--dest",
            "file:///y",
            "--calling-aet",
            "ME",
            "--scanner",
            "pydicom",
            "--ai",
            "hold",
            "--route",
            "rt=file:///z",
            "--state-dir",
            str(tmp_path),
        ]
    )
    cfg = cli._settings(args)
    assert args.sources == ["a", "b"]
    assert cfg.dest == ["file:///x", "file:///y"] and cfg.calling_aet == "ME"
    assert cfg.scanner == "pydicom" and cfg.get("ai.policy") == "hold"
    assert cfg.route == ["rt=file:///z"] and cfg.state_dir == str(tmp_path)
    args = p.parse_args(
        ["daemon", "--devices", "sr*", "loop*", "--eject-after", "read", "--watch", str(tmp_path)]
    )
    cfg = cli._settings(args)
    assert cfg.devices == ["sr*", "loop*"] and cfg.eject_after == "read"


@pytest.mark.parametrize(
    "argv,flag",
    [
        (["import", "x", "--ai", "maybe"], "--ai"),
        (["scan", "x", "--scanner", "fast"], "--scanner"),
        (["daemon", "--eject-after", "never"], "--eject-after"),
        (["import", "x", "--calling-aet", "WAY_TOO_LONG_AE_TITLE"], "--calling-aet"),
    ],
)
def test_bad_flag_value_names_the_flag_and_exits_64(argv, flag, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 64
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err and "expected" in err


@pytest.mark.parametrize(
    "text,needles",
    [
        (
            '[network]\ndimse_timeout = "fast"\n',
            ['network.dimse_timeout = "fast"', "expected a number > 0"],
        ),
        (
            "[network]\nassociations = 40\n",
            ["network.associations = 40", "expected an integer from 1 to 32"],
        ),
        (
            '[printer]\nbackend = "laser"\n',
            ['printer.backend = "laser"', 'one of "none", "zpl", "cups", "file"'],
        ),
        ("convert_other_content = 1\n", ["convert_other_content = 1", "true or false"]),
        (
            "[network]\ndimse_timout = 3\n",
            ["unknown setting 'network.dimse_timout'", "did you mean 'network.dimse_timeout'"],
        ),
        ("[netwrk]\ndimse_timeout = 3\n", ["did you mean 'network.dimse_timeout'"]),
        ('state_dir = "/x"\n\nwatch = = 1\nscanner = "auto"\n', ["TOML syntax error", "line 3"]),
    ],
)
def test_config_errors_name_key_value_allowed_and_file(tmp_path, text, needles) -> None:
    cfg_file = tmp_path / "pdimport.toml"
    cfg_file.write_text(text)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pdimport",
            "jobs",
            "--config",
            str(cfg_file),
            "--state-dir",
            str(tmp_path / "state"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 64, proc
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"pdimport: {cfg_file}: "), err
    for needle in needles:
        assert needle in err, err


def test_flag_beats_file_beats_default(tmp_path) -> None:
    cfg_file = tmp_path / "pdimport.toml"
    cfg_file.write_text('calling_aet = "FILE"\nscanner = "numba"\n[network]\nretries = 7\n')
    args = cli.build_parser().parse_args(
        ["import", "x", "--config", str(cfg_file), "--calling-aet", "FLAG"]
    )
    cfg = cli._settings(args)
    assert cfg.calling_aet == "FLAG"  # flag over file
    assert cfg.scanner == "numba" and cfg.get("network.retries") == 7  # file over default
    assert cfg.get("network.dimse_timeout") == 60.0  # default


def test_undeclared_names_raise() -> None:
    cfg = settings.defaults()
    with pytest.raises(UndeclaredSetting):
        cfg.get("network.dimse_timout")
    with pytest.raises(AttributeError):
        _ = cfg.no_such_setting
    with pytest.raises(UndeclaredSetting):
        cfg.replace(no_such=1)
    with pytest.raises(SettingsError, match="--scanner"):
        load(None, {"scanner": "fast"})


def test_daemon_reads_only_declared_settings() -> None:
    for name in (
        "devices",
        "watch",
        "eject_after",
        "debounce",
        "watch_settle",
        "retry_max_delay",
        "stop_timeout",
        "eject_retries",
        "network.retry_delay",
        "network.associations",
    ):
        settings.declared(name)


def test_describe_documents_every_setting(capsys) -> None:
    text = settings.describe()
    for s in SETTINGS:
        assert s.name in text and s.expected() in text
        if s.flag:
            assert s.flag in text
    assert cli.main(["settings"]) == 0
    assert "network.dimse_timeout" in capsys.readouterr().out
