"""The ``secmw`` command: hashing, tokens, configuration checks; one-line errors, exit codes."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import jwt
import pytest

from secmw import hash_api_key, verify_password
from secmw.cli import main
from tests.support import SECRET


def run(
    capsys: pytest.CaptureFixture[str], *args: str, stdin: str | None = None
) -> tuple[int, str, str]:
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        code = main(list(args))
    finally:
        sys.stdin = sys.__stdin__
    out, err = capsys.readouterr()
    return code, out, err


def test_hash_key_from_argument_and_stdin(capsys: pytest.CaptureFixture[str]) -> None:
    """hash-key prints the stored form, from an argument or piped stdin."""
    assert run(capsys, "hash-key", "abc") == (0, hash_api_key("abc") + "\n", "")
    assert run(capsys, "hash-key", stdin="abc\n") == (0, hash_api_key("abc") + "\n", "")


def test_hash_key_refuses_a_key_with_a_comma(capsys: pytest.CaptureFixture[str]) -> None:
    """A key with a comma could never be presented (it reads as two keys): no hash for it."""
    code, out, err = run(capsys, "hash-key", "a,b")
    assert (code, out) == (1, "")
    assert "comma" in err


def test_hash_key_generate(capsys: pytest.CaptureFixture[str]) -> None:
    """--generate prints a fresh key and its hash."""
    code, out, _ = run(capsys, "hash-key", "--generate")
    lines = dict(line.split(": ", 1) for line in out.splitlines())
    assert code == 0
    assert hash_api_key(lines["key"].strip()) == lines["hash"].strip()


def test_hash_key_empty_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An empty key is refused with one line and exit 1."""
    assert run(capsys, "hash-key", stdin="\n") == (1, "", "secmw: empty key\n")


def test_hash_password_reads_stdin(capsys: pytest.CaptureFixture[str]) -> None:
    """hash-password prints an argon2id hash of the piped password."""
    code, out, _ = run(capsys, "hash-password", stdin="pw-123\n")
    assert code == 0
    assert out.startswith("$argon2id$")
    assert verify_password("pw-123", out.strip())
    assert run(capsys, "hash-password", stdin="") == (1, "", "secmw: empty password\n")


def test_token_is_accepted_by_the_configured_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """secmw token mints a token with the configured secret, scopes and extra claims."""
    monkeypatch.setenv("SECMW_JWT__SECRET", SECRET)
    code, out, _ = run(
        capsys, "token", "--sub", "alice", "--scope", "items:read items:write", "--claim", "n=1"
    )
    assert code == 0
    claims = jwt.decode(out.strip(), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice"
    assert set(claims["scope"].split()) == {"items:read", "items:write"}
    assert claims["n"] == 1
    assert run(capsys, "token", "--sub", "a", "--claim", "novalue")[0] == 1


def test_token_without_key_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """No configured key is a configuration error naming a variable."""
    code, _, err = run(capsys, "token", "--sub", "a")
    assert code == 2
    assert "SECMW_" in err
    assert len(err.strip().splitlines()) == 1


def test_config_prints_masked_settings_and_warnings(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Secrets are masked; risky but valid choices are warned about."""
    monkeypatch.setenv("SECMW_JWT__SECRET", SECRET)
    monkeypatch.setenv("SECMW_RATE_LIMIT__ON_STORAGE_ERROR", "allow")
    monkeypatch.setenv("SECMW_IP__TRUSTED_PROXIES", "0.0.0.0/0")
    monkeypatch.setenv("SECMW_HEADERS__HSTS", "false")
    code, out, err = run(capsys, "config")
    assert code == 0
    effective = json.loads(out)
    assert effective["jwt"]["secret"] == "**********"
    assert SECRET not in out
    for variable in (
        "SECMW_RATE_LIMIT__STORAGE_URI",
        "SECMW_RATE_LIMIT__ON_STORAGE_ERROR",
        "SECMW_IP__TRUSTED_PROXIES",
        "SECMW_HEADERS__HSTS",
    ):
        assert variable in err
    assert err.strip().endswith("configuration ok")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SECMW_JWT__SECRET", "too-short"),
        ("SECMW_RATE_LIMIT__STRATEGY", "leaky-bucket"),
        ("SECMW_RATE_LIMIT__DEFAULT", "many/fortnight"),
        ("SECMW_IP__ALLOW", "10.0.0.1/8"),
        ("SECMW_HEADERS__REFERRER_POLICY", "no-referrer\r\nX-Evil: 1"),
    ],
    ids=["short-secret", "strategy", "limit", "network", "crlf-header"],
)
def test_config_invalid_exits_2_naming_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """Each invalid setting exits 2 with one line naming the variable, no traceback."""
    monkeypatch.setenv(variable, value)
    code, out, err = run(capsys, "config")
    assert code == 2
    assert out == ""
    assert variable in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_console_script_runs_as_a_process() -> None:
    """The installed entry point works and an error exits 2 without a traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "secmw.cli", "config"],
        capture_output=True,
        text=True,
        env={"SECMW_JWT__SECRET": "short", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 2
    assert "SECMW_JWT__SECRET" in result.stderr
    assert "Traceback" not in result.stderr
