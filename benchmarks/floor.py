"""How low can a pure-Python stack go? Two measurements beside the ``SecurityStack`` figure.

Run: ``.venv/bin/python -m benchmarks.floor`` (about 20 s). In process, as ``inprocess_asgi``
measures (``await app(scope, receive, send)``, GET with an HS256 bearer token):

- **floor**: a hand-fused middleware doing the stack's work on the benchmark's request with no
  generality at all: the peer looked up in a set, the token's principal in a dict keyed by the
  raw header, one fixed-window counter, the rate-limit fields and the header block appended on
  the response start, the principal published as the stack publishes it. It checks nothing a
  real request needs checked (one path, one token, one limit, no fallbacks) and is no stack to
  use: it is the cost below which no Python middleware doing this work can go.
- **interference**: bare Starlette and the stack around a bare ASGI app, called one after the
  other per iteration rather than nested. Each alone in a tight loop runs with warm CPU caches
  and predictors; together they evict each other's. When the sequence costs what the nested
  stack costs, the stack's measured cost above Starlette is its own cost alone plus what two
  bodies of code cost each other, which no change in how the layers are glued removes.

Figures are medians of interleaved repeats, in µs per request and as ratios to bare Starlette;
written to ``benchmarks/results/floor.json``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import platform
import statistics
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from benchmarks import peers
from benchmarks.common import CLIENT
from benchmarks.inprocess_asgi import _drop, _receive, http_scope, raw_app, secmw_sections
from benchmarks.report import X

RESULTS = Path(__file__).resolve().parent / "results" / "floor.json"
REPEATS = 15
BATCH = 3000


class Floor:
    """The stack's work on the benchmark's one request shape, with every check left out."""

    def __init__(self, app: Any, principal: Any, block: list[tuple[bytes, bytes]]) -> None:
        from secmw.asgi._util import AuthCredentials

        self.app = app
        self.peers = {CLIENT[0]}
        self.principal = principal
        self.credentials = AuthCredentials(principal)
        self.tokens: dict[bytes | None, Any] = {}
        self.windows: dict[str, list[float]] = {}
        self.block = block

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        from secmw.context import principal_var, request_var
        from secmw.request import RequestView

        request = RequestView.from_scope(scope)
        if request.peer not in self.peers:
            raise RuntimeError("the floor serves the benchmark's client only")
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
        principal = self.tokens.get(authorization)
        if principal is None:
            principal = self.tokens[authorization] = self.principal
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state["principal"] = request.state["principal"] = scope["user"] = principal
        scope["auth"] = self.credentials
        principal_token, request_token = principal_var.set(principal), request_var.set(request)
        now = time.monotonic()
        window = self.windows.get(principal.id)
        if window is None or window[1] <= now:
            window = self.windows[principal.id] = [0, now + 60]
        window[0] += 1
        fields = [
            (b"ratelimit-policy", b'"default";q=1000000;w=60'),
            (b"ratelimit", b'"default";r=%d;t=%d' % (1_000_000 - window[0], window[1] - now)),
        ]
        block = self.block

        async def send_with_fields(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *fields, *block]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_fields)
        finally:
            request_var.reset(request_token)
            principal_var.reset(principal_token)


def floor_of(stack: Any, app: Any) -> Floor:
    """A floor around ``app`` adding what ``stack`` adds (its principal and header block)."""
    scope = http_scope()
    asyncio.run(stack(scope, _receive, _drop))
    policy = stack._headers.policy.plain_policy_for("/")
    block = list(policy.bytes_block.added[2])  # plain http, authenticated
    return Floor(app, scope["state"]["principal"], block)


def measure(repeats: int = REPEATS, batch: int = BATCH) -> dict[str, float]:
    """Median µs per request of each variant, interleaved on one event loop."""
    from secmw.asgi import SecurityStack

    sections = secmw_sections()
    starlette = peers.starlette_app()
    stack = SecurityStack(peers.starlette_app(), **sections)
    stack_raw = SecurityStack(raw_app, **sections)
    floor = floor_of(SecurityStack(raw_app, **sections), peers.starlette_app())
    scope = http_scope()
    copy = scope.copy

    async def one(app: Any) -> float:
        started = time.perf_counter()
        for _ in range(batch):
            await app(copy(), _receive, _drop)
        return (time.perf_counter() - started) / batch * 1e6

    async def sequence() -> float:
        started = time.perf_counter()
        for _ in range(batch):
            await starlette(copy(), _receive, _drop)
            await stack_raw(copy(), _receive, _drop)
        return (time.perf_counter() - started) / batch * 1e6

    async def run() -> dict[str, list[float]]:
        samples: dict[str, list[float]] = {}
        variants = {
            "raw": lambda: one(raw_app),
            "starlette": lambda: one(starlette),
            "stack": lambda: one(stack),
            "floor": lambda: one(floor),
            "stack_raw": lambda: one(stack_raw),
            "sequence": sequence,
        }
        for variant in variants.values():  # warm every cache and memo first
            await variant()
        for _ in range(repeats):
            for name, variant in variants.items():
                samples.setdefault(name, []).append(await variant())
        return samples

    return {name: statistics.median(values) for name, values in asyncio.run(run()).items()}


def main() -> None:
    logging.getLogger("secmw").setLevel(logging.ERROR)
    us = measure()
    base = us["starlette"]
    alone = us["starlette"] + us["stack_raw"] - us["raw"]
    rows = [
        ("bare Starlette", us["starlette"]),
        ("SecurityStack around Starlette (the benchmark's figure)", us["stack"]),
        ("floor around Starlette: the same work, no generality", us["floor"]),
        ("Starlette, then SecurityStack around a bare app, in sequence", us["sequence"]),
        ("the same two, each timed alone, added", alone),
    ]
    report = {
        "benchmark": "floor",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "repeats": REPEATS,
        "statistic": "median of interleaved repeats, microseconds per request",
        "us": {name: round(value, 2) for name, value in us.items()},
        "rows": [
            {"variant": label, "us": round(value, 2), "ratio": round(value / base, 2)}
            for label, value in rows
        ],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"| variant | µs/request | {X} bare Starlette |")
    print("|---|---:|---:|")
    for label, value in rows:
        print(f"| {label} | {value:.1f} | {value / base:.2f}{X} |")
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
