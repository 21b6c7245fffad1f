"""One header policy, validated and encoded once: the header blocks a response gets."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, AnyStr

from secmw.core.deny import Deny
from secmw.core.request import RequestView
from secmw.headers.content import is_document
from secmw.headers.csp import ContentSecurityPolicy

_Triple = tuple[AnyStr, AnyStr, AnyStr]  # (lower-case name, name as sent, value)
INTERNAL_ERROR = Deny(500, "the server could not complete the request", "internal_error")
"""What the adapters answer, with the headers, when the app raised before responding."""


class _Block:
    """One encoding of a policy: ``str`` with canonical casing (WSGI) or lower-case ``bytes``."""

    __slots__ = (
        "added",
        "api",
        "by_type",
        "cache",
        "cache_always",
        "content_type",
        "csp_name",
        "either_watched",
        "multi",
        "plain",
        "plain_pairs",
        "replace",
        "scanned",
        "secure",
        "secure_pairs",
        "singletons",
        "watched",
    )

    def __init__(self, policy: HeaderPolicy, encode: Any, *, lower: bool) -> None:
        def field(name: str, value: str) -> Any:
            return (encode(name.lower()), encode(name.lower() if lower else name), encode(value))

        fixed = [field(name, value) for name, value in policy.fixed]
        hsts = [field("Strict-Transport-Security", policy.hsts)] if policy.hsts else []
        self.secure = tuple(hsts + fixed)
        self.plain = tuple((hsts if policy.hsts_on_http else []) + fixed)
        csp = policy.csp
        self.csp_name = field(csp.header_name if csp else "", "")[:2]
        self.cache = field("Cache-Control", policy.cache_control) if policy.cache_control else None
        self.cache_always = policy.cache_always
        self.content_type = encode("content-type")
        self.api: _Block | None = None
        """The same encoding of the policy's API set; None: this block serves every response."""
        managed = {encode(name.lower()) for name in policy.managed}
        self.multi = frozenset(
            encode(n) for n in ("content-security-policy", "content-security-policy-report-only")
        )
        self.singletons = frozenset(managed - self.multi)
        replace = set(managed) if policy.override else set()
        server = encode("server")
        if policy.server is not None:
            replace.add(server)
            if policy.server:
                self.secure += (field("Server", policy.server),)
                self.plain += (field("Server", policy.server),)
        self.replace = frozenset(replace)
        self.watched = frozenset(managed | replace | {encode("cache-control")})
        self.either_watched = self.watched
        """The fields either set manages (with the API set attached)."""
        self.scanned = self.watched
        """What :meth:`scan` looks for: the fields either set manages and ``Content-Type``."""
        self.by_type: dict[Any, _Block] = {}
        """The block chosen for each ``Content-Type`` value seen (None: no such field)."""
        self.secure_pairs = tuple((name, value) for _, name, value in self.secure)
        self.plain_pairs = tuple((name, value) for _, name, value in self.plain)
        cached = (self.cache[1:],) if self.cache else ()
        anonymous = cached if self.cache_always else ()
        # What a response that set none of the watched fields gets, by (secure, authenticated):
        # ``added[secure + 2 * authenticated]``.
        self.added = (
            self.plain_pairs + anonymous,
            self.secure_pairs + anonymous,
            self.plain_pairs + cached,
            self.secure_pairs + cached,
        )

    def scan(self, headers: Sequence[tuple[Any, Any]]) -> tuple[_Block, bool]:
        """In one pass over a response's fields: the block for it (the API set's unless the
        response may be a document, :func:`~secmw.headers.content.is_document`) and whether the
        app set a field that block manages (else its fields are simply appended)."""
        api = self.api
        if api is None:
            watched = self.watched
            for name, _ in headers:
                if name.lower() in watched:
                    return self, True
            return self, False
        content_type = self.content_type
        watched = self.scanned
        found: Any = None
        managed = False
        for name, value in headers:
            key = name.lower()
            if key in watched:
                if key != content_type:
                    managed = True
                elif found is None:
                    found = value
                else:
                    found = _REPEATED
        block = self.by_type.get(found)
        if block is None:
            block = self._classify(found, headers)
        return block, managed and any(name.lower() in block.watched for name, _ in headers)

    def _classify(self, found: Any, headers: Sequence[tuple[Any, Any]]) -> _Block:
        """The block for a ``Content-Type`` value not seen yet (remembered, within a bound), or
        for several ``Content-Type`` fields (never remembered)."""
        if found is _REPEATED:
            types = [value for name, value in headers if name.lower() == self.content_type]
        else:
            types = [] if found is None else [found]
        block = self if is_document(types) or self.api is None else self.api
        if found is not _REPEATED and len(self.by_type) < _BY_TYPE_MAX:
            self.by_type[found] = block
        return block


