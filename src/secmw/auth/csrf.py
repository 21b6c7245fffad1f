"""Cross-site request refusal for cookie-authenticated requests (a CSRF defence).

Browsers attach cookies to cross-site requests, so a request authenticated by a cookie proves
nothing about which page sent it. For unsafe methods (RFC 9110 §9.2.1) and websocket handshakes,
secmw asks the browser where the request came from:

1. ``Sec-Fetch-Site`` (Fetch Metadata): ``same-origin`` or ``none`` (typed by the user) passes,
   ``same-site`` and ``cross-site`` do not, since a sibling subdomain is another party;
2. else ``Origin`` (RFC 6454): its host must be the request's ``Host`` (the scheme is not
   compared, so a TLS-terminating proxy does not break it);
3. an ``Origin`` listed in the trusted origins passes either way;
4. a request with neither header is refused: every current browser sends ``Origin`` on unsafe
   requests, and non-browser clients can send one.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from secmw.core.request import RequestView
from secmw.errors import ConfigurationError

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})  # RFC 9110 §9.2.1


def normalize_origins(origins: Iterable[str], setting: str) -> frozenset[str]:
    """``scheme://host[:port]`` origins, lower-cased; ConfigurationError naming ``setting``."""
    result = set()
    for origin in origins:
        parts = urlsplit(origin.strip().lower())
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ConfigurationError(f"{setting}: {origin!r} is not an origin (scheme://host)")
        result.add(f"{parts.scheme}://{parts.netloc}")
    return frozenset(result)


def cross_site_reason(request: RequestView, trusted_origins: frozenset[str]) -> str | None:
    """Why an unsafe cookie-authenticated request looks cross-site, or None when it does not.

    Fetch metadata first (``Sec-Fetch-Site``), then ``Origin`` against the ``Host`` header; an
    origin listed in ``trusted_origins`` passes either way.
    """
    origin = request.headers.get("origin")
    if origin is not None and origin.lower().rstrip("/") in trusted_origins:
        return None
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return None if site.lower() in ("same-origin", "none") else "cross-site request refused"
    if origin is None:
        return "request without Origin refused"
    host = request.headers.get("host")
    parts = urlsplit(origin.lower())
    if origin == "null" or not host or parts.netloc != host.lower():
        return "cross-origin request refused"
    return None


__all__ = ["SAFE_METHODS", "cross_site_reason", "normalize_origins"]
