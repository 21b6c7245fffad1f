"""The ``secmw`` command: hash keys and passwords, mint test tokens, check configuration, watch
refusals, demo.

Every error prints one line and exits non-zero (2 for invalid configuration), never a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import json
import secrets
import sys
from collections.abc import Callable, Sequence
from typing import Any

from secmw.auth.apikey import hash_api_key
from secmw.auth.passwords import hash_password
from secmw.config.check import check_settings
from secmw.config.file import config_file
from secmw.config.origin import Origins
from secmw.config.schema import settings_schema
from secmw.config.settings import SecuritySettings
from secmw.demo import serve
from secmw.errors import ConfigurationError
from secmw.tokens import mint_access_token
from secmw.top import run as run_top

EXIT_CONFIG = 2


def _read_secret(prompt: str, given: str | None) -> str:
    """A secret from the argument, else stdin when piped, else a hidden prompt."""
    if given is not None:
        return given
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    return getpass.getpass(prompt)


def cmd_hash_key(args: argparse.Namespace) -> int:
    """Print the stored form of an API key (``--generate`` makes a new key first)."""
    if args.generate:
        key = secrets.token_urlsafe(32)
        print(f"key:  {key}")
        print(f"hash: {hash_api_key(key)}")
        return 0
    key = _read_secret("API key: ", args.key)
    if not key:
        raise ValueError("empty key")
    if "," in key:
        # Refused as ambiguous when presented: WSGI servers join repeated fields with commas.
        raise ValueError("an API key cannot contain a comma")
    print(hash_api_key(key))
    return 0


def cmd_hash_password(args: argparse.Namespace) -> int:
    """Print an argon2id hash of a password read from stdin or a prompt."""
    password = _read_secret("Password: ", None)
    if not password:
        raise ValueError("empty password")
    print(hash_password(password))
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """Mint a token the configured verifier accepts, for local testing."""
    settings = SecuritySettings()
    extra: dict[str, Any] = {}
    for item in args.claim:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--claim takes name=value, got {name!r}")
        try:
            extra[name] = json.loads(value)
        except json.JSONDecodeError:
            extra[name] = value
    scopes = " ".join(args.scope).split()
    print(mint_access_token(settings, args.sub, scopes=scopes, ttl=args.ttl, claims=extra))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """Validate every section, print the effective settings (secrets masked) and warnings; or
    where each value came from (``--sources``); or the JSON Schema of a file (``--schema``)."""
    if args.schema:
        return _write_schema(args.output)
    report = check_settings()
    if args.sources:
        origins = Origins(SecuritySettings)
        for variable, value, origin in origins.report(report.effective):
            print(f"{variable} = {json.dumps(value, default=str)}  # {origin}")
    else:
        print(json.dumps(report.effective, indent=2, sort_keys=True, default=str))
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    path = config_file()
    print(f"configuration ok{f' (file: {path})' if path else ''}", file=sys.stderr)
    return 0


def _write_schema(output: str | None) -> int:
    text = json.dumps(settings_schema(), indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
        return 0
    try:
        with open(output, "w", encoding="utf-8") as file:
            file.write(text)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        print(f"secmw: cannot write the schema to {output}: {reason}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    """Show refusals, rate-limited clients and dependency health from audit JSON lines."""
    if args.window <= 0 or args.interval <= 0:
        raise ValueError("--window and --interval take a positive number of seconds")
    return run_top(args.file, once=args.once, window=args.window, interval=args.interval)


def cmd_demo(args: argparse.Namespace) -> int:
    """Serve the demo app (one process)."""
    serve(framework=args.framework, host=args.host, port=args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for the docs and tests)."""
    parser = argparse.ArgumentParser(prog="secmw", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    key = commands.add_parser("hash-key", help="print the stored form of an API key")
    key.add_argument("key", nargs="?", help="the key (default: read from stdin or a prompt)")
    key.add_argument("--generate", action="store_true", help="make a new random key")
    key.set_defaults(func=cmd_hash_key)

    password = commands.add_parser("hash-password", help="argon2id hash of a password (stdin)")
    password.set_defaults(func=cmd_hash_password)

    token = commands.add_parser("token", help="mint a token with the configured key")
    token.add_argument("--sub", required=True, help="subject (principal id)")
    token.add_argument("--scope", action="append", default=[], help="scopes (repeatable)")
    token.add_argument("--ttl", type=int, default=900, help="lifetime in seconds")
    token.add_argument("--claim", action="append", default=[], help="extra claim name=value")
    token.set_defaults(func=cmd_token)

    config = commands.add_parser("config", help="validate SECMW_* settings and show them")
    config.add_argument(
        "--sources", action="store_true", help="show where each value came from, one per line"
    )
    config.add_argument(
        "--schema", action="store_true", help="print the JSON Schema of a configuration file"
    )
    config.add_argument("--output", metavar="FILE", help="with --schema: write it to FILE")
    config.set_defaults(func=cmd_config)

    top = commands.add_parser(
        "top", help="live view of refusals from audit JSON lines (a file, or stdin)"
    )
    top.add_argument("file", nargs="?", help="a log file, followed as it grows (default: stdin)")
    top.add_argument("--once", action="store_true", help="read to the end, show one frame")
    top.add_argument("--window", type=float, default=10.0, help="seconds the rates cover")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between frames")
    top.set_defaults(func=cmd_top)

    demo = commands.add_parser("demo", help="serve the demo app")
    demo.add_argument("--framework", choices=["starlette", "fastapi", "flask"], default="starlette")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``secmw`` console script."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConfigurationError as exc:
        print(f"secmw: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (ValueError, OSError) as exc:
        print(f"secmw: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
