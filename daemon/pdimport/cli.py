"""pdimport: import patient media (CD/DVD/BD, USB, ISO, zip) into a PACS.

Exit status of ``import``: 0 everything delivered, 1 held, partial or waiting
for the destination, 2 failed or unusable input, 64 usage error (also: a
source that does not exist, and a read-only command — ``jobs``, ``report``,
``status``, ``audit`` — given a state directory that does not exist; those
never create one). ``daemon``: 75 when another daemon holds the state
directory. Any command: 130 on Ctrl-C, 141 when stdout's reader went away
(``pdimport jobs | head``), 2 with one line for an expected OS or network
error (the traceback with ``-vv``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

# Only what parsing the command line needs: `pdimport --help` must not pay
# for pydicom, pynetdicom and numpy (~0.3 s); each command imports its own.
from pdimport import __version__, logs
from pdimport.problems import CodedError
from pdimport.settings import SETTINGS, Setting, SettingsError, check, load

EXIT_USAGE = 64
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it
EXIT_PIPE = 141  # 128 + SIGPIPE
#: Commands that only read the state directory.
READ_ONLY_COMMANDS = frozenset({"jobs", "report", "status", "audit"})
#: Commands that act on jobs already in a journal: a mistyped path is an error too.
JOURNAL_COMMANDS = READ_ONLY_COMMANDS | {"release", "discard"}

log = logging.getLogger("pdimport")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse exits 2; our contract says 64
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _flag_type(setting: Setting) -> Callable[[str], Any]:
    """argparse ``type=``: a flag's text typed and checked by the table entry."""

    def convert(text: str) -> Any:
        try:
            return check(setting, text, text_ok=True)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {exc}") from None

    convert.__name__ = setting.type.__name__
    return convert


def _add_setting(p: argparse.ArgumentParser, setting: Setting) -> None:
    """The flag of one setting, generated from its declaration."""
    assert setting.flag is not None
    help_text = f"{setting.doc} (setting {setting.name}; default {setting.default!r})"
    if setting.type is bool and not setting.multiple:
        p.add_argument(
            setting.flag,
            dest=setting.dest,
            default=None,
            help=help_text,
            action=argparse.BooleanOptionalAction,
        )
        return
    item = _flag_type(setting) if not setting.multiple else _item_type(setting)
    kwargs: dict[str, Any] = {
        "dest": setting.dest,
        "default": None,
        "type": item,
        "help": help_text,
    }
    if setting.choices is not None:
        kwargs["metavar"] = "{" + ",".join(str(c) for c in setting.choices) + "}"
    elif setting.metavar:
        kwargs["metavar"] = setting.metavar
    if setting.multiple:
        if setting.nargs:
            kwargs["nargs"] = setting.nargs
        else:
            kwargs["action"] = "append"
    p.add_argument(setting.flag, **kwargs)


def _item_type(setting: Setting) -> Callable[[str], Any]:
    """argparse ``type=`` for one item of a list setting."""
    convert = _flag_type(setting)

    def one(text: str) -> Any:
        return convert(text)[0]

    one.__name__ = setting.type.__name__
    return one


def _common(p: argparse.ArgumentParser, command: str) -> None:
    """Options every subcommand takes, then the flags of the settings of `command`."""
    p.add_argument("--config", metavar="FILE", help="TOML config file")
    p.add_argument("--json", action="store_true", help="print the JSON report(s)")
    p.add_argument("-v", "--verbose", action="count", default=0)
    for setting in SETTINGS:
        if setting.flag and command in setting.commands:
            _add_setting(p, setting)


#: Modules that bring their own subcommands: each has ``add_parsers(sub,
#: common)`` and ``HANDLERS`` (command -> handler(args, cfg) -> exit status).
#: They are imported whenever the parser is built (``--help`` included), so
#: they import nothing heavy at module level.
EXTENSIONS: tuple[str, ...] = ("pdimport.cloudpdi.cli",)


def _extensions() -> list[Any]:
    import importlib

    return [importlib.import_module(name) for name in EXTENSIONS]


