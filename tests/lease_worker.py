"""A process hammering one rate-limit key (``python -m tests.lease_worker URL MODE SLICE LIMIT
SECONDS``): prints, per request it admitted, the wall-clock times it was sent and answered.

Several of these at once are the processes of the leased-overshoot tests. ``die`` as MODE takes
one lease (spending one unit) and then kills itself without giving the rest back.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from secmw.core.request import RequestView
from secmw.ratelimit.leasing import use_leases
from secmw.ratelimit.plan import Plan
from secmw.ratelimit.policy import RateLimitPolicy
from secmw.ratelimit.settings import RateLimitSettings
from secmw.ratelimit.storage import Limiter
from secmw.ratelimit.windows import Outcome


def main(url: str, mode: str, size: str, limit: str, seconds: str) -> None:
    settings = RateLimitSettings(
        storage_uri=url,
        mode="exact" if mode == "exact" else "leased",
        lease_slice=int(size),
        default=limit,
        on_storage_error="deny",
        command_timeout=2,
    )
    plan = RateLimitPolicy(settings).plan(RequestView("GET", "/", peer="192.0.2.1"))
    assert isinstance(plan, Plan)
    limiter = use_leases(Limiter(settings), settings)
    if mode == "die":
        limiter.apply(plan.hits)
        os.kill(os.getpid(), signal.SIGKILL)
    admitted: list[tuple[float, float]] = []
    end = time.time() + float(seconds)

    def hammer() -> None:
        while time.time() < end:
            sent = time.time()
            outcome = limiter.apply(plan.hits)
            if isinstance(outcome, Outcome) and outcome.admitted:
                admitted.append((sent, time.time()))
            else:
                time.sleep(0.002)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    limiter.close()
    sys.stdout.write("".join(f"{sent!r} {answered!r}\n" for sent, answered in admitted))


if __name__ == "__main__":
    main(*sys.argv[1:])
