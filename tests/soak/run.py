"""Soak run: the demo on gunicorn (uvicorn workers, ``--preload``) on Redis, under mixed load.

    python -m tests.soak.run --seconds 60

Starts its own ``redis-server`` and gunicorn on free 127.0.0.1 ports, drives them with httpx for
the given time (valid, invalid, throttled and malicious requests, a few connections), and prints
a report. Exits 1 when an invariant fails: an unexpected status, a transport error, a 5xx, a
traceback in the server log, a worker restart, more admissions on the rate-limited principal
than its limit allows in any window, or a worker's RSS growing past the bound.

Valid traffic arrives through a trusted proxy (source address 127.0.0.2, ``X-Forwarded-For``
naming the user's address); the attacker connects directly from 127.0.0.1, so its forged
``X-Forwarded-For`` is ignored and its failed credentials are throttled on its own address.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import math
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt

from secmw.demo import DEMO_API_KEY
from tests.redis_support import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]
LIMIT, WINDOW = 20, 5.0  # the rule on /me: 20 requests per 5 seconds for one principal
RSS_BOUND_MIB = 32.0  # growth allowed per worker after the warm-up (caches are capped)
WARMUP = 5.0
PROXY, ATTACKER = "127.0.0.2", "127.0.0.1"
CLIENT_TIMEOUT = 10.0

Build = Callable[[int], tuple[str, dict[str, str]]]


@dataclass(frozen=True)
class Kind:
    """One kind of request: its group, share of the traffic and the statuses it may get."""

    name: str
    group: str
    weight: int
    expected: frozenset[int]
    via_proxy: bool
    build: Build


@dataclass(frozen=True)
class Result:
    """One answer (status 0: no answer, a transport error)."""

    kind: Kind
    status: int
    sent: float
    received: float


def token(secret: str, sub: str, scope: str = "items:read", **headers: str) -> str:
    """An HS256 token valid for an hour."""
    claims = {"sub": sub, "scope": scope, "exp": int(time.time()) + 3600}
    return jwt.encode(claims, secret, algorithm="HS256", headers=headers or None)


def unsigned(sub: str) -> str:
    """An ``alg: none`` token (RFC 7519 §6.1), which must never pass."""

    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return (
        part({"alg": "none", "typ": "JWT"}) + "." + part({"sub": sub, "scope": "admin:read"}) + "."
    )


def kinds(secret: str) -> list[Kind]:
    """The traffic mix: (name, group, weight, statuses it may get, through the proxy, request)."""
    users = [token(secret, f"user-{n}") for n in range(16)]
    limited = token(secret, "soak-limited")
    reader = token(secret, "reader-without-admin")
    forged = token("f" * 32, "alice", "items:read admin:read")
    expired = jwt.encode({"sub": "alice", "exp": int(time.time()) - 60}, secret, "HS256")
    injected = token("k" * 32, "alice", kid="../../../../dev/null' OR '1'='1")
    guess = base64.b64encode(b"alice:guess").decode()
    ok, refused = frozenset({200}), frozenset({401, 429})

    def fixed(path: str, **headers: str) -> Build:
        return lambda n: (path, {name.replace("_", "-"): value for name, value in headers.items()})

    def user(n: int) -> tuple[str, dict[str, str]]:
        bearer = {"authorization": f"Bearer {users[n % 16]}"}
        return "/items", {**bearer, "x-forwarded-for": f"203.0.113.{n % 16}"}

    def rotating_key(n: int) -> tuple[str, dict[str, str]]:
        return "/items", {"x-api-key": f"guess-{n}"}

    table: list[tuple[str, str, int, frozenset[int], bool, Build]] = [
        ("items, bearer", "valid", 30, ok, True, user),
        ("items, API key", "valid", 10, ok, True, fixed(
            "/items", x_api_key=DEMO_API_KEY, x_forwarded_for="203.0.113.100")),
        ("health", "valid", 5, ok, False, fixed("/health")),
        ("me, over its limit", "throttled", 15, frozenset({200, 429}), True, fixed(
            "/me", authorization=f"Bearer {limited}", x_forwarded_for="198.51.100.77")),
        ("admin without scope", "invalid", 5, frozenset({403}), True, fixed(
            "/admin/stats", authorization=f"Bearer {reader}", x_forwarded_for="203.0.113.9")),
        ("no credentials", "invalid", 5, frozenset({401}), False, fixed("/items")),
        ("forged signature", "invalid", 5, refused, False, fixed(
            "/items", authorization=f"Bearer {forged}")),
        ("expired token", "invalid", 4, refused, False, fixed(
            "/items", authorization=f"Bearer {expired}")),
        ("rotating API keys", "invalid", 4, refused, False, rotating_key),
        ("alg none", "malicious", 3, refused, False, fixed(
            "/admin/stats", authorization=f"Bearer {unsigned('alice')}")),
        ("kid injection", "malicious", 2, refused, False, fixed(
            "/items", authorization=f"Bearer {injected}")),
        ("dot segments", "malicious", 2, frozenset({400}), False, fixed(
            "/admin/x/%2e%2e/stats", x_api_key=DEMO_API_KEY)),
        ("X-Forwarded-For spoof", "malicious", 3, frozenset({403}), False, fixed(
            "/internal/status", x_forwarded_for="10.0.0.1")),
        ("oversized token", "malicious", 2, refused, False, fixed(
            "/items", authorization="Bearer " + "A" * 9000)),
        ("password guessing", "malicious", 3, refused, False, fixed(
            "/items", authorization=f"Basic {guess}")),
    ]  # fmt: skip
    return [Kind(*row) for row in table]


# -- processes -------------------------------------------------------------------------------


def server_environment(secret: str, redis_url: str) -> dict[str, str]:
    """The demo's configuration: Redis, a tight rule on /me, a trusted proxy, an IP rule."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECMW_")}
    env.update({
        "SECMW_JWT__SECRET": secret,
        "SECMW_RATE_LIMIT__STORAGE_URI": redis_url,
        "SECMW_RATE_LIMIT__DEFAULT": "100000/minute",
        "SECMW_RATE_LIMIT__RULES": json.dumps(
            [{"path": "/me", "limit": f"{LIMIT}/{WINDOW:g} seconds", "include_default": False}]
        ),
        "SECMW_IP__TRUSTED_PROXIES": PROXY,
        "SECMW_IP__RULES": json.dumps({"/internal/*": {"allow": ["10.0.0.0/8"]}}),
    })  # fmt: skip
    return env