def build_parser() -> argparse.ArgumentParser:
    """The command line: per-command arguments here, setting flags from :data:`SETTINGS`."""
    parser = _Parser(prog="pdimport", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"pdimport {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("import", help="import media now")
    _common(p, "import")
    p.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="folder, .iso/.img image, .zip package or block device",
    )

    p = sub.add_parser("scan", help="inventory a medium; sends nothing")
    _common(p, "scan")
    p.add_argument("source", metavar="SOURCE")

    p = sub.add_parser("jobs", help="list jobs in the journal")
    _common(p, "jobs")
    p.add_argument(
        "--held", action="store_true", help="held jobs only, with their patients and candidates"
    )
    p.add_argument(
        "--verify",
        metavar="JOB",
        help="prove every file read ends delivered, quarantined with a reason or skipped "
        "as identical, and is in the spool (exit 0), else list what is not (exit 1)",
    )

    p = sub.add_parser("release", help="release a held patient and deliver it from the spool")
    _common(p, "release")
    p.add_argument("job")
    p.add_argument("--local-id", metavar="ID", help="the local Patient ID to file it under")
    p.add_argument(
        "--keep-foreign", action="store_true", help="deliver it under the ID on the medium"
    )
    p.add_argument("--patient", metavar="FOREIGN_ID", help="which patient of the medium")
    p.add_argument("--operator", metavar="NAME", required=True, help="who decides")

    p = sub.add_parser("discard", help="discard a held job (or one patient of it)")
    _common(p, "discard")
    p.add_argument("job")
    p.add_argument("--reason", metavar="TEXT", required=True)
    p.add_argument("--patient", metavar="FOREIGN_ID", help="only this patient of the medium")
    p.add_argument("--operator", metavar="NAME", required=True, help="who decides")

    p = sub.add_parser("expect", help="say ahead of time that a disc is coming for a patient")
    _common(p, "expect")
    p.add_argument("--local-id", metavar="ID")
    p.add_argument("--name", metavar="PN", default="", help="e.g. 'Yamada^Taro=山田^太郎'")
    p.add_argument("--birth", metavar="YYYYMMDD", default="")
    p.add_argument("--sex", choices=("M", "F", "O"), default="")
    p.add_argument("--note", metavar="TEXT", default="")
    p.add_argument("--list", action="store_true", help="list the expectations")
    p.add_argument("--remove", metavar="ID", help="remove by expectation number or local ID")

    p = sub.add_parser("report", help="print the stored report of a job")
    _common(p, "report")
    p.add_argument("job")

    p = sub.add_parser("daemon", help="the appliance: drives and watch folder")
    _common(p, "daemon")

    p = sub.add_parser("status", help="live state of drives and jobs (from the running daemon)")
    _common(p, "status")

    p = sub.add_parser("label", help="render or reprint the status label of a job")
    _common(p, "label")
    p.add_argument("job")
    p.add_argument("--out", metavar="FILE", help="write the label here instead of printing it")

    p = sub.add_parser("audit", help="the audit trail")
    _common(p, "audit")
    audit_sub = p.add_subparsers(dest="audit_command", required=True, parser_class=_Parser)
    a = audit_sub.add_parser("verify", help="check the whole hash chain")
    _common(a, "audit")
    a = audit_sub.add_parser("export", help="records of a period as JSON lines")
    _common(a, "audit")
    a.add_argument("--since", metavar="DATE", help="YYYY-MM-DD")

    p = sub.add_parser("user", help="operator console accounts (STATE_DIR/users.sqlite)")
    _common(p, "user")
    user_sub = p.add_subparsers(dest="user_command", required=True, parser_class=_Parser)
    u = user_sub.add_parser("add", help="create a user, or give one a new password and role")
    _common(u, "user")
    u.add_argument("name")
    u.add_argument("--role", required=True, choices=("viewer", "operator", "admin"))
    u = user_sub.add_parser("remove", help="remove a user")
    _common(u, "user")
    u.add_argument("name")
    u = user_sub.add_parser("list", help="users and their roles")
    _common(u, "user")

    p = sub.add_parser("settings", help="every setting with its type, default and meaning")
    _common(p, "settings")

    p = sub.add_parser(
        "demo",
        help="run the appliance on embedded defaults: a local stand-in "
        "PACS, a watch folder, and a sample disc dropped into it",
    )
    _common(p, "demo")
    p.add_argument(
        "--once",
        action="store_true",
        help="stop after the sample disc is imported instead of running on",
    )

    from pdimport.capacity.args import add_arguments as bench_arguments  # argparse only

    p = sub.add_parser("bench", help="capacity planning: discs per hour with N drives")
    _common(p, "bench")
    bench_arguments(p)
    for ext in _extensions():
        ext.add_parsers(sub, _common)
    return parser


