"""Over HTTP: each stack served by a real server on loopback, driven by a load generator.

ASGI stacks run under uvicorn (one worker, one process), WSGI stacks under gunicorn (one
``gthread`` worker, so keep-alive works). All servers start first and stay up; then every round
drives each server once, in a fresh random order, for a fixed time, with ``wrk`` when it is
installed and otherwise with the asyncio generator below (keep-alive, a few connections). Each
run reports requests/s, p50/p99 latency, non-2xx answers and the server's CPU time per request,
read from ``/proc/<pid>/stat`` before and after (the Redis server's too, for Redis stacks).

The servers build their app with the same factories as the in-process benchmarks:
``uvicorn --factory benchmarks.http_load:asgi_from_env`` and
``gunicorn 'benchmarks.http_load:wsgi_from_env()'``, the variant named by ``BENCH_VARIANT``.
"""

from __future__ import annotations

import asyncio
import http.client
import importlib.util
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import inprocess_asgi, inprocess_wsgi
from benchmarks.common import TOKEN, Context, Variant, build, free_port

ROOT = Path(__file__).resolve().parent.parent
CONNECTIONS = 4
ASGI_PARSERS = {"asgi": "h11", "asgi-httptools": "httptools"}
"""uvicorn's HTTP implementations, each its own group of servers: the pure-Python h11 and
httptools (the C parser ``uvicorn[standard]`` installs), whose response writing costs less
per header field."""
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _from_env(variants: Sequence[Variant]) -> Any:
    key = os.environ["BENCH_VARIANT"]
    variant = next(v for v in variants if v.key == key)
    return build(variant, Context(redis_url=os.environ.get("BENCH_REDIS_URL") or None))


def asgi_from_env() -> Any:
    """The ASGI app named by ``BENCH_VARIANT`` (uvicorn ``--factory``)."""
    return _from_env(inprocess_asgi.VARIANTS)


def wsgi_from_env() -> Any:
    """The WSGI app named by ``BENCH_VARIANT`` (gunicorn ``module:wsgi_from_env()``)."""
    return _from_env(inprocess_wsgi.VARIANTS)


# -- servers ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process, from ``/proc/<pid>/stat`` (fields 14 and 15)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children(pid: int) -> list[int]:
    """Direct children of a process (gunicorn's workers)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "children").read_text().split()
        except (FileNotFoundError, ProcessLookupError):  # the thread ended since the listing
            continue
        found.extend(int(child) for child in text)
    return found


class Server:
    """One stack served on a free loopback port by uvicorn (ASGI) or gunicorn (WSGI)."""

    def __init__(self, group: str, variant: Variant, redis_url: str | None) -> None:
        self.group = group
        self.variant = variant
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = dict(os.environ, BENCH_VARIANT=variant.key, BENCH_REDIS_URL=redis_url or "")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        if group in ASGI_PARSERS:
            parser = ASGI_PARSERS[group]
            self.server = f"uvicorn ({parser})"
            command = [
                sys.executable, "-m", "uvicorn", "--factory",
                "benchmarks.http_load:asgi_from_env", "--host", "127.0.0.1",
                "--port", str(self.port), "--workers", "1", "--no-access-log",
                "--log-level", "warning", "--lifespan", "off", "--http", parser,
            ]  # fmt: skip
        else:
            self.server = "gunicorn"
            command = [
                sys.executable, "-m", "gunicorn", "--workers", "1", "--worker-class", "gthread",
                "--threads", "4", "--bind", f"127.0.0.1:{self.port}", "--log-level", "warning",
                "benchmarks.http_load:wsgi_from_env()",
            ]  # fmt: skip
        # A file, not a pipe: a server that logs a lot must never block on a full pipe.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self.log
        )

    def wait_ready(self, timeout: float = 30) -> None:
        """Block until ``GET /`` with the token answers 200."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                err = (
                    self.process.stderr.read().decode(errors="replace")
                    if self.process.stderr
                    else ""
                )
                raise RuntimeError(f"{self.server} exited: {err.strip()[-300:]}")
            try:
                status = probe(self.port)
            except OSError:
                status = None
            if status == 200:
                return
            if status is not None:
                raise RuntimeError(f"{self.server} answered {status} to a valid token")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.server} did not start in {timeout:.0f} s")
            time.sleep(0.1)

    def pids(self) -> list[int]:
        """The processes doing the work: uvicorn itself, or gunicorn's master and worker."""
        return [self.process.pid, *children(self.process.pid)]

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log.close()


