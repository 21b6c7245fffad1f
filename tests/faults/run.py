"""The Redis fault suite: break Redis under load and check what the docs promise.

    python -m tests.faults.run            # every deployment, fault, server and policy
    python -m tests.faults.run --only single:kill --servers uvicorn --policies deny

For each deployment (one Redis, a Cluster without and with replicas, Sentinel), each of its
faults, each server (gunicorn with uvicorn workers serving the ASGI app; gunicorn's threaded
workers serving the WSGI app; two workers each) and each ``on_storage_error`` policy, clients
send requests while Redis works, while it fails and after it heals. Checked, per run:

- no 5xx but the ``deny`` policy's 503s, each a problem document with ``Retry-After``; no
  transport error; under ``deny`` on a Cluster, no 503 for clients whose master lives;
- the deadline: no request slower than ``command_timeout`` plus a margin for HTTP and the host;
- the limit over every window-long span of the hot client's admissions, windows that cross
  the switches included: ``memory`` at most workers x limit, ``deny`` the limit (twice the
  limit when Redis restarts empty within the window);
- one ``storage_down`` and one ``storage_up`` per worker and node for the outage;
- recovery: the time from Redis serving the client's keys again to each worker's
  ``storage_up``;
- exactness after recovery: a burst of a fresh client gets exactly the limit.

Prints one line per run and exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.faults.topology import Cluster, Sentinel, Single, wait_for
from tests.redis_support import free_port

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 2
DEADLINE = 0.25  # command_timeout, the default
EVENT = re.compile(
    r"FAULTEVENT (\d+) ([\d.]+) ratelimit\.storage_(down|up) rate-limit storage(?: node (\S+))?"
)


@dataclass
class Timing:
    """How long each phase lasts, the limit, and the checks' margins."""

    warm: float = 1.5
    fault: float = 2.0
    tail: float = 1.0
    limit: int = 20
    window: int = 10
    threads: int = 6
    margin: float = 0.25  # latency allowed past the deadline (HTTP, a busy host)
    recovery: float = 1.5  # seconds allowed from Redis back to every worker's storage_up


@dataclass
class Sample:
    client: str
    sent: float
    received: float
    status: int
    problem: bool = False
    took: float = 0.0  # seconds in the app, as the server reports it


@dataclass
class Run:
    """One experiment's figures and failed checks."""

    name: str
    samples: list[Sample] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.failures.append(message)


def command(server: str, port: int) -> list[str]:
    common = ["--preload", "-w", str(WORKERS), "-b", f"127.0.0.1:{port}", "--log-level", "warning"]
    if server == "gunicorn":
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "--threads",
            "4",
            *common,
            "tests.faults.app:wsgi",
        ]
    worker = ["-k", "uvicorn.workers.UvicornWorker"]
    return [sys.executable, "-m", "gunicorn", *worker, *common, "tests.faults.app:asgi"]


@contextmanager
def served(server: str, policy: str, uri: str, timing: Timing, log: Path) -> Iterator[str]:
    """The server on a free port, with the rate limiter on ``uri`` under ``policy``."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    env["PYTHONWARNINGS"] = "default::ResourceWarning"  # "Unclosed ClusterNode" shows
    env.update(
        SECMW_RATE_LIMIT__STORAGE_URI=uri,
        SECMW_RATE_LIMIT__ON_STORAGE_ERROR=policy,
        SECMW_RATE_LIMIT__DEFAULT=f"{timing.limit}/{timing.window} seconds",
        SECMW_RATE_LIMIT__EXEMPT__PATHS="/health",
        SECMW_RATE_LIMIT__KEY_PREFIX="f" + os.urandom(4).hex(),
    )
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command(server, port), cwd=ROOT, env=env, stderr=sink, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _healthy(url), 30, f"{server} to start")
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def send(client: httpx.Client, url: str, name: str) -> Sample:
    sent = time.monotonic()
    try:
        response = client.get(url + "/work", headers={"X-Client": name})
    except httpx.TransportError:
        return Sample(name, sent, time.monotonic(), 0)
    problem = response.headers.get("content-type") == "application/problem+json"
    problem = problem and int(response.headers.get("retry-after", "0")) >= 1
    took = int(response.headers.get("x-took-ms", "0")) / 1000
    return Sample(name, sent, time.monotonic(), response.status_code, problem, took)


def load(url: str, clients: list[str], stop: threading.Event, out: list[Sample]) -> None:
    """Half the requests from the hot client (``clients[0]``), half spread over the others."""
    cycle = itertools.cycle(
        [clients[0], *itertools.chain(*zip(itertools.repeat(clients[0]), clients[1:]))]
    )
    with httpx.Client(timeout=5) as client:
        while not stop.is_set():
            out.append(send(client, url, next(cycle)))


def worst_window(times: list[float], window: float) -> int:
    """The most of ``times`` within any span shorter than ``window``."""
    times = sorted(times)
    worst, start = 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= window:
            start += 1
        worst = max(worst, end - start + 1)
    return worst


def events(log: Path, since: float) -> list[tuple[int, float, str, str]]:
    """(pid, time, down|up, node) of every breaker event the server wrote since ``since``."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        match = EVENT.search(line)
        if match:
            pid, at, kind, node = match.groups()
            if float(at) >= since:
                found.append((int(pid), float(at), kind, node or ""))
    return found


