"""Confidential clients at the token endpoint: client_secret_basic / _post, the
client_credentials grant, the password grant switch, and the chain leaving /token's
Authorization field to the endpoint."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from pwdlib.hashers.bcrypt import BcryptHasher

from secmw import Principal, SecuritySettings, hash_api_key
from secmw.auth.base import Credential
from secmw.auth.build import build_chain, build_jwt_authenticator
from secmw.auth.throttle import AsyncFailedAuthThrottle, FailedAuthThrottle
from secmw.core.fields import Headers
from secmw.core.request import RequestView
from secmw.tokens import Account, IssuedTokens, OAuthError, TokenIssuer
from secmw.tokens.clients import presented_client
from tests.support import SECRET

SERVICE_SECRET = "service-secret-0123456789abcdef"
CLIENTS = {
    "service": {
        "secret_hash": hash_api_key(SERVICE_SECRET),
        "grants": ["client_credentials"],
        "scopes": ["items:read", "items:write"],
    },
    "web": {
        "secret_hash": BcryptHasher(rounds=4).hash("web-secret"),
        "grants": ["password", "refresh_token"],
    },
}
SETTINGS = SecuritySettings(
    jwt={"secret": SECRET},
    tokens={"scopes": ["items:read", "items:write"], "clients": CLIENTS, "password_grant": True},
    basic={"users": {"alice": {"password_hash": BcryptHasher(rounds=4).hash("pw")}}},
)


def view(path: str = "/token", authorization: str | None = None) -> RequestView:
    pairs = [("authorization", authorization)] if authorization else []
    return RequestView("POST", path, headers=Headers(pairs), peer="127.0.0.1")


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def user(username: str, password: str) -> Account | None:
    return Account.create("alice", scopes=["items:read"]) if password == "pw" else None


@pytest.fixture(scope="module")
def issuer() -> TokenIssuer:
    return TokenIssuer(SETTINGS)


def exchange(
    issuer: TokenIssuer, form: dict[str, Any], authorization: str | None = None
) -> IssuedTokens | OAuthError:
    return issuer.exchange(form, user, request=view(authorization=authorization))


CC = {"grant_type": "client_credentials"}


@pytest.mark.parametrize(
    ("form", "authorization", "answer"),
    [
        (CC, basic("service", SERVICE_SECRET), ("ok", 200)),
        ({**CC, "client_id": "service", "client_secret": SERVICE_SECRET}, None, ("ok", 200)),
        (CC, basic("service", "wrong"), ("invalid_client", 401)),
        ({**CC, "client_id": "service", "client_secret": "wrong"}, None, ("invalid_client", 400)),
        (CC, basic("nobody", "x"), ("invalid_client", 401)),
        ({**CC, "client_id": "service"}, None, ("invalid_client", 400)),
        (CC, None, ("invalid_client", 400)),
        ({**CC, "scope": "items:delete"}, basic("service", SERVICE_SECRET), ("invalid_scope", 400)),
        (CC, basic("web", "web-secret"), ("unauthorized_client", 400)),
        (
            {**CC, "client_secret": SERVICE_SECRET},
            basic("service", SERVICE_SECRET),
            ("invalid_request", 400),
        ),
        (CC, "Bearer abc", ("invalid_request", 400)),
        (CC, "Basic !!!", ("invalid_request", 400)),
    ],
    ids=[
        "basic",
        "post",
        "basic-wrong-secret",
        "post-wrong-secret",
        "unknown-client",
        "known-client-without-secret",
        "no-client",
        "scope-beyond-client",
        "grant-not-registered",
        "two-methods",
        "not-basic",
        "malformed-basic",
    ],
)
def test_client_credentials_truth_table(
    issuer: TokenIssuer,
    form: dict[str, Any],
    authorization: str | None,
    answer: tuple[str, int],
) -> None:
    """Each way a client can present itself, and the RFC 6749 §5.2 answer."""
    result = exchange(issuer, form, authorization)
    got = ("ok", 200) if isinstance(result, IssuedTokens) else (result.error, result.status)
    assert got == answer
    if isinstance(result, OAuthError) and result.status == 401:
        assert ("www-authenticate", 'Basic realm="api"') in result.headers


def test_client_credentials_token_names_the_client(issuer: TokenIssuer) -> None:
    """The principal is the client, with the scopes asked for, and there is no refresh token."""
    result = exchange(issuer, {**CC, "scope": "items:read"}, basic("service", SERVICE_SECRET))
    assert isinstance(result, IssuedTokens)
    assert result.refresh_token is None
    verifier = build_jwt_authenticator(SETTINGS.jwt)
    assert verifier is not None
    principal = verifier.verify(Credential("bearer", result.access_token))
    assert isinstance(principal, Principal)
    assert (principal.id, principal.scopes) == ("service", {"items:read"})
    assert principal.claims["client_id"] == "service"


def test_form_urlencoded_basic_credentials_are_decoded() -> None:
    """RFC 6749 §2.3.1: id and secret are form-urlencoded inside Basic."""
    found = presented_client(view(authorization=basic("a%3Ab", "p+q%25")), {})
    assert not isinstance(found, OAuthError)
    assert found is not None
    assert (found.id, found.secret) == ("a:b", "p q%")


def test_password_grant_is_off_unless_enabled() -> None:
    """RFC 9700 §2.4: grant_type=password is unsupported by default."""
    off = TokenIssuer(jwt={"secret": SECRET})
    form = {"grant_type": "password", "username": "alice", "password": "pw"}
    result = off.exchange(form, user, request=view())
    assert isinstance(result, OAuthError)
    assert result.error == "unsupported_grant_type"


def test_password_grant_through_a_registered_client(issuer: TokenIssuer) -> None:
    """A confidential client allowed the password grant gets tokens; a public request too."""
    form = {"grant_type": "password", "username": "alice", "password": "pw"}
    assert isinstance(exchange(issuer, form, basic("web", "web-secret")), IssuedTokens)
    assert isinstance(exchange(issuer, form), IssuedTokens)
    refused = exchange(issuer, form, basic("service", SERVICE_SECRET))
    assert isinstance(refused, OAuthError)
    assert refused.error == "unauthorized_client"


def test_wrong_client_secrets_are_charged_to_the_throttle() -> None:
    """Client authentication failures spend the failed-attempt budget (charged first); once it
    is spent even the right secret is refused with 429."""
    throttle = FailedAuthThrottle(rate_limit={"auth_failures": "2/minute"})
    service = TokenIssuer(SETTINGS)
    request = view(authorization=basic("service", "wrong"))
    answers = [service.exchange(CC, user, throttle=throttle, request=request) for _ in range(3)]
    assert [getattr(a, "status", 200) for a in answers] == [401, 401, 429]
    good = service.exchange(
        CC, user, throttle=throttle, request=view(authorization=basic("service", SERVICE_SECRET))
    )
    assert isinstance(good, OAuthError)
    assert good.status == 429


def test_async_twin_answers_the_same() -> None:
    """aexchange runs the same decision: a good secret issues, a wrong one is charged."""
    throttle = AsyncFailedAuthThrottle(rate_limit={"auth_failures": "1/minute"})
    service = TokenIssuer(SETTINGS)

    async def run() -> list[Any]:
        good = view(authorization=basic("service", SERVICE_SECRET))
        bad = view(authorization=basic("service", "wrong"))
        return [
            await service.aexchange(CC, user, throttle=throttle, request=good),
            await service.aexchange(CC, user, throttle=throttle, request=bad),
            await service.aexchange(CC, user, throttle=throttle, request=bad),
        ]

    first, second, third = asyncio.run(run())
    assert isinstance(first, IssuedTokens)
    assert (second.error, second.status) == ("invalid_client", 401)
    assert third.status == 429


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/token", "anonymous"), ("/other", 401)],
    ids=["token-endpoint", "elsewhere"],
)
def test_chain_leaves_the_token_endpoints_authorization_to_it(path: str, expected: Any) -> None:
    """On tokens.endpoint_path a client's Basic credential is not a user's: no 401 there."""
    chain = build_chain(SETTINGS)
    result = chain.authenticate(view(path, basic("service", SERVICE_SECRET)))
    anonymous = isinstance(result, Principal) and not result.is_authenticated
    got = "anonymous" if anonymous else getattr(result, "status", None)
    assert got == expected


def test_chain_endpoint_path_can_be_switched_off() -> None:
    """An empty tokens.endpoint_path: Authorization is read everywhere, /token included."""
    settings = SETTINGS.model_copy(
        update={"tokens": SETTINGS.tokens.model_copy(update={"endpoint_path": None})}
    )
    result = build_chain(settings).authenticate(view("/token", basic("service", "x")))
    assert not isinstance(result, Principal)
    assert result.status == 401


def test_a_refresh_token_works_only_for_its_client(issuer: TokenIssuer) -> None:
    """RFC 6749 §6: a confidential client's refresh token is refused to anyone else."""
    form = {"grant_type": "password", "username": "alice", "password": "pw"}
    issued = exchange(issuer, form, basic("web", "web-secret"))
    assert isinstance(issued, IssuedTokens)
    refresh = {"grant_type": "refresh_token", "refresh_token": issued.refresh_token}
    stolen = exchange(issuer, refresh)
    assert isinstance(stolen, OAuthError)
    assert stolen.error == "invalid_grant"
    assert isinstance(exchange(issuer, refresh, basic("web", "web-secret")), IssuedTokens)


def test_config_check_questions_the_password_grant() -> None:
    """`secmw config` names the password grant when it is on, and only then."""
    from secmw.config.check import risky_choices

    assert any("PASSWORD_GRANT" in w for w in risky_choices(SETTINGS))
    quiet = SecuritySettings(jwt={"secret": SECRET})
    assert not any("PASSWORD_GRANT" in w for w in risky_choices(quiet))


def test_required_paths_do_not_close_the_token_endpoint() -> None:
    """auth.required=/* still lets a client reach /token with its own Basic credential."""
    settings = SETTINGS.model_copy(
        update={"auth": SETTINGS.auth.model_copy(update={"required": ["/*"]})}
    )
    chain = build_chain(settings)
    at_token = chain.authenticate(view("/token", basic("service", SERVICE_SECRET)))
    assert isinstance(at_token, Principal)
    elsewhere = chain.authenticate(view("/items"))
    assert not isinstance(elsewhere, Principal)
    assert elsewhere.status == 401
