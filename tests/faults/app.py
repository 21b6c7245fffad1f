"""The apps the fault suite serves: the rate-limit test apps (ASGI and WSGI, configured by
``SECMW_*``), with every storage breaker event written to stderr with the worker's pid and the
wall-clock time, undeduplicated, and two response fields: ``X-Took-Ms``, the time the request
spent in the app (the rate limiter's storage call included, the server's queue not), and
``X-At``, the wall-clock time of the answer (when the limiter admitted it, give or take the
app's microseconds), which the windows are measured on.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from typing import Any

from secmw import audit
from tests.integration.apps.ratelimit_asgi import app as _asgi
from tests.integration.apps.ratelimit_wsgi import app as _wsgi


def _record(event: audit.AuditEvent) -> None:
    if event.name.startswith("ratelimit.storage"):
        line = f"FAULTEVENT {os.getpid()} {time.time():.3f} {event.name} {event.reason}\n"
        sys.stderr.write(line)
        sys.stderr.flush()


audit.add_hook(_record)


def _took(started: float) -> list[tuple[str, str]]:
    took = str(round((time.perf_counter() - started) * 1000))
    return [("x-took-ms", took), ("x-at", f"{time.time():.4f}")]


async def asgi(scope: Any, receive: Any, send: Any) -> None:
    """The ASGI app, timed."""
    started = time.perf_counter()

    async def timed(message: Any) -> None:
        if message["type"] == "http.response.start":
            took = [(name.encode(), value.encode()) for name, value in _took(started)]
            message = {**message, "headers": [*message.get("headers", []), *took]}
        await send(message)

    await _asgi(scope, receive, timed if scope["type"] == "http" else send)


def wsgi(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """The WSGI app, timed."""
    started = time.perf_counter()

    def timed(status: str, headers: list[tuple[str, str]], *info: Any) -> Any:
        return start_response(status, [*headers, *_took(started)], *info)

    return _wsgi(environ, timed)
