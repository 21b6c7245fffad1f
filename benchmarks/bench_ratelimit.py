"""Per-request cost of the rate-limit layer (ASGI, in process), memory and Redis, and round trips.

Run: ``.venv/bin/python -m benchmarks.bench_ratelimit`` (about 30 s; starts a ``redis-server`` on
a free loopback port, or uses ``SECMW_TEST_REDIS_URL``). Requests come from 1,000 rotating client
addresses with a limit none of them reaches, so every request is admitted and charged. The cost is
the median, over interleaved repeats, of the mean time per request of a batch, minus the bare
app's; the CPU column is this process's CPU time per request (the Redis server's work and the
waits for it excluded). Redis round trips per request are the commands clients send, counted
with ``MONITOR`` (``INFO commandstats`` also counts the commands a script runs). For reference,
the same three limits applied with ``limits.aio``'s own strategies (``hit`` then
``get_window_stats`` per limit, what a per-limit integration does to fill the response fields)
are timed beside secmw's single script, and so is the least one such call can cost: the same
script call written to a bare asyncio stream with no client library. Also counted: the
``threading.Timer`` threads that ``limits``' ``MemoryStorage`` starts while traffic flows.
Writes ``benchmarks/results/ratelimit.json`` and prints a Markdown table.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import limits.storage.memory
import redis
from limits import parse_many
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from secmw.asgi.ratelimit import RateLimitMiddleware
from secmw.ratelimit.plan import Plan

RESULTS = Path(__file__).parent / "results" / "ratelimit.json"
REPEATS = 7
BATCH = {"memory": 2_000, "redis": 400}
CLIENTS = 1_000
DEFAULT = "100000/hour;1000000/day"
RULE_LIMIT = "50000/hour"
RULE = [{"path": "/api/*", "limit": RULE_LIMIT, "include_default": True}]


async def bare_app(scope: Any, receive: Any, send: Any) -> None:
    """The app without any layer."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def receive() -> dict[str, Any]:
    """An empty request body."""
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: Any) -> None:
    """Discard the response."""


def scopes(count: int) -> Iterator[dict[str, Any]]:
    """Scopes of GET /api/items from ``CLIENTS`` rotating addresses, forever."""
    index = 0
    while True:
        for _ in range(count):
            index += 1
            client = f"10.{(index % CLIENTS) // 250}.{(index % CLIENTS) % 250}.1"
            yield {
                "type": "http",
                "method": "GET",
                "path": "/api/items",
                "headers": [],
                "query_string": b"",
                "client": (client, 40000),
                "scheme": "http",
            }


Runner = Callable[[dict[str, Any]], Awaitable[None]]


async def timed(run: Runner, count: int, feed: Iterator[dict[str, Any]]) -> tuple[float, float]:
    """Mean microseconds per request over ``count`` requests: elapsed, and this process's CPU
    (the Redis server's own work and the waits for it excluded)."""
    batch = [next(feed) for _ in range(count)]
    start, cpu = time.perf_counter(), time.process_time()
    for scope in batch:
        await run(scope)
    return (
        (time.perf_counter() - start) / count * 1e6,
        (time.process_time() - cpu) / count * 1e6,
    )


def layer(app: Any) -> Runner:
    """A runner calling an ASGI app."""

    async def run(scope: dict[str, Any]) -> None:
        await app(scope, receive, send)

    return run


def limits_reference(uri: str) -> Runner:
    """The three limits through ``limits.aio``: ``hit`` then ``get_window_stats`` per limit."""
    storage = storage_from_string("async+" + uri, implementation="redispy")
    limiter = MovingWindowRateLimiter(storage)
    items = [*parse_many(DEFAULT), *parse_many(RULE_LIMIT)]

    async def run(scope: dict[str, Any]) -> None:
        client = scope["client"][0]
        for item in items:
            if await limiter.hit(item, "ref", client):
                await limiter.get_window_stats(item, "ref", client)
        await bare_app(scope, receive, send)

    return run