def probe(port: int, token: str | None = TOKEN) -> int:
    """Status of one ``GET /`` on loopback."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        connection.request("GET", "/", headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def warm(port: int, requests: int = 300) -> None:
    """A few hundred requests on one keep-alive connection; RuntimeError unless all are 200."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for _ in range(requests):
            connection.request("GET", "/", headers={"Authorization": f"Bearer {TOKEN}"})
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"warm-up request answered {response.status}")
    except OSError as exc:
        raise RuntimeError(f"warm-up failed: {exc}") from None
    finally:
        connection.close()


# -- load generators --------------------------------------------------------------------------


@dataclass
class Load:
    """What one load run measured."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non_2xx: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)([a-z]+)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse_wrk(output: str) -> Load:
    """Requests, duration, latency percentiles and non-2xx count from ``wrk --latency``."""
    done = re.search(r"(\d+) requests in ([\d.]+)(\w+)", output)
    if done is None:
        raise RuntimeError(f"unexpected wrk output: {output[-300:]}")
    seconds = _ms(done.group(2) + done.group(3)) / 1e3
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    failed = int(errors.group(1)) if errors else 0
    if socket_errors:
        failed += sum(int(x) for x in socket_errors.groups())
    return Load(
        int(done.group(1)),
        seconds,
        _ms(p50.group(1)) if p50 else float("nan"),
        _ms(p99.group(1)) if p99 else float("nan"),
        failed,
    )


def wrk(port: int, seconds: float, connections: int = CONNECTIONS) -> Load:
    """One ``wrk`` run (one thread, keep-alive connections) against loopback."""
    command = [
        "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
        "-H", f"Authorization: Bearer {TOKEN}", f"http://127.0.0.1:{port}/",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 30)
    return parse_wrk(done.stdout)


def python_load(port: int, seconds: float, connections: int = CONNECTIONS) -> Load:
    """The fallback generator: keep-alive connections on asyncio streams, for ``seconds``."""
    return asyncio.run(_python_load(port, seconds, connections))


async def _python_load(port: int, seconds: float, connections: int) -> Load:
    request = (
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    ).encode()
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                if match is None:
                    raise RuntimeError("response without Content-Length")
                await reader.readexactly(int(match.group(1)))
                latencies.append(time.perf_counter() - sent)
                if not head.startswith(b"HTTP/1.1 2"):
                    failures += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3 if ordered else 0.0

    return Load(len(ordered), elapsed, pct(0.50), pct(0.99), failures)


def load_generator() -> tuple[str, Callable[[int, float], Load]]:
    """``wrk`` when installed, else the asyncio generator."""
    if shutil.which("wrk"):
        return "wrk", wrk
    return "python", python_load


# -- the group --------------------------------------------------------------------------------


def http_variants() -> list[tuple[str, Variant]]:
    """The stacks served over HTTP: (group, variant); ASGI ones once per uvicorn parser
    (httptools only when it is installed)."""
    asgi = [v for v in inprocess_asgi.VARIANTS if v.http]
    groups = ["asgi", *(["asgi-httptools"] if importlib.util.find_spec("httptools") else [])]
    served = [(group, v) for group in groups for v in asgi]
    return served + [("wsgi", v) for v in inprocess_wsgi.VARIANTS if v.http]


def run_http(
    candidates: Sequence[tuple[str, Variant]],
    *,
    rounds: int,
    seconds: float,
    redis_url: str | None,
    redis_pid: int | None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Serve every candidate, drive them round-robin, summarize; one entry per server."""
    name, generate = load_generator()
    entries: dict[str, dict[str, Any]] = {}
    servers: dict[str, Server] = {}
    try:
        for group, variant in candidates:
            key = f"{group}:{variant.key}"
            server = Server(group, variant, redis_url)
            entries[key] = {"label": variant.label, "kind": variant.kind, "server": server.server}
            servers[key] = server
        for key, server in list(servers.items()):
            try:
                server.wait_ready()
                warm(server.port)  # imports, caches, connection pools
            except (RuntimeError, subprocess.SubprocessError) as exc:
                entries[key].update(status="error", reason=str(exc))
                log(f"  error  {key}: {exc}")
                server.stop()
                del servers[key]
        log(f"  serving {len(servers)} stacks; {rounds} rounds of {seconds:g} s each ({name})")
        runs = _drive(servers, generate, rounds, seconds, redis_pid)
    finally:
        for server in servers.values():
            server.stop()
    for key, samples in runs.items():
        entries[key].update(status="ok", **_summary(samples))
    groups = {group for group, _ in candidates}
    for group in groups:
        base = inprocess_wsgi.BASELINE if group == "wsgi" else inprocess_asgi.BASELINE
        _ratios(entries, runs, group, f"{group}:{base}")
    return {"generator": name, "connections": CONNECTIONS, "seconds": seconds, "results": entries}


