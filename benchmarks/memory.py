"""Memory under many identities: ``python -m benchmarks.memory [--clients N] [--tokens N]``.

1. ``--clients`` distinct client addresses (default 1,000,000) through secmw's ASGI
   ``RateLimitMiddleware`` on memory storage: the in-memory store must stay within
   ``SECMW_RATE_LIMIT__MEMORY_MAX_KEYS`` however many clients come.
2. ``--tokens`` distinct bearer tokens (default 100,000) through secmw's ASGI
   ``AuthenticationMiddleware``: the verified-token cache must stay within
   ``SECMW_JWT__CACHE_SIZE``.

Each part reports the process RSS before and after, the peak RSS, the store's entry count
against its cap, and how the requests were answered. A part whose layer does not exist yet is
reported "n/a" with the reason. Writes ``benchmarks/results/memory.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import SECRET, STRATEGY, machine, make_token
from benchmarks.inprocess_asgi import http_scope, raw_app

RESULTS = Path(__file__).resolve().parent / "results" / "memory.json"


def rss_mib() -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident set size of this process, in MiB."""
    fields = {}
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = round(int(value.split()[0]) / 1024, 1)
    return {"rss_mib": fields.get("VmRSS", 0.0), "peak_mib": fields.get("VmHWM", 0.0)}


def _drive(
    app: Any, scopes: Callable[[int], dict[str, Any]], count: int
) -> collections.Counter[int]:
    """Send ``count`` requests; count the statuses."""
    statuses: collections.Counter[int] = collections.Counter()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def go() -> None:
        status = 0

        async def send(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        for i in range(count):
            await app(scopes(i), receive, send)
            statuses[status] += 1

    asyncio.run(go())
    return statuses


def _address(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def _memory_keys(middleware: Any) -> int | None:
    """Entries in secmw's in-memory rate-limit store (internal layout; None if unknown)."""
    memory = getattr(getattr(middleware, "limiter", None), "memory", None)
    return None if memory is None else len(memory)


def clients(count: int) -> dict[str, Any]:
    """``count`` distinct addresses through the memory rate limiter."""
    try:
        from secmw.asgi.ratelimit import RateLimitMiddleware
    except ImportError as exc:
        return {"status": "n/a", "reason": f"not importable: {exc}"}
    app = RateLimitMiddleware(
        raw_app,
        rate_limit={"storage_uri": "memory://", "default": "10/minute", "strategy": STRATEGY},
    )
    cap = app.settings.memory_max_keys
    template = http_scope(token=None)

    def scope(i: int) -> dict[str, Any]:
        return dict(template, client=(_address(i), 40000))

    return _measure(app, scope, count, cap, lambda: _memory_keys(app), "memory_max_keys")


def tokens(count: int) -> dict[str, Any]:
    """``count`` distinct tokens through the authentication layer and its token cache."""
    from secmw.asgi import AuthenticationMiddleware

    app = AuthenticationMiddleware(raw_app, jwt={"secret": SECRET}, auth={"required": ["/*"]})
    cache = getattr(app.chain.authenticators[0], "cache", None)
    if cache is None:
        return {"status": "n/a", "reason": "no verified-token cache in secmw.auth.jwt yet"}
    started = time.perf_counter()
    headers = [
        [(b"authorization", f"Bearer {make_token(sub=f'user-{i}')}".encode())] for i in range(count)
    ]
    minted = time.perf_counter() - started
    template = http_scope(token=None)

    def scope(i: int) -> dict[str, Any]:
        return dict(template, headers=headers[i])

    result = _measure(app, scope, count, cache.max_entries, lambda: len(cache), "cache_size")
    result["tokens_minted_s"] = round(minted, 1)
    return result


def _measure(
    app: Any,
    scope: Callable[[int], dict[str, Any]],
    count: int,
    cap: int,
    entries: Callable[[], int | None],
    setting: str,
) -> dict[str, Any]:
    gc.collect()
    before = rss_mib()
    started = time.perf_counter()
    statuses = _drive(app, scope, count)
    elapsed = time.perf_counter() - started
    gc.collect()
    after = rss_mib()
    held = entries()
    return {
        "status": "ok",
        "requests": count,
        "seconds": round(elapsed, 1),
        "us_per_request": round(elapsed / count * 1e6, 2),
        "answers": {str(k): v for k, v in sorted(statuses.items())},
        "entries": held,
        "cap": cap,
        "setting": setting,
        "within_cap": None if held is None else held <= cap,
        "rss_before_mib": before["rss_mib"],
        "rss_after_mib": after["rss_mib"],
        "rss_growth_mib": round(after["rss_mib"] - before["rss_mib"], 1),
        "peak_rss_mib": after["peak_mib"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__)
    parser.add_argument("--clients", type=int, default=1_000_000)
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.getLogger("secmw").setLevel(logging.CRITICAL)  # a full store logs once; not here
    results = {
        "machine": machine(),
        "tokens": tokens(args.tokens),
        "clients": clients(args.clients),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print("| check | requests | answers | entries / cap | RSS before -> after (peak), MiB |")
    print("|---|---:|---|---:|---:|")
    for name in ("clients", "tokens"):
        r = results[name]
        if r["status"] != "ok":
            print(f"| {name} | {r['status']}: {r['reason']} | | | |")
            continue
        print(
            f"| {name} | {r['requests']:,} | {r['answers']} | {r['entries']} / {r['cap']} "
            f"({r['setting']}) | {r['rss_before_mib']} -> {r['rss_after_mib']} "
            f"({r['peak_rss_mib']}) |"
        )
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
