"""Shared pieces of the WSGI adapters (PEP 3333)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from http import HTTPStatus
from types import TracebackType
from typing import Any, Protocol

from secmw.core.deny import Deny

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]
Headers = list[tuple[str, str]]


class StartResponse(Protocol):
    def __call__(
        self, status: str, headers: Headers, exc_info: ExcInfo | None = None, /
    ) -> Callable[[bytes], object]: ...


WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

PRINCIPAL_KEY = "secmw.principal"


def status_line(status: int) -> str:
    """``401 Unauthorized`` from ``401``."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Error"


def respond_deny(start_response: StartResponse, deny: Deny, method: str) -> list[bytes]:
    """Start the problem response and return its body (none for ``HEAD``), without calling the
    app."""
    headers, body = deny.rendered(method)
    start_response(status_line(deny.status), headers)
    return [body]
