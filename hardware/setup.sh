#!/usr/bin/env bash
# Set up a Debian 12 machine for pdimport, then optionally run it or its tests.
#
#   sudo bash hardware/setup.sh          # set up only
#   sudo bash hardware/setup.sh run ...  # set up, then `pdimport demo ...`
#   sudo bash hardware/setup.sh test ... # set up, then `pytest -q ...` (exit status passed through)
#
# Idempotent: a re-run on a set-up machine skips apt and pip and takes seconds.
# Environment: PYTHON (interpreter that makes the venv, default python3),
# PDIMPORT_FORCE_PIP=1 (reinstall the Python dependencies even if unchanged).
set -euo pipefail

# Work from the repository root whatever the caller's cwd, so relative paths
# (.venv, pyproject.toml, tests/) mean the same thing everywhere.
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

VENV="$REPO/.venv"
PYTHON="${PYTHON:-python3}"
export DEBIAN_FRONTEND=noninteractive
# pip must never stop to ask anything in CI (no stdin there).
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1

log() { printf '[setup %4ds] %s\n' "$SECONDS" "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

usage() {
    cat >&2 <<'EOF'
usage: bash hardware/setup.sh [run [ARGS...] | test [PYTEST-ARGS...]]
  (nothing)  install system packages and the Python virtualenv .venv
  run        ... then run the appliance on embedded defaults (pdimport demo ARGS)
  test       ... then ruff, ruff format --check, mypy, the whole test suite, and
             the job-level tests again on a PostgreSQL journal
             (with ARGS: only python -m pytest -q ARGS)
EOF
}

MODE="${1:-}"
if [ "$#" -gt 0 ]; then shift; fi
case "$MODE" in
    ""|run|test) ;;
    -h|--help) usage; exit 0 ;;
    *) usage; exit 64 ;;
esac

# Everything the appliance and its tests use from Debian. Tests start real
# peers (dcmtk storescp/wlmscpfs, Orthanc, cupsd, systemd-udevd), build real
# ISO images (genisoimage, xorriso), attach loop devices (losetup) and
# validate what we create (dicom3tools dciodvfy); the console's browser test
# drives Debian's headless chromium through chromedriver; emulated drives
# (hardware/fusedrive.py) serve disc images through FUSE (fuse3); the
# whole-process benchmarks take each command's own peak RSS from GNU time.
APT_PACKAGES=(
    python3 python3-venv python3-dev gcc
    dcmtk orthanc orthanc-dicomweb dicom3tools postgresql nginx-light
    genisoimage xorriso libudfread0 udftools
    udev util-linux
    cups cups-client cups-filters cups-bsd poppler-utils fonts-ipaexfont-gothic zbar-tools
    curl procps fuse3 time
    chromium chromium-driver
)

missing_packages() {
    local pkg status
    for pkg in "${APT_PACKAGES[@]}"; do
        # db:Status-Status is "installed" only for fully configured packages;
        # a half-installed one must go through apt again.
        status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
        if [ "$status" != "installed" ]; then
            printf '%s\n' "$pkg"
        fi
    done
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root for: $* (run this script with sudo)"
    fi
}

install_apt_packages() {
    local missing
    mapfile -t missing < <(missing_packages)
    if [ "${#missing[@]}" -eq 0 ]; then
        log "system packages: all ${#APT_PACKAGES[@]} already installed, skipping apt"
        return
    fi
    log "system packages missing: ${missing[*]}"
    # Retries and a lock timeout because a fresh machine may still be running
    # its own apt job at boot, and a mirror may drop one connection.
    local apt_opts=(-o Acquire::Retries=3 -o DPkg::Lock::Timeout=300)
    log "apt-get update"
    as_root apt-get "${apt_opts[@]}" update
    log "apt-get install ${#missing[@]} package(s)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y \
        --no-install-recommends "${missing[@]}"
}

stop_system_service() {
    # NAME USER PROCESS: the orthanc and postgresql packages start a system
    # service (Orthanc on 4242/8042, PostgreSQL on 5432) when they are
    # installed. pdimport's tests start their own on free ports, and a system
    # one only wastes memory and could answer on the well-known ports, so stop
    # it and keep it from coming back at boot. A container may have no
    # running systemd (systemctl then fails) and no init scripts at all, hence
    # every step is guarded.
    local name=$1 user=$2 process=$3
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        if systemctl is-active --quiet "$name" 2>/dev/null || \
           systemctl is-enabled --quiet "$name" 2>/dev/null; then
            log "stopping and disabling the system $name service (systemd)"
            as_root systemctl disable --now "$name" >/dev/null 2>&1 || \
                log "warning: systemctl could not stop/disable $name"
        fi
    elif [ -x "/etc/init.d/$name" ]; then
        if "/etc/init.d/$name" status >/dev/null 2>&1; then
            log "stopping the system $name service (init script)"
            as_root "/etc/init.d/$name" stop >/dev/null 2>&1 || \
                log "warning: /etc/init.d/$name stop failed"
        fi
        if command -v update-rc.d >/dev/null 2>&1 && \
           compgen -G "/etc/rc[2-5].d/S*$name" >/dev/null; then
            as_root update-rc.d "$name" disable >/dev/null 2>&1 || true
        fi
    fi
    # Whatever started it, say so if one is still there: tests must not meet it.
    if pgrep -u "$user" -x "$process" >/dev/null 2>&1; then
        log "warning: a system $name (user $user) is still running"
    fi
}

