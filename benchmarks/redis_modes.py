"""The rate limiter on Redis over HTTP: exact and leased modes, one and two workers, round trips.

Run: ``.venv/bin/python -m benchmarks.redis_modes [--seconds 3] [--rounds 3]`` (a few minutes;
starts its own ``redis-server`` on a free loopback port). Measured in one run, servers started
first and driven round-robin in a fresh random order each round with ``wrk`` (32 keep-alive
connections unless said):

- **throughput**: bare Starlette, ``SecurityStack`` on memory (the floor of the Redis rows: the
  same work without Redis) and on Redis in exact and in leased mode (slice ``SLICE``), under
  uvicorn with one worker and with two workers sharing the Redis
  (aggregate requests/s); each stack's ratio is to bare Starlette with as many workers, per
  round, median over rounds. The WSGI side (gunicorn, one ``gthread`` worker of 32 threads) is
  measured the same way against bare Flask.
- **round trips per request**: Redis's ``total_reads_processed`` (one read per pipeline that
  arrives in one piece) and ``EVALSHA`` calls (``INFO commandstats``) per request, at 1 and 32
  connections, and in process the pipeline's own counters (script calls per round trip) for 1
  and 32 concurrent callers on an event loop and on threads.
- **exactness with two workers**: a budget of ``EXACT_LIMIT`` per hour, driven far past it:
  the number of 200s (exact mode: exactly the limit; leased: at most the limit within one window).

Writes ``benchmarks/results/redis_modes.json`` and prints a Markdown summary.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from limits import parse

from benchmarks import peers
from benchmarks.common import free_port, redis_server
from benchmarks.http_load import ROOT, probe, wrk
from benchmarks.inprocess_asgi import secmw_sections
from secmw.ratelimit.astorage import AsyncRedisWindows
from secmw.ratelimit.settings import RateLimitSettings
from secmw.ratelimit.storage import RedisWindows
from secmw.ratelimit.windows import LimitHit

RESULTS = Path(__file__).parent / "results" / "redis_modes.json"
SLICE = 100
EXACT_LIMIT = 2000
PARSER = "httptools" if importlib.util.find_spec("httptools") else "h11"


def _sections() -> dict[str, Any]:
    mode = os.environ["BENCH_MODE"]
    if mode == "memory":  # the same stack without Redis: the floor of both Redis modes
        return secmw_sections()
    sections = secmw_sections(redis_url=os.environ["BENCH_REDIS_URL"])
    sections["rate_limit"].update(
        mode=mode,
        lease_slice=SLICE,
        key_prefix=os.environ["BENCH_PREFIX"],
        default=os.environ["BENCH_LIMIT"],
    )
    return sections


def asgi_app() -> Any:
    """The app named by ``BENCH_MODE`` (``bare``, ``memory``, ``exact``, ``leased``): uvicorn
    ``--factory``."""
    if os.environ["BENCH_MODE"] == "bare":
        return peers.starlette_app()
    from secmw.asgi import SecurityStack

    return SecurityStack(peers.starlette_app(), **_sections())


def wsgi_app() -> Any:
    """The WSGI twin of :func:`asgi_app` (gunicorn ``module:wsgi_app()``)."""
    app = peers.flask_app()
    if os.environ["BENCH_MODE"] != "bare":
        from secmw.wsgi import SecurityStack

        app.wsgi_app = SecurityStack(app.wsgi_app, **_sections())
    return app


class Served:
    """One app served on loopback: uvicorn with ``workers`` (ASGI) or gunicorn gthread (WSGI)."""

    def __init__(self, side: str, mode: str, workers: int, redis_url: str, limit: str) -> None:
        self.side, self.mode, self.workers = side, mode, workers
        self.key = f"{side}:{mode}:{workers}w"
        self.port = free_port()
        env = dict(os.environ, BENCH_MODE=mode, BENCH_REDIS_URL=redis_url, BENCH_LIMIT=limit)
        env["BENCH_PREFIX"] = "b" + uuid.uuid4().hex[:10]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        if side == "asgi":
            command = [
                sys.executable, "-m", "uvicorn", "--factory", "benchmarks.redis_modes:asgi_app",
                "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers),
                "--no-access-log", "--log-level", "warning", "--lifespan", "on",
                "--http", PARSER,
            ]  # fmt: skip
        else:
            command = [
                sys.executable, "-m", "gunicorn", "--workers", str(workers), "--worker-class",
                "gthread", "--threads", "32", "--bind", f"127.0.0.1:{self.port}",
                "--log-level", "warning", "benchmarks.redis_modes:wsgi_app()",
            ]  # fmt: skip
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self.log
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            try:
                if probe(self.port) == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.log.seek(0)
        raise RuntimeError(f"{self.key} did not start: {self.log.read()[-300:]!r}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log.close()


def redis_counts(url: str) -> tuple[int, int]:
    """Redis's socket reads and ``EVALSHA`` calls so far."""
    with redis.Redis.from_url(url) as client:
        reads = int(client.info("stats")["total_reads_processed"])
        evalsha = client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    return reads, int(evalsha)


def drive(server: Served, url: str, seconds: float, connections: int) -> dict[str, float]:
    """One ``wrk`` run; requests/s and Redis reads and script calls per request."""
    reads, calls = redis_counts(url)
    load = wrk(server.port, seconds, connections)
    reads_after, calls_after = redis_counts(url)
    requests = max(1, load.requests)
    return {
        "rps": load.rps,
        "requests": load.requests,
        "non_2xx": load.non_2xx,
        "p50_ms": load.p50_ms,
        "reads_per_request": (reads_after - reads - 2) / requests,  # our two INFO reads
        "evalsha_per_request": (calls_after - calls) / requests,
    }


