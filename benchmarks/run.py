"""Run the benchmarks: ``python -m benchmarks.run [--quick] [--only asgi|wsgi|http]``.

Measures every stack side by side in one run (in-process ASGI, in-process WSGI, over HTTP),
writes ``benchmarks/results/latest.{json,md,png}`` and prints the Markdown. A private
redis-server is started on a free loopback port when the binary exists; otherwise the Redis
stacks are reported "n/a". ``--profile KEY`` prints a cProfile of one in-process stack instead.
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import os
import pstats
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import http_load, inprocess_asgi, inprocess_wsgi, redis_modes, report
from benchmarks.common import (
    LIMIT,
    STRATEGY,
    Context,
    RedisServer,
    build,
    machine,
    prepare,
    redis_server,
    run_group,
)

SECTIONS = ("asgi", "wsgi", "http", "redis")
QUICK = {"rounds": 15, "batch_seconds": 0.015, "http_rounds": 2, "http_seconds": 2.0}
FULL = {"rounds": 40, "batch_seconds": 0.04, "http_rounds": 4, "http_seconds": 5.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (< 2 min)")
    parser.add_argument(
        "--only", action="append", choices=SECTIONS, help="run only this section (repeatable)"
    )
    parser.add_argument("--rounds", type=int, help="interleaved in-process rounds")
    parser.add_argument("--http-seconds", type=float, help="seconds per HTTP load run")
    parser.add_argument("--out", type=Path, default=report.RESULTS, help="results directory")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG")
    parser.add_argument(
        "--profile", metavar="KEY", help="cProfile one in-process stack (asgi, or wsgi with --only)"
    )
    parser.add_argument("--requests", type=int, default=20_000, help="requests under --profile")
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The checks send requests without a token on purpose; their audit lines are noise here.
    logging.getLogger("secmw").setLevel(logging.ERROR)
    stray = sorted(name for name in os.environ if name.startswith("SECMW_"))
    if stray:
        log(f"warning: {', '.join(stray)} set; secmw stacks read them")
    if args.profile:
        return profile(args.profile, "wsgi" if args.only == ["wsgi"] else "asgi", args.requests)
    preset = dict(QUICK if args.quick else FULL)
    if args.rounds:
        preset["rounds"] = args.rounds
    if args.http_seconds:
        preset["http_seconds"] = args.http_seconds
    sections = args.only or list(SECTIONS)
    started = time.monotonic()
    results: dict[str, Any] = {
        "machine": machine(),
        "settings": {"quick": args.quick, "limit": LIMIT, "strategy": STRATEGY, **preset},
    }
    with redis_server() as redis:
        log("redis-server: " + (redis.url if redis else "not installed, Redis stacks n/a"))
        ctx = Context(redis_url=redis.url if redis else None)
        try:
            if "asgi" in sections:
                results["asgi"] = _asgi(ctx, redis, preset)
            if "wsgi" in sections:
                results["wsgi"] = _wsgi(ctx, redis, preset)
            if "http" in sections:
                results["http"] = _http(ctx, redis, preset)
            if "redis" in sections and redis is not None:  # exact and leased, 1 and 2 workers
                log("Redis modes over HTTP")
                results["redis"] = redis_modes.measure(
                    redis.url, preset["http_rounds"], preset["http_seconds"]
                )
        finally:
            ctx.close()
    results["machine"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    results["duration_s"] = round(time.monotonic() - started, 1)
    written = report.write(results, args.out, chart=not args.no_chart)
    print(report.markdown(dict(results, targets=report.check_targets(results))))
    log("wrote " + ", ".join(str(p) for p in written))
    return 0


def _asgi(ctx: Context, redis: RedisServer | None, preset: dict[str, Any]) -> dict[str, Any]:
    log("in-process ASGI")
    bench = inprocess_asgi.ASGIBench()
    try:
        entries = run_group(
            inprocess_asgi.VARIANTS, bench, ctx, baseline=inprocess_asgi.BASELINE,
            rounds=preset["rounds"], batch_seconds=preset["batch_seconds"], redis=redis, log=log,
        )  # fmt: skip
    finally:
        bench.close()
    return {"baseline": inprocess_asgi.BASELINE, "results": entries}


def _wsgi(ctx: Context, redis: RedisServer | None, preset: dict[str, Any]) -> dict[str, Any]:
    log("in-process WSGI")
    entries = run_group(
        inprocess_wsgi.VARIANTS, inprocess_wsgi.WSGIBench(), ctx,
        baseline=inprocess_wsgi.BASELINE, rounds=preset["rounds"],
        batch_seconds=preset["batch_seconds"], redis=redis, log=log,
    )  # fmt: skip
    return {"baseline": inprocess_wsgi.BASELINE, "results": entries}


def _http(ctx: Context, redis: RedisServer | None, preset: dict[str, Any]) -> dict[str, Any]:
    """Serve only the stacks that build and answer correctly in-process."""
    log("over HTTP")
    candidates = http_load.http_variants()
    asgi_bench = inprocess_asgi.ASGIBench()
    try:
        _, asgi_entries = prepare(
            [v for g, v in candidates if g == "asgi"], asgi_bench, ctx, log=log
        )  # the same stacks under each uvicorn parser: checked once
    finally:
        asgi_bench.close()
    _, wsgi_entries = prepare(
        [v for g, v in candidates if g == "wsgi"], inprocess_wsgi.WSGIBench(), ctx, log=log
    )
    asgi_groups = {g for g, _ in candidates if g in http_load.ASGI_PARSERS}
    entries = {f"{g}:{k}": dict(e) for g in asgi_groups for k, e in asgi_entries.items()}
    entries |= {f"wsgi:{k}": e for k, e in wsgi_entries.items()}
    fit = [(g, v) for g, v in candidates if entries[f"{g}:{v.key}"]["status"] == "ok"]
    section = http_load.run_http(
        fit, rounds=preset["http_rounds"], seconds=preset["http_seconds"],
        redis_url=redis.url if redis else None, redis_pid=redis.pid if redis else None, log=log,
    )  # fmt: skip
    for key, entry in entries.items():  # the n/a ones keep their reason, in the usual order
        section["results"].setdefault(key, entry)
    order = [f"{g}:{v.key}" for g, v in candidates]
    section["results"] = {k: section["results"][k] for k in order if k in section["results"]}
    return section


def profile(key: str, group: str, requests: int) -> int:
    """cProfile ``requests`` calls of one in-process stack; print the top functions."""
    module: Any = inprocess_asgi if group == "asgi" else inprocess_wsgi
    variant = next((v for v in module.VARIANTS if v.key == key), None)
    if variant is None:
        log(f"unknown {group} stack {key!r}; one of: {', '.join(v.key for v in module.VARIANTS)}")
        return 2
    with redis_server() as redis:
        ctx = Context(redis_url=redis.url if redis else None)
        bench = module.ASGIBench() if group == "asgi" else module.WSGIBench()
        try:
            app = build(variant, ctx)
            problems = bench.check(variant, app)
            if problems:
                log("; ".join(problems))
                return 1
            run = bench.runner(app)
            run(2_000)  # warm caches and pools outside the profile
            plain = run(requests) / requests * 1e6
            profiler = cProfile.Profile()
            profiler.enable()
            run(requests)
            profiler.disable()
        finally:
            bench.close()
            ctx.close()
    print(f"{variant.label}: {plain:.2f} µs/request unprofiled, {requests} requests profiled")
    stats = pstats.Stats(profiler).strip_dirs()
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
