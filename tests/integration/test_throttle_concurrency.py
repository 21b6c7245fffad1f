"""Guesses in flight never outnumber the failed-attempt budget, under real servers.

N concurrent wrong attempts (Basic passwords, step-up codes) meet a budget of B while each check
is slow (it sleeps, as a password hash or a database lookup takes time). The check counts its
calls in a file, since the server is another process: never more than B are made, on uvicorn
and on gunicorn with threads, with the throttle on memory and on a real Redis.
"""

from __future__ import annotations

import base64
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

from tests.redis_support import free_port

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[2]
ATTEMPTS = 40
BUDGET = 5


def command(server: str, port: int, workers: int) -> list[str]:
    """uvicorn (one process, checks in threads) or gunicorn (sync workers with 16 threads)."""
    if server == "uvicorn":
        return [sys.executable, "-m", "uvicorn", "--port", str(port), "--host", "127.0.0.1",
                "--log-level", "warning", "--lifespan", "off",
                "tests.integration.apps.throttle_asgi:app"]  # fmt: skip
    return [sys.executable, "-m", "gunicorn", "-w", str(workers), "--threads", "16", "--preload",
            "-b", f"127.0.0.1:{port}", "--log-level", "warning",
            "tests.integration.apps.throttle_wsgi:app"]  # fmt: skip


@contextmanager
def served(server: str, storage: str, checks: Path) -> Iterator[str]:
    """The apps on ``server`` with the throttles on ``storage``; yields the base URL."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("SECMW_")}
    env.update(
        # This checkout's sources, whatever secmw the environment has installed.
        PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        THROTTLE_CHECKS=str(checks),
        SECMW_RATE_LIMIT__STORAGE_URI=storage,
        SECMW_RATE_LIMIT__AUTH_FAILURES=f"{BUDGET}/minute",
        SECMW_TOTP__FAILURES=f"{BUDGET}/minute",
        SECMW_TOTP__PATHS="/stepup",
        # A run of its own in the shared Redis; a storage hiccup shows as a 503, never as
        # per-process memory budgets quietly admitting more.
        SECMW_RATE_LIMIT__KEY_PREFIX="t" + uuid.uuid4().hex[:12],
        SECMW_RATE_LIMIT__ON_STORAGE_ERROR="deny",
        SECMW_RATE_LIMIT__COMMAND_TIMEOUT="5",
        SECMW_RATE_LIMIT__CONNECT_TIMEOUT="5",
    )
    # Several processes share the budget only through Redis; in memory one process holds it.
    workers = 2 if storage.startswith("redis") else 1
    process = subprocess.Popen(
        command(server, port, workers), cwd=ROOT, env=env, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/", timeout=1)
                break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{server} did not start")
            time.sleep(0.1)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def basic(user: str, password: str) -> str:
    """An ``Authorization: Basic`` value."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def burst(url: str, headers: dict[str, str]) -> Counter[int]:
    """ATTEMPTS requests at once, each on its own connection; their statuses."""

    def one(_: int) -> int:
        with httpx.Client(timeout=30, headers={"Connection": "close", **headers}) as client:
            return client.get(url).status_code

    with ThreadPoolExecutor(max_workers=ATTEMPTS) as pool:
        return Counter(pool.map(one, range(ATTEMPTS)))


def checks_made(checks: Path, route: str) -> int:
    """How many checks of ``route`` the server made."""
    path = checks / route
    return path.stat().st_size if path.exists() else 0


@pytest.fixture(params=["memory", "redis"])
def storage(request: pytest.FixtureRequest) -> str:
    """The throttle's storage URI: memory, or the test Redis."""
    if request.param == "memory":
        return "memory://"
    request.applymarker(pytest.mark.redis)
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_concurrent_guesses_are_checked_at_most_budget_times(
    server: str, storage: str, tmp_path: Path
) -> None:
    """40 concurrent wrong passwords and 40 concurrent wrong step-up codes, budget 5: at most 5
    checks of each; the rest are refused with 429 before any check."""
    with served(server, storage, tmp_path) as url:
        passwords = burst(url + "/basic", {"Authorization": basic("alice", "wrong")})
        codes = burst(
            url + "/stepup",
            {"Authorization": basic("alice", "right"), "X-TOTP-Code": "000000"},
        )
    assert checks_made(tmp_path, "basic") <= BUDGET, passwords
    assert checks_made(tmp_path, "stepup") <= BUDGET, codes
    for statuses in (passwords, codes):
        assert statuses[401] <= BUDGET, statuses
        assert statuses[429] >= ATTEMPTS - BUDGET, statuses
    assert set(passwords) | set(codes) <= {401, 429}
