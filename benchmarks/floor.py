"""How low can a pure-Python stack go? Three measurements beside the ``SecurityStack`` figure.

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
- **cold caches**: bare Starlette and the stack with 2 MiB written between two requests (not
  timed), as a server's own work (parsing, the event loop, the socket) does: what the same code
  costs when its data is no longer in the CPU's caches, as it is not over HTTP.

The interference measurement is repeated on WSGI: bare Flask, the WSGI ``SecurityStack``
wrapping ``app.wsgi_app``, and Flask then the stack around a bare WSGI app, in sequence.

Figures are medians of interleaved repeats, in µs per request and as ratios to the bare
framework; written to ``benchmarks/results/floor.json``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import platform
import statistics
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from benchmarks import peers
from benchmarks.common import CLIENT
from benchmarks.inprocess_asgi import (
    CONTENT_TYPE,
    _drop,
    _receive,
    http_scope,
    raw_app,
    secmw_sections,
)
from benchmarks.inprocess_wsgi import WSGIBench, _close
from benchmarks.report import X

RESULTS = Path(__file__).resolve().parent / "results" / "floor.json"
REPEATS = 15
BATCH = 3000
COLD_BYTES = 2 << 20  # more than this machine's 1 MiB L2 per core


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
        from secmw.core.context import principal_var, request_var
        from secmw.core.request import RequestView

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
    policy = stack.layers["headers"].policy.plain_policy_for("/")
    # What the benchmark's plain-text answer gets on plain http, authenticated (the API set).
    block = policy.apply_bytes([CONTENT_TYPE], False, True)[1:]
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

    junk = bytearray(COLD_BYTES)
    lines = bytes(len(junk[::64]))

    async def cold(app: Any) -> float:
        """Per request, with every 64-byte line of ``COLD_BYTES`` written first (untimed), as a
        server's own work between two requests pushes the app's data out of the caches."""
        spent = 0.0
        for _ in range(batch):
            junk[::64] = lines
            started = time.perf_counter()
            await app(copy(), _receive, _drop)
            spent += time.perf_counter() - started
        return spent / batch * 1e6

    async def run() -> dict[str, list[float]]:
        samples: dict[str, list[float]] = {}
        variants: dict[str, Callable[[], Awaitable[float]]] = {
            "raw": lambda: one(raw_app),
            "starlette": lambda: one(starlette),
            "stack": lambda: one(stack),
            "floor": lambda: one(floor),
            "stack_raw": lambda: one(stack_raw),
            "sequence": sequence,
            "starlette_cold": lambda: cold(starlette),
            "stack_cold": lambda: cold(stack),
        }
        for variant in variants.values():  # warm every cache and memo first
            await variant()
        for _ in range(repeats):
            for name, variant in variants.items():
                samples.setdefault(name, []).append(await variant())
        return samples

    return {name: statistics.median(values) for name, values in asyncio.run(run()).items()}


def raw_wsgi(environ: Any, start_response: Any) -> list[bytes]:
    """The WSGI floor: a bare callable answering ``ok``."""
    start_response(
        "200 OK", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "2")]
    )
    return [b"ok"]


def measure_wsgi(repeats: int = REPEATS, batch: int = BATCH) -> dict[str, float]:
    """Median µs per request of bare Flask, the stack around it, the stack around a bare WSGI
    app, and Flask then that stack in sequence, interleaved."""
    from secmw.wsgi import SecurityStack

    sections = secmw_sections()
    flask = peers.flask_app()
    stacked = peers.flask_app()
    stacked.wsgi_app = SecurityStack(stacked.wsgi_app, **sections)
    stack_raw = SecurityStack(raw_wsgi, **sections)
    bench = WSGIBench()

    def flask_then_stack(env: dict[str, Any], start_response: Any) -> Any:
        result = flask(dict(env), start_response)  # each app gets its own environ, as nested
        for _chunk in result:
            pass
        _close(result)
        return stack_raw(env, start_response)

    def one(app: Any) -> float:
        return bench.runner(app)(batch) / batch * 1e6

    variants = {
        "raw": lambda: one(raw_wsgi),
        "flask": lambda: one(flask),
        "stack": lambda: one(stacked),
        "stack_raw": lambda: one(stack_raw),
        "sequence": lambda: one(flask_then_stack),
    }
    return _interleaved(variants, repeats)


def _interleaved(variants: dict[str, Any], repeats: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {}
    for variant in variants.values():  # warm every cache and memo first
        variant()
    for _ in range(repeats):
        for name, variant in variants.items():
            samples.setdefault(name, []).append(variant())
    return {name: statistics.median(values) for name, values in samples.items()}


def _rows(us: dict[str, float], base: str, framework: str) -> list[tuple[str, float]]:
    """The interference rows: the framework, the stack around it, the two in sequence, the two
    timed alone and added (the bare app's own cost counted once)."""
    return [
        (f"bare {framework}", us[base]),
        (f"SecurityStack around {framework} (the benchmark's figure)", us["stack"]),
        (f"{framework}, then SecurityStack around a bare app, in sequence", us["sequence"]),
        ("the same two, each timed alone, added", us[base] + us["stack_raw"] - us["raw"]),
    ]


def main() -> None:
    logging.getLogger("secmw").setLevel(logging.ERROR)
    us, wsgi_us = measure(), measure_wsgi()
    rows = _rows(us, "starlette", "Starlette")
    rows.insert(2, ("floor around Starlette: the same work, no generality", us["floor"]))
    rows += [
        ("bare Starlette, caches cold (2 MiB written between requests)", us["starlette_cold"]),
        ("SecurityStack around Starlette, caches cold", us["stack_cold"]),
    ]
    tables = [
        ("Starlette", us["starlette"], rows),
        ("Flask", wsgi_us["flask"], _rows(wsgi_us, "flask", "Flask")),
    ]
    report = {
        "benchmark": "floor",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "repeats": REPEATS,
        "statistic": "median of interleaved repeats, microseconds per request",
        "us": {name: round(value, 2) for name, value in us.items()},
        "wsgi_us": {name: round(value, 2) for name, value in wsgi_us.items()},
        "rows": [
            {"variant": label, "us": round(value, 2), "ratio": round(value / base, 2)}
            for _, base, table in tables
            for label, value in table
        ],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for framework, base, table in tables:
        print(f"| variant | µs/request | {X} bare {framework} |")
        print("|---|---:|---:|")
        for label, value in table:
            print(f"| {label} | {value:.1f} | {value / base:.2f}{X} |")
        print()
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