def start_gunicorn(
    env: dict[str, str], port: int, workers: int, log: Path
) -> subprocess.Popen[bytes]:
    """gunicorn with uvicorn workers, the app built once in the master (``--preload``)."""
    command = [
        sys.executable, "-m", "gunicorn", "tests.soak.app:app",
        "--worker-class", "tests.soak.app.SoakWorker", "--workers", str(workers),
        "--preload", "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "5",
        "--log-level", "warning",
    ]  # fmt: skip
    with log.open("wb") as sink:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)


def wait_ready(url: str, master: subprocess.Popen[bytes], workers: int) -> set[int]:
    """Wait until the server answers and every worker is up; return the worker pids."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if master.poll() is not None:
            raise RuntimeError("gunicorn exited at start (see its log)")
        try:
            ready = httpx.get(url + "/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            ready = False
        if ready and len(worker_pids(master.pid)) == workers:
            return worker_pids(master.pid)
        time.sleep(0.2)
    raise RuntimeError("gunicorn did not become ready within 60 s")


def worker_pids(master: int) -> set[int]:
    """The master's child processes."""
    children = Path(f"/proc/{master}/task/{master}/children")
    return {int(pid) for pid in children.read_text().split()}


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid``, in MiB (``VmRSS`` in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 15 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


# -- load ------------------------------------------------------------------------------------


async def drive(
    url: str, mix: list[Kind], seconds: float, connections: int, on_warm: Callable[[], None]
) -> list[Result]:
    """Send the mix on ``connections`` concurrent connections for ``seconds``."""
    schedule = [kind for kind in mix for _ in range(kind.weight)]
    random.Random(9).shuffle(schedule)
    results: list[Result] = []
    counter = itertools.count()
    started = time.monotonic()
    until = started + seconds

    def client(source: str) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=connections)
        transport = httpx.AsyncHTTPTransport(local_address=source, limits=limits)
        return httpx.AsyncClient(base_url=url, timeout=CLIENT_TIMEOUT, transport=transport)

    async def warm() -> None:
        await asyncio.sleep(min(WARMUP, seconds / 4))
        on_warm()

    async with client(PROXY) as proxied, client(ATTACKER) as direct:

        async def worker() -> None:
            while time.monotonic() < until:
                number = next(counter)
                kind = schedule[number % len(schedule)]
                path, headers = kind.build(number)
                sent = time.monotonic()
                try:
                    response = await (proxied if kind.via_proxy else direct).get(
                        path, headers=headers
                    )
                    status = response.status_code
                except httpx.HTTPError:
                    status = 0
                results.append(Result(kind, status, sent, time.monotonic()))

        await asyncio.gather(warm(), *(worker() for _ in range(connections)))
    return results


def most_in_one_window(admitted: list[Result], window: float) -> int:
    """The most admissions certainly inside one window.

    A request sent at or after ``s`` and answered before ``s + window`` was admitted by the
    server within that span, whatever the network delays: a count above the limit is a real
    over-admission, never a measurement artefact.
    """
    best = 0
    for first in admitted:
        end = first.sent + window
        inside = sum(1 for r in admitted if r.sent >= first.sent and r.received < end)
        best = max(best, inside)
    return best


