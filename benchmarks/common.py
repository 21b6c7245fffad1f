"""Shared pieces of the benchmark harness: variants, the token, Redis, interleaved sampling.

A *variant* is one app under test, built by a small factory. A factory whose import fails (a
peer that is not installed, a secmw layer that does not exist yet) makes the variant "n/a" with
the reason, so the harness runs on whatever is installed and fills in as layers land.
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import jwt

SECRET = "benchmark-secret-" + "x" * 32
"""The HS256 secret every stack verifies with (at least 32 bytes, RFC 7518 §3.2)."""

LIMIT = "1000000/minute"
"""One rate limit, high enough that no benchmark ever measures a 429."""

STRATEGY = "fixed-window"
"""slowapi's and Flask-Limiter's default: every rate limiter is measured with the same window."""

NETWORKS = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "::1/128"]
"""The IP allowlist ("a few networks"); the benchmark client is 127.0.0.1."""

CLIENT = ("127.0.0.1", 50000)


def make_token(secret: str = SECRET, *, algorithm: str = "HS256", sub: str = "user-1") -> str:
    """A signed JWT valid for a day, with a subject and a scope."""
    claims = {"sub": sub, "exp": int(time.time()) + 86400, "scope": "read"}
    return jwt.encode(claims, secret, algorithm=algorithm)


TOKEN = make_token()


class Skip(Exception):
    """A variant that cannot be built here (missing package, missing layer, no redis-server)."""


@dataclass
class Context:
    """What factories may use: the Redis URL (None without redis-server) and cleanups to run."""

    redis_url: str | None = None
    cleanups: list[Callable[[], Any]] = field(default_factory=list)

    def require_redis(self) -> str:
        """The Redis URL, or Skip."""
        if self.redis_url is None:
            raise Skip("no redis-server on this machine")
        return self.redis_url

    def close(self) -> None:
        """Run the cleanups in reverse order, ignoring failures (they only free resources)."""
        while self.cleanups:
            with contextlib.suppress(Exception):  # best effort: they only free resources
                self.cleanups.pop()()


@dataclass(frozen=True)
class Variant:
    """One app under test.

    Attributes:
        key: Stable identifier (JSON key, ``--only``-independent).
        label: What the table shows.
        kind: ``floor``, ``baseline``, ``peer`` or ``secmw``.
        factory: Builds the app from a Context; raises Skip or ImportError when unavailable.
        redis: Needs Redis.
        auth: Refuses a request without a token (checked before measuring).
        headers: Adds security headers (checked before measuring).
        http: Also served over HTTP.
    """

    key: str
    label: str
    kind: str
    factory: Callable[[Context], Any]
    redis: bool = False
    auth: bool = False
    headers: bool = False
    http: bool = False


def build(variant: Variant, ctx: Context) -> Any:
    """The variant's app; Skip when its imports fail or it needs what is missing."""
    if variant.redis:
        ctx.require_redis()
    try:
        return variant.factory(ctx)
    except ImportError as exc:
        raise Skip(f"not importable: {exc}") from None


