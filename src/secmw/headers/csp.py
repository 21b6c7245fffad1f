"""A small Content-Security-Policy builder: directives checked once, nonces and hashes."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Mapping, Sequence

from secmw.errors import ConfigurationError

# CSP Level 3 §6 and the directives defined by Trusted Types, Mixed Content and Fenced Frames.
# fmt: off
FETCH_DIRECTIVES = frozenset((
    "child-src", "connect-src", "default-src", "fenced-frame-src", "font-src", "frame-src",
    "img-src", "manifest-src", "media-src", "object-src", "script-src", "script-src-attr",
    "script-src-elem", "style-src", "style-src-attr", "style-src-elem", "worker-src",
))
# fmt: on
_SOURCE_LIST_DIRECTIVES = FETCH_DIRECTIVES | {"base-uri", "form-action", "frame-ancestors"}
_VALUELESS_DIRECTIVES = frozenset({"upgrade-insecure-requests", "block-all-mixed-content"})
KNOWN_DIRECTIVES = (
    _SOURCE_LIST_DIRECTIVES
    | _VALUELESS_DIRECTIVES
    | {"sandbox", "trusted-types", "require-trusted-types-for", "webrtc"}
)
"""Directive names the builder accepts; anything else is a typo that would weaken the policy."""

NONCE = "'nonce'"
"""Placeholder in a source list: replaced by ``'nonce-<fresh value>'`` on every request."""

# fmt: off
_KEYWORDS = frozenset((
    "'self'", "'none'", "'unsafe-inline'", "'unsafe-eval'", "'strict-dynamic'",
    "'unsafe-hashes'", "'report-sample'", "'unsafe-allow-redirects'", "'wasm-unsafe-eval'",
    "'inline-speculation-rules'",
))
# fmt: on
_HASH_SOURCE = re.compile(r"'sha(256|384|512)-[A-Za-z0-9+/_-]+={0,2}'")
_SOURCE_CHARS = re.compile(r"[!-~]+")  # printable ASCII, no space (CSP3 §2.3.1 grammar)
_PLACEHOLDER = "\x00"

SourceList = Sequence[str] | str | bool


def csp_hash(text: str | bytes, algorithm: str = "sha256") -> str:
    """The CSP hash source (``'sha256-...'``) allowing an inline script or style with this text.

    The text is what sits between ``<script>`` and ``</script>``, whitespace included (CSP3 §8.4).
    """
    data = text.encode() if isinstance(text, str) else text
    digest = hashlib.new(algorithm, data).digest()
    return f"'{algorithm}-{base64.b64encode(digest).decode()}'"


def make_nonce() -> str:
    """A fresh CSP nonce: 128 random bits, base64url (CSP3 §7.2 asks for at least 128)."""
    return secrets.token_urlsafe(16)


def check_value(value: str, setting: str) -> str:
    # A CR or LF would start a new header line (response splitting); any control character or
    # non-ASCII byte is refused too, as RFC 9110 §5.5 field values should be visible ASCII.
    if not all(" " <= char <= "~" for char in value):
        raise ConfigurationError(f"{setting}: control or non-ASCII character in a header value")
    return value


def _check_source(directive: str, source: str, setting: str) -> None:
    if not _SOURCE_CHARS.fullmatch(source) or ";" in source or "," in source:
        raise ConfigurationError(
            f"{setting}: {directive}: {source!r} is not a single source expression"
        )
    if directive not in _SOURCE_LIST_DIRECTIVES:
        return
    lowered = source.lower()
    if lowered.startswith("'nonce-"):
        raise ConfigurationError(
            f"{setting}: {directive}: a fixed nonce is no protection; write {NONCE} for a fresh "
            "nonce per request"
        )
    if source == NONCE:
        if directive not in FETCH_DIRECTIVES:
            raise ConfigurationError(
                f"{setting}: {directive}: nonces only apply to fetch directives"
            )
    elif source.startswith("'") and lowered not in _KEYWORDS and not _HASH_SOURCE.fullmatch(source):
        raise ConfigurationError(f"{setting}: {directive}: unknown keyword {source}")
    elif f"'{lowered}'" in _KEYWORDS:
        raise ConfigurationError(
            f"{setting}: {directive}: {source} is a host name; did you mean '{lowered}'?"
        )


class ContentSecurityPolicy:
    """A Content-Security-Policy built from data: ``{directive: [sources]}``.

    Directive names are checked against :data:`KNOWN_DIRECTIVES` and source expressions against
    the CSP3 grammar, so a typo fails at startup instead of silently weakening the policy. Write
    :data:`NONCE` (``"'nonce'"``) in a source list to get a fresh ``'nonce-...'`` per request.

    Args:
        directives: Directive name to its sources: a list, a space-separated string, or ``True``
            for valueless directives such as ``upgrade-insecure-requests``.
        report_only: Send as ``Content-Security-Policy-Report-Only`` (report, do not block).
        report_uri: Where browsers POST violation reports (``report-uri``, CSP2).
        report_to: Reporting API endpoint URL; adds ``report-to csp-endpoint`` and a
            ``Reporting-Endpoints`` header naming it (CSP3, Reporting API).
        setting: The setting these came from, named in errors.

    Raises:
        ConfigurationError: unknown directive, malformed source, control character.
    """

    __slots__ = ("_parts", "directives", "header_name", "report_to", "report_uri", "uses_nonce")

    def __init__(
        self,
        directives: Mapping[str, SourceList],
        *,
        report_only: bool = False,
        report_uri: str | None = None,
        report_to: str | None = None,
        setting: str = "csp",
    ) -> None:
        self.directives = _normalize_directives(directives, setting)
        self.header_name = (
            "Content-Security-Policy-Report-Only" if report_only else "Content-Security-Policy"
        )
        self.report_uri = check_url(report_uri, f"{setting} report_uri")
        self.report_to = check_url(report_to, f"{setting} report_to")
        self.uses_nonce = any(NONCE in sources for sources in self.directives.values())
        text = self.render(_PLACEHOLDER) if self.uses_nonce else self.render()
        self._parts = tuple(part.encode("ascii") for part in text.split(_PLACEHOLDER))

    def render(self, nonce: str | None = None) -> str:
        """The header value; ``nonce`` replaces the :data:`NONCE` placeholder."""
        items = []
        for name, sources in self.directives.items():
            if nonce is not None:
                sources = tuple(f"'nonce-{nonce}'" if s == NONCE else s for s in sources)
            elif NONCE in sources:
                sources = tuple(s for s in sources if s != NONCE) or ("'none'",)
            items.append(" ".join((name, *sources)))
        if self.report_uri:
            items.append(f"report-uri {self.report_uri}")
        if self.report_to:
            items.append("report-to csp-endpoint")
        return "; ".join(items)

    def encode(self, nonce: str | None = None) -> bytes:
        """The header value as bytes, from parts encoded once (the per-request cost is a join)."""
        if not self.uses_nonce:
            return self._parts[0]
        if nonce is None:
            return self.render().encode("ascii")
        return nonce.encode("ascii").join(self._parts)


def _normalize_directives(
    directives: Mapping[str, SourceList], setting: str
) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for raw_name, value in directives.items():
        name = raw_name.strip().lower()
        if name in ("report-uri", "report-to"):
            raise ConfigurationError(
                f"{setting}: set {name} with the report_uri / report_to settings"
            )
        if name not in KNOWN_DIRECTIVES:
            raise ConfigurationError(f"{setting}: unknown CSP directive {raw_name!r}")
        if value is False:
            continue
        if value is True:
            sources: tuple[str, ...] = ()
        elif isinstance(value, str):
            sources = tuple(value.split())
        else:
            sources = tuple(value)
        if name in _VALUELESS_DIRECTIVES and sources:
            raise ConfigurationError(f"{setting}: {name} takes no value (write true)")
        if name in _SOURCE_LIST_DIRECTIVES:
            if not sources:
                raise ConfigurationError(f"{setting}: {name}: empty source list (write 'none')")
            if "'none'" in (s.lower() for s in sources) and len(sources) > 1:
                raise ConfigurationError(f"{setting}: {name}: 'none' must stand alone")
        for source in sources:
            _check_source(name, source, setting)
        out[name] = sources
    return out


def check_url(url: str | None, setting: str) -> str | None:
    if not url:
        return None
    check_value(url, setting)
    if any(char in url for char in ' ;,"'):
        raise ConfigurationError(f"{setting}: not a URL")
    return url
