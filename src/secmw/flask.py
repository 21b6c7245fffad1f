"""Flask: the ``SecMW`` extension, the request's principal and a ``require_scopes`` decorator.

Every 401 and 403 a Flask app with the extension returns is one problem+json format: those of
the stack, those of :func:`require_scopes`, and Flask's own (``abort(401)``, ``abort(403)``),
rendered by the error handlers the extension registers. The stack adds the challenges to every
401 that has none; a missing scope's 403 carries ``WWW-Authenticate: Bearer
error="insufficient_scope"`` (RFC 6750 section 3.1).
"""

from __future__ import annotations

import atexit
import functools
import logging
import weakref
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

from flask import Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException

from secmw.auth.scopes import insufficient_scope
from secmw.config.mapping import settings_from_mapping
from secmw.config.settings import SecuritySettings
from secmw.core.deny import Deny
from secmw.core.principal import Principal
from secmw.errors import ConfigurationError, MiddlewareNotInstalled
from secmw.wsgi.driver import principal_of
from secmw.wsgi.stack import SecurityStack

F = TypeVar("F", bound=Callable[..., Any])
EXTENSION = "secmw"
_MARKER = "secmw.flask.stack"
logger = logging.getLogger("secmw.flask")


def get_principal() -> Principal:
    """The principal secmw's WSGI middleware attached to the current Flask request."""
    principal = principal_of(request.environ)
    if principal is None:
        raise MiddlewareNotInstalled(
            "no principal: use secmw.flask.SecMW(app), or wrap app.wsgi_app with"
            " secmw.wsgi.SecurityStack (or AuthenticationMiddleware)"
        )
    return principal


def deny_response(deny: Deny) -> Response:
    """A Flask response for a Deny (problem+json, its headers)."""
    body = deny.body()
    return Response(body, status=deny.status, headers=deny.response_headers(len(body)))


def _realm() -> str | None:
    """The realm of the insufficient_scope challenge: None when the installed stack has no
    bearer scheme (the challenge belongs to RFC 6750); ``api`` without the extension."""
    state = current_app.extensions.get(EXTENSION)
    if not isinstance(state, _Installed):
        return "api"
    auth = state.stack.layers.get("auth")
    return auth.chain.bearer_realm if auth is not None else None


def require_scopes(*scopes: str) -> Callable[[F], F]:
    """Decorate a view: 401 for the anonymous principal, 403 ``insufficient_scope`` (with the
    RFC 6750 challenge) when a scope is missing.

    The 401 carries the challenges of the authentication middleware (it adds them to every 401).
    """

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            principal = get_principal()
            if not principal.is_authenticated:
                return deny_response(
                    Deny(401, "authentication required", "authentication_required")
                )
            if not principal.has_scopes(*scopes):
                realm = _realm()
                return deny_response(insufficient_scope(scopes, realm, challenge=realm is not None))
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorate


_FLASK_REFUSALS = {
    401: Deny(401, "authentication required", "authentication_required"),
    403: Deny(403, "access to this resource is forbidden", "forbidden"),
}


def problem_for(error: HTTPException) -> Response:
    """Flask's own 401 or 403 (``abort(401)``) as problem+json; its description is not echoed
    (it may hold what a view put there)."""
    deny = _FLASK_REFUSALS.get(error.code or 0) or Deny(error.code or 500, "error")
    response = deny_response(deny)
    if error.response is not None:  # a challenge the view gave ``abort`` is kept
        for value in error.response.headers.getlist("WWW-Authenticate"):
            response.headers.add("WWW-Authenticate", value)
    return response


class _Installed:
    """What the extension keeps on ``app.extensions["secmw"]``."""

    def __init__(self, stack: SecurityStack) -> None:
        self.stack = stack


class _Marking:
    """The WSGI entry the extension installs: marks the environ, then runs the stack (so a
    request that reaches Flask without it, ``wsgi_app`` replaced, is recognized)."""

    def __init__(self, stack: SecurityStack) -> None:
        self.stack = stack
        self.app = stack  # for route-table and stack discovery down the ``.app`` chain

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        environ[_MARKER] = id(self.stack)
        return self.stack(environ, start_response)


class SecMW:
    """The Flask extension: ``SecMW(app)`` or ``SecMW().init_app(app)``.

    ``init_app`` reads the settings keys of ``app.config`` over the environment (the app's
    keys win; see :func:`secmw.config.mapping.settings_from_mapping`), wraps ``app.wsgi_app``
    with :class:`secmw.wsgi.SecurityStack` and registers the problem+json handlers of Flask's
    401 and 403. The ``secmw.route`` marks of the app's routes are compiled at the first
    request (or by :meth:`read_routes`). The stack's Redis clients live as long as the process
    and are closed at its exit (``atexit``): closing them at app-context teardown would close
    them after every request.

    Args:
        app: The app, or None to call :meth:`init_app` later (one extension, many apps).
        settings: Settings to use instead of ``app.config`` and the environment.
        secret_for: TOTP secret lookup; enables the step-up layer.
        revocation: The JWT ``jti`` denylist.

    Raises:
        ConfigurationError: ``init_app`` called twice for one app.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        settings: SecuritySettings | None = None,
        secret_for: Callable[[Principal], Any] | None = None,
        revocation: Any = None,
    ) -> None:
        self._settings = settings
        self._secret_for = secret_for
        self._revocation = revocation
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Install the stack on ``app`` (once per app)."""
        if EXTENSION in app.extensions:
            raise ConfigurationError(
                f"secmw is already installed on Flask app {app.name!r}: call init_app once"
            )
        settings = self._settings or settings_from_mapping(app.config)
        stack = SecurityStack(
            app.wsgi_app,
            settings=settings,
            secret_for=self._secret_for,
            revocation=self._revocation,
        )
        app.wsgi_app = _Marking(stack)  # type: ignore[method-assign]
        app.extensions[EXTENSION] = _Installed(stack)
        app.register_error_handler(401, problem_for)
        app.register_error_handler(403, problem_for)
        app.before_request(_refuse_bypass)
        atexit.register(_close_later(stack))

    @staticmethod
    def stack(app: Flask) -> SecurityStack:
        """The stack installed on ``app``."""
        state = app.extensions.get(EXTENSION)
        if not isinstance(state, _Installed):
            raise MiddlewareNotInstalled(f"secmw is not installed on Flask app {app.name!r}")
        return state.stack

    def read_routes(self, app: Flask) -> None:
        """Compile the route marks now (after the last route is added) instead of at the first
        request, so a conflict stops the app at start.

        Raises:
            ConfigurationError: see :func:`secmw.route.compile.apply_routes`.
        """
        self.stack(app).read_routes()


def _refuse_bypass() -> Response | None:
    """Fail closed when a request reached the views without the extension's stack (something
    replaced ``app.wsgi_app`` instead of wrapping it)."""
    state = current_app.extensions.get(EXTENSION)
    if isinstance(state, _Installed) and request.environ.get(_MARKER) != id(state.stack):
        logger.error(
            "Flask app %r: a request reached the views without secmw's stack; app.wsgi_app"
            " was replaced after SecMW.init_app (wrap it instead: app.wsgi_app = X(app.wsgi_app))",
            current_app.name,
        )
        return deny_response(
            Deny(503, "the security layer is not in place", "security_layer_missing")
        )
    return None


def _close_later(stack: SecurityStack) -> Callable[[], None]:
    ref = weakref.ref(stack)

    def close() -> None:
        alive = ref()
        if alive is not None:
            alive.close()

    return close