# -- Redis ------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A private redis-server on a free loopback port, no persistence; ``stop()`` ends it."""

    def __init__(self, binary: str) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(  # only our own server, on loopback
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while self.stats() is None:
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stats(self) -> dict[str, int] | None:
        """Integer fields of ``INFO stats`` (commands and reads processed), None if unreachable."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"INFO stats\r\n")  # inline command: no client library needed
                reader = sock.makefile("rb")
                header = reader.readline()  # RESP bulk string: b"$<length>\r\n"
                if not header.startswith(b"$"):
                    return None
                data = reader.read(int(header[1:]) + 2)
        except (OSError, ValueError):
            return None
        fields: dict[str, int] = {}
        for line in data.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if value.strip().isdigit():
                fields[name] = int(value)
        return fields or None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@contextmanager
def redis_server() -> Iterator[RedisServer | None]:
    """A private redis-server, or None when the binary is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    server = RedisServer(binary)
    try:
        yield server
    finally:
        server.stop()


def count_redis_calls(
    server: RedisServer, run: Callable[[int], object], n: int
) -> dict[str, float]:
    """Redis commands and socket reads (a round trip is one read) per request over ``n`` calls.

    ``INFO`` itself counts as one command and one read; an empty run measures that and it is
    subtracted.
    """

    def delta(count: int) -> tuple[int, int]:
        before = server.stats() or {}
        run(count)
        after = server.stats() or {}
        return (
            after.get("total_commands_processed", 0) - before.get("total_commands_processed", 0),
            after.get("total_reads_processed", 0) - before.get("total_reads_processed", 0),
        )

    base_cmds, base_reads = delta(0)
    cmds, reads = delta(n)
    return {
        "commands_per_request": round(max(0, cmds - base_cmds) / n, 2),
        "round_trips_per_request": round(max(0, reads - base_reads) / n, 2),
    }


# -- sampling ---------------------------------------------------------------------------------

Runner = Callable[[int], float]
"""Runs a variant ``n`` times and returns the elapsed seconds."""


def calibrate(run: Runner, batch_seconds: float) -> int:
    """Iterations for one batch of about ``batch_seconds`` (after a short warm-up)."""
    run(20)
    n = 20
    while True:
        elapsed = run(n)
        if elapsed >= batch_seconds / 8 or n >= 1_000_000:
            per_call = elapsed / n
            return max(10, int(batch_seconds / per_call))
        n *= 4


def interleave(
    runners: dict[str, Runner], *, rounds: int, batch_seconds: float, seed: int = 8
) -> dict[str, dict[str, list[float]]]:
    """Per-round µs per request for every runner: wall time and this process's CPU time.

    Each round runs every variant once, in a fresh random order, so a slow phase of the machine
    hits every variant alike; medians over rounds and ratios taken within a round cancel drift.
    Wall time is the figure (it includes waiting for Redis); CPU time, which other processes on
    a busy machine do not inflate, is kept beside it.
    """
    sizes = {key: calibrate(run, batch_seconds) for key, run in runners.items()}
    samples: dict[str, dict[str, list[float]]] = {key: {"us": [], "cpu": []} for key in runners}
    order = list(runners)
    rng = random.Random(seed)
    for _ in range(rounds):
        rng.shuffle(order)
        gc.collect()
        for key in order:
            cpu = time.process_time()
            elapsed = runners[key](sizes[key])
            cpu = time.process_time() - cpu
            samples[key]["us"].append(elapsed / sizes[key] * 1e6)
            samples[key]["cpu"].append(cpu / sizes[key] * 1e6)
    return samples


def summarize(
    samples: dict[str, dict[str, list[float]]], baseline: str | None
) -> dict[str, dict[str, Any]]:
    """Median µs, quartiles, CPU µs, and ratios to the baseline (medians of per-round ratios)."""
    out: dict[str, dict[str, Any]] = {}
    base = samples.get(baseline or "")
    for key, series in samples.items():
        values, cpu = series["us"], series["cpu"]
        entry: dict[str, Any] = {
            "us": round(statistics.median(values), 3),
            "us_min": round(min(values), 3),
            "us_p25": round(_quantile(values, 0.25), 3),
            "us_p75": round(_quantile(values, 0.75), 3),
            "cpu_us": round(statistics.median(cpu), 3),
            "rounds": len(values),
        }
        if base:
            entry["ratio"] = round(_ratio(values, base["us"]), 3)
            entry["added"] = round(entry["ratio"] - 1, 3)
            entry["cpu_ratio"] = round(_ratio(cpu, base["cpu"]), 3)
        out[key] = entry
    return out


def _ratio(values: Sequence[float], base: Sequence[float]) -> float:
    return statistics.median(v / b for v, b in zip(values, base, strict=True) if b > 0)


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# -- the machine ------------------------------------------------------------------------------

PACKAGES = (
    "secmw",
    "starlette",
    "flask",
    "werkzeug",
    "PyJWT",
    "cryptography",
    "limits",
    "redis",
    "coredis",
    "hiredis",
    "slowapi",
    "Secweb",
    "secure",
    "Flask-Limiter",
    "flask-talisman",
    "uvicorn",
    "gunicorn",
    "httptools",
    "uvloop",
)


def machine() -> dict[str, Any]:
    """CPU model, core count, load, Python and package versions: what the figures depend on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "system": f"{platform.system()} {platform.release()}",
        "packages": versions,
        "wrk": shutil.which("wrk") is not None,
        "redis_server": shutil.which("redis-server") is not None,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": commit(),
    }


def secmw_compiled() -> bool:
    """True when the secmw this process imports is the compiled build (``make compiled``)."""
    import secmw.core.request

    return (secmw.core.request.__file__ or "").endswith(".so")


def commit() -> str | None:
    """The checkout's commit, with ``+changes`` when the tree differs from it; None outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "src", "benchmarks"],
            cwd=root,
            capture_output=True,
            text=True,
        )
    except OSError:  # no git on this machine
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


# -- one group, side by side ------------------------------------------------------------------


class Bench(Protocol):
    """An in-process caller: checks a variant's answers and times it."""

    def check(self, variant: Variant, app: Any) -> list[str]: ...

    def runner(self, app: Any) -> Runner: ...

    def close(self) -> None: ...


def prepare(
    variants: Sequence[Variant], bench: Bench, ctx: Context, log: Callable[[str], None]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Build and check every variant: (apps fit to measure, an entry per variant)."""
    apps: dict[str, Any] = {}
    entries: dict[str, dict[str, Any]] = {}
    for variant in variants:
        entry: dict[str, Any] = {"label": variant.label, "kind": variant.kind}
        entries[variant.key] = entry
        try:
            app = build(variant, ctx)
            problems = bench.check(variant, app)
        except Skip as exc:
            entry.update(status="n/a", reason=str(exc))
            log(f"  n/a    {variant.key}: {exc}")
            continue
        except Exception as exc:  # a broken factory is reported, the others still run
            entry.update(status="error", reason=f"{type(exc).__name__}: {exc}")
            log(f"  error  {variant.key}: {entry['reason']}")
            continue
        if problems:
            entry.update(status="error", reason="; ".join(problems))
            log(f"  error  {variant.key}: {entry['reason']}")
            continue
        entry["status"] = "ok"
        apps[variant.key] = app
    return apps, entries


def run_group(
    variants: Sequence[Variant],
    bench: Bench,
    ctx: Context,
    *,
    baseline: str,
    rounds: int,
    batch_seconds: float,
    redis: RedisServer | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, Any]]:
    """Build, check and measure every variant side by side; one entry per variant."""
    apps, entries = prepare(variants, bench, ctx, log)
    runners = {key: bench.runner(app) for key, app in apps.items()}
    log(f"  measuring {len(runners)} variants, {rounds} interleaved rounds")
    samples = interleave(runners, rounds=rounds, batch_seconds=batch_seconds)
    for key, stats in summarize(samples, baseline if baseline in samples else None).items():
        entries[key].update(stats)
    if redis is not None:
        for variant in variants:
            if variant.redis and variant.key in runners:
                entries[variant.key].update(count_redis_calls(redis, runners[variant.key], 200))
    return entries