_REPEATED = object()
"""``_Block.scan``: the response has several ``Content-Type`` fields."""
_BY_TYPE_MAX = 64
"""How many ``Content-Type`` values a block remembers its choice for (apps send few)."""


class HeaderPolicy:
    """The headers for one class of responses, validated and encoded once.

    Build it with :func:`build_policy`; :class:`SecurityHeaders` picks one per request.
    """

    __slots__ = (
        "api",
        "bytes_block",
        "cache_always",
        "cache_control",
        "csp",
        "fixed",
        "hsts",
        "hsts_on_http",
        "managed",
        "nonced",
        "override",
        "server",
        "str_block",
    )

    def __init__(
        self,
        fixed: Sequence[tuple[str, str]],
        *,
        hsts: str | None = None,
        hsts_on_http: bool = False,
        csp: ContentSecurityPolicy | None = None,
        cache_control: str | None = None,
        cache_always: bool = False,
        server: str | None = None,
        override: bool = False,
        api: HeaderPolicy | None = None,
    ) -> None:
        self.csp = csp
        if csp is not None and not csp.uses_nonce:
            fixed = [*fixed, (csp.header_name, csp.render())]
        if csp is not None and csp.report_to:
            fixed = [*fixed, ("Reporting-Endpoints", f'csp-endpoint="{csp.report_to}"')]
        self.fixed = tuple(fixed)
        self.hsts = hsts
        self.hsts_on_http = hsts_on_http
        self.cache_control = cache_control
        self.cache_always = cache_always
        self.server = server
        self.override = override
        names = [name for name, _ in self.fixed]
        names += ["Strict-Transport-Security"] if hsts else []
        names += [csp.header_name] if csp else []
        self.managed = frozenset(name.lower() for name in names)
        self.nonced = csp is not None and csp.uses_nonce
        self.str_block = _Block(self, str, lower=False)
        self.bytes_block = _Block(self, lambda text: text.encode("latin-1"), lower=True)
        self.api = api
        """The API set, for responses that are no document; None: this policy's fields go on
        every response."""
        if api is not None:
            for block, api_block in (
                (self.str_block, api.str_block),
                (self.bytes_block, api.bytes_block),
            ):
                block.api = api_block
                block.either_watched = block.watched | api_block.watched
                block.scanned = block.either_watched | {block.content_type}

    def apply_bytes(
        self,
        headers: Iterable[tuple[bytes, bytes]],
        secure: bool,
        authenticated: bool,
        queued: Sequence[tuple[bytes, bytes]] = (),
    ) -> list[tuple[bytes, bytes]]:
        """ASGI, for a policy without a nonce: the response headers, then ``queued`` (fields of
        the inner layers), with the policy merged in (what a :class:`HeaderPass` does, without
        making one)."""
        return _apply_plain(self.bytes_block, headers, secure, authenticated, queued)

    def apply_str(
        self, headers: Iterable[tuple[str, str]], secure: bool, authenticated: bool
    ) -> list[tuple[str, str]]:
        """WSGI, for a policy without a nonce: :meth:`apply_bytes` on native strings."""
        return _apply_plain(self.str_block, headers, secure, authenticated, ())

    def headers(
        self,
        *,
        secure: bool = True,
        authenticated: bool = False,
        content_type: str | None = None,
    ) -> list[tuple[str, str]]:
        """Every header this policy adds to a response that set none but ``content_type`` (no
        nonce: a preview)."""
        given = [("Content-Type", content_type)] if content_type is not None else []
        added = HeaderPass(self, None, secure=secure).apply_str(given, authenticated=authenticated)
        return added[len(given) :]