def _drive(
    servers: dict[str, Server],
    generate: Callable[[int, float], Load],
    rounds: int,
    seconds: float,
    redis_pid: int | None,
) -> dict[str, list[dict[str, float]]]:
    runs: dict[str, list[dict[str, float]]] = {key: [] for key in servers}
    order = list(servers)
    rng = random.Random(8)
    for _ in range(rounds):
        rng.shuffle(order)
        for key in order:
            server = servers[key]
            uses_redis = server.variant.redis and redis_pid is not None
            cpu_before = server.cpu()
            redis_before = cpu_seconds(redis_pid) if uses_redis and redis_pid else 0.0
            load = generate(server.port, seconds)
            cpu = server.cpu() - cpu_before
            sample = {
                "rps": load.rps,
                "p50_ms": load.p50_ms,
                "p99_ms": load.p99_ms,
                "non_2xx": load.non_2xx,
                "cpu_us": cpu / load.requests * 1e6 if load.requests else float("nan"),
            }
            if uses_redis and redis_pid:
                redis_cpu = cpu_seconds(redis_pid) - redis_before
                sample["redis_cpu_us"] = redis_cpu / load.requests * 1e6 if load.requests else 0
            runs[key].append(sample)
    return runs


def _summary(samples: list[dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {"rounds": len(samples)}
    for field in ("rps", "p50_ms", "p99_ms", "cpu_us", "redis_cpu_us"):
        values = [s[field] for s in samples if field in s]
        if values:
            out[field] = round(statistics.median(values), 3)
    out["non_2xx"] = int(sum(s["non_2xx"] for s in samples))
    return out


def _ratios(
    entries: dict[str, dict[str, Any]],
    runs: dict[str, list[dict[str, float]]],
    group: str,
    base: str,
) -> None:
    """Requests/s and CPU per request relative to the group's bare framework, per round."""
    if base not in runs:
        return
    for key, samples in runs.items():
        if not key.startswith(group + ":"):
            continue
        pairs = list(zip(samples, runs[base], strict=True))
        entries[key]["rps_ratio"] = round(
            statistics.median(s["rps"] / b["rps"] for s, b in pairs), 3
        )
        entries[key]["cpu_ratio"] = (
            round(statistics.median(s["cpu_us"] / b["cpu_us"] for s, b in pairs if b["cpu_us"]), 3)
            if any(b["cpu_us"] for _, b in pairs)
            else None
        )
