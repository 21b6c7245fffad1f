"""Verification keys from a JWKS endpoint (RFC 7517), with rotation and without a hot-path fetch.

What the key source promises:

- Keys are fetched on first use (or at startup with :meth:`JWKSKeySource.prefetch`) and cached
  for ``cache_ttl`` seconds, or for the ``Cache-Control: max-age`` the endpoint sends, bounded to
  ``[cooldown, max_ttl]``. When 80 % of that time has passed, the next request starts a
  background refresh and is served from the cached keys without waiting.
- A token whose ``kid`` is unknown triggers at most one refresh per ``cooldown`` seconds, however
  many requests carry made-up key ids (PyJWT's ``PyJWKClient`` fetches again on every unknown
  ``kid``, which lets anyone make the server send outbound requests).
- When the endpoint is down, slow or returns garbage, the last good key set keeps serving and the
  failure is logged once (``jwks.fetch_failed``), not once per attempt; recovery is logged too.
- Only signature keys are used, each for the algorithms its type, curve and ``alg`` allow
  (:mod:`secmw.auth.jwkset`), so a token's ``alg`` must be allowed *and* fit the key its ``kid``
  names.
- Fetches run on a short-lived background thread (one at a time; every waiter, sync or async,
  shares it), so the event loop never blocks and a WSGI worker waits at most the fetch timeout.
  They share one connection pool per key source (kept alive between refreshes, through the
  environment's proxy, with the CA bundle and client certificate of ``http``).

OpenID Connect discovery (``discovery=True``) reads ``jwks_uri`` from
``{issuer}/.well-known/openid-configuration`` and checks that the document names the same issuer
(OpenID Connect Discovery 1.0 §4.3).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Literal

from secmw import audit
from secmw.auth._http import (
    Endpoint,
    FetchError,
    ProviderClient,
    ProviderHTTPSettings,
    parse_endpoint,
    reset_after_fork,
)
from secmw.auth.jwkset import (
    DEFAULT_ALGORITHMS,
    EC_CURVES,
    OKP_CURVES,
    RSA_ALGORITHMS,
    JWKSError,
    KeySet,
    VerificationKey,
    load_jwk,
    parse_jwks,
)
from secmw.errors import ConfigurationError

MAX_DOCUMENT_BYTES = 512 * 1024
REFRESH_AT = 0.8  # share of the TTL after which a request starts a background refresh

Miss = Literal["unknown", "unavailable"]


def _max_age(cache_control: str | None) -> float | None:
    """``max-age`` from a Cache-Control value (RFC 9111 §5.2.2.1); 0 for no-store / no-cache."""
    if not cache_control:
        return None
    for directive in cache_control.lower().split(","):
        name, _, value = directive.strip().partition("=")
        if name in ("no-store", "no-cache"):
            return 0.0
        if name == "max-age":
            with contextlib.suppress(ValueError):
                return max(0.0, float(int(value.strip().strip('"'))))
    return None


class JWKSKeySource:
    """Keys from a JWKS URL (or from OpenID discovery), cached and refreshed as described above.

    Args:
        url: The JWKS URL; None with ``discovery=True``.
        issuer: The issuer whose discovery document names the JWKS URL.
        discovery: Find the JWKS URL through ``{issuer}/.well-known/openid-configuration``.
        algorithms: Algorithms any key may verify (never HMAC: a public JWKS holds no secrets).
        cache_ttl: Seconds keys are kept when the endpoint sends no ``max-age``.
        cooldown: Minimum seconds between two fetches (unknown ``kid``, failures).
        max_ttl: Upper bound on the ``max-age`` honoured.
        timeout: Total seconds one fetch may take.
        allow_http: Accept plain http for a non-loopback host.
        http: CA bundle, client certificate (mutual TLS) and proxy use for the fetches.
        clock: Monotonic time source (injected in tests).
        setting: Prefix of the variables named in configuration errors.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        issuer: str | None = None,
        discovery: bool = False,
        algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
        cache_ttl: float = 300.0,
        cooldown: float = 30.0,
        max_ttl: float = 3600.0,
        timeout: float = 5.0,
        allow_http: bool = False,
        http: ProviderHTTPSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        setting: str = "jwt",
    ) -> None:
        self.algorithms = frozenset(algorithms)
        signing = RSA_ALGORITHMS | set(EC_CURVES.values()) | set(OKP_CURVES.values())
        if not self.algorithms or not self.algorithms <= signing:
            raise ConfigurationError(
                f"{setting}.algorithms: a JWKS verifies public-key algorithms only"
                f" ({', '.join(sorted(signing))})"
            )
        if (url is None) == (not discovery):
            raise ConfigurationError(
                f"{setting}.jwks_url: set a JWKS URL or turn on {setting}.discovery, not both"
            )
        if discovery and not issuer:
            raise ConfigurationError(f"{setting}.issuer: discovery needs the issuer URL")
        if cooldown <= 0 or cache_ttl <= 0 or max_ttl < cache_ttl or timeout <= 0:
            raise ConfigurationError(
                f"{setting}.jwks_cache_ttl: need 0 < cache_ttl <= max_ttl, cooldown > 0"
            )
        self.issuer = issuer
        self.cache_ttl, self.cooldown, self.max_ttl = cache_ttl, cooldown, max_ttl
        self.timeout = timeout
        self._allow_http = allow_http
        self._setting = setting
        self._endpoint: Endpoint | None = None
        self._discovery: Endpoint | None = None
        if url is not None:
            self._endpoint = parse_endpoint(
                url, setting=f"{setting}.jwks_url", allow_http=allow_http
            )
        elif issuer:
            self._discovery = parse_endpoint(
                issuer.rstrip("/") + "/.well-known/openid-configuration",
                setting=f"{setting}.issuer",
                allow_http=allow_http,
            )
        self.http = ProviderClient(http, setting=f"{setting}.jwks_http")
        self._clock = clock
        self._keys: KeySet | None = None
        self.generation = 0
        """Grows whenever the key set changes; cached verifications from older ones are void."""
        self.fetches = 0
        """Number of fetches started (for metrics and tests)."""
        self._refresh_at = float("-inf")
        self._last_attempt: float | None = None
        self._inflight: concurrent.futures.Future[bool] | None = None
        self._failing = False
        self._lock = threading.Lock()
        reset_after_fork(self, JWKSKeySource._after_fork)

    @property
    def keys(self) -> KeySet | None:
        """The key set in use, None before the first successful fetch."""
        return self._keys

    # -- lookups -------------------------------------------------------------------------------

    def get(self, kid: str | None, alg: str) -> VerificationKey | Miss:
        """The key for ``kid`` and ``alg``; may wait (at most the fetch timeout) for a fetch."""
        key, pending = self._plan(kid, alg)
        if key is not None:
            return key
        if pending is not None:
            with contextlib.suppress(concurrent.futures.TimeoutError):
                pending.result(timeout=self._wait_limit)
        return self._settle(kid, alg)

    async def aget(self, kid: str | None, alg: str) -> VerificationKey | Miss:
        """Async twin of :meth:`get`: waits for a fetch without blocking the event loop."""
        key, pending = self._plan(kid, alg)
        if key is not None:
            return key
        if pending is not None:
            # shield: a timed-out waiter must not cancel the fetch other waiters share.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    asyncio.shield(asyncio.wrap_future(pending)), self._wait_limit
                )
        return self._settle(kid, alg)

    def refresh_if_due(self) -> None:
        """Start a background refresh when the keys are due one (never waits; cheap when not).

        Verifiers call this on a cached-token hit too, so keys dropped by the provider stop
        verifying on time even when every client reuses its token.
        """
        if self._clock() < self._refresh_at:
            return
        now = self._clock()
        with self._lock:
            cooled = self._last_attempt is None or now - self._last_attempt >= self.cooldown
            if self._inflight is None and cooled and now >= self._refresh_at:
                self._start(now)

    def prefetch(self) -> None:
        """Start fetching now, in the background (call it from an app's startup hook)."""
        with self._lock:
            if self._inflight is None:
                self._start(self._clock())

    def refresh(self) -> bool:
        """Fetch now and wait; True when a key set was loaded (ignores the cooldown)."""
        with self._lock:
            pending = self._inflight or self._start(self._clock())
        try:
            return pending.result(timeout=self._wait_limit)
        except concurrent.futures.TimeoutError:
            return False

    async def arefresh(self) -> bool:
        """Async twin of :meth:`refresh`."""
        with self._lock:
            pending = self._inflight or self._start(self._clock())
        try:
            return await asyncio.wait_for(
                asyncio.shield(asyncio.wrap_future(pending)), self._wait_limit
            )
        except asyncio.TimeoutError:
            return False

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the fetch in progress, if any; True when none is left running."""
        pending = self._inflight
        if pending is None:
            return True
        try:
            pending.result(timeout=self._wait_limit if timeout is None else timeout)
        except concurrent.futures.TimeoutError:
            return False
        return True

    @property
    def fetching(self) -> bool:
        """True while a fetch runs."""
        return self._inflight is not None

    @property
    def _wait_limit(self) -> float:
        fetches = 2 if self._discovery is not None else 1
        return self.timeout * fetches + 1.0

    def _plan(
        self, kid: str | None, alg: str
    ) -> tuple[VerificationKey | None, concurrent.futures.Future[bool] | None]:
        now = self._clock()
        with self._lock:
            cooled = self._last_attempt is None or now - self._last_attempt >= self.cooldown
            if self._inflight is None and cooled and now >= self._refresh_at:
                self._start(now)  # refresh ahead of expiry; this request does not wait for it
            key = self._keys.find(kid, alg) if self._keys is not None else None
            if key is not None:
                return key, None
            if self._inflight is None and cooled:
                self._start(now)
            return None, self._inflight

    def _settle(self, kid: str | None, alg: str) -> VerificationKey | Miss:
        keys = self._keys
        if keys is None:
            return "unavailable"
        return keys.find(kid, alg) or "unknown"

    def _start(self, now: float) -> concurrent.futures.Future[bool]:
        """Start one background fetch (caller holds the lock)."""
        pending: concurrent.futures.Future[bool] = concurrent.futures.Future()
        self._inflight = pending
        self._last_attempt = now
        self.fetches += 1
        thread = threading.Thread(
            target=self._run, args=(pending,), name="secmw-jwks-fetch", daemon=True
        )
        try:
            thread.start()
        except RuntimeError:  # interpreter shutting down: no fetch, and no exception for callers
            self._inflight = None
            pending.set_result(False)
        return pending

    # -- fetching (background thread) ----------------------------------------------------------

    def _run(self, pending: concurrent.futures.Future[bool]) -> None:
        pending.set_running_or_notify_cancel()
        ok = False
        try:
            ok = self._load()
        finally:
            with self._lock:
                if self._inflight is pending:
                    self._inflight = None
            pending.set_result(ok)

    def _load(self) -> bool:
        started = self._clock()
        try:
            endpoint = self._endpoint or self._discover()
            response = self.http.fetch(
                endpoint,
                headers={"Accept": "application/json"},
                timeout=self.timeout,
                max_bytes=MAX_DOCUMENT_BYTES,
            )
            if response.status != 200:
                raise FetchError(f"HTTP {response.status}")
            keys = parse_jwks(response.body, self.algorithms)
        except (FetchError, JWKSError) as exc:
            self._failed(str(exc), started)
            return False
        except Exception as exc:  # a bug must not kill the fetch thread silently or keep a waiter
            self._failed(f"unexpected {type(exc).__name__}", started)
            return False
        max_age = _max_age(response.headers.get("cache-control"))
        ttl = self.cache_ttl if max_age is None else max_age
        ttl = min(max(ttl, min(self.cooldown, self.cache_ttl)), self.max_ttl)
        with self._lock:
            if self._keys is None or self._keys.fingerprint != keys.fingerprint:
                self.generation += 1
            self._keys = keys
            self._refresh_at = started + ttl * REFRESH_AT
            recovered, self._failing = self._failing, False
        if recovered:
            audit.emit("jwks.recovered", "key set fetched again", level=logging.INFO)
        return True

    def _discover(self) -> Endpoint:
        if self._discovery is None:  # pragma: no cover - a URL or discovery is checked at init
            raise JWKSError("no JWKS URL")
        response = self.http.fetch(
            self._discovery,
            headers={"Accept": "application/json"},
            timeout=self.timeout,
            max_bytes=MAX_DOCUMENT_BYTES,
        )
        if response.status != 200:
            raise FetchError(f"discovery HTTP {response.status}")
        try:
            document = json.loads(response.body)
        except (ValueError, RecursionError):
            raise JWKSError("discovery document is not JSON") from None
        if not isinstance(document, dict) or document.get("issuer") != self.issuer:
            raise JWKSError("discovery document names another issuer")
        uri = document.get("jwks_uri")
        if not isinstance(uri, str):
            raise JWKSError("discovery document has no jwks_uri")
        try:
            endpoint = parse_endpoint(uri, setting="jwks_uri", allow_http=self._allow_http)
        except ConfigurationError:
            raise JWKSError("discovery jwks_uri is not an acceptable URL") from None
        self._endpoint = endpoint
        return endpoint

    def close(self) -> None:
        """Close the pooled connections to the provider (a later fetch opens new ones)."""
        self.http.close()

    def _failed(self, reason: str, started: float) -> None:
        with self._lock:
            first, self._failing = not self._failing, True
            self._refresh_at = started + self.cooldown
            serving = self._keys is not None
        if first:  # once per outage, not once per attempt
            audit.emit(
                "jwks.fetch_failed",
                reason,
                serving_last_good_keys=serving,
                endpoint=(self._endpoint or self._discovery or _NOWHERE).url,
            )

    def _after_fork(self) -> None:
        # A fetch thread does not survive fork(): drop its future and the lock it may hold.
        self._lock = threading.Lock()
        self._inflight = None


_NOWHERE = Endpoint("", True, "", 0, "")


__all__ = [
    "DEFAULT_ALGORITHMS",
    "JWKSError",
    "JWKSKeySource",
    "KeySet",
    "ProviderHTTPSettings",
    "VerificationKey",
    "load_jwk",
    "parse_jwks",
]
