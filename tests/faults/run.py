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
  limit when the fault can lose counts: Redis restarts empty, or a promoted replica lacks the
  writes replication had not sent yet);
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
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from math import inf
from pathlib import Path
from typing import Any

import httpx

from tests.faults.topology import Cluster, Sentinel, Single, wait_for
from tests.redis_support import free_port

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 2
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
    pace: float = 0.02
    deadline: float = 0.25  # command_timeout, the default
    margin: float = 0.25  # time in the app allowed past the deadline (a busy host)
    recovery: float = 1.5  # seconds allowed from Redis back to every worker's storage_up
    src: Path = ROOT / "src"  # the secmw sources the servers run (another tree: a comparison)


@dataclass
class Sample:
    client: str
    sent: float
    received: float
    status: int
    problem: bool = False
    took: float = 0.0  # seconds in the app, as the server reports it
    at: float = 0.0  # the server's wall-clock time of the answer


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
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(timing.src), str(ROOT)])}
    env["PYTHONWARNINGS"] = "default::ResourceWarning"  # "Unclosed ClusterNode" shows
    env.update(
        SECMW_RATE_LIMIT__STORAGE_URI=uri,
        SECMW_RATE_LIMIT__ON_STORAGE_ERROR=policy,
        SECMW_RATE_LIMIT__DEFAULT=f"{timing.limit}/{timing.window} seconds",
        SECMW_RATE_LIMIT__EXEMPT__PATHS="/health",
        SECMW_RATE_LIMIT__KEY_PREFIX="f" + os.urandom(4).hex(),
        SECMW_RATE_LIMIT__COMMAND_TIMEOUT=str(timing.deadline),
    )
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command(server, port), cwd=ROOT, env=env, stderr=sink, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _healthy(url), 30, f"{server} to start")
        with httpx.Client(timeout=5) as client:  # every worker connects to Redis first
            for n in range(20):
                send(client, url, f"warm-{n}")
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
    at = float(response.headers.get("x-at", "0"))
    return Sample(name, sent, time.monotonic(), response.status_code, problem, took, at)


