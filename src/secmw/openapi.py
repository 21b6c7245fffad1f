"""What an OpenAPI document should say about an app behind secmw: its security schemes and the
answers the stack gives. Framework-free: the FastAPI and FastOpenAPI bridges amend the document
their framework generates with these.

- ``securitySchemes`` from the settings: bearer JWT (or the OAuth2 password / client-credentials
  flows when a token endpoint is configured), API key in a header or the query, HTTP Basic.
- On every operation: 400 (a malformed credential) and 401 (a refused credential, with the
  ``WWW-Authenticate`` challenge) when authentication is configured, 403 (the IP filter, a
  client that cannot be identified; on a secured operation also a missing scope, with the
  ``insufficient_scope`` challenge), 429 (rate limited: ``Retry-After`` and the RateLimit
  fields) when rate limiting is on, 503 when a limit store or an identity provider may be down.
  All of them ``application/problem+json``, whose schema is the ``Problem`` component.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from secmw.core.deny import PROBLEM_CONTENT_TYPE

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details.",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
    },
    "required": ["type", "title", "status"],
}
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

SCHEME_NAMES = {
    "oauth2": "OAuth2",
    "bearer": "BearerAuth",
    "apikey": "ApiKeyAuth",
    "apikey-query": "ApiKeyQuery",
    "basic": "BasicAuth",
}
"""The component name of each kind of scheme."""

_STRING = {"schema": {"type": "string"}}
_CHALLENGE = {"description": "The authentication challenge (RFC 9110 section 11.6.1).", **_STRING}
_INTEGER = {"schema": {"type": "integer"}}


def security_schemes(
    settings: Any, *, token_url: str | None = None, scopes: Mapping[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """Every configured scheme as an OpenAPI security scheme object, keyed by kind, in
    ``auth.order``."""
    found: dict[str, dict[str, Any]] = {}
    for name in settings.auth.order:
        if name == "bearer" and has_jwt(settings):
            url = token_url or settings.tokens.token_url
            flows = oauth2_flows(settings, url, scopes) if url else {}
            if flows:
                found["oauth2"] = {"type": "oauth2", "flows": flows}
            found["bearer"] = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
        elif name == "apikey" and (settings.api_keys.keys or settings.api_keys.file):
            if settings.api_keys.header:
                found["apikey"] = {
                    "type": "apiKey",
                    "in": "header",
                    "name": settings.api_keys.header,
                }
            if settings.api_keys.query_param:
                found["apikey-query"] = {
                    "type": "apiKey",
                    "in": "query",
                    "name": settings.api_keys.query_param,
                }
        elif name == "basic" and (settings.basic.users or settings.basic.users_file):
            found["basic"] = {"type": "http", "scheme": "basic"}
    return found


def named_schemes(settings: Any, *, token_url: str | None = None) -> dict[str, dict[str, Any]]:
    """The ``components.securitySchemes`` table: every configured scheme under its component
    name; a bearer JWT described by an OAuth2 flow is listed once, as the flow."""
    schemes = security_schemes(settings, token_url=token_url)
    if "oauth2" in schemes:
        del schemes["bearer"]  # the same bearer token: the flow already describes it
    return {SCHEME_NAMES[kind]: scheme for kind, scheme in schemes.items()}


def oauth2_flows(
    settings: Any, url: str, scopes: Mapping[str, str] | None
) -> dict[str, dict[str, Any]]:
    """The OAuth2 flows the token endpoint answers: password (when ``tokens.password_grant`` is
    on), client credentials (when ``tokens.clients`` lists a client)."""
    known = {**settings.tokens.scopes, **(scopes or {})}
    flows: dict[str, dict[str, Any]] = {}
    if settings.tokens.password_grant:
        flows["password"] = {"tokenUrl": url, "refreshUrl": url, "scopes": known}
    if settings.tokens.clients:
        flows["clientCredentials"] = {"tokenUrl": url, "scopes": known}
    return flows


def has_jwt(settings: Any) -> bool:
    """True when bearer JWTs are configured (a secret, a public key or a JWKS URL)."""
    jwt = settings.jwt
    return bool(jwt.secret or jwt.secret_file or jwt.public_key or jwt.public_key_file) or bool(
        getattr(jwt, "jwks_url", None)
    )


def requirement(schemes: Mapping[str, Mapping[str, Any]], scopes: Iterable[str]) -> list[Any]:
    """An operation's ``security``: each scheme an alternative; scopes only on OAuth2 ones (the
    only types whose requirement lists scopes, OpenAPI 3.0 section 4.7.30)."""
    listed = list(scopes)
    return [
        {name: listed if scheme.get("type") in ("oauth2", "openIdConnect") else []}
        for name, scheme in schemes.items()
    ]


def stack_responses(settings: Any, *, secured: bool) -> dict[str, dict[str, Any]]:
    """The responses secmw's stack can give on an operation, as OpenAPI response objects."""
    found: dict[str, dict[str, Any]] = {}
    if secured or _authenticates(settings):
        found["400"] = _problem("Malformed credential.")
        found["401"] = _problem(
            "Authentication required, or the credential was refused.",
            {"WWW-Authenticate": {**_CHALLENGE, "required": True}},
        )
    # The IP filter and an unidentifiable client are refused on any operation.
    found["403"] = _problem(
        "Forbidden: a scope, role or permission is missing, or the client is refused.",
        {"WWW-Authenticate": _CHALLENGE} if secured else None,
    )
    if settings.rate_limit.enabled:
        found["429"] = _problem("Too many requests.", _rate_limit_headers(settings))
    if _may_be_unavailable(settings):
        found["503"] = _problem(
            "A store or identity provider the decision needs is unavailable.",
            {"Retry-After": {"description": "Seconds to wait.", **_INTEGER}},
        )
    return found


