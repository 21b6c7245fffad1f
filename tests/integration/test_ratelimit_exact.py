"""Exactness under real multi-worker servers: N concurrent clients, exactly L successes.

gunicorn serves the apps in ``tests/integration/apps`` with 4 sync workers (WSGI) or 2 uvicorn
workers (ASGI) on 127.0.0.1
 against a real Redis (and a real Redis Cluster); the
clients send every request on a fresh connection so the kernel spreads them over the workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from redis.crc import key_slot

from tests.redis_support import RedisServer, cluster_url, free_port
from tests.support import uvicorn_server

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 25
CLIENTS = 8
PER_CLIENT = 10
STRATEGY_PATHS = ("/moving/work", "/fixed/work")  # see tests/integration/apps


def command(server: str, port: int) -> list[str]:
    """The command line serving the rate-limited app with several workers.

    ``--preload`` imports the app once and forks the workers (each opens its own connections),
    which keeps start-up to about a second on a small machine.
    """
    common = ["--preload", "-b", f"127.0.0.1:{port}", "--log-level", "warning"]
    if server == "gunicorn":
        return [sys.executable, "-m", "gunicorn", "-w", "4", *common,
                "tests.integration.apps.ratelimit_wsgi:app"]  # fmt: skip
    return [sys.executable, "-m", "gunicorn", "-w", "2", "-k", "uvicorn.workers.UvicornWorker",
            *common, "tests.integration.apps.ratelimit_asgi:app"]  # fmt: skip


@contextmanager
def served(server: str, settings: dict[str, str]) -> Iterator[str]:
    """Run the server in a subprocess with ``SECMW_RATE_LIMIT__*`` settings; yield its URL."""
    port = free_port()
    # This checkout's sources, whatever secmw the environment has installed.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    env.update({f"SECMW_RATE_LIMIT__{name.upper()}": value for name, value in settings.items()})
    env["SECMW_RATE_LIMIT__EXEMPT__PATHS"] = "/health"
    # Fail closed with roomy timeouts: a storage hiccup on a busy test machine must show as a 503
    # here, never as per-process memory limits quietly admitting more.
    env["SECMW_RATE_LIMIT__ON_STORAGE_ERROR"] = "deny"
    env["SECMW_RATE_LIMIT__COMMAND_TIMEOUT"] = env["SECMW_RATE_LIMIT__CONNECT_TIMEOUT"] = "5"
    process = subprocess.Popen(command(server, port), cwd=ROOT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{server} did not start")
            time.sleep(0.1)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGINT)  # gunicorn: quick shutdown
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def burst(
    url: str, identities: list[str], per_client: int = PER_CLIENT
) -> dict[tuple[str, str], Counter[int]]:
    """For each strategy and identity, CLIENTS threads send PER_CLIENT requests, all at once.

    Returns the statuses per (strategy path, identity).
    """
    jobs = [(path, who) for path in STRATEGY_PATHS for who in identities for _ in range(CLIENTS)]

    def client(job: tuple[str, str]) -> list[tuple[str, str, int, str]]:
        path, identity = job
        answers = []
        with httpx.Client(timeout=10, headers={"Connection": "close", "X-Client": identity}) as c:
            for _ in range(per_client):
                response = c.get(url + path)
                answers.append((path, identity, response.status_code, response.text))
        return answers

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = [answer for answers in pool.map(client, jobs) for answer in answers]
    statuses: dict[tuple[str, str], Counter[int]] = {(p, i): Counter() for p, i in jobs}
    pids = set()
    for path, identity, status, text in results:
        statuses[path, identity][status] += 1
        if status == 200:
            pids.add(text)
    assert len(pids) >= 2, "the requests did not reach several workers"
    return statuses


EXACT = Counter({200: LIMIT, 429: CLIENTS * PER_CLIENT - LIMIT})


@pytest.mark.server
@pytest.mark.redis
@pytest.mark.parametrize("server", ["gunicorn", "uvicorn"])
def test_exactly_the_limit_across_workers(redis_url: str, server: str) -> None:
    """80 concurrent requests over several workers, limit 25: exactly 25 pass (moving, fixed)."""
    settings = {
        "storage_uri": redis_url,
        "default": f"{LIMIT}/minute",
        "key_prefix": "x" + uuid.uuid4().hex[:12],
    }
    with served(server, settings) as url:
        statuses = burst(url, ["one-client"])
    assert statuses == {(path, "one-client"): EXACT for path in STRATEGY_PATHS}


def identities_on_every_node(nodes: list[RedisServer]) -> list[str]:
    """One client name per node: its hash tag (``{c:<name>}``) falls in that node's slots."""
    with nodes[0].client() as client:
        slots = client.execute_command("CLUSTER", "SLOTS")
    owners = [(int(start), int(end), int(primary[1])) for start, end, primary, *_ in slots]
    chosen = []
    for node in nodes:
        candidate = 0
        while True:
            name = f"client-{node.port}-{candidate}"
            slot = key_slot(f"c:{name}".encode())
            if any(start <= slot <= end and port == node.port for start, end, port in owners):
                chosen.append(name)
                break
            candidate += 1
    return chosen


@pytest.mark.server
@pytest.mark.redis
def test_exactly_the_limit_on_a_cluster(redis_cluster: list[RedisServer]) -> None:
    """Three identities on three cluster nodes, 40 requests each: exactly 25 pass (both windows)."""
    prefix = "c" + uuid.uuid4().hex[:12]
    identities = identities_on_every_node(redis_cluster)
    settings = {
        "storage_uri": cluster_url(redis_cluster),
        "default": f"{LIMIT}/minute",
        "key_prefix": prefix,
    }
    with served("uvicorn", settings) as url:
        statuses = burst(url, identities, per_client=5)
    exact = Counter({200: LIMIT, 429: CLIENTS * 5 - LIMIT})
    assert statuses == {(p, i): exact for p in STRATEGY_PATHS for i in identities}
    holders = []
    for node in redis_cluster:
        with node.client() as client:
            holders.append(len(client.keys(f"{prefix}:*")))
    assert holders == [2, 2, 2]  # one key per identity and strategy, each identity on its node


@pytest.mark.server
def test_percent_encoded_and_cased_paths_share_the_rule() -> None:
    """Through a real server, ``/%6Cogin``, ``/LOGIN/`` and ``//login`` meet the rule for /login."""
    from secmw.asgi.ratelimit import RateLimitMiddleware
    from tests.integration.apps.ratelimit_asgi import pid_app

    app = RateLimitMiddleware(
        pid_app, rate_limit={"default": "", "rules": [{"path": "/login", "limit": "3/minute"}]}
    )
    with uvicorn_server(app) as url, httpx.Client(timeout=5) as client:
        paths = ("/%6Cogin", "/LOGIN/", "//login")
        statuses = [client.get(url + path).status_code for path in paths]
        refused = client.get(url + "/login")
    assert statuses == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