venv_works() {
    # A venv copied from another machine or made by a removed interpreter has
    # a dangling bin/python, and one moved with its checkout has console
    # scripts whose #! still names the old place (a long path is on line 2,
    # in pip's sh trampoline): detect both instead of trusting the folder.
    [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1 &&
        head -n 2 "$VENV/bin/pip" 2>/dev/null | grep -qF "$VENV/bin/python"
}

setup_venv() {
    if venv_works; then
        log "virtualenv: reusing $VENV ($("$VENV/bin/python" -V 2>&1))"
    else
        if [ -e "$VENV" ]; then
            log "virtualenv: $VENV is broken or was moved, recreating it"
            rm -rf "$VENV"
        fi
        command -v "$PYTHON" >/dev/null 2>&1 || die "no $PYTHON on PATH"
        log "virtualenv: creating $VENV with $(command -v "$PYTHON") ($("$PYTHON" -V 2>&1))"
        "$PYTHON" -m venv "$VENV"
    fi

    # Reinstall only when the declared dependencies change: the install is
    # editable, so source edits need no reinstall, and skipping pip keeps a
    # re-run fast and offline.
    local stamp="$VENV/.pdimport-setup-stamp" want
    want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
    if [ "${PDIMPORT_FORCE_PIP:-0}" != 1 ] && [ -f "$stamp" ] && \
       [ "$(cat "$stamp")" = "$want" ] && \
       "$VENV/bin/python" - >/dev/null 2>&1 <<'PY'
# Every declared distribution (with the test extra) must be installed: a venv
# whose packages were partly removed still imports pdimport and pytest.
import re, sys, tomllib
from importlib.metadata import PackageNotFoundError, version
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = project["dependencies"] + project["optional-dependencies"]["test"]
try:
    for req in reqs:
        version(re.split(r"[\s<>=!~\[;]", req, maxsplit=1)[0])
except PackageNotFoundError:
    sys.exit(1)
PY
    then
        log "python packages: pyproject.toml unchanged since last install, skipping pip"
        return
    fi
    rm -f "$stamp"
    log "pip install -e '.[test]' into $VENV"
    # pip older than 21.3 cannot do an editable install from pyproject.toml.
    "$VENV/bin/python" -m pip install -q --progress-bar off --upgrade pip
    "$VENV/bin/python" -m pip install --progress-bar off -e '.[test]'
    printf '%s\n' "$want" >"$stamp"
}

log "repository: $REPO"
install_apt_packages
stop_system_service orthanc orthanc Orthanc
stop_system_service postgresql postgres postgres
setup_venv
# The scanner's kernels compiled ahead of time (pdimport.scan.aot): a scan
# then needs no numba at run time (≈ 0.5 s less per process). Built once
# per version of the kernels; without it numba compiles them as before.
if "$VENV/bin/python" -m pdimport.scan.aot --check >/dev/null 2>&1; then
    log "scan kernels: built ahead of time already"
else
    log "scan kernels: compiling ahead of time (python -m pdimport.scan.aot)"
    "$VENV/bin/python" -m pdimport.scan.aot >/dev/null || log "scan kernels: not built, numba will compile them"
fi
# Bytecode for the package itself (an editable install is not compiled by
# pip): with PYTHONDONTWRITEBYTECODE set, every command would compile its
# modules from source again (≈ 0.1 s a process). Stale files are only
# ignored, never wrong: Python checks each against its source.
"$VENV/bin/python" -m compileall -q -j0 daemon/pdimport >/dev/null || log "bytecode: not compiled"
log "set-up done in ${SECONDS}s"

case "$MODE" in
    run)
        log "exec .venv/bin/pdimport demo $*"
        exec "$VENV/bin/pdimport" demo "$@"
        ;;
    test)
        # The tooling runs before the tests, on the real paths, and a finding
        # fails the run like a failing test does (versions pinned in pyproject).
        if [ "$#" -eq 0 ]; then
            log "lint: ruff check, ruff format --check, mypy"
            "$VENV/bin/ruff" check daemon tests bench hardware
            "$VENV/bin/ruff" format --check daemon tests bench hardware
            "$VENV/bin/mypy"
        fi
        if [ "$#" -gt 0 ]; then
            log "exec .venv/bin/python -m pytest -q $*"
            exec "$VENV/bin/python" -m pytest -q "$@"
        fi
        log "pytest -q: the whole suite (journal: SQLite)"
        rc=0
        "$VENV/bin/python" -m pytest -q || rc=$?
        # The second pass: the job-level tests again with the journal (and
        # console users, expectations) in a real PostgreSQL, one fresh
        # database per test (tests/fixtures_pg.py); tests/store runs both
        # backends in the first pass already. The crash-run test is left out:
        # it is long and exercises the spool, not the journal's backend.
        log "pytest -q: job-level tests again (journal: PostgreSQL)"
        PDIMPORT_TEST_JOURNAL=postgresql "$VENV/bin/python" -m pytest -q \
            tests/job tests/reconcile tests/console/test_console.py \
            --ignore tests/job/test_crash_runs.py || pg_rc=$?
        # the first failure's status, as a single pytest run would give
        if [ "$rc" -eq 0 ]; then rc=${pg_rc:-0}; fi
        exit "$rc"
        ;;
esac