def throughput(url: str, rounds: int, seconds: float) -> dict[str, Any]:
    """Interleaved rounds over every server; ratios to the bare app with as many workers."""
    modes = ("bare", "memory", "exact", "leased")
    plan = [("asgi", mode, 1) for mode in modes]
    plan += [("asgi", mode, 2) for mode in modes if mode != "memory"]
    plan += [("wsgi", mode, 1) for mode in modes]
    servers = [Served(side, mode, w, url, "1000000/minute") for side, mode, w in plan]
    runs: dict[str, list[dict[str, float]]] = {s.key: [] for s in servers}
    try:
        for server in servers:
            server.wait_ready()
            wrk(server.port, 1, 32)  # warm: imports, pools, the first leases
        order = list(servers)
        rng = random.Random(19)
        for _ in range(rounds):
            rng.shuffle(order)
            for server in order:
                runs[server.key].append(drive(server, url, seconds, 32))
        for server in servers:  # concurrency 1: what a lone client costs in round trips
            if server.mode in ("exact", "leased") and server.workers == 1:
                runs[server.key + "@c1"] = [drive(server, url, seconds, 1)]
    finally:
        for server in servers:
            server.stop()
    out: dict[str, Any] = {}
    for key, samples in runs.items():
        side, _, rest = key.partition(":")
        workers = rest.split(":")[1].split("@")[0]
        base = runs.get(f"{side}:bare:{workers}")
        entry = {f: round(statistics.median(s[f] for s in samples), 3) for f in samples[0]}
        if base and "@" not in key:
            ratios = [s["rps"] / b["rps"] for s, b in zip(samples, base, strict=True)]
            entry["rps_ratio"] = round(statistics.median(ratios), 3)
        out[key] = entry
    return out


def exactness(url: str, seconds: float) -> dict[str, Any]:
    """Two uvicorn workers driven past a budget of ``EXACT_LIMIT`` per hour: the 200s."""
    out: dict[str, Any] = {}
    for mode in ("exact", "leased"):
        server = Served("asgi", mode, 2, url, f"{EXACT_LIMIT}/hour")
        try:
            server.wait_ready()  # the probe is one admitted request
            load = wrk(server.port, seconds, 32)
        finally:
            server.stop()
        out[mode] = {"limit": EXACT_LIMIT, "admitted": 1 + load.requests - load.non_2xx}
    return out


def pipeline_counts(url: str) -> dict[str, Any]:
    """In process: script calls per round trip for 1 and 32 concurrent callers."""
    settings = RateLimitSettings(storage_uri=url, strategy="fixed-window")
    hits = [LimitHit("p", parse("1000000/minute"), f"pc:{uuid.uuid4().hex}", "t", 1)]
    out: dict[str, Any] = {}

    async def on_loop(concurrency: int) -> tuple[int, int]:
        windows = AsyncRedisWindows(settings)
        await windows.apply(hits)
        pipeline = windows._pipeline
        calls, flushes = pipeline.calls, pipeline.flushes

        async def caller() -> None:
            for _ in range(200):
                await windows.apply(hits)

        await asyncio.gather(*(caller() for _ in range(concurrency)))
        result = (pipeline.calls - calls, pipeline.flushes - flushes)
        await windows.aclose()
        return result

    def on_threads(concurrency: int) -> tuple[int, int]:
        windows = RedisWindows(settings)
        windows.apply(hits)
        pipeline = windows._pipeline
        assert pipeline is not None
        calls, flushes = pipeline.calls, pipeline.flushes
        threads = [
            threading.Thread(target=lambda: [windows.apply(hits) for _ in range(200)])
            for _ in range(concurrency)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        windows.close()
        return pipeline.calls - calls, pipeline.flushes - flushes

    for concurrency in (1, 32):
        for side, (calls, flushes) in (
            ("event loop", asyncio.run(on_loop(concurrency))),
            ("threads", on_threads(concurrency)),
        ):
            out[f"{side}, {concurrency} callers"] = {
                "calls": calls,
                "round_trips": flushes,
                "round_trips_per_call": round(flushes / calls, 3),
            }
    return out


def measure(url: str, rounds: int, seconds: float) -> dict[str, Any]:
    """Every measurement of this module against the Redis at ``url``."""
    return {
        "pipeline": pipeline_counts(url),
        "results": throughput(url, rounds, seconds),
        "exactness": exactness(url, seconds),
    }


def markdown(results: dict[str, Any]) -> str:
    """The three tables."""
    lines = [
        f"Redis modes over HTTP (uvicorn {PARSER}, gunicorn gthread; wrk, 32 connections;"
        f" leased slice {SLICE})",
        "",
        "| server | req/s | ratio to bare | Redis reads/request | EVALSHA/request | non-2xx |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, entry in results["results"].items():
        lines.append(
            f"| {key} | {entry['rps']:.0f} | {entry.get('rps_ratio', '')} |"
            f" {entry['reads_per_request']:.3f} | {entry['evalsha_per_request']:.3f} |"
            f" {entry['non_2xx']:.0f} |"
        )
    lines += ["", "| in process | script calls | round trips | per call |", "|---|---:|---:|---:|"]
    for key, entry in results["pipeline"].items():
        lines.append(
            f"| {key} | {entry['calls']} | {entry['round_trips']} |"
            f" {entry['round_trips_per_call']} |"
        )
    lines += ["", "| two uvicorn workers, one Redis | limit | admitted |", "|---|---:|---:|"]
    for mode, entry in results["exactness"].items():
        lines.append(f"| {mode} | {entry['limit']} | {entry['admitted']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.redis_modes", description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    args = parser.parse_args(argv)
    with redis_server() as server:
        if server is None:
            print("redis-server is not installed", file=sys.stderr)
            return 1
        results = measure(server.url, args.rounds, args.seconds)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