def _settings(args: argparse.Namespace) -> Any:
    """Defaults, the config file, then the flags given (all from :data:`SETTINGS`)."""
    overrides = {s.name: getattr(args, s.dest, None) for s in SETTINGS if s.flag}
    return load(args.config, overrides)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.command, args.verbose)
    try:
        cfg = _settings(args)
    except SettingsError as exc:
        print(f"pdimport: {exc}", file=sys.stderr)
        return EXIT_USAGE
    handlers = {
        "import": cmd_import,
        "scan": cmd_scan,
        "jobs": cmd_jobs,
        "report": cmd_report,
        "demo": cmd_demo,
        "daemon": cmd_daemon,
        "status": cmd_status,
        "label": cmd_label,
        "audit": cmd_audit,
        "settings": cmd_settings,
        "release": cmd_decision,
        "discard": cmd_decision,
        "expect": cmd_expect,
        "user": cmd_user,
        "bench": cmd_bench,
    }
    for ext in _extensions():
        handlers.update(ext.HANDLERS)
    handler = handlers[args.command]
    try:
        if args.command in JOURNAL_COMMANDS:
            _require_state_dir(cfg.state_path)
        return handler(args, cfg)
    except (ValueError, SettingsError) as exc:
        print(f"pdimport: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PermissionError as exc:
        print(f"pdimport: {exc} (is --state-dir writable?)", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `pdimport jobs | head`: the reader left. Point stdout at /dev/null so
        # the interpreter's final flush does not raise again (Python docs, signal).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (CodedError, OSError) as exc:
        # An expected failure (a network or file error): one line, the
        # traceback only when asked for with -vv.
        log.debug("%s failed", args.command, exc_info=True)
        print(f"pdimport: {exc}", file=sys.stderr)
        return 2


def _require_state_dir(state_dir: Path) -> None:
    """Read-only commands never create a state directory: a mistyped
    ``--state-dir`` is a usage error, not an empty appliance."""
    if not state_dir.is_dir():
        raise ValueError(f"no state directory at {state_dir} (is the path right? see --state-dir)")


def _importer(cfg: Any) -> Any:
    from pdimport.job.importer import Importer

    return Importer(cfg)


def _print(results: list[dict[str, Any]], as_json: bool) -> None:
    from pdimport.job import report as report_mod

    if as_json:
        if len(results) == 1:
            print(report_mod.dumps(results[0]))
        else:  # one report per source: a list of reports, each indented alike
            print("[\n" + ",\n".join(report_mod.dumps(r) for r in results) + "\n]")
    else:
        for rep in results:
            print(report_mod.summary(rep))


def cmd_import(args: argparse.Namespace, cfg: Any) -> int:
    if not cfg.dest:
        raise ValueError("no destination: give --dest URL or set 'dest' in the config")
    from pdimport.policy.rules import parse_routes
    from pdimport.send import parse_dest

    for url in cfg.dest:
        parse_dest(url)  # usage errors before any medium is touched
    _require_sources(args.sources)
    parse_routes(list(cfg.route), parse_dest)
    from pdimport.job.importer import disk_full_result
    from pdimport.store.fsutil import DiskFull

    try:
        importer = _importer(cfg)
    except DiskFull as exc:  # not even the journal opens: say so, for every source
        _print([disk_full_result(s, exc).report for s in args.sources], args.json)
        return 2
    results = []
    worst = 0
    try:
        for source in args.sources:
            res = importer.run(source, list(cfg.dest))
            results.append(res.report)
            worst = max(worst, res.exit_code)
    finally:
        importer.close()
    _print(results, args.json)
    return worst


def _require_sources(sources: Sequence[str]) -> None:
    """A source that does not exist is a usage error (64), not a failed job."""
    from pdimport.web.dicomweb import is_dicomweb, parse_url

    for source in sources:
        if is_dicomweb(source):
            parse_url(source)  # ValueError: not …/studies/UID[/series/UID]
        elif not os.path.exists(source):
            raise ValueError(
                f"no such source: {source} (a folder, .iso/.img, .zip, block device "
                "or dicomweb+http(s)://…/studies/UID)"
            )


def cmd_scan(args: argparse.Namespace, cfg: Any) -> int:
    _require_sources([args.source])
    from pdimport.job.survey import Survey

    survey = Survey(cfg)
    report = survey.run(args.source)  # a folder: its headers read in place
    if report is not None:
        from pdimport.job.report import exit_code

        if args.json:
            print(survey.report_text)  # the text of reports/<job>.json, not encoded again
        else:
            _print([report], as_json=False)
        return exit_code(report["status"])
    importer = _importer(cfg)
    try:
        res = importer.run(args.source, [], mode="scan")
    finally:
        importer.close()
    _print([res.report], args.json)
    return res.exit_code


def cmd_jobs(args: argparse.Namespace, cfg: Any) -> int:
    from pdimport.store.journal import open_existing_journal

    if args.verify:
        from pdimport.job.verify import verify_main

        return verify_main(cfg.state_path, args.verify, args.json, cfg)
    journal = open_existing_journal(cfg)
    if args.held:
        from pdimport.job.holdqueue import jobs_held_main

        try:
            return jobs_held_main(journal, args.json)
        finally:
            if journal is not None:
                journal.close()
    if journal is None:
        jobs = []  # a state directory where no job has run yet
    else:
        try:
            jobs = journal.jobs()
        finally:
            journal.close()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "job": j.id,
                        "state": j.state,
                        "source": j.source_path,
                        "kind": j.source_kind,
                        "label": j.label,
                        "mode": j.mode,
                        "created": j.created,
                    }
                    for j in jobs
                ],
                indent=2,
            )
        )
    else:
        for j in jobs:
            print(f"{j.id}  {j.state:9} {j.mode:6} {j.source_kind:6} {j.source_path}")
    return 0