def burst(url: str, name: str, count: int) -> Counter[int]:
    """``count`` requests of a fresh client at once, over 6 connections."""
    with ThreadPoolExecutor(6) as pool, httpx.Client(timeout=5) as client:
        return Counter(s.status for s in pool.map(lambda _: send(client, url, name), range(count)))


def experiment(
    topology: Any,
    fault: str,
    server: str,
    policy: str,
    url: str,
    log: Path,
    timing: Timing,
    tag: str,
) -> Run:
    """One fault under load; the checks of the module docstring."""
    run = Run(
        f"{type(topology).__name__.lower()}{'+replicas' if getattr(topology, 'replicas', False) else ''}:{fault} {server} {policy}"
    )
    hot, others = f"hot-{tag}", [f"other-{tag}-{n}" for n in range(6)]
    if isinstance(topology, Cluster):
        topology.choose_victim(hot)
    victims = {name for name in [hot, *others] if topology.client_on_victim(name)}
    stop, samples = threading.Event(), run.samples
    threads = [
        threading.Thread(target=load, args=(url, [hot, *others], stop, samples))
        for _ in range(timing.threads)
    ]
    for thread in threads:
        thread.start()
    time.sleep(timing.warm)
    wall = time.time() - time.monotonic()
    started = time.monotonic()
    since = time.time()
    topology.inject(fault, timing.fault)
    back: list[float] = []

    def watch() -> None:
        time.sleep(0.05)
        while not topology.serves(hot):
            time.sleep(0.05)
        back.append(time.monotonic())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    time.sleep(timing.fault)
    topology.heal(fault)
    healed = time.monotonic()
    watcher.join(30)
    back = [min([*back, healed])]  # a heal we did ourselves ends the outage when it returns
    try:
        wait_for(lambda: recovered(events(log, since)), 15, "every worker to recover")
    except RuntimeError:
        pass
    time.sleep(timing.tail)
    stop.set()
    for thread in threads:
        thread.join(10)
    exact = burst(url, f"exact-{tag}", 3 * timing.limit)
    judge(run, policy, fault, victims, hot, started, back, events(log, since), wall, timing)
    run.figures["exact"] = f"{exact[200]}/{timing.limit}"
    run.check(
        exact[200] == timing.limit and exact[200] + exact[429] == 3 * timing.limit,
        f"after recovery {dict(exact)} for a limit of {timing.limit}",
    )
    text = log.read_text(errors="replace")
    run.figures["unclosed"] = text.count("Unclosed")
    run.check("Unclosed" not in text, "a node client left unclosed")
    run.check("Traceback" not in text, "a traceback in the server log")
    return run


def recovered(found: list[tuple[int, float, str, str]]) -> bool:
    """Whether every worker and node that went down came up again."""
    down = {(pid, node) for pid, _, kind, node in found if kind == "down"}
    return bool(down) and down <= {(pid, node) for pid, _, kind, node in found if kind == "up"}


