"""Per-request authentication cost for HS256, RS256, ES256 and EdDSA, uncached and cached.

Run: ``.venv/bin/python -m benchmarks.bench_auth`` (about 30 s). Each variant is the ASGI
``AuthenticationMiddleware`` in front of an app that answers 200, called in process with a
hand-built scope (no network, no server): *uncached* has the verified-token cache switched off
(``cache_size=0``), so every request checks the signature; *cached* sends the same token every
time, as a client reusing its access token does, so the check is paid once and every later
request is a cache hit (plus the revocation lookup, here an in-memory denylist, as in
production). An anonymous request (no credential) through the same middleware is timed beside
them: it is the floor (building the request view, publishing the principal); the credential's
cost is the difference. Figures are the median, over interleaved repeats, of the mean time per
request of a batch. Writes ``benchmarks/results/auth.json`` and prints a Markdown table.

Beside them, password-reset requests (``SingleUseTokens.request``) for an existing and an unknown
account, on the memory store and on a private ``redis-server`` (when installed): both do the same
work, so the two columns should agree within noise (a gap would tell attackers which accounts
exist).
"""

from __future__ import annotations

import asyncio
import json
import platform
import statistics
import time
from collections import deque
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from benchmarks.common import redis_server
from secmw.asgi import AuthenticationMiddleware
from secmw.auth.base import AuthChain
from secmw.auth.jwt import JWTAuthenticator
from secmw.stores.revocation import MemoryRevocationStore
from secmw.tokens import MemorySingleUseStore, RedisSingleUseStore, SingleUseTokens

REPEATS = 9
BATCH = {"uncached": 800, "cached": 3_000}
RESULTS = Path(__file__).parent / "results" / "auth.json"
SECRET = "benchmark-secret-" + "x" * 32
RESET_BATCH = 2_000
ACCOUNTS = {"alice@example.test": "alice"}

Scope = dict[str, Any]


def _pem(private: Any) -> str:
    return str(
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def keys() -> dict[str, tuple[Any, str | bytes]]:
    """Signing key and verification key per algorithm (RSA 2048, P-256, Ed25519)."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    return {
        "HS256": (SECRET, SECRET),
        "RS256": (rsa_key, _pem(rsa_key)),
        "ES256": (ec_key, _pem(ec_key)),
        "EdDSA": (ed_key, _pem(ed_key)),
    }


async def _app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Any) -> None:
    return None


def _scope(token: str | None) -> Scope:
    headers = [(b"host", b"api")]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    return {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "path": "/items",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def variant(alg: str, signing: Any, verifying: str | bytes, *, cached: bool) -> Any:
    """The middleware for one algorithm, with the cache on or off."""
    authenticator = JWTAuthenticator(
        verifying,
        algorithms=[alg],
        cache_size=10_000 if cached else 0,
        revocation=MemoryRevocationStore(),
    )
    return AuthenticationMiddleware(_app, chain=AuthChain([authenticator]))


def time_batch(app: Any, tokens: Callable[[int], str | None], batch: int) -> float:
    """Mean microseconds per request over ``batch`` requests on one event loop."""

    async def run() -> float:
        scopes = [_scope(tokens(n)) for n in range(batch)]
        start = time.perf_counter()
        for scope in scopes:
            await app(scope, _receive, _send)
        return (time.perf_counter() - start) / batch * 1e6

    return asyncio.run(run())


def _same(token: str) -> Callable[[int], str | None]:
    return lambda n: token


def _time_requests(reset: SingleUseTokens, identifier: str, batch: int) -> float:
    """Mean microseconds per reset request for ``identifier``."""
    outbox: deque[tuple[str, str]] = deque(maxlen=1)  # stands in for the app's mail queue
    start = time.perf_counter()
    for _ in range(batch):
        reset.request(identifier, ACCOUNTS.get, lambda to, token: outbox.append((to, token)))
    return (time.perf_counter() - start) / batch * 1e6


def reset_request_rows(
    repeats: int = REPEATS, batch: int = RESET_BATCH, redis_url: str | None = None
) -> list[dict[str, Any]]:
    """One row per store: reset requests for an existing and an unknown account, interleaved."""
    stores: dict[str, Any] = {"memory": MemorySingleUseStore()}
    if redis_url:
        stores["redis"] = RedisSingleUseStore(redis_url, prefix="secmw-bench:reset:")
    rows = []
    for name, store in stores.items():
        reset = SingleUseTokens(store, purpose="password-reset", ttl=60)
        existing: list[float] = []
        unknown: list[float] = []
        for _ in range(repeats):
            existing.append(_time_requests(reset, "alice@example.test", batch))
            unknown.append(_time_requests(reset, "nobody@example.test", batch))
        known_us, unknown_us = statistics.median(existing), statistics.median(unknown)
        rows.append(
            {
                "store": name,
                "existing_account_us": round(known_us, 2),
                "unknown_account_us": round(unknown_us, 2),
                "difference_us": round(unknown_us - known_us, 2),
            }
        )
        reset.revoke_all("alice")
        if isinstance(store, RedisSingleUseStore):
            store.close()
    return rows


def main() -> None:
    """Interleave every variant REPEATS times; report medians."""
    claims = {"sub": "user-1", "exp": int(time.time()) + 86400, "scope": "read", "jti": "j-1"}
    material = keys()
    signed = {alg: jwt.encode(claims, key, algorithm=alg) for alg, (key, _) in material.items()}
    apps = {
        (alg, mode): variant(alg, key, verify, cached=mode == "cached")
        for alg, (key, verify) in material.items()
        for mode in ("uncached", "cached")
    }
    samples: dict[tuple[str, str], list[float]] = {name: [] for name in apps}
    anonymous = apps[("HS256", "cached")]
    baseline: list[float] = []
    for _ in range(REPEATS):
        baseline.append(time_batch(anonymous, lambda n: None, BATCH["cached"]))
        for (alg, mode), app in apps.items():
            token = signed[alg]
            samples[(alg, mode)].append(time_batch(app, _same(token), BATCH[mode]))
    base = statistics.median(baseline)
    rows = []
    for alg in material:
        uncached = statistics.median(samples[(alg, "uncached")])
        cached = statistics.median(samples[(alg, "cached")])
        rows.append(
            {
                "algorithm": alg,
                "uncached_us": round(uncached, 2),
                "cached_us": round(cached, 2),
                "auth_uncached_us": round(uncached - base, 2),
                "auth_cached_us": round(cached - base, 2),
                "speedup": round((uncached - base) / max(cached - base, 0.01), 1),
            }
        )
    with redis_server() as server:
        reset_rows = reset_request_rows(redis_url=server.url if server is not None else None)
    report = {
        "benchmark": "auth",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "pyjwt": jwt.__version__,
        "repeats": REPEATS,
        "batch": BATCH,
        "statistic": "median of interleaved repeats, microseconds per request (ASGI, in process)",
        "anonymous_request_us": round(base, 2),
        "rows": rows,
        "reset_requests": reset_rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"anonymous request through the middleware: {base:.1f} µs\n")
    print("| algorithm | uncached µs | cached µs | check, uncached µs | check, cached µs |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['algorithm']} | {row['uncached_us']} | {row['cached_us']} |"
            f" {row['auth_uncached_us']} | {row['auth_cached_us']} |"
        )
    print("\n| reset request, store | existing account µs | unknown account µs | difference µs |")
    print("|---|---:|---:|---:|")
    for row in report["reset_requests"]:
        print(
            f"| {row['store']} | {row['existing_account_us']} | {row['unknown_account_us']} |"
            f" {row['difference_us']} |"
        )
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
