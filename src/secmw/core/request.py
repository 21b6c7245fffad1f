"""The request view: one parse of an ASGI scope or WSGI environ, shared by every layer.

Header names are lower-cased; values are decoded as latin-1 (RFC 9110 §5.5: field values are
octets, and latin-1 maps each byte to one character, so nothing is lost or rejected here).
Cookies and the query string are parsed lazily, only when a layer asks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from secmw.core.deny import Deny
from secmw.core.fields import Cookies, Headers, parse_cookies

ASGI_KEY = "secmw.request"
WSGI_KEY = "secmw.request"
DOT_SEGMENTS = Deny(400, "path contains '.' or '..' segments", "invalid_path")
"""Routers do not resolve dot segments but rules would, so ``/admin/x/../..`` could reach an
``/admin`` route while matching the rules of ``/``. Browsers and HTTP clients resolve them before
sending (RFC 3986 §5.2.4), so every secmw layer refuses such a path instead of guessing."""


def has_dot_segments(path: str) -> bool:
    """True when a ``/``-separated segment of ``path`` is ``.`` or ``..``."""
    if "/." not in path:
        return False
    return any(segment in (".", "..") for segment in path.split("/"))


def route_path(scope: Mapping[str, Any]) -> str:
    """The path the router routes: ``scope["path"]`` less ``scope["root_path"]``.

    uvicorn's ``--root-path`` and Starlette's ``Mount`` put the prefix into ``path`` and the
    router strips it again (starlette's ``get_route_path``); rules must match what the router
    matches, or ``/internal/*`` never applies under ``/api``. The prefix is removed only when it
    ends at a segment boundary: a root path that is not a prefix of the path (a server that left
    the prefix out, FastAPI's ``root_path=``) or that ends inside a segment (``/api`` in
    ``/apix``) leaves the whole path, which is also what the router routes, so no shorter path
    is ever matched than the one routed. Both are decoded (the ASGI ``path``, never
    ``raw_path``), as the router compares them. Only ASGI needs this: a WSGI server puts the
    prefix in ``SCRIPT_NAME`` and leaves ``PATH_INFO`` as routed.
    """
    path: str = scope.get("path") or "/"
    root: str = scope.get("root_path") or ""
    if not root or not path.startswith(root):
        return path
    rest = path[len(root) :]
    if not rest:
        return "/"  # the mount point itself: the router's "" is the root of the mounted app
    return rest if rest[0] == "/" else path


def environ_path(environ: Mapping[str, Any]) -> str:
    """The path the router routes on WSGI: ``PATH_INFO`` (``SCRIPT_NAME`` is not in it),
    decoded as ASGI's ``path`` is."""
    path: str = environ.get("PATH_INFO", "") or "/"
    if not path.isascii():
        # PEP 3333 hands the path over as latin-1; undo that so rules see the same text as ASGI.
        path = path.encode("latin-1").decode("utf-8", "replace")
    return path


def needs_normalizing(path: str) -> bool:
    """Whether :func:`normalize_path` would change ``path``: repeated slashes, dot segments, or
    no leading slash (a WSGI ``PATH_INFO`` may lack it). The view builders inline this test."""
    return "//" in path or "/." in path or not path.startswith("/")


def normalize_path(path: str) -> str:
    """Collapse repeated slashes and resolve ``.`` and ``..`` segments (RFC 3986 §5.2.4).

    Rules (IP, rate limits, per-path headers) match this form, so ``//admin``, ``/./admin`` and
    ``/x/../admin`` cannot dodge a rule for ``/admin``. A trailing slash is kept: routers treat it
    as a different route. The result always starts with ``/``.
    """
    if not needs_normalizing(path):
        return path  # the common case costs one scan
    out: list[str] = []
    segments = path.split("/")
    for segment in segments:
        if segment in ("", "."):
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    trailing = path.endswith("/") or segments[-1] in (".", "..")
    joined = "/" + "/".join(out)
    return joined + "/" if trailing and out else joined


class RequestView:
    """What every layer needs to know about a request, parsed once.

    Attributes:
        method: Upper-case HTTP method (``"GET"``; ``"WEBSOCKET"`` for a websocket handshake).
        path: The decoded path the router routes: ``route_path(scope)`` on ASGI (without the
            root path), ``PATH_INFO`` on WSGI (without ``SCRIPT_NAME``).
        normalized_path: ``normalize_path(path)``, the form rules match.
        query_string: The raw query string (bytes, undecoded).
        headers: Case-insensitive multi-valued headers.
        scheme: ``"http"``, ``"https"``, ``"ws"`` or ``"wss"``.
        peer: The address of the TCP peer, or None when the server gave none.
        client: The client address every layer agrees on (the IP layer may resolve it from
            trusted proxy headers); starts as ``peer``.
        state: Per-request scratch space shared by the layers (principal, csp nonce...).
        rejection: A Deny every layer answers with before anything else (a path with dot
            segments), or None.
        fielders: The gates whose fields the response start gets, innermost first; set by the
            drivers (the outermost one merges them, so composed middlewares wrap ``send`` once),
            None until a driver with fields to add runs.
    """

    __slots__ = (
        "_cookies",
        "_environ",
        "_headers",
        "_query",
        "_raw_headers",
        "client",
        "fielders",
        "method",
        "normalized_path",
        "path",
        "peer",
        "query_string",
        "rejection",
        "scheme",
        "state",
    )

    method: str
    path: str
    normalized_path: str
    query_string: bytes
    scheme: str
    peer: str | None
    client: str | None
    state: dict[str, Any]
    rejection: Deny | None
    fielders: tuple[Any, ...] | None
    _headers: Headers | None
    _raw_headers: Iterable[tuple[bytes, bytes]]
    _environ: Mapping[str, Any] | None
    _cookies: Cookies | None
    _query: dict[str, list[str]] | None

    def __init__(
        self,
        method: str,
        path: str,
        query_string: bytes = b"",
        scheme: str = "http",
        peer: str | None = None,
        raw_headers: Iterable[tuple[bytes, bytes]] = (),
        environ: Mapping[str, Any] | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Headers come parsed (``headers``), or as an ASGI scope's raw pairs (``raw_headers``),
        or from a WSGI ``environ``, decoded on first read; none of them: no headers."""
        _fill(self, method, path, query_string, scheme, peer, raw_headers, environ, headers)

    @property
    def headers(self) -> Headers:
        """Case-insensitive multi-valued headers, decoded when first read."""
        headers = self._headers
        if headers is None:
            environ = self._environ
            if environ is None:
                headers = Headers.from_raw(self._raw_headers)
            else:
                headers = _environ_headers(environ)
            self._headers = headers
        return headers

    def header_values(self, name: str) -> list[str]:
        """``headers.getlist(name)``, without decoding every header when none has been read yet
        (a scan of the raw pairs)."""
        if self._headers is not None:
            return self._headers.getlist(name)
        if self._environ is not None:
            return _environ_values(self._environ, name)
        wanted = name.lower().encode("latin-1")
        return [
            value.decode("latin-1") for key, value in self._raw_headers if key.lower() == wanted
        ]

    def single_raw(self, name: bytes) -> bytes | None:
        """The octets of the one field named ``name`` (lower-case), None when the request has no
        such field or more than one: a shortcut for callers that fall back to
        :meth:`header_values` (which decodes and tells the cases apart) on None."""
        if self._headers is not None or self._environ is not None:
            lines = self.header_values(name.decode("latin-1"))
            return lines[0].encode("latin-1") if len(lines) == 1 else None
        found = None
        size = len(name)
        for key, value in self._raw_headers:
            if key == name or (len(key) == size and key.lower() == name):
                if found is not None:
                    return None
                found = value
        return found

    @property
    def is_secure(self) -> bool:
        """True for https and wss."""
        return self.scheme in ("https", "wss")

    @property
    def is_cors_preflight(self) -> bool:
        """An ``OPTIONS`` request with ``Origin`` and ``Access-Control-Request-Method`` (Fetch
        standard §3.2.2): browsers send these without credentials, so layers let them through to
        the app's CORS handling."""
        return (
            self.method == "OPTIONS"
            and "origin" in self.headers
            and "access-control-request-method" in self.headers
        )

    @property
    def cookies(self) -> Cookies:
        """Cookies from every ``Cookie`` header, parsed once in linear time (``parse_cookies``)."""
        if self._cookies is None:
            self._cookies = parse_cookies(self.headers.getlist("cookie"))
        return self._cookies

    def query_params(self, name: str) -> list[str]:
        """Every value of query parameter ``name`` (percent-decoded, blank values kept)."""
        if self._query is None:
            parsed: dict[str, list[str]] = {}
            text = self.query_string.decode("latin-1")
            for key, value in parse_qsl(text, keep_blank_values=True, encoding="latin-1"):
                parsed.setdefault(key, []).append(value)
            self._query = parsed
        return list(self._query.get(name, ()))

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def from_scope(cls, scope: MutableMapping[str, Any]) -> RequestView:
        """The view for an ASGI ``http`` or ``websocket`` scope, built once, kept in the scope.

        The headers are decoded on first read, so a layer that never reads them pays nothing.
        """
        view = scope.get(ASGI_KEY)
        if isinstance(view, RequestView):
            return view
        # The slots are set here rather than through _fill: one view per request and per
        # scope, so the call and the route_path call (no root path: the path as it is) are
        # worth saving.
        view = _new(cls)
        if scope["type"] == "websocket":
            view.method, view.scheme = "WEBSOCKET", scope.get("scheme", "ws")
        else:
            view.method = scope.get("method", "GET").upper()
            view.scheme = scope.get("scheme", "http")
        path = route_path(scope) if scope.get("root_path") else scope.get("path") or "/"
        view.path = path
        if "//" in path or "/." in path or path[0] != "/":
            view.normalized_path, view.rejection = _unusual_path(path)
        else:  # the common case: nothing to normalize
            view.normalized_path, view.rejection = path, None
        view.query_string = scope.get("query_string", b"")
        view._raw_headers = scope["headers"]
        view._headers = view._environ = view._cookies = view._query = view.fielders = None
        client = scope.get("client")
        view.peer = view.client = client[0] if client else None
        view.state = {}
        scope[ASGI_KEY] = view
        return view

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, Any]) -> RequestView:
        """The view for a WSGI environ, built once and kept in the environ (headers are read
        from the environ when a layer asks)."""
        view = environ.get(WSGI_KEY)
        if isinstance(view, RequestView):
            return view
        path = environ_path(environ)
        view = _new(cls)
        _fill(
            view,
            # werkzeug upper-cases the method before routing; rules must see what the router sees
            environ.get("REQUEST_METHOD", "GET").upper(),
            path,
            environ.get("QUERY_STRING", "").encode("latin-1"),
            environ.get("wsgi.url_scheme", "http"),
            environ.get("REMOTE_ADDR") or None,
            (),
            environ,
            None,
        )
        environ[WSGI_KEY] = view
        return view


_new = object.__new__


def _fill(
    view: RequestView,
    method: str,
    path: str,
    query_string: bytes,
    scheme: str,
    peer: str | None,
    raw_headers: Iterable[tuple[bytes, bytes]],
    environ: Mapping[str, Any] | None,
    headers: Headers | None,
) -> None:
    """Set every slot of ``view``: the body of ``RequestView.__init__``, which the per-request
    constructors call directly on a bare instance (calling a class with keyword defaults is the
    costlier path, and they build one view per request)."""
    view.method = method
    view.scheme = scheme
    view.path = path
    if "//" in path or "/." in path or not path.startswith("/"):
        view.normalized_path, view.rejection = _unusual_path(path)
    else:  # the common case: nothing to normalize
        view.normalized_path, view.rejection = path, None
    view.query_string = query_string
    view._headers = headers
    view._raw_headers = raw_headers
    view._environ = environ
    view.peer = view.client = peer
    view.state = {}
    view._cookies = None
    view._query = None
    view.fielders = None


def _unusual_path(path: str) -> tuple[str, Deny | None]:
    """The normalized form and the rejection of a path with ``//``, ``/.`` or no leading
    ``/`` (any other path is its own normalized form, with no rejection)."""
    return normalize_path(path), DOT_SEGMENTS if has_dot_segments(path) else None


def _environ_headers(environ: Mapping[str, Any]) -> Headers:
    pairs = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            pairs.append((key[5:].replace("_", "-"), value))
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            pairs.append((key.replace("_", "-"), value))
    return Headers(pairs)


def _environ_values(environ: Mapping[str, Any], name: str) -> list[str]:
    """A header's value from a WSGI environ (servers join repeated fields into one)."""
    key = name.upper().replace("-", "_")
    if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        value = environ.get(key)
        return [value] if value else []
    value = environ.get("HTTP_" + key)
    return [] if value is None else [value]
