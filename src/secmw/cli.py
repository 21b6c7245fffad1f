"""The ``secmw`` command: hash keys and passwords, mint test tokens, check configuration, demo.

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
from secmw.config.settings import SecuritySettings
from secmw.demo import serve
from secmw.errors import ConfigurationError
from secmw.tokens import mint_access_token

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
    """Validate every section, print the effective settings (secrets masked) and warnings."""
    report = check_settings()
    print(json.dumps(report.effective, indent=2, sort_keys=True, default=str))
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print("configuration ok", file=sys.stderr)
    return 0


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
    config.set_defaults(func=cmd_config)

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