class RawRoundTrip:
    """The floor under the Redis rows: the ``EVALSHA`` that ``app`` sends for one client, written
    to a bare asyncio stream and its reply read line by line, with no client library, then the
    bare app. What one Redis call from asyncio costs on this machine before any client code."""

    def __init__(self, url: str, app: RateLimitMiddleware) -> None:
        from secmw.core.request import RequestView
        from secmw.ratelimit.script import LUA, script_call

        plan = app.policy.plan(RequestView("GET", "/api/items", peer="10.0.0.1"))
        if not isinstance(plan, Plan):
            raise RuntimeError("the benchmark's request is not limited")
        keys, args = script_call(app.limiter.memory.strategy, list(plan.hits), True)
        with redis.Redis.from_url(url) as client:
            sha = client.script_load(LUA)
            pool = client.connection_pool
            packed = pool.make_connection().pack_command("EVALSHA", sha, len(keys), *keys, *args)
            options = pool.connection_kwargs
        self.command = b"".join(packed)
        self.address = (options.get("host", "127.0.0.1"), options.get("port", 6379))
        self.db = int(options.get("db", 0))
        self.stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def __call__(self, scope: dict[str, Any]) -> None:
        if self.stream is None:  # opened on the benchmark's loop
            self.stream = reader, writer = await asyncio.open_connection(*self.address)
            writer.write(b"SELECT %d\r\n" % self.db)
            await reader.readline()
        reader, writer = self.stream
        writer.write(self.command)
        count = int((await reader.readline())[1:])  # "*N": an array of N integers
        for _ in range(count):
            await reader.readline()
        await bare_app(scope, receive, send)

    def close(self) -> None:
        if self.stream is not None:
            self.stream[1].close()


class Monitor:
    """Counts the commands clients send (``MONITOR``; commands run inside scripts excluded)."""

    MARK = "secmw-bench-end"

    def __init__(self, url: str) -> None:
        self.url = url
        self.commands: list[str] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)

    def _listen(self) -> None:
        with redis.Redis.from_url(self.url) as client, client.monitor() as monitor:
            self._ready.set()
            for entry in monitor.listen():
                if self.MARK in entry["command"]:
                    return
                if entry.get("client_type") != "lua":
                    self.commands.append(entry["command"].split(" ", 1)[0])

    def __enter__(self) -> Monitor:
        # The marker's connection is opened (HELLO...) before monitoring starts, so it adds nothing.
        self._marker = redis.Redis.from_url(self.url)
        self._marker.ping()
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._marker as client:
            client.echo(self.MARK)
        self._thread.join(10)


@contextmanager
def redis_url() -> Iterator[str]:
    """``SECMW_TEST_REDIS_URL``, or a throwaway ``redis-server`` on a free loopback port."""
    if os.environ.get("SECMW_TEST_REDIS_URL"):
        yield os.environ["SECMW_TEST_REDIS_URL"]
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH (or set SECMW_TEST_REDIS_URL)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir = tempfile.mkdtemp()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        for _ in range(200):
            try:
                with redis.Redis.from_url(url) as client:
                    client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        yield url
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


class TimerCount:
    """Counts ``threading.Timer`` threads started by ``limits``' MemoryStorage (secmw's own memory
    store starts none; this proves it)."""

    def __init__(self) -> None:
        self.started = 0
        self._original = threading.Timer

    def __enter__(self) -> TimerCount:
        counter = self

        class CountingTimer(threading.Timer):
            def start(self) -> None:
                counter.started += 1
                super().start()

        limits.storage.memory.threading.Timer = CountingTimer  # type: ignore[attr-defined]
        return self

    def __exit__(self, *exc: object) -> None:
        limits.storage.memory.threading.Timer = self._original  # type: ignore[attr-defined]


