"""WSGI twin of :mod:`tests.integration.apps.throttle_asgi`, for gunicorn with threads."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from secmw import SecuritySettings
from secmw.auth import AuthChain
from secmw.auth.throttle import FailedAuthThrottle
from secmw.wsgi.auth import AuthenticationMiddleware
from secmw.wsgi.stepup import StepUpMiddleware
from tests.integration.apps.throttle_common import SlowBasic, secret_for


def ok(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """200, empty."""
    start_response("200 OK", [("Content-Length", "0")])
    return [b""]


_settings = SecuritySettings()
_basic = AuthenticationMiddleware(
    ok, chain=AuthChain([SlowBasic("basic")]), throttle=FailedAuthThrottle(settings=_settings)
)
_stepup = AuthenticationMiddleware(
    StepUpMiddleware(ok, secret_for=secret_for, settings=_settings),
    chain=AuthChain([SlowBasic(None)]),
)


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """``/stepup`` to the step-up app, the rest to the Basic one."""
    target = _stepup if environ.get("PATH_INFO", "").startswith("/stepup") else _basic
    return target(environ, start_response)