def cmd_report(args: argparse.Namespace, cfg: Any) -> int:
    from pdimport.store.journal import open_existing_journal

    journal = open_existing_journal(cfg)
    rep = None
    if journal is not None:
        try:
            rep = journal.report(args.job)
        finally:
            journal.close()
    if rep is None:
        print(f"pdimport: no report for job {args.job}", file=sys.stderr)
        return 2
    _print([rep], args.json)
    return 0


def cmd_decision(args: argparse.Namespace, cfg: Any) -> int:
    from pdimport.job.holdqueue import decision_main

    importer = _importer(cfg)
    try:
        return decision_main(importer, args, list(cfg.dest or []))
    finally:
        importer.close()


def cmd_expect(args: argparse.Namespace, cfg: Any) -> int:
    from pdimport.reconcile import expect

    where = expect.expectations_at(cfg)  # the state folder, or the group's database

    if args.list:
        rows = expect.list_expectations(where)
        if args.json:
            print(json.dumps(rows, ensure_ascii=False, indent=2))
        for row in [] if args.json else rows:
            print(
                "  ".join(
                    str(row.get(k, ""))
                    for k in ("id", "local_id", "name", "birth_date", "sex", "note")
                )
            )
        return 0
    if args.remove:
        n = expect.remove_expectation(where, args.remove)
        if not n:
            raise ValueError(f"no expectation {args.remove!r} (see pdimport expect --list)")
        print(f"removed {n}")
        return 0
    if not args.local_id:
        raise ValueError("expect: give --local-id ID (or --list, --remove)")
    number = expect.add_expectation(
        where, args.local_id, args.name, args.birth, args.sex, args.note
    )
    print(f"expectation {number}: a medium for {args.local_id} is expected")
    return 0


def cmd_daemon(args: argparse.Namespace, cfg: Any) -> int:
    from pdimport.appliance.daemon import daemon_main

    return daemon_main(cfg)


def cmd_status(args: argparse.Namespace, cfg: Any) -> int:
    from pdimport.appliance.status import status_main

    return status_main(cfg, args.json)


def cmd_user(args: argparse.Namespace, cfg: Any) -> int:
    """The password comes from the terminal (asked twice) or one line of stdin."""
    from pdimport.console.users import user_main

    return user_main(cfg, args)


def cmd_settings(args: argparse.Namespace, cfg: Any) -> int:
    from pdimport.settings import as_records, describe

    if args.json:
        print(json.dumps(as_records(cfg), indent=2, ensure_ascii=False))
    else:
        print(describe())
    return 0


def cmd_label(args: argparse.Namespace, cfg: Any) -> int:
    from pdimport.label.printer import label_main

    return label_main(cfg, args.job, Path(args.out) if args.out else None)


def cmd_audit(args: argparse.Namespace, cfg: Any) -> int:
    from pdimport.record.auditcli import audit_export_main, audit_verify_main

    if args.audit_command == "verify":
        return audit_verify_main(cfg.state_path, settings=cfg)
    return audit_export_main(cfg.state_path, args.since)


def cmd_demo(args: argparse.Namespace, cfg: Any) -> int:
    from pdimport.demo.command import demo_main

    return demo_main(args, cfg)


def cmd_bench(args: argparse.Namespace, cfg: Any) -> int:
    from pdimport.capacity.command import bench_main

    return bench_main(args, list(cfg.dest or []))
