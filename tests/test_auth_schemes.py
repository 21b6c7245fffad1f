"""API-key and Basic authenticators, the chain, and building them from settings."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from secmw import hash_api_key, hash_password
from secmw.auth import (
    APIKeyAuthenticator,
    APIKeyRecord,
    AuthChain,
    BasicAuthenticator,
    BasicUser,
    Credential,
    Found,
    JWTAuthenticator,
)
from secmw.auth.build import build_chain
from secmw.config.settings import SecuritySettings
from secmw.core.deny import Deny
from secmw.core.fields import Headers
from secmw.core.paths import PathSet
from secmw.core.principal import ANONYMOUS, Principal
from secmw.core.request import RequestView
from secmw.errors import ConfigurationError
from tests.support import SECRET, make_token

KEY = "k-0123456789abcdef"
ALICE_HASH = hash_password("alice-password")


def request(path: str = "/", query: bytes = b"", **headers: str) -> RequestView:
    pairs = [(name.replace("_", "-"), value) for name, value in headers.items()]
    return RequestView("GET", path, query_string=query, headers=Headers(pairs))


def basic(user_pass: bytes) -> str:
    return "Basic " + base64.b64encode(user_pass).decode()


@pytest.fixture(scope="module")
def chain() -> AuthChain:
    return AuthChain(
        [
            JWTAuthenticator(SECRET),
            APIKeyAuthenticator([APIKeyRecord(hash_api_key(KEY), "svc", frozenset({"r"}))]),
            BasicAuthenticator([BasicUser("alice", ALICE_HASH, frozenset({"items:read"}))]),
        ],
        required=PathSet(["/private/*"]),
        public=PathSet(["/private/open"]),
    )


def test_api_key_hash_format() -> None:
    """The stored form is sha256 and hex, never the key."""
    stored = hash_api_key(KEY)
    assert stored.startswith("sha256:")
    assert len(stored) == 7 + 64
    assert KEY not in stored


@pytest.mark.parametrize(
    ("headers", "query", "expected"),
    [
        ({"X_API_Key": KEY}, b"", "svc"),
        ({}, f"api_key={KEY}".encode(), "svc"),
        ({"x_api_key": "wrong"}, b"", 401),
        ({"x_api_key": ""}, b"", 401),
        ({"x_api_key": "  "}, b"", 401),
        ({}, b"api_key=", 401),
        ({}, f"api_key={KEY}&api_key={KEY}".encode(), 400),
        ({}, b"other=1", "anonymous"),
    ],
    ids=["header", "query", "unknown", "empty", "blank", "empty-query", "repeated", "absent"],
)
def test_api_key_truth_table(
    chain: AuthChain, headers: dict[str, str], query: bytes, expected: object
) -> None:
    """Known keys admit, unknown/empty are 401, repeated is 400, absent is anonymous."""
    result = chain.authenticate(request(query=query, **headers))
    if isinstance(expected, int):
        assert isinstance(result, Deny)
        assert result.status == expected
        assert KEY not in result.body().decode()
    elif expected == "anonymous":
        assert result is ANONYMOUS
    else:
        assert isinstance(result, Principal)
        assert (result.id, result.scheme, result.scopes) == ("svc", "apikey", {"r"})


def test_api_key_repeated_header_is_400(chain: AuthChain) -> None:
    """Two X-API-Key fields are malformed."""
    view = RequestView("GET", "/", headers=Headers([("x-api-key", KEY), ("x-api-key", KEY)]))
    result = chain.authenticate(view)
    assert isinstance(result, Deny)
    assert result.status == 400


def test_api_key_needs_somewhere_to_travel() -> None:
    """No header and no query parameter is a configuration error."""
    with pytest.raises(ConfigurationError):
        APIKeyAuthenticator([], header=None, query_param=None)


@pytest.mark.parametrize("bad", ["abc", "sha256:" + "z" * 64, "sha256:abcd", "md5:" + "0" * 64])
def test_api_key_bad_stored_hash(bad: str) -> None:
    """Stored hashes must be sha256 hex."""
    with pytest.raises(ConfigurationError, match="SECMW_API_KEYS__KEYS"):
        APIKeyAuthenticator([APIKeyRecord(bad, "x")])


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (basic(b"alice:alice-password"), 200),
        (basic(b"alice:wrong"), 401),
        (basic(b"mallory:alice-password"), 401),
        ("Basic !!!notbase64", 400),
        (basic(b"no-colon"), 400),
        (basic(b":nouser"), 400),
        (basic(b"alice:\xff\xfe"), 400),
        (basic(b"alice:a\x00b"), 400),
        ("Basic", 400),
        ("basic " + base64.b64encode(b"alice:alice-password").decode(), 200),
    ],
    ids=[
        "valid",
        "wrong-password",
        "unknown-user",
        "bad-base64",
        "no-colon",
        "empty-user",
        "non-utf8",
        "nul",
        "empty",
        "lowercase-scheme",
    ],
)
def test_basic_truth_table(chain: AuthChain, authorization: str, status: int) -> None:
    """Basic credentials: valid, wrong, unknown, and each malformed form."""
    result = chain.authenticate(request(authorization=authorization))
    if status == 200:
        assert isinstance(result, Principal)
        assert (result.id, result.scheme, result.scopes) == ("alice", "basic", {"items:read"})
    else:
        assert isinstance(result, Deny)
        assert result.status == status
        assert "alice-password" not in result.body().decode()
        assert ("www-authenticate", 'Basic realm="api", charset="UTF-8"') in result.headers


def test_basic_credential_repr_hides_password(chain: AuthChain) -> None:
    """The credential object never shows the password."""
    found = chain.find(request(authorization=basic(b"alice:alice-password")))
    assert isinstance(found, Found)
    assert "alice-password" not in repr(found.credential)
    assert found.authenticator.blocking


@pytest.mark.parametrize(
    ("headers", "status", "detail"),
    [
        ({"authorization": "Digest abc"}, 401, "unsupported authorization scheme"),
        ({"authorization": "abc"}, 401, "unsupported authorization scheme"),
        ({"authorization": "Bearer"}, 400, "bearer token missing"),
        ({"authorization": "Bearer a b"}, 400, "bearer credentials must be a single token"),
        ({"authorization": "Bearer t\x00k"}, 400, "malformed Authorization header"),
        ({"authorization": "Bearer caf\u00e9"}, 400, "malformed Authorization header"),
        ({"authorization": "Bearer " + "a" * 70000}, 400, "Authorization header too large"),
    ],
    ids=["digest", "no-scheme", "empty-bearer", "two-tokens", "nul", "non-ascii", "64k"],
)
def test_authorization_header_problems(
    chain: AuthChain, headers: dict[str, str], status: int, detail: str
) -> None:
    """Malformed Authorization headers get 400/401, never anonymous."""
    result = chain.authenticate(request(**headers))
    assert isinstance(result, Deny)
    assert (result.status, result.detail) == (status, detail)


def test_two_authorization_headers_are_400(chain: AuthChain) -> None:
    """Two Authorization fields are ambiguous and refused."""
    token = make_token()
    view = RequestView(
        "GET",
        "/",
        headers=Headers([("authorization", f"Bearer {token}"), ("authorization", "Basic x")]),
    )
    result = chain.authenticate(view)
    assert isinstance(result, Deny)
    assert result.status == 400


def test_lowercase_bearer_is_accepted(chain: AuthChain) -> None:
    """Schemes are case-insensitive (RFC 9110 §11.1)."""
    result = chain.authenticate(request(authorization=f"bearer {make_token()}"))
    assert isinstance(result, Principal)


def test_required_paths(chain: AuthChain) -> None:
    """Anonymous requests to required paths get 401 with one challenge per scheme."""
    result = chain.authenticate(request("/private/x"))
    assert isinstance(result, Deny)
    assert result.status == 401
    assert [v.split()[0] for _, v in result.headers] == ["Bearer", "APIKey", "Basic"]
    assert chain.authenticate(request("/private/open")) is ANONYMOUS
    assert chain.authenticate(request("/elsewhere")) is ANONYMOUS
    assert chain.authenticate(request("//private//x/")) != ANONYMOUS


def test_credentials_present_but_invalid_never_fall_through(chain: AuthChain) -> None:
    """A bad bearer token beside a good API key is still refused (first credential decides)."""
    result = chain.authenticate(request(authorization="Bearer bad.token.here", x_api_key=KEY))
    assert isinstance(result, Deny)


def write(tmp_path: Path, name: str, content: object) -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_build_chain_from_files(tmp_path: Path) -> None:
    """Secret, key and user files are read; the order setting is honoured."""
    settings = SecuritySettings(
        jwt={"secret_file": write(tmp_path, "secret", SECRET + "\n")},
        api_keys={
            "file": write(tmp_path, "keys.json", [{"hash": hash_api_key(KEY), "id": "svc"}]),
            "query_param": "",
        },
        basic={"users_file": write(tmp_path, "users.json", {"alice": {"password_hash": "x"}})},
        auth={"order": "basic,apikey,bearer"},
    )
    chain = build_chain(settings)
    assert [a.scheme for a in chain.authenticators] == ["basic", "apikey", "bearer"]
    bearer = request(authorization=f"Bearer {make_token()}")
    assert isinstance(chain.authenticate(bearer), Principal)
    assert chain.authenticate(request(query=f"api_key={KEY}".encode())) is ANONYMOUS


def test_build_chain_empty_settings_is_anonymous_only() -> None:
    """With nothing configured every request is anonymous; any Authorization is refused."""
    chain = build_chain(SecuritySettings())
    assert chain.authenticators == ()
    assert chain.authenticate(request()) is ANONYMOUS
    assert isinstance(chain.authenticate(request(authorization="Bearer x")), Deny)


@pytest.mark.parametrize(
    ("section", "content", "variable"),
    [
        ("api_keys", "not json", "SECMW_API_KEYS__FILE"),
        ("api_keys", [{"id": "no-hash"}], "SECMW_API_KEYS__FILE"),
        ("basic", ["list"], "SECMW_BASIC__USERS_FILE"),
        ("basic", {"u": {"scopes": []}}, "SECMW_BASIC__USERS_FILE"),
    ],
    ids=["keys-not-json", "keys-invalid", "users-not-object", "users-no-hash"],
)
def test_build_chain_bad_files(
    tmp_path: Path, section: str, content: object, variable: str
) -> None:
    """Bad files fail at startup naming the variable."""
    key = "file" if section == "api_keys" else "users_file"
    settings = SecuritySettings(**{section: {key: write(tmp_path, "f.json", content)}})
    with pytest.raises(ConfigurationError, match=variable):
        build_chain(settings)


def test_missing_secret_file(tmp_path: Path) -> None:
    """An unreadable secret file names its variable."""
    settings = SecuritySettings(jwt={"secret_file": tmp_path / "nope"})
    with pytest.raises(ConfigurationError, match="SECMW_JWT__SECRET_FILE"):
        build_chain(settings)


def test_credential_is_frozen() -> None:
    """Credentials cannot be altered after extraction."""
    cred = Credential("bearer", "tok")
    with pytest.raises(AttributeError):
        cred.secret = "x"  # type: ignore[misc]


def test_cors_preflight_is_anonymous_even_on_required_paths(chain: AuthChain) -> None:
    """OPTIONS with Origin and Access-Control-Request-Method skips authentication."""
    headers = Headers([("origin", "https://app"), ("access-control-request-method", "POST")])
    preflight = RequestView("OPTIONS", "/private/x", headers=headers)
    assert chain.authenticate(preflight) is ANONYMOUS
    plain_options = RequestView("OPTIONS", "/private/x", headers=Headers([("origin", "x")]))
    assert isinstance(chain.authenticate(plain_options), Deny)
    strict = AuthChain(chain.authenticators, required=chain.required, preflight_anonymous=False)
    assert isinstance(strict.authenticate(preflight), Deny)
