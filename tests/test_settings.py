"""SecuritySettings: environment names, lists, files, and errors naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from secmw.config.settings import SecuritySettings, resolve_settings
from secmw.errors import ConfigurationError
from tests.support import SECRET


def test_environment_variables_reach_sections(monkeypatch: pytest.MonkeyPatch) -> None:
    """SECMW_<SECTION>__<FIELD> sets a field; lists take commas or JSON."""
    monkeypatch.setenv("SECMW_JWT__SECRET", SECRET)
    monkeypatch.setenv("SECMW_JWT__ALGORITHMS", "HS256, HS384")
    monkeypatch.setenv("SECMW_JWT__AUDIENCE", '["a", "b"]')
    monkeypatch.setenv("SECMW_JWT__ISSUER", "https://idp")
    monkeypatch.setenv("SECMW_JWT__LEEWAY", "5")
    monkeypatch.setenv("SECMW_JWT__SUBJECT_CLAIM", "user_id")
    monkeypatch.setenv("SECMW_JWT__SCOPES_CLAIM", "perms")
    monkeypatch.setenv("SECMW_API_KEYS__HEADER", "X-Key")
    monkeypatch.setenv("SECMW_API_KEYS__QUERY_PARAM", "key")
    monkeypatch.setenv("SECMW_BASIC__USERS_FILE", "/etc/users.json")
    monkeypatch.setenv("SECMW_API_KEYS__FILE", "/etc/keys.json")
    s = SecuritySettings()
    assert s.jwt.secret is not None
    assert s.jwt.secret.get_secret_value() == SECRET
    assert SECRET not in repr(s)
    assert s.jwt.algorithms == ["HS256", "HS384"]
    assert s.jwt.audience == ["a", "b"]
    assert (s.jwt.issuer, s.jwt.leeway, s.jwt.subject_claim) == ("https://idp", 5, "user_id")
    assert s.jwt.scopes_claim == "perms"
    assert (s.api_keys.header, s.api_keys.query_param) == ("X-Key", "key")
    assert s.api_keys.file == Path("/etc/keys.json")
    assert s.basic.users_file == Path("/etc/users.json")


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    """A .env file in the working directory is read."""
    (tmp_path / ".env").write_text("SECMW_JWT__ISSUER=from-dotenv\n")
    assert SecuritySettings().jwt.issuer == "from-dotenv"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SECMW_JWT__LEEWAY", "abc"),
        ("SECMW_JWT__LEEWAY", "-1"),
        ("SECMW_AUTH__ORDER", "bearer,kerberos"),
        ("SECMW_JWT__MAX_TOKEN_BYTES", "10"),
        ("SECMW_API_KEYS__KEYS", '[{"hash": "x"}]'),
    ],
    ids=["leeway-text", "leeway-negative", "unknown-scheme", "tiny-token", "key-no-id"],
)
def test_invalid_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """Errors say which variable is wrong and never echo a secret."""
    monkeypatch.setenv(name, value)
    monkeypatch.setenv("SECMW_JWT__SECRET", "top-secret-value-that-must-not-leak")
    with pytest.raises(ConfigurationError) as info:
        SecuritySettings()
    message = str(info.value)
    assert name.split("__")[0] in message
    assert "top-secret-value" not in message


def test_unknown_field_in_a_section_is_an_error() -> None:
    """A typo in a section key is refused, not ignored."""
    with pytest.raises(ConfigurationError, match="SECMW_JWT__SECRETT"):
        SecuritySettings(jwt={"secrett": "x"})


def test_resolve_settings_merges_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """Overrides replace whole sections of explicit settings; none means the environment."""
    monkeypatch.setenv("SECMW_JWT__ISSUER", "env")
    assert resolve_settings(None, {}).jwt.issuer == "env"
    base = SecuritySettings(jwt={"issuer": "explicit"})
    assert resolve_settings(base, {}) is base
    merged = resolve_settings(base, {"auth": {"realm": "r"}})
    assert (merged.jwt.issuer, merged.auth.realm) == ("explicit", "r")