def load(
    url: str, clients: list[str], stop: threading.Event, out: list[Sample], pace: float
) -> None:
    """Half the requests from the hot client (``clients[0]``), half spread over the others;
    ``pace`` seconds between a thread's requests, so that the load leaves the servers CPU."""
    cycle = itertools.cycle(
        [clients[0], *itertools.chain(*zip(itertools.repeat(clients[0]), clients[1:]))]
    )
    with httpx.Client(timeout=5) as client:
        while not stop.is_set():
            out.append(send(client, url, next(cycle)))
            time.sleep(pace)


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
    run = Run(f"{topology.name}:{fault} {server} {policy}")
    hot, others = f"hot-{tag}", [f"other-{tag}-{n}" for n in range(6)]
    if isinstance(topology, Cluster):
        topology.choose_victim(hot)
    victims = {name for name in [hot, *others] if topology.client_on_victim(name)}
    stop, samples = threading.Event(), run.samples
    threads = [
        threading.Thread(
            target=load, args=(url, [hot, *others], stop, samples, timing.pace), daemon=True
        )
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
    with suppress(RuntimeError):  # a worker that never recovers fails the checks below
        wait_for(lambda: recovered(events(log, since)), 15, "every worker to recover")
    time.sleep(timing.tail)
    stop.set()
    for thread in threads:
        thread.join(10)
    exact = burst(url, f"exact-{tag}", 3 * timing.limit)
    found = events(log, since)
    lost = topology.loses_counts(fault)
    judge(run, Outage(policy, lost, victims, hot, started, back[0], found, wall), timing)
    run.figures["exact"] = f"{exact[200]}/{timing.limit}"
    run.check(
        exact[200] == timing.limit and exact[200] + exact[429] == 3 * timing.limit,
        f"after recovery {dict(exact)} for a limit of {timing.limit}",
    )
    return run


def shutdown(run: Run, log: Path) -> None:
    """The server's log, once it stopped: no node client left unclosed, no traceback."""
    text = log.read_text(errors="replace")
    run.figures["unclosed"] = text.count("Unclosed")
    run.check("Unclosed" not in text, "a client left unclosed (see the server log)")
    run.check("Traceback" not in text, "a traceback in the server log")


Event = tuple[int, float, str, str]  # pid, wall-clock time, down|up, node


def recovered(found: list[Event]) -> bool:
    """Whether every worker and node that went down came up again."""
    down = {(pid, node) for pid, _, kind, node in found if kind == "down"}
    return bool(down) and down <= {(pid, node) for pid, _, kind, node in found if kind == "up"}


@dataclass
class Outage:
    """What one experiment did: the policy, who lives on the failed node, when Redis served
    the hot client again (``time.monotonic``), the breaker events seen."""

    policy: str
    lost_counts: bool
    victims: set[str]
    hot: str
    started: float
    back: float
    found: list[Event]
    wall: float  # time.time() - time.monotonic()


def judge(run: Run, outage: Outage, timing: Timing) -> None:
    """Every check of the module docstring but exactness, on ``run.samples``."""
    answers(run, outage)
    deadline(run, timing)
    bound(run, outage, timing)
    stories(run, outage, timing)


def answers(run: Run, outage: Outage) -> None:
    """No 5xx but ``deny``'s 503 problem documents, and those, from the fault on, only for the
    failed node's clients; no transport error."""
    policy, samples = outage.policy, run.samples
    run.figures["requests"] = len(samples)
    run.figures["503"] = sum(1 for s in samples if s.status == 503)
    bad = [s for s in samples if s.status == 0 or (s.status >= 500 and not _denied(s, policy))]
    run.check(not bad, f"{len(bad)} answers outside the policy ({Counter(s.status for s in bad)})")
    if policy == "deny":
        spill = [
            s
            for s in samples
            if s.status == 503 and s.client not in outage.victims and s.sent >= outage.started
        ]
        run.check(not spill, f"{len(spill)} 503s for clients whose master was up")


def _denied(sample: Sample, policy: str) -> bool:
    return policy == "deny" and sample.status == 503 and sample.problem


def deadline(run: Run, timing: Timing) -> None:
    """No request longer in the app than the deadline plus the margin."""
    slowest = max(s.took for s in run.samples)
    run.figures["app_max_ms"] = round(slowest * 1000)
    run.figures["client_max_ms"] = round(max(s.received - s.sent for s in run.samples) * 1000)
    limit = timing.deadline + timing.margin
    run.check(slowest <= limit, f"a request took {slowest:.3f} s in the app")


def bound(run: Run, outage: Outage, timing: Timing) -> None:
    """The hot client's worst window: ``memory`` workers x limit, ``deny`` the limit (twice
    when the fault can lose counts: a restart empties Redis, a promoted replica may lack the
    last writes)."""
    hot = outage.hot
    admitted = [s.at for s in run.samples if s.client == hot and s.status == 200]
    worst = worst_window(admitted, timing.window)
    run.figures["worst"] = worst
    if outage.policy == "memory":
        limit = WORKERS * timing.limit
    elif outage.policy == "deny":
        limit = timing.limit * (2 if outage.lost_counts else 1)
    else:
        return
    run.figures["bound"] = limit
    run.check(worst <= limit, f"{worst} admitted in one window, bound {limit}")


def stories(run: Run, outage: Outage, timing: Timing) -> None:
    """One down and one up per worker and node; every worker back soon after Redis."""
    per = Counter((pid, node, kind) for pid, _, kind, node in outage.found)
    pairs = sorted({(pid, node) for pid, node, _ in per})
    downs = sum(count for (_, _, kind), count in per.items() if kind == "down")
    run.figures["events"] = f"{downs}d/{sum(per.values()) - downs}u"
    run.check(bool(pairs), "no storage_down event")
    for pid, node in pairs:
        down, up = per[pid, node, "down"], per[pid, node, "up"]
        run.check(down == up == 1, f"worker {pid} node {node or '-'}: {down} down, {up} up")
    back = outage.back + outage.wall
    first_down = {}
    for pid, at, kind, node in outage.found:
        if kind == "down":
            first_down.setdefault((pid, node), at)
    ups = [  # each outage story's first up once Redis is back
        min((at for p, at, k, n in outage.found if (p, n) == pair and k == "up"), default=inf)
        for pair, at in first_down.items()
        if at < back
    ]
    late = max(ups, default=inf) - back
    run.figures["outage_s"] = round(outage.back - outage.started, 2)
    run.figures["recovery_s"] = round(late, 2)
    run.check(late <= timing.recovery, f"recovery took {late:.2f} s after Redis was back")


def topologies(workdir: Path, only: set[str]) -> Iterator[Any]:
    """Each selected deployment, started, stopped after use."""
    builders: list[tuple[str, Callable[[Path], Any]]] = [
        ("single", Single),
        ("cluster", lambda path: Cluster(path, replicas=False)),
        ("cluster+replicas", lambda path: Cluster(path, replicas=True)),
        ("sentinel", Sentinel),
    ]
    for name, build in builders:
        if not only or any(item.split(":")[0] == name for item in only):
            path = workdir / name.replace("+", "-")
            path.mkdir(exist_ok=True)
            topology = build(path)
            try:
                yield topology
            finally:
                topology.stop()


def suite(
    workdir: Path,
    only: set[str],
    servers: list[str],
    policies: list[str],
    timing: Timing,
    show: Callable[[Run], None] = lambda run: None,
) -> list[Run]:
    """Every selected experiment (``only``: deployments, or ``deployment:fault``)."""
    runs: list[Run] = []
    counter = itertools.count()
    for topology in topologies(workdir, only):
        name = topology.name
        faults = [f for f in topology.faults if not only or name in only or f"{name}:{f}" in only]
        for server, policy in itertools.product(servers, policies):
            log = workdir / f"{name}-{server}-{policy}.log"
            done: list[Run] = []
            with served(server, policy, topology.url, timing, log) as url:
                for fault in faults:
                    tag = str(next(counter))
                    done.append(experiment(topology, fault, server, policy, url, log, timing, tag))
            shutdown(done[-1], log)
            for run in done:
                show(run)
            runs += done
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=[], help="deployment or deployment:fault")
    parser.add_argument("--servers", nargs="*", default=["uvicorn", "gunicorn"])
    parser.add_argument("--policies", nargs="*", default=["memory", "allow", "deny"])
    parser.add_argument("--keep", help="a directory for the logs and Redis files, kept")
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="secmw sources to serve")
    args = parser.parse_args(argv)
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory(prefix="secmw-faults-") as tmp:
        workdir = Path(args.keep or tmp)
        runs = suite(
            workdir,
            set(args.only),
            args.servers,
            args.policies,
            Timing(src=args.src.resolve()),
            lambda run: print(report_line(run), flush=True),
        )
    print(summary(runs))
    return 1 if any(run.failures for run in runs) else 0


def report_line(run: Run) -> str:
    """One run: its figures and its verdict."""
    figures = " ".join(f"{key}={value}" for key, value in run.figures.items())
    verdict = "ok" if not run.failures else "FAIL: " + "; ".join(run.failures)
    return f"{run.name:<40} {figures}  {verdict}"


def summary(runs: list[Run]) -> str:
    """Totals, and the worst of each figure over the runs."""
    total = sum(run.figures.get("requests", 0) for run in runs)
    failed = [run for run in runs if run.failures]
    lines = [f"\n{len(runs)} runs, {total} requests, {len(failed)} failed"]
    for figure in ("app_max_ms", "client_max_ms", "recovery_s", "outage_s"):
        values = [run.figures[figure] for run in runs if figure in run.figures]
        if values:
            lines.append(f"  {figure}: max {max(values)}")
    for policy in ("memory", "deny"):
        worst = [(r.figures["worst"], r.figures["bound"]) for r in runs if r.name.endswith(policy)]
        if worst:
            lines.append(
                f"  {policy}: worst window {max(worst)[0]} (bounds {sorted({b for _, b in worst})})"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