async def measure(url: str) -> dict[str, Any]:
    """Time every variant, interleaved, and count round trips."""

    def middleware(storage: str, strategy: str, rules: bool) -> RateLimitMiddleware:
        settings: dict[str, Any] = {"default": DEFAULT, "strategy": strategy}
        settings["storage_uri"] = storage
        if rules:
            settings["rules"] = RULE
        return RateLimitMiddleware(bare_app, rate_limit=settings)

    mem = "memory://"
    variants: dict[str, tuple[str, Runner]] = {
        "bare app": ("memory", layer(bare_app)),
        "memory, fixed window": ("memory", layer(middleware(mem, "fixed-window", False))),
        "memory, moving window": ("memory", layer(middleware(mem, "moving-window", False))),
        "memory, moving window, 3 limits": (
            "memory",
            layer(middleware(mem, "moving-window", True)),
        ),
        "redis, fixed window": ("redis", layer(middleware(url, "fixed-window", False))),
        "redis, moving window": ("redis", layer(middleware(url, "moving-window", False))),
        "redis, moving window, 3 limits": ("redis", layer(middleware(url, "moving-window", True))),
        "limits.aio hit + stats, 3 limits": ("redis", limits_reference(url)),
        "floor: the fixed-window call on a bare asyncio stream, no client library": (
            "redis",
            raw := RawRoundTrip(url, middleware(url, "fixed-window", False)),
        ),
    }
    feed = scopes(BATCH["memory"])
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for _, run in variants.values():  # warm up: connections, scripts, imports
        await timed(run, 50, feed)
    with TimerCount() as timers:
        memory_started = time.perf_counter()
        for _ in range(REPEATS):
            for name, (kind, run) in variants.items():
                samples[name].append(await timed(run, BATCH[kind], feed))
        elapsed = time.perf_counter() - memory_started
    memory_variants = sum(1 for name, (kind, _) in variants.items() if kind == "memory")
    memory_requests = (memory_variants - 1) * REPEATS * BATCH["memory"]  # less the bare app
    trips = {}
    for name, (kind, run) in variants.items():
        if kind != "redis":
            continue
        with Monitor(url) as monitor:
            await timed(run, 200, feed)
        trips[name] = len(monitor.commands) / 200
    raw.close()
    base = statistics.median(wall for wall, _ in samples["bare app"])
    rows = []
    for name, values in samples.items():
        median = statistics.median(wall for wall, _ in values)
        rows.append(
            {
                "variant": name,
                "us_per_request": round(median, 1),
                "layer_cost_us": round(median - base, 1) if name != "bare app" else 0.0,
                "cpu_us_per_request": round(statistics.median(cpu for _, cpu in values), 1),
                "redis_round_trips": trips.get(name, 0.0),
            }
        )
    return {
        "rows": rows,
        "memory_timer_threads_started": timers.started,
        "memory_requests": memory_requests,
        "timer_threads_per_second": round(timers.started / elapsed, 1),
    }


def expiry_pass_ms() -> list[dict[str, Any]]:
    """How long one pass of MemoryStorage's expiry timer takes, by number of stored keys."""
    rows = []
    for keys in (1_000, 10_000, 100_000):
        row: dict[str, Any] = {"keys": keys}
        for strategy in ("fixed", "moving"):
            storage = limits.storage.memory.MemoryStorage()
            for index in range(keys):
                if strategy == "fixed":
                    storage.incr(f"k{index}", 3600)
                else:
                    storage.acquire_entry(f"k{index}", 100, 3600)
            start = time.perf_counter()
            storage._MemoryStorage__expire_events()  # type: ignore[attr-defined]
            row[f"{strategy}_window_ms"] = round((time.perf_counter() - start) * 1000, 1)
        rows.append(row)
    return rows


def main() -> None:
    """Run, write the JSON, print the table."""
    with redis_url() as url:
        with redis.Redis.from_url(url) as client:
            client.flushdb()
            server = client.info("server")["redis_version"]
        found = asyncio.run(measure(url))
    found["expiry_pass"] = expiry_pass_ms()
    result = {
        "benchmark": "ratelimit",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "redis": server,
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "repeats": REPEATS,
        "statistic": "median of interleaved repeats, microseconds per request (ASGI, in process)",
        **found,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print("| variant | µs/request | layer cost (µs) | CPU µs/request | Redis round trips/request |")
    print("|---|---:|---:|---:|---:|")
    for row in found["rows"]:
        print(
            f"| {row['variant']} | {row['us_per_request']} | {row['layer_cost_us']} |"
            f" {row['cpu_us_per_request']} | {row['redis_round_trips']:g} |"
        )
    print(
        f"\nlimits MemoryStorage started {found['memory_timer_threads_started']} timer threads"
        f" ({found['timer_threads_per_second']}/s of benchmark time) for"
        f" {found['memory_requests']} in-memory requests; one expiry pass takes:"
    )
    for row in found["expiry_pass"]:
        print(
            f"- {row['keys']:>7,} keys: {row['fixed_window_ms']} ms (fixed window),"
            f" {row['moving_window_ms']} ms (moving window)"
        )


if __name__ == "__main__":
    main()
