"""JWKS key source against a real loopback JWKS server: rotation, outages, garbage, slowness,
an unknown-kid flood, discovery, and whole stacks behind uvicorn and werkzeug."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from secmw import audit
from secmw.asgi import AuthenticationMiddleware as ASGIAuth
from secmw.auth.base import AuthChain, Credential
from secmw.auth.jwks import JWKSKeySource
from secmw.auth.jwt import JWTAuthenticator
from secmw.core.deny import Deny
from secmw.core.principal import Principal
from secmw.wsgi import AuthenticationMiddleware as WSGIAuth
from tests.identity_support import FakeClock, IdentityProvider, new_key, public_jwk, sign
from tests.support import empty_receive, http_scope, uvicorn_server, werkzeug_server

pytestmark = pytest.mark.server

KEY_A = new_key("p256")
KEY_B = new_key("p256")
KEY_ED = new_key("ed25519")


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    with IdentityProvider() as provider:
        provider.state.jwks = {"keys": [public_jwk(KEY_A, "a", use="sig", alg="ES256")]}
        yield provider


def make_auth(
    idp: IdentityProvider, clock: FakeClock, **options: Any
) -> tuple[JWTAuthenticator, JWKSKeySource]:
    source_options = {"cooldown": 30.0, "cache_ttl": 300.0, "timeout": 2.0, **options}
    source = JWKSKeySource(f"{idp.url}/jwks", clock=clock, **source_options)
    return JWTAuthenticator(key_source=source, algorithms=["ES256", "EdDSA"]), source


def verify(auth: JWTAuthenticator, token: str) -> Principal | Deny:
    return auth.verify(Credential("bearer", token))


def names(events: list[audit.AuditEvent]) -> list[str]:
    return [e.name for e in events if e.name.startswith("jwks.")]


def test_keys_are_fetched_once_on_first_use(idp: IdentityProvider) -> None:
    """Nothing is fetched at construction; the first token fetches; later tokens reuse the set."""
    auth, _ = make_auth(idp, FakeClock())
    assert idp.state.hits["/jwks"] == 0
    for n in range(20):
        assert isinstance(verify(auth, sign(KEY_A, "ES256", "a", n=n)), Principal)
    assert idp.state.hits["/jwks"] == 1


def test_rotation_mid_run(idp: IdentityProvider) -> None:
    """A new kid is fetched (after the cool-down); a key dropped from the set stops verifying,
    cached verifications included."""
    clock = FakeClock()
    auth, source = make_auth(idp, clock)
    old_token = sign(KEY_A, "ES256", "a")
    assert isinstance(verify(auth, old_token), Principal)
    idp.state.jwks = {"keys": [public_jwk(KEY_B, "b", use="sig", alg="ES256")]}
    new_token = sign(KEY_B, "ES256", "b")
    early = verify(auth, new_token)
    assert isinstance(early, Deny)
    assert early.detail == "token signing key unknown"
    clock.advance(30)
    assert isinstance(verify(auth, new_token), Principal)
    assert idp.state.hits["/jwks"] == 2
    dropped = verify(auth, old_token)
    assert isinstance(dropped, Deny)
    assert (dropped.status, dropped.detail) == (401, "token signing key unknown")
    assert source.generation == 2


def test_cached_tokens_still_trigger_the_scheduled_refresh(idp: IdentityProvider) -> None:
    """A client reusing one cached token still drives the refresh; once the provider drops the
    key, that cached token stops verifying."""
    clock = FakeClock()
    auth, source = make_auth(idp, clock)
    token = sign(KEY_A, "ES256", "a")
    assert isinstance(verify(auth, token), Principal)
    idp.state.jwks = {"keys": [public_jwk(KEY_B, "b", use="sig", alg="ES256")]}
    clock.advance(241)
    assert isinstance(verify(auth, token), Principal)  # served from the cache, refresh started
    assert source.wait()
    assert source.fetches == 2
    dropped = verify(auth, token)
    assert isinstance(dropped, Deny)
    assert dropped.detail == "token signing key unknown"


def test_unknown_kid_flood_fetches_at_most_once_per_cooldown(
    idp: IdentityProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10,000 requests with random kids over 100 s of clock cause at most one fetch per 30 s."""
    monkeypatch.setattr(audit.logger, "disabled", True)  # 10,000 denial lines prove nothing here
    clock = FakeClock()
    auth, source = make_auth(idp, clock)
    app = ASGIAuth(_ok_app, chain=AuthChain([auth]))
    head = {"alg": "ES256", "typ": "JWT"}
    body = _b64(json.dumps({"sub": "x", "exp": 2**31}).encode())
    fetched_at: list[float] = []
    statuses: set[int] = set()

    async def flood() -> None:
        rng = random.Random(7)
        for _ in range(10_000):
            kid = f"{rng.getrandbits(64):016x}"
            token = f"{_b64(json.dumps({**head, 'kid': kid}).encode())}.{body}.AAAA"
            sent: list[Any] = []
            scope = http_scope(headers=[("Authorization", f"Bearer {token}")])
            before = source.fetches
            await app(scope, empty_receive, _collect(sent))
            if source.fetches != before:
                fetched_at.append(clock.now)
            statuses.add(sent[0]["status"])
            clock.advance(0.01)

    asyncio.run(flood())
    assert statuses == {401}
    assert 1 <= len(fetched_at) <= 1 + (100 // 30)
    assert all(b - a >= 30 for a, b in itertools.pairwise(fetched_at))
    assert idp.state.hits["/jwks"] == len(fetched_at)


def test_endpoint_down_keeps_last_good_keys_and_logs_once(
    idp: IdentityProvider, events: list[audit.AuditEvent]
) -> None:
    """With the server stopped, refreshes fail, the old keys keep verifying, one log line; the
    recovery is logged once too."""
    clock = FakeClock()
    auth, source = make_auth(idp, clock)
    assert isinstance(verify(auth, sign(KEY_A, "ES256", "a")), Principal)
    idp.stop()
    for n in range(3):
        clock.advance(300)
        assert isinstance(verify(auth, sign(KEY_A, "ES256", "a", n=n)), Principal)
        assert source.wait()
    assert source.fetches == 4
    assert names(events) == ["jwks.fetch_failed"]
    failure = events[-1]
    assert failure.reason == "connection refused"
    assert failure.extra["serving_last_good_keys"] is True
    idp.start()
    clock.advance(300)
    assert isinstance(verify(auth, sign(KEY_A, "ES256", "a", n=9)), Principal)
    assert source.wait()
    assert names(events) == ["jwks.fetch_failed", "jwks.recovered"]


@pytest.mark.parametrize(
    ("raw", "status", "reason"),
    [
        (b"{not json", 200, "invalid JSON"),
        (b'{"keys": []}', 200, "no usable signing keys"),
        (b"<html>oops</html>", 500, "HTTP 500"),
    ],
    ids=["invalid-json", "empty-set", "server-error"],
)
def test_garbage_keeps_last_good_keys(
    idp: IdentityProvider, events: list[audit.AuditEvent], raw: bytes, status: int, reason: str
) -> None:
    """Invalid JSON, an empty key set or a 500 never replace the keys in use."""
    clock = FakeClock()
    auth, source = make_auth(idp, clock)
    assert isinstance(verify(auth, sign(KEY_A, "ES256", "a")), Principal)
    idp.state.raw, idp.state.status = raw, status
    clock.advance(300)
    assert isinstance(verify(auth, sign(KEY_A, "ES256", "a", n=1)), Principal)
    assert source.wait()
    assert source.generation == 1
    assert [(e.name, e.reason) for e in events if e.name.startswith("jwks.")] == [
        ("jwks.fetch_failed", reason)
    ]


def test_slow_endpoint_never_delays_requests_with_known_keys(idp: IdentityProvider) -> None:
    """A background refresh against a slow server runs while requests are answered from the
    cached keys; it then times out and the keys stay."""
    clock = FakeClock()
    auth, source = make_auth(idp, clock, timeout=0.3)
    assert isinstance(verify(auth, sign(KEY_A, "ES256", "a")), Principal)
    idp.state.delay = 5.0
    clock.advance(241)  # past 80 % of the 300 s TTL
    assert isinstance(verify(auth, sign(KEY_A, "ES256", "a", n=1)), Principal)
    assert source.fetching
    assert source.wait()
    assert source.fetches == 2
    assert isinstance(verify(auth, sign(KEY_A, "ES256", "a", n=2)), Principal)


def test_slow_fetch_does_not_block_the_event_loop(idp: IdentityProvider) -> None:
    """While one request waits for a slow fetch (unknown kid), a request with a known key
    completes on the same event loop."""
    clock = FakeClock()
    auth, source = make_auth(idp, clock, timeout=1.0)
    known = sign(KEY_A, "ES256", "a")
    assert isinstance(verify(auth, known), Principal)
    idp.state.delay = 0.5
    clock.advance(30)
    finished: list[str] = []

    async def call(name: str, token: str) -> None:
        await auth.averify(Credential("bearer", token))
        finished.append(name)

    async def both() -> None:
        await asyncio.gather(call("unknown", sign(KEY_B, "ES256", "b")), call("known", known))

    asyncio.run(both())
    assert finished == ["known", "unknown"]
    assert source.fetches == 2


def test_no_key_set_yet_and_endpoint_down_is_503(idp: IdentityProvider) -> None:
    """Before any successful fetch an outage is 503 with Retry-After, and retried only after the
    cool-down."""
    clock = FakeClock()
    auth, source = make_auth(idp, clock)
    idp.stop()
    result = verify(auth, sign(KEY_A, "ES256", "a"))
    assert isinstance(result, Deny)
    assert (result.status, result.code) == (503, "temporarily_unavailable")
    assert dict(result.headers)["retry-after"] == "30"
    assert isinstance(verify(auth, sign(KEY_A, "ES256", "a", n=1)), Deny)
    assert source.fetches == 1
    idp.start()
    clock.advance(30)
    assert isinstance(verify(auth, sign(KEY_A, "ES256", "a", n=2)), Principal)


@pytest.mark.parametrize(
    ("cache_control", "refresh_after"),
    [(None, 240.0), ("max-age=100", 80.0), ("max-age=999999", 2880.0), ("no-store", 24.0)],
    ids=["default-ttl", "max-age", "max-age-capped", "no-store-floor"],
)
def test_cache_control_sets_the_refresh_time(
    idp: IdentityProvider, cache_control: str | None, refresh_after: float
) -> None:
    """The background refresh starts at 80 % of max-age, bounded to [cool-down, max_ttl]."""
    clock = FakeClock()
    auth, source = make_auth(idp, clock, max_ttl=3600.0)
    idp.state.cache_control = cache_control
    assert isinstance(verify(auth, sign(KEY_A, "ES256", "a")), Principal)
    clock.advance(refresh_after - 0.5)
    verify(auth, sign(KEY_A, "ES256", "a", n=1))
    assert source.fetches == 1
    clock.advance(30.5)  # past the refresh time and past any cool-down
    verify(auth, sign(KEY_A, "ES256", "a", n=2))
    assert source.wait()
    assert source.fetches == 2


def test_openid_discovery(idp: IdentityProvider, events: list[audit.AuditEvent]) -> None:
    """discovery=True reads jwks_uri from the issuer's configuration; another issuer is refused."""
    source = JWKSKeySource(issuer=idp.url, discovery=True, algorithms=["ES256"])
    auth = JWTAuthenticator(key_source=source, algorithms=["ES256"], issuer=idp.url)
    assert isinstance(verify(auth, sign(KEY_A, "ES256", "a", iss=idp.url)), Principal)
    assert idp.state.hits["/.well-known/openid-configuration"] == 1
    assert idp.state.hits["/jwks"] == 1
    impostor = JWKSKeySource(issuer=idp.url + "/other", discovery=True, algorithms=["ES256"])
    assert impostor.refresh() is False
    assert events[-1].reason == "discovery HTTP 404"


def test_ed25519_keys_from_the_server(idp: IdentityProvider) -> None:
    """OKP keys load and EdDSA tokens verify."""
    idp.state.jwks["keys"].append(public_jwk(KEY_ED, "ed", use="sig"))
    auth, _ = make_auth(idp, FakeClock())
    assert isinstance(verify(auth, sign(KEY_ED, "EdDSA", "ed")), Principal)


# -- whole stacks on real servers -------------------------------------------------------------


async def _ok_app(scope: Any, receive: Any, send: Any) -> None:
    user = scope["user"].id.encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": user})


def _wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("content-type", "text/plain")])
    return [environ["secmw.principal"].id.encode()]