def _apply_plain(
    block: _Block,
    headers: Iterable[tuple[Any, Any]],
    secure: bool,
    authenticated: bool,
    queued: Sequence[tuple[Any, Any]],
) -> list[tuple[Any, Any]]:
    """``headers`` then ``queued``, with the plain policy's ``block`` (or its API set) merged
    in."""
    out = [*headers, *queued]
    block, managed = block.scan(out)
    if managed:
        cache = block.cache
        extra = [cache] if cache is not None and (authenticated or block.cache_always) else []
        return _merge_managed(out, block, secure, extra)
    out += block.added[secure + 2 * authenticated]  # the common case: none of them set
    return out


class HeaderPass:
    """The header pass of one response: merges the policy into the app's headers.

    The app's own security headers are kept (the app knows its pages) unless the policy
    overrides; a managed header the app sent twice, in any casing, leaves once; ``Cache-Control``
    is added only when the app set none (to the responses of the API set, or for authenticated
    requests only). A response that is no document gets the policy's API set, with no nonce.
    """

    __slots__ = ("nonce", "policy", "request", "secure")

    def __init__(
        self,
        policy: HeaderPolicy,
        nonce: str | None,
        *,
        secure: bool,
        request: RequestView | None = None,
    ) -> None:
        self.policy = policy
        self.nonce = nonce
        self.secure = secure
        self.request = request

    def apply(
        self, headers: Iterable[tuple[bytes, bytes]], *, authenticated: bool | None = None
    ) -> list[tuple[bytes, bytes]]:
        """ASGI: the response headers (lower-case bytes names) with the policy merged in."""
        return self._apply(self.policy.bytes_block, list(headers), authenticated, raw=True)

    def apply_str(
        self, headers: Iterable[tuple[str, str]], *, authenticated: bool | None = None
    ) -> list[tuple[str, str]]:
        """WSGI: the response headers (native strings) with the policy merged in."""
        return self._apply(self.policy.str_block, list(headers), authenticated, raw=False)

    def _apply(
        self, block: _Block, headers: list[Any], authenticated: bool | None, *, raw: bool
    ) -> list[Any]:
        chosen, managed = block.scan(headers)
        extra: list[_Triple[Any]] = []
        csp = self.policy.csp
        if chosen is block and csp is not None and csp.uses_nonce:  # the API set has no nonce
            value = csp.encode(self.nonce)
            extra.append((*block.csp_name, value if raw else value.decode("ascii")))
        cache = chosen.cache
        if cache is not None and (chosen.cache_always or self._authenticated(authenticated)):
            extra.append(cache)
        if managed:
            return _merge_managed(headers, chosen, self.secure, extra)
        # The common case: the app set none of these headers.
        headers += chosen.secure_pairs if self.secure else chosen.plain_pairs
        headers += [(name, value) for _, name, value in extra]
        return headers

    def _authenticated(self, given: bool | None) -> bool:
        if given is not None:
            return given
        # Read when the response starts: the authentication layer runs inside this one.
        principal = self.request.state.get("principal") if self.request else None
        return bool(getattr(principal, "is_authenticated", False))


def _merge_managed(
    headers: list[tuple[AnyStr, AnyStr]],
    block: _Block,
    secure: bool,
    extra: list[_Triple[AnyStr]],
) -> list[tuple[AnyStr, AnyStr]]:
    out: list[tuple[AnyStr, AnyStr]] = []
    seen: set[Any] = set()
    for name, value in headers:
        key = name.lower()
        if key in block.watched:
            if key in block.replace:
                continue
            if key in block.singletons:
                if key in seen:
                    continue
            elif key in block.multi:
                if (key, value) in seen:
                    continue
                seen.add((key, value))
            seen.add(key)
        out.append((name, value))
    fixed: tuple[_Triple[AnyStr], ...] = block.secure if secure else block.plain
    out.extend((name, value) for key, name, value in fixed if key not in seen)
    out.extend((name, value) for key, name, value in extra if key not in seen)
    return out