def judge(
    run: Run,
    policy: str,
    fault: str,
    victims: set[str],
    hot: str,
    started: float,
    back: list[float],
    found: list[tuple[int, float, str, str]],
    wall: float,
    timing: Timing,
) -> None:
    samples = run.samples
    statuses = Counter(s.status for s in samples)
    run.figures["requests"] = len(samples)
    bad = [
        s
        for s in samples
        if s.status == 0
        or (s.status >= 500 and not (policy == "deny" and s.status == 503 and s.problem))
    ]
    run.check(not bad, f"{len(bad)} answers outside the policy ({Counter(s.status for s in bad)})")
    if policy == "deny":
        spill = [s for s in samples if s.status == 503 and s.client not in victims]
        run.check(not spill, f"{len(spill)} 503s for clients whose master was up")
    run.figures["503"] = statuses[503]
    slowest = max(s.took for s in samples)
    run.figures["app_max_ms"] = round(slowest * 1000)
    run.figures["client_max_ms"] = round(max(s.received - s.sent for s in samples) * 1000)
    run.check(slowest <= DEADLINE + timing.margin, f"a request took {slowest:.3f} s in the app")
    admitted = [s.received for s in samples if s.client == hot and s.status == 200]
    worst = worst_window(admitted, timing.window)
    run.figures["worst"] = worst
    run.figures["hot"] = dict(Counter(s.status for s in samples if s.client == hot))
    if policy == "memory":
        run.check(
            worst <= WORKERS * timing.limit,
            f"{worst} admitted in one window, bound {WORKERS * timing.limit}",
        )
    elif policy == "deny":
        lost = fault == "kill"  # a restarted Redis starts empty
        bound = timing.limit * (2 if lost else 1)
        run.check(worst <= bound, f"{worst} admitted in one window, bound {bound}")
    per: Counter[tuple[int, str, str]] = Counter((pid, node, kind) for pid, _, kind, node in found)
    stories = {(pid, node) for pid, node, _ in per}
    run.figures["events"] = (
        f"{sum(1 for *_, k in per.elements() if k == 'down')}d/{sum(1 for *_, k in per.elements() if k == 'up')}u"
    )
    run.check(bool(stories), "no storage_down event")
    for pid, node in stories:
        run.check(
            per[pid, node, "down"] == 1 and per[pid, node, "up"] == 1,
            f"worker {pid} node {node or '-'}: {per[pid, node, 'down']} down, {per[pid, node, 'up']} up",
        )
    if back:
        back_wall = back[0] + wall
        ups = [at for _, at, kind, _ in found if kind == "up"]
        late = max(ups) - back_wall if ups else float("inf")
        run.figures["outage_s"] = round(back[0] - started, 2)
        run.figures["recovery_s"] = round(late, 2)
        run.check(late <= timing.recovery, f"recovery took {late:.2f} s after Redis was back")
    else:
        run.check(False, "Redis never served the client again")


def topologies(workdir: Path, only: set[str]) -> Iterator[Any]:
    builders = [
        ("single", lambda: Single(workdir / "single")),
        ("cluster", lambda: Cluster(workdir / "cluster", replicas=False)),
        ("cluster+replicas", lambda: Cluster(workdir / "replicas", replicas=True)),
        ("sentinel", lambda: Sentinel(workdir / "sentinel")),
    ]
    for name, build in builders:
        if not only or any(item.split(":")[0] == name for item in only):
            (workdir / name.replace("cluster+", "")).mkdir(exist_ok=True)
            topology = build()
            try:
                yield name, topology
            finally:
                topology.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=[], help="deployment or deployment:fault")
    parser.add_argument("--servers", nargs="*", default=["uvicorn", "gunicorn"])
    parser.add_argument("--policies", nargs="*", default=["memory", "allow", "deny"])
    parser.add_argument("--keep", help="a directory for the logs and Redis files, kept")
    args = parser.parse_args(argv)
    timing, runs = Timing(), []
    counter = itertools.count()
    with tempfile.TemporaryDirectory(prefix="secmw-faults-") as tmp:
        workdir = Path(args.keep or tmp)
        for name, topology in topologies(workdir, set(args.only)):
            faults = [
                f
                for f in topology.faults
                if not args.only or name in args.only or f"{name}:{f}" in args.only
            ]
            for server, policy in itertools.product(args.servers, args.policies):
                log = workdir / f"{name}-{server}-{policy}.log"
                with served(server, policy, topology.url, timing, log) as url:
                    for fault in faults:
                        run = experiment(
                            topology, fault, server, policy, url, log, timing, str(next(counter))
                        )
                        runs.append(run)
                        print(report_line(run), flush=True)
    print(summary(runs))
    return 1 if any(run.failures for run in runs) else 0


def report_line(run: Run) -> str:
    figures = " ".join(f"{key}={value}" for key, value in run.figures.items())
    verdict = "ok" if not run.failures else "FAIL: " + "; ".join(run.failures)
    return f"{run.name:<36} {figures}  {verdict}"


def summary(runs: list[Run]) -> str:
    total = sum(run.figures.get("requests", 0) for run in runs)
    failed = [run for run in runs if run.failures]
    return f"\n{len(runs)} runs, {total} requests, {len(failed)} failed"


if __name__ == "__main__":
    sys.exit(main())
