"""Opaque bearer tokens checked by the authorization server (OAuth 2.0 Token Introspection,
RFC 7662).

The resource server POSTs the token to the introspection endpoint, authenticated with its own
client credentials (RFC 6749 §2.3.1, ``client_secret_basic`` by default, or a client certificate,
RFC 8705 ``tls_client_auth``), and trusts the answer:

- ``"active": true`` (and, when present, an ``exp`` in the future and a matching ``iss`` /
  ``aud``) admits the token; the answer is cached until the token's ``exp`` and at most
  ``cache_ttl`` seconds, so revocation at the server takes effect within that time;
- anything else, ``"active": false`` above all, is a 401 (cached ``negative_ttl`` seconds);
- an RFC 6749 §5.2 error in a 400 (``invalid_request``, ``unsupported_token_type``,
  ``invalid_token``...) is an answer about the token too: 401 ``invalid_token``, no outage;
- an endpoint that is down, slow, answers 5xx or garbage, or refuses our client credentials
  (401/403, or a 400 with ``invalid_client``) is a 503: the token could not be checked, which is
  neither a client error nor a reason to let it through. The outage is logged once
  (``introspection.failed``), and recovery once.

A token that cannot be an access token (more than three dot-separated segments, characters
outside RFC 6750's ``b64token``: whitespace, control characters...) is refused with a 401 before
any call: it would only cost the authorization server a request.

Coexistence with JWTs: both own the ``Bearer`` scheme. With ``"introspection"`` in
``auth.order`` and JWT verification also configured, :class:`BearerDispatcher` sends
tokens shaped like a JWS (three segments, a JSON header with ``alg``) to the JWT authenticator
and every other token to introspection. A JWT that fails local verification is not retried by
introspection. With introspection alone, every bearer token is introspected.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlencode

from pydantic import Field, SecretStr

from secmw import audit
from secmw.auth._http import (
    FetchError,
    ProviderClient,
    ProviderHTTPSettings,
    Response,
    parse_endpoint,
)
from secmw.auth.base import Credential, bearer_credential
from secmw.auth.bearer import BearerDispatcher, looks_like_jwt, unusable_token
from secmw.auth.cache import TokenCache
from secmw.core.deny import Deny, quote_param
from secmw.core.principal import Principal
from secmw.core.request import RequestView
from secmw.core.section import Section, StrList
from secmw.errors import ConfigurationError

MAX_ANSWER_BYTES = 64 * 1024
CLIENT_REFUSED = "invalid_client"  # RFC 6749 §5.2: our credentials, not the token


class IntrospectionSettings(Section):
    """Token introspection, RFC 7662 (``introspection.*``). Enabled when ``url`` is set
    and ``"introspection"`` is in ``auth.order``."""

    url: str | None = Field(None, description="The introspection endpoint.")
    client_id: str | None = Field(None, description="This resource server's client id.")
    client_secret: SecretStr | None = Field(None, description="Its client secret.")
    client_secret_file: Path | None = Field(None, description="File holding the client secret.")
    auth_method: Literal["client_secret_basic", "client_secret_post", "tls_client_auth"] = Field(
        "client_secret_basic",
        description="How the client authenticates; `tls_client_auth` needs `http.client_cert`.",
    )
    cache_ttl: float = Field(
        60,
        ge=0,
        le=3600,
        description="Maximum seconds an active answer is cached (never past exp).",
    )
    cache_size: int = Field(10_000, ge=0, le=1_000_000, description="Answers remembered.")
    negative_ttl: float = Field(5, ge=0, le=60, description="Seconds an inactive answer is cached.")
    timeout: float = Field(3, gt=0, le=30, description="Total seconds one introspection may take.")
    issuer: str | None = Field(None, description="Required `iss` in the answer, when set.")
    audience: StrList | None = Field(None, description="Accepted `aud` values, when set.")
    allow_http: bool = Field(False, description="Accept plain http for a non-loopback host.")
    http: ProviderHTTPSettings = Field(
        default_factory=ProviderHTTPSettings,
        description="CA bundle, client certificate and proxies for the endpoint.",
    )


class IntrospectionAuthenticator:
    """Verifies ``Authorization: Bearer <opaque token>`` by asking the authorization server.

    Args:
        url: The introspection endpoint.
        client_id: This resource server's client id.
        client_secret: Its secret (not with ``tls_client_auth``).
        auth_method: ``client_secret_basic`` (default), ``client_secret_post``, or
            ``tls_client_auth`` (RFC 8705: the client certificate of ``http`` authenticates).
        cache_ttl: Maximum seconds an active answer is reused.
        cache_size: Answers remembered (0 turns the cache off).
        negative_ttl: Seconds an inactive answer is reused.
        timeout: Total seconds one call may take.
        issuer: Required ``iss`` when set.
        audience: Accepted ``aud`` value(s) when set.
        realm: ``realm`` of the challenge.
        max_token_bytes: Longer tokens are refused without a call.
        allow_http: Accept plain http for a non-loopback host.
        http: CA bundle, client certificate (mutual TLS) and proxy use for the endpoint.
        clock: UNIX time source (injected in tests).

    The connections to the endpoint are pooled and reused; close them with :meth:`close` /
    :meth:`aclose` (the stacks do it when the app shuts down).
    """

    scheme = "introspection"
    authorization_scheme = "bearer"
    blocking = True  # verify() does network I/O; the ASGI adapter calls averify() instead

    def __init__(
        self,
        url: str,
        *,
        client_id: str,
        client_secret: str | None = None,
        auth_method: str = "client_secret_basic",
        cache_ttl: float = 60.0,
        cache_size: int = 10_000,
        negative_ttl: float = 5.0,
        timeout: float = 3.0,
        issuer: str | None = None,
        audience: str | Iterable[str] | None = None,
        realm: str = "api",
        max_token_bytes: int = 8192,
        allow_http: bool = False,
        http: ProviderHTTPSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.endpoint = parse_endpoint(url, setting="introspection.url", allow_http=allow_http)
        self.http = ProviderClient(http, setting="introspection.http")
        self._headers = {
            "Accept": "application/json",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        self._form: dict[str, str] = {"token_type_hint": "access_token"}
        if auth_method == "tls_client_auth":
            if http is None or http.client_cert is None:
                raise ConfigurationError(
                    "introspection.http.client_cert: tls_client_auth needs a client certificate"
                )
            self._form["client_id"] = client_id  # RFC 8705 §2: the certificate authenticates
        elif client_secret is None:
            raise ConfigurationError(
                "introspection.client_secret: introspection needs a client secret"
            )
        elif auth_method == "client_secret_post":
            self._form.update(client_id=client_id, client_secret=client_secret)
        else:  # RFC 6749 §2.3.1: form-encode both parts before joining them
            pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        self.cache_ttl = cache_ttl
        self.timeout = timeout
        self.issuer = issuer
        self.audience = frozenset([audience] if isinstance(audience, str) else audience or ())
        self.realm = realm
        self.max_token_bytes = max_token_bytes
        self.cache = TokenCache(
            cache_size, negative_ttl=negative_ttl, clock=clock, name="introspection"
        )
        self._clock = clock
        self._failing = False

    def extract(self, request: RequestView, authorization: str | None) -> Credential | Deny | None:
        """The bearer token from the ``Authorization`` parameter the chain handed over; a token
        that cannot be an access token is refused here, without a call."""
        found = bearer_credential(
            authorization, scheme=self.scheme, max_bytes=self.max_token_bytes, deny=self._deny
        )
        if isinstance(found, Credential):
            problem = unusable_token(found.secret)
            if problem is not None:
                return self._deny(401, problem, "invalid_token")
        return found

    def verify(self, credential: Credential) -> Principal | Deny:
        """Introspect (or take the cached answer); blocks for at most ``timeout`` seconds."""
        cached = self.cache.get(credential.secret)
        if cached is not None:
            return cached
        try:
            response = self.http.fetch(
                self.endpoint,
                "POST",
                self._headers,
                self._body(credential.secret),
                timeout=self.timeout,
                max_bytes=MAX_ANSWER_BYTES,
            )
        except FetchError as exc:
            return self._unavailable(str(exc))
        return self._conclude(credential.secret, response)

    async def averify(self, credential: Credential) -> Principal | Deny:
        """Async twin of :meth:`verify` (asyncio streams; the event loop never blocks)."""
        cached = self.cache.get(credential.secret)
        if cached is not None:
            return cached
        try:
            response = await self.http.afetch(
                self.endpoint,
                "POST",
                self._headers,
                self._body(credential.secret),
                timeout=self.timeout,
                max_bytes=MAX_ANSWER_BYTES,
            )
        except FetchError as exc:
            return self._unavailable(str(exc))
        return self._conclude(credential.secret, response)

    def close(self) -> None:
        """Close the pooled connections to the endpoint (WSGI, threads)."""
        self.http.close()

    async def aclose(self) -> None:
        """Close the pooled connections to the endpoint, async ones included (ASGI)."""
        await self.http.aclose()

    def challenge(self, error: str | None = None, description: str | None = None) -> str:
        """``Bearer realm="..."`` with RFC 6750 ``error`` parameters when given."""
        text = f"Bearer realm={quote_param(self.realm)}"
        if error:
            text += f", error={quote_param(error)}"
        if description:
            text += f", error_description={quote_param(description)}"
        return text

    def _body(self, token: str) -> bytes:
        return urlencode({"token": token, **self._form}).encode()

    def _conclude(self, token: str, response: Response) -> Principal | Deny:
        if response.status == 400 and _token_error(response.body):
            self._answering()
            refused = self._deny(401, "token refused by the authorization server", "invalid_token")
            self.cache.put(token, refused, expires_at=None)
            return refused
        if response.status != 200:
            # 401/403 (or a 400 naming invalid_client) mean *our* client credentials were
            # refused; 5xx, another 4xx or a 400 without an RFC 6749 error: the endpoint's fault.
            return self._unavailable(f"HTTP {response.status}")
        answer = _json_object(response.body)
        if isinstance(answer, str):
            return self._unavailable(answer)
        self._answering()
        result = self._judge(answer)
        expires_at = None
        if isinstance(result, Principal):
            expires_at = self._clock() + self.cache_ttl
            exp = _number(answer.get("exp"))
            if exp is not None:
                expires_at = min(expires_at, exp)
        self.cache.put(token, result, expires_at=expires_at)
        return result

    def _judge(self, answer: Mapping[str, Any]) -> Principal | Deny:
        """RFC 7662 §2.2: only ``active: true`` admits; the other checks are ours."""
        if answer.get("active") is not True:
            return self._deny(401, "token inactive", "invalid_token")
        now = self._clock()
        exp, nbf = _number(answer.get("exp")), _number(answer.get("nbf"))
        if exp is not None and exp <= now:
            return self._deny(401, "token expired", "invalid_token")
        if nbf is not None and nbf > now:
            return self._deny(401, "token not yet valid", "invalid_token")
        if self.issuer is not None and answer.get("iss") != self.issuer:
            return self._deny(401, "token issuer not accepted", "invalid_token")
        if self.audience:
            aud = answer.get("aud")
            offered = (
                {aud} if isinstance(aud, str) else set(aud) if isinstance(aud, list) else set()
            )
            if not offered & self.audience:
                return self._deny(401, "token audience not accepted", "invalid_token")
        subject = next(
            (v for v in (answer.get(k) for k in ("sub", "username", "client_id")) if v), None
        )
        if not isinstance(subject, str):
            return self._deny(401, "token subject invalid", "invalid_token")
        scope = answer.get("scope")
        username = answer.get("username")
        return Principal(
            subject,
            self.scheme,
            frozenset(scope.split()) if isinstance(scope, str) else frozenset(),
            frozenset(),
            answer,
            username if isinstance(username, str) else None,
        )

    def _answering(self) -> None:
        if self._failing:
            self._failing = False
            audit.emit("introspection.recovered", "introspection answers", level=logging.INFO)

    def _unavailable(self, reason: str) -> Deny:
        if not self._failing:  # once per outage, not once per request
            self._failing = True
            audit.emit("introspection.failed", reason, endpoint=self.endpoint.url)
        return Deny(
            503, "token introspection unavailable", "temporarily_unavailable",
            (("retry-after", "5"),),
        )  # fmt: skip

    def _deny(self, status: int, detail: str, code: str) -> Deny:
        return Deny(status, detail, code, (("www-authenticate", self.challenge(code, detail)),))


def _json_object(body: bytes) -> dict[str, Any] | str:
    """The answer as a JSON object, or why it is not one."""
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        return "answer is not JSON"
    return answer if isinstance(answer, dict) else "answer is not a JSON object"


def _token_error(body: bytes) -> bool:
    """True for an RFC 6749 §5.2 error about the request or its token (not ``invalid_client``).

    The endpoint's ``error_description`` is never read: it is not ours to echo.
    """
    answer = _json_object(body)
    error = answer.get("error") if isinstance(answer, dict) else None
    return isinstance(error, str) and bool(error) and error != CLIENT_REFUSED


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


__all__ = [
    "BearerDispatcher",
    "IntrospectionAuthenticator",
    "IntrospectionSettings",
    "ProviderHTTPSettings",
    "looks_like_jwt",
    "unusable_token",
]
