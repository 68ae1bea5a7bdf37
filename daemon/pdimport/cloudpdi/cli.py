"""``pdimport keys generate|show`` and ``pdimport token add FILE|- [--image FILE]``.

Imported whenever the parser is built (``--help`` too): argparse only at
module level, the channel and cryptography when a command runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pdimport.problems import CodedError

EXIT_FAILED = 2


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser, str], None]) -> None:
    p = sub.add_parser("keys", help="the appliance's Cloud PDI key pair and certificate")
    common(p, "keys")
    keys_sub = p.add_subparsers(dest="keys_command", required=True, parser_class=type(p))
    k = keys_sub.add_parser(
        "generate", help="make an RSA-3072 key pair and self-signed certificate"
    )
    common(k, "keys")
    k.add_argument("--force", action="store_true", help="replace an existing key pair")
    k.add_argument("--subject", metavar="CN", default="", help="the certificate's common name")
    k = keys_sub.add_parser("show", help="print the certificate (PEM) and its SHA-256 fingerprint")
    common(k, "keys")

    p = sub.add_parser("token", help="Cloud PDI: import the document a token names")
    common(p, "token")
    token_sub = p.add_subparsers(dest="token_command", required=True, parser_class=type(p))
    t = token_sub.add_parser(
        "add", help="a token file, '-' for stdin (what a QR scanner types), or --image"
    )
    common(t, "token")
    t.add_argument("file", nargs="?", metavar="FILE|-", help="DER, PEM, S/MIME or base64 text")
    t.add_argument("--image", metavar="FILE", help="a photo or scan of the token's QR code")


def _read_token(args: argparse.Namespace) -> tuple[bytes, str]:
    if bool(args.file) == bool(args.image):
        raise ValueError("token add: give exactly one of FILE, '-' or --image FILE")
    if args.image:
        return qr_text(Path(args.image)), f"qr:{args.image}"
    if args.file == "-":
        return sys.stdin.buffer.read(), "token:stdin"
    try:
        return Path(args.file).read_bytes(), f"token:{args.file}"
    except FileNotFoundError:
        raise ValueError(f"no such token file: {args.file}") from None


def qr_text(image: Path) -> bytes:
    """The text of the QR code in a photo or scan, by zbar (Debian zbar-tools)."""
    if not image.is_file():
        raise ValueError(f"no such image: {image}")
    try:
        done = subprocess.run(
            ["zbarimg", "--raw", "-q", "-Sdisable", "-Sqrcode.enable", str(image)],
            capture_output=True,
            timeout=60,
            check=False,
        )
    except FileNotFoundError:
        raise OSError("zbarimg not found (install zbar-tools)") from None
    if done.returncode != 0 or not done.stdout.strip():
        # zbarimg: 4 = no symbol found, 2 = the image could not be read
        raise CodedError(
            "token_malformed",
            f"no QR code read from {image} (zbarimg status {done.returncode})",
        )
    return done.stdout


def cmd_token(args: argparse.Namespace, cfg: Any) -> int:
    if not cfg.dest:
        raise ValueError("no destination: give --dest URL or set 'dest' in the config")
    from pdimport.policy.rules import parse_routes
    from pdimport.send import parse_dest

    for url in cfg.dest:
        parse_dest(url)  # usage errors before the token is touched, as for import
    parse_routes(list(cfg.route), parse_dest)
    from pdimport.cloudpdi.channel import Channel
    from pdimport.cloudpdi.profile import ProfileError

    try:
        channel = Channel(cfg)
    except ProfileError as exc:
        raise ValueError(str(exc)) from None
    try:
        data, origin = _read_token(args)
    except CodedError as exc:  # an unreadable QR image is a refused token too
        result = channel.refuse(f"qr:{args.image}", exc)
    else:
        result = channel.add(data, list(cfg.dest), origin)
    if args.json:
        print(json.dumps(result.report, ensure_ascii=False, indent=2))
    else:
        from pdimport.job import report as report_mod

        print(report_mod.summary(result.report))
    return result.exit_code


def cmd_keys(args: argparse.Namespace, cfg: Any) -> int:
    from pdimport.cloudpdi import keys

    if args.keys_command == "generate":
        try:
            paths = keys.generate(cfg.state_path, args.subject, args.force)
        except keys.KeysExist as exc:
            print(f"pdimport: {exc}", file=sys.stderr)
            return EXIT_FAILED
        print(f"private key {paths.key} (mode 0600)\ncertificate {paths.cert}")
    cert = keys.load_certificate(cfg.state_path)
    if args.json:
        from cryptography.hazmat.primitives import serialization

        pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        print(json.dumps({"certificate": pem, "sha256": keys.fingerprint(cert)}, indent=2))
    else:
        print(keys.show(cfg.state_path), end="")
    return 0


HANDLERS = {"keys": cmd_keys, "token": cmd_token}