# -- report ----------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report(
    results: list[Result],
    seconds: float,
    workers: tuple[set[int], set[int]],
    rss: tuple[dict[int, float], dict[int, float]],
    log: str,
    header: str,
) -> bool:
    """Print the report; True when every invariant holds."""
    failures: list[str] = []

    def line(label: str, text: str, ok: bool | None = None) -> None:
        verdict = "" if ok is None else ("  [ok]" if ok else "  [FAILED]")
        if ok is False:
            failures.append(label)
        print(f"{label:<22}{text}{verdict}")

    statuses = Counter(r.status for r in results)
    latencies = [1000 * (r.received - r.sent) for r in results if r.status]
    unexpected = sum(1 for r in results if r.status not in r.kind.expected)
    server_errors = sum(n for status, n in statuses.items() if status >= 500)
    admitted = [r for r in results if r.kind.group == "throttled" and r.status == 200]
    limited = sum(1 for r in results if r.kind.group == "throttled")
    span = max(r.received for r in results) - min(r.sent for r in results)
    most = most_in_one_window(admitted, WINDOW)
    at_most = LIMIT * math.ceil(span / WINDOW)
    denials = sum(n for status, n in statuses.items() if 400 <= status < 500)
    audit_lines = len(re.findall(r"^\d+ secmw\.audit ", log, re.MULTILINE))
    before, after = workers

    print(header)
    line("requests served", f"{len(results):,} ({len(results) / seconds:,.0f}/s)")
    line("status counts", "  ".join(f"{s}: {n:,}" for s, n in sorted(statuses.items())))
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    line("latency", f"p50 {p50:.1f} ms   p99 {p99:.1f} ms   max {max(latencies):.1f} ms")
    print("by kind                   group      requests  statuses")
    by_kind: dict[Kind, Counter[int]] = {}
    for r in results:
        by_kind.setdefault(r.kind, Counter())[r.status] += 1
    for kind, counts in sorted(by_kind.items(), key=lambda item: item[0].name):
        shown = " ".join(f"{s}x{n}" for s, n in sorted(counts.items()))
        print(f"  {kind.name:<24}{kind.group:<11}{sum(counts.values()):>7,}  {shown}")
    line("unexpected statuses", str(unexpected), unexpected == 0)
    line("transport errors", str(statuses.get(0, 0)), 0 not in statuses)
    line("5xx", str(server_errors), server_errors == 0)
    line("tracebacks in log", str(log.count("Traceback")), "Traceback" not in log)
    pids = " ".join(map(str, sorted(after)))
    line("worker restarts", f"{len(after - before)} (pids {pids})", before == after)
    line(
        "rate-limited key",
        f"{len(admitted)} admitted of {limited:,} in {span:.0f} s"
        f" (limit {LIMIT} per {WINDOW:g} s: at most {at_most})",
        0 < len(admitted) <= at_most,
    )
    line("", f"most in any {WINDOW:g} s window: {most} (limit {LIMIT})", most <= LIMIT)
    for pid in sorted(before):
        start, end = rss[0][pid], rss[1].get(pid, float("nan"))
        growth = f"{start:.1f} -> {end:.1f} MiB ({end - start:+.1f}, bound +{RSS_BOUND_MIB:g})"
        line(f"RSS worker {pid}", growth, end - start <= RSS_BOUND_MIB)
    line("audit log records", f"{audit_lines:,} for {denials:,} denials (dedup window 60 s)")
    line("result", "PASS" if not failures else "FAIL: " + ", ".join(failures))
    return not failures


def main(argv: list[str] | None = None) -> int:
    """Run the soak; the exit status says whether every invariant held."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="load duration")
    parser.add_argument("--connections", type=int, default=6, help="concurrent connections")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    args = parser.parse_args(argv)
    if shutil.which("redis-server") is None:
        print("redis-server is not on PATH", file=sys.stderr)
        return 2
    secret = secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory(prefix="secmw-soak-") as tmp:
        redis_server = RedisServer(Path(tmp)).start()
        port, log = free_port(), Path(tmp) / "gunicorn.log"
        master = start_gunicorn(
            server_environment(secret, redis_server.url), port, args.workers, log
        )
        try:
            url = f"http://127.0.0.1:{port}"
            before = wait_ready(url, master, args.workers)
            rss_start: dict[int, float] = {}

            def sample() -> None:
                rss_start.update({pid: rss_mib(pid) for pid in before})

            results = asyncio.run(drive(url, kinds(secret), args.seconds, args.connections, sample))
            after = worker_pids(master.pid)
            rss_end = {pid: rss_mib(pid) for pid in after}
        finally:
            stop(master)
            redis_server.stop()
        version = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, check=False
        ).stdout.split()[2:3]
        header = (
            f"secmw soak: {args.seconds:g} s, gunicorn {args.workers} x uvicorn workers"
            f" (--preload), redis-server {' '.join(version)}, {args.connections} connections,"
            f" {os.cpu_count()} CPUs"
        )
        ok = report(
            results, args.seconds, (before, after), (rss_start, rss_end), log.read_text(), header
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