def amend_operation(operation: dict[str, Any], responses: Mapping[str, dict[str, Any]]) -> None:
    """Add the stack's responses to an operation: a status the app documents already gets the
    problem+json content beside its own, a new one is added whole."""
    documented = operation.setdefault("responses", {})
    for status, response in responses.items():
        mine = documented.get(status)
        if mine is None:
            documented[status] = response
            continue
        mine.setdefault("content", {}).setdefault(PROBLEM_CONTENT_TYPE, response["content"])
        mine.setdefault("headers", {}).update(
            (k, {**v, "required": False}) for k, v in response.get("headers", {}).items()
        )


def amend_document(
    document: dict[str, Any],
    settings: Any,
    schemes: Mapping[str, dict[str, Any]],
    secured_scopes: Callable[[dict[str, Any]], list[str] | None],
) -> None:
    """Make ``document`` tell what the stack does: the configured ``securitySchemes``, the
    ``Problem`` component, and on each operation its ``security`` and the stack's responses.

    ``secured_scopes`` reads an operation (and may rewrite its framework's placeholders): the
    scopes it requires when it is secured, else None.
    """
    components = document.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    table = components.setdefault("securitySchemes", {})
    table.update(schemes)
    if not table:
        del components["securitySchemes"]
    for item in document.get("paths", {}).values():
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            scopes = secured_scopes(operation)
            if scopes is not None and schemes:
                kept = [r for r in operation.get("security", []) if set(r) - set(schemes)]
                operation["security"] = [*kept, *requirement(schemes, scopes)]
            amend_operation(operation, stack_responses(settings, secured=scopes is not None))


_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def _problem(description: str, headers: Mapping[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_CONTENT_TYPE: {"schema": PROBLEM_REF}},
    }
    if headers:
        response["headers"] = dict(headers)
    return response


def _rate_limit_headers(settings: Any) -> dict[str, Any]:
    headers: dict[str, Any] = {
        "Retry-After": {"description": "Seconds until a request may succeed.", **_INTEGER}
    }
    style = settings.rate_limit.headers
    if style in ("ietf", "both"):
        headers["RateLimit"] = {"description": "Remaining quota (IETF draft).", **_STRING}
        headers["RateLimit-Policy"] = {"description": "Quota policy (IETF draft).", **_STRING}
    if style in ("legacy", "both"):
        for name in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"):
            headers[name] = {"description": name, **_INTEGER}
    return headers


def _authenticates(settings: Any) -> bool:
    return bool(security_schemes(settings))


def _may_be_unavailable(settings: Any) -> bool:
    """A limit store outside the process, or an identity provider reached over the network."""
    storage = settings.rate_limit.storage_uri.get_secret_value()
    remote_limits = settings.rate_limit.enabled and not storage.startswith("memory")
    jwt = settings.jwt
    remote_identity = bool(getattr(jwt, "jwks_url", None) or getattr(jwt, "revocation_url", None))
    return remote_limits or remote_identity or "introspection" in settings.auth.order