@pytest.mark.parametrize("side", ["asgi-uvicorn", "wsgi-werkzeug"])
def test_jwks_from_settings_over_real_servers(idp: IdentityProvider, side: str) -> None:
    """SECMW_JWT__JWKS_URL-style settings: good token 200, unknown kid 401 problem, and the
    server keeps answering 200 after the JWKS endpoint goes down."""
    jwt_settings = {"jwks_url": f"{idp.url}/jwks", "algorithms": ["ES256"], "jwks_timeout": 1}
    if side == "asgi-uvicorn":
        server = uvicorn_server(ASGIAuth(_ok_app, jwt=jwt_settings))
    else:
        server = werkzeug_server(WSGIAuth(_wsgi_app, jwt=jwt_settings))
    with server as base, httpx.Client(base_url=base) as client:
        good = client.get("/", headers={"Authorization": f"Bearer {sign(KEY_A, 'ES256', 'a')}"})
        assert (good.status_code, good.text) == (200, "user-1")
        bad = client.get("/", headers={"Authorization": f"Bearer {sign(KEY_B, 'ES256', 'zz')}"})
        assert bad.status_code == 401
        assert bad.headers["content-type"] == "application/problem+json"
        assert bad.json()["detail"] == "token signing key unknown"
        idp.stop()
        again = client.get(
            "/", headers={"Authorization": f"Bearer {sign(KEY_A, 'ES256', 'a', n=2)}"}
        )
        assert again.status_code == 200
    assert idp.state.hits["/jwks"] == 1


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _collect(sent: list[Any]) -> Any:
    async def send(message: Any) -> None:
        sent.append(message)

    return send
