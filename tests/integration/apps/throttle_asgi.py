"""ASGI app for the throttle-concurrency tests, configured by ``SECMW_*``.

``/basic``: Basic authentication under the failed-attempt throttle, with a slow counted check.
``/stepup``: a step-up route (default throttle) behind an uncounted Basic login, whose secret
lookup is slow and counted.
"""

from __future__ import annotations

import asyncio
from typing import Any

from secmw import SecuritySettings
from secmw.asgi.auth import AuthenticationMiddleware
from secmw.asgi.stepup import StepUpMiddleware
from secmw.auth import AuthChain
from secmw.auth.throttle import AsyncFailedAuthThrottle
from secmw.core.principal import Principal
from tests.integration.apps.throttle_common import SlowBasic, secret_for


async def ok(scope: Any, receive: Any, send: Any) -> None:
    """200, empty."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def asecret_for(principal: Principal) -> str:
    """The counted lookup, off the event loop."""
    return await asyncio.to_thread(secret_for, principal)


_settings = SecuritySettings()
_basic = AuthenticationMiddleware(
    ok,
    chain=AuthChain([SlowBasic("basic")]),
    throttle=AsyncFailedAuthThrottle(settings=_settings),
)
_stepup = AuthenticationMiddleware(
    StepUpMiddleware(ok, secret_for=asecret_for, settings=_settings),
    chain=AuthChain([SlowBasic(None)]),
)


async def app(scope: Any, receive: Any, send: Any) -> None:
    """``/stepup`` to the step-up app, the rest to the Basic one."""
    if scope["type"] == "lifespan":
        return
    target = _stepup if scope["path"].startswith("/stepup") else _basic
    await target(scope, receive, send)
