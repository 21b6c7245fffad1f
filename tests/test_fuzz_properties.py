"""Property-based fuzzing of every parser that reads request bytes (hypothesis, deterministic).

Invariant, for any input: a decision (a principal, the anonymous one included, or a Deny with a
4xx or 503 status and a problem body), no exception, no credential echoed, and work linear in the
input size. Linearity is shown two ways: structurally (the size caps and single passes named in
each test) and by the ratio of the work on an input and on one 16 times larger, compared with a
generous bound in the same test, never against a wall-clock budget.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secmw.asgi import AuthenticationMiddleware as ASGIAuthentication
from secmw.asgi.ipfilter import IPFilterMiddleware as ASGIIPFilter
from secmw.auth import APIKeyAuthenticator, BasicAuthenticator, Credential, JWTAuthenticator
from secmw.auth.throttle import FailureBudgets, failure_plan
from secmw.core.deny import Deny
from secmw.core.fields import Headers
from secmw.core.paths import PathSet
from secmw.core.principal import Principal
from secmw.core.request import RequestView, normalize_path
from secmw.ip.addresses import parse_address
from secmw.ip.filter import IPFilter, IPPolicy
from secmw.ip.forwarded import ClientAddressResolver
from secmw.ratelimit.policy import RateLimitPolicy
from secmw.ratelimit.settings import RateLimitSettings
from secmw.wsgi import AuthenticationMiddleware as WSGIAuthentication
from tests.fuzz import _common
from tests.support import http_scope, run_asgi

settings.register_profile(
    "secmw-fuzz",
    derandomize=True,  # the same examples on every run and in CI
    database=None,  # nothing written to .hypothesis/, nothing replayed from it
    deadline=None,  # timing is checked by ratios below, not per example
    max_examples=int(os.environ.get("FUZZ_MAX_EXAMPLES", "100")),
    suppress_health_check=[HealthCheck.too_slow],
)
FUZZ = settings.get_profile("secmw-fuzz")
FEW = settings(FUZZ, max_examples=max(10, FUZZ.max_examples // 4))

CHAIN = _common.make_chain()
JWT = next(a for a in CHAIN.authenticators if isinstance(a, JWTAuthenticator))
APIKEY = next(a for a in CHAIN.authenticators if isinstance(a, APIKeyAuthenticator))
BASIC = next(a for a in CHAIN.authenticators if isinstance(a, BasicAuthenticator))
WSGI_APP = WSGIAuthentication(_common.principal_app_wsgi, chain=CHAIN)

latin1 = st.binary(max_size=300).map(lambda raw: raw.decode("latin-1"))
SCHEMES = ["", "Bearer ", "bearer ", "Basic ", "BASIC ", "Digest ", "APIKey ", "Bearer  "]


@st.composite
def authorization_values(draw: st.DrawFn) -> str:
    """A header value: any scheme with arbitrary latin-1 bytes, token-shaped or Basic-shaped."""
    scheme = draw(st.sampled_from(SCHEMES))
    shape = draw(st.sampled_from(["bytes", "segments", "basic-known", "printable"]))
    if shape == "segments":
        parts = draw(st.lists(st.binary(max_size=60), min_size=1, max_size=4))
        return scheme + ".".join(_common.b64url(part) for part in parts) + _common.CANARY
    if shape == "basic-known":
        password = draw(st.binary(max_size=40))
        raw = f"{_common.USER}:".encode() + password + _common.CANARY.encode()
        return "Basic " + base64.b64encode(raw).decode()
    if shape == "printable":
        return scheme + draw(st.text(st.characters(min_codepoint=32, max_codepoint=126)))
    return scheme + draw(latin1) + _common.CANARY


async def principal_app(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app that checks it was handed a principal, then answers 200."""
    assert isinstance(scope["user"], Principal)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


ASGI_APP = ASGIAuthentication(principal_app, chain=CHAIN)


def asgi_answer(app: Any, scope: dict[str, Any]) -> None:
    """Run an ASGI middleware on a scope and check its answer."""
    recorder = run_asgi(app, scope)
    _common.check_response(recorder.status, recorder.headers, recorder.body)


# -- Authorization, API keys, Basic ---------------------------------------------------------


@FUZZ
@given(
    values=st.lists(authorization_values(), max_size=3),
    api_keys=st.lists(latin1, max_size=2),
    path=st.sampled_from(["/", "/private/x"]),
)
def test_authorization_fields_always_get_a_decision(
    values: list[str], api_keys: list[str], path: str
) -> None:
    """Any number of Authorization and X-API-Key fields of any bytes: a decision, on both sides."""
    headers = [("authorization", v) for v in values]
    headers += [("x-api-key", key + _common.CANARY) for key in api_keys]
    result = _common.decide(CHAIN, _common.request(headers, path=path))
    _common.check_decision(result)
    if result is None:  # an unknown Basic user: its full argon2 check is timed in test_attacks
        return
    _common.call_wsgi(WSGI_APP, headers, path, "")
    asgi_answer(ASGI_APP, http_scope(path, headers=headers))


@FUZZ
@given(param=st.one_of(latin1, st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode())))
def test_basic_decoder_decides_on_any_parameter(param: str) -> None:
    """Basic parameters: a Credential or a 400, never an exception; UTF-8 user-pass only."""
    found = BASIC.extract(_common.request(), param)
    if isinstance(found, Credential):
        assert found.username
        assert (found.username + ":" + found.secret).isprintable()
    else:
        _common.check_decision(found)
        assert found is not None
        assert found.status == 400


@FUZZ
@given(password=st.text(max_size=60))
def test_basic_known_user_admitted_only_with_its_password(password: str) -> None:
    """For the known user, only the exact password admits."""
    result = BASIC.verify(Credential("basic", password, _common.USER))
    _common.check_decision(result)
    assert isinstance(result, Principal) == (password == _common.PASSWORD)


@FUZZ
@given(
    headers=st.lists(st.tuples(st.sampled_from(["X-API-Key", "x-api-key"]), latin1), max_size=2),
    query=st.one_of(
        st.binary(max_size=200), latin1.map(lambda t: b"api_key=" + t.encode("latin-1"))
    ),
)
def test_api_key_decoder_admits_only_the_configured_key(
    headers: list[tuple[str, str]], query: bytes
) -> None:
    """Keys from headers (repeated too) or the query string: only the configured key admits."""
    view = _common.request(headers, query=query)
    found = APIKEY.extract(view, None)
    if isinstance(found, Credential):
        result = APIKEY.verify(found)
        _common.check_decision(result)
        assert isinstance(result, Principal) == (found.secret == _common.API_KEY)
    else:
        _common.check_decision(found)


# -- JWT segments ----------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=5,
)
CLAIM_NAMES = ["exp", "nbf", "iat", "sub", "aud", "iss", "jti", "scope", "scp", "roles", "name"]
HEADER_NAMES = ["alg", "typ", "kid", "crit", "b64", "jwk", "jku", "x5u", "x5c", "cty", "zip"]


@FUZZ
@given(segments=st.lists(st.binary(max_size=80), min_size=0, max_size=5), pad=st.booleans())
def test_jwt_base64url_junk_is_refused(segments: list[bytes], pad: bool) -> None:
    """Base64url junk in any number of segments: a 401, never a principal."""
    text = ".".join(_common.b64url(s) + ("=" if pad else "") for s in segments)
    result = JWT.verify(Credential("bearer", text))
    _common.check_decision(result)
    assert isinstance(result, Principal) is False


@FUZZ
@given(
    header=st.dictionaries(st.sampled_from(HEADER_NAMES), json_values, max_size=3),
    claims=st.dictionaries(
        st.sampled_from(CLAIM_NAMES) | st.text(max_size=4), json_values, max_size=6
    ),
    alg=st.sampled_from(["HS256", "HS256", "HS256", "hs256", "none", "NONE", "RS256", None]),
    base=st.booleans(),
)
def test_jwt_signed_random_claims_never_crash(
    header: dict[str, Any], claims: dict[str, Any], alg: str | None, base: bool
) -> None:
    """Arbitrary JSON headers and claims signed with the right key: a decision, and a principal
    only for alg HS256, a string subject and an ``exp`` ahead."""
    if alg is not None:
        header["alg"] = alg
    if base:  # start from a valid token so that many examples reach the claim checks
        claims = {"sub": "user-1", "exp": _common.now() + 60, **claims}
    token = _common.sign_hs256(json.dumps(header).encode(), json.dumps(claims).encode())
    result = JWT.verify(Credential("bearer", token))
    _common.check_decision(result)
    if isinstance(result, Principal):
        assert header.get("alg") == "HS256"
        assert isinstance(claims.get("sub"), str)
        assert result.id == claims["sub"]
        assert int(claims["exp"]) > _common.now() - 10


# Integers past the float range (309+ digits) are valid JSON and valid for PyJWT.
ODD_NUMBERS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1e999",
    "1e308",
    "-0",
    "9" * 300,
    "9" * 4300,
]


@FUZZ
@given(
    exp=st.sampled_from(ODD_NUMBERS) | st.integers().map(str),
    sub=st.sampled_from(['"u"', "1", "null", "[]", '""', "1e999"]),
    duplicate=st.booleans(),
)
def test_jwt_signed_odd_json_numbers_never_crash(exp: str, sub: str, duplicate: bool) -> None:
    """Claims ``json.dumps`` would never write (NaN, 1e999, 4,300 digits, duplicate keys), signed
    with the right key: a decision, never an exception."""
    payload = f'{{"sub":{sub},"exp":{exp}' + (f',"exp":{exp},"sub":"v"' if duplicate else "") + "}"
    token = _common.sign_hs256(b'{"alg":"HS256"}', payload.encode())
    _common.check_decision(JWT.verify(Credential("bearer", token)))


def test_jwt_signed_exp_beyond_float_range_gets_a_decision() -> None:
    """A correctly signed token whose ``exp`` is a 400-digit integer gets a decision."""
    payload = '{"sub":"u","exp":1' + "0" * 400 + "}"
    token = _common.sign_hs256(b'{"alg":"HS256"}', payload.encode())
    _common.check_decision(JWT.verify(Credential("bearer", token)))


# -- request view: cookies, query strings, paths, headers ------------------------------------


@FUZZ
@given(lines=st.lists(latin1, max_size=3), query=st.binary(max_size=300), name=latin1)
def test_cookies_and_query_parse_to_text(lines: list[str], query: bytes, name: str) -> None:
    """Any Cookie fields and query bytes parse to text mappings; repeated fields stay in order."""
    view = _common.request([("cookie", line) for line in lines], query=query)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in view.cookies.items())
    for parameter in (name, "api_key"):
        assert all(isinstance(v, str) for v in view.query_params(parameter))
    assert view.headers.getlist("Cookie") == lines


path_pieces = st.sampled_from(["/", ".", "..", "a", "B", "%2e", "%2f", "\\", "//", "/./", "/../"])


@FUZZ
@given(path=st.one_of(st.text(max_size=80), st.lists(path_pieces, max_size=25).map("".join)))
def test_normalize_path_is_idempotent_and_clean(path: str) -> None:
    """The normal form starts with '/', has no '//' and no dot segment, and is a fixed point."""
    normal = normalize_path(path)
    assert normal.startswith("/")
    assert "//" not in normal
    assert not {".", ".."} & set(normal.split("/"))
    assert normalize_path(normal) == normal


@FUZZ
@given(pairs=st.lists(st.tuples(st.sampled_from(["A", "a", "x-k", "X-K"]), latin1), max_size=6))
def test_headers_are_case_insensitive_and_keep_every_line(pairs: list[tuple[str, str]]) -> None:
    """Headers look names up case-insensitively and keep every field line in order."""
    headers = Headers(pairs)
    for name in {n.lower() for n, _ in pairs}:
        lines = [v for n, v in pairs if n.lower() == name]
        assert headers.getlist(name.upper()) == lines
        assert headers[name] == ", ".join(lines)


# -- X-Forwarded-For and Forwarded ------------------------------------------------------------

TRUSTED = ["10.0.0.0/8", "2001:db8::/32"]
forwarded_pieces = st.sampled_from(
    [",", ", ", '"', "\\", ";", "=", "for=", "For=", "by=", "[", "]", ":", "%eth0", "unknown",
     "_x", "10.0.0.7", "203.0.113.9", "2001:db8::1", "::ffff:10.1.2.3", "1.2.3.4:80"]
)  # fmt: skip
forwarded_values = st.one_of(latin1, st.lists(forwarded_pieces, max_size=40).map("".join))


@FUZZ
@given(
    header=st.sampled_from(["x-forwarded-for", "forwarded"]),
    values=st.lists(forwarded_values, max_size=3),
    peer=st.sampled_from(["10.0.0.1", "203.0.113.5", "2001:db8::7", "198.51.100.1", "x", None]),
    depth=st.sampled_from([None, 1, 2]),
)
def test_forwarding_headers_resolve_to_an_address_or_unknown(
    header: str, values: list[str], peer: str | None, depth: int | None
) -> None:
    """An address or None; an untrusted peer is the client whatever its headers say."""
    resolver = ClientAddressResolver(TRUSTED, header=header, depth=depth)
    address, forwarded = resolver.resolve_with_source(peer, Headers((header, v) for v in values))
    assert address is None or isinstance(address, IPv4Address | IPv6Address)
    peer_address = parse_address(peer) if peer else None
    if peer is None or peer_address is None or not resolver.is_trusted(peer_address):
        assert (address, forwarded) == (peer_address, False)


@FEW
@given(values=st.lists(forwarded_values, max_size=2), peer=st.sampled_from(["10.0.0.1", "x"]))
def test_ip_filter_adapter_decides_on_any_forwarding_header(values: list[str], peer: str) -> None:
    """The ASGI IP filter behind a proxy answers 200 or a 403 problem for any header."""
    ip_filter = IPFilter(ClientAddressResolver(TRUSTED), IPPolicy(allow=["198.51.100.0/24"]))
    app = ASGIIPFilter(ASGI_APP, ip_filter=ip_filter)
    headers = [("x-forwarded-for", v) for v in values]
    asgi_answer(app, http_scope("/", headers=headers, client=(peer, 1234)))


# -- rate-limit keys -------------------------------------------------------------------------

RATE_RULES = [
    {"path": "/items/{id}", "limit": "5/minute", "per_path": True},
    {"path": "/login", "limit": "3/minute", "key": "ip"},
]
RATE_POLICIES = {
    kind: RateLimitPolicy(RateLimitSettings(key=kind, rules=RATE_RULES))
    for kind in ("principal-or-ip", "ip", "apikey", "principal")
}
MAX_KEY = 200
FAILURE_BUDGETS = FailureBudgets.for_authentication(RateLimitSettings())


@FUZZ
@given(
    kind=st.sampled_from(sorted(RATE_POLICIES)),
    client=st.one_of(st.none(), st.ip_addresses().map(str), st.text(max_size=300)),
    principal=st.one_of(
        st.none(), st.tuples(st.text(max_size=400), st.sampled_from(["apikey", "bearer"]))
    ),
    path=st.one_of(st.text(max_size=400), st.just("/items/").map(lambda p: p + "x" * 300)),
    api_key=latin1,
    username=st.one_of(st.none(), st.text(max_size=300)),
)
def test_rate_limit_keys_are_bounded_and_hold_no_credential(
    kind: str,
    client: str | None,
    principal: tuple[str, str] | None,
    path: str,
    api_key: str,
    username: str | None,
) -> None:
    """Whatever the client, principal, path or API key, a key is at most 200 characters and never
    holds the presented API key; an unidentifiable client is a 403, never a shared bucket."""
    presented = api_key + _common.CANARY
    view = RequestView(
        "GET", path, headers=Headers([("x-api-key", presented)]), peer=client,
        query_string=b"api_key=" + presented.encode("latin-1", "replace"),
    )  # fmt: skip
    if principal is not None:
        view.state["principal"] = Principal(principal[0], principal[1])
    policy = RATE_POLICIES[kind]
    plan = policy.plan(view)
    if isinstance(plan, Deny):
        _common.check_decision(plan)
        assert plan.status == 403
        return
    hits = list(plan.hits) if plan is not None else []
    failures = failure_plan(policy, FAILURE_BUDGETS, view, username)
    hits += failures.hits if failures is not None else ()
    for hit in hits:
        assert len(hit.key) <= MAX_KEY, hit.key
        assert _common.CANARY not in hit.key
        assert hit.tag in hit.key


# -- linear time ------------------------------------------------------------------------------

FACTOR = 16  # the large input is 16 times the small one
SLACK = 6  # linear work gives a ratio near 16; the bound is 96, quadratic work gives ~256


def cost(func: Callable[[Any], object], arg: Any, repeat: int) -> float:
    """The least time of ``repeat`` calls: the run least disturbed by other processes."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        func(arg)
        best = min(best, time.perf_counter() - started)
    return best


def assert_linear(func: Callable[[Any], object], make: Callable[[int], Any], small: int) -> None:
    """The work on a 16x larger input is at most 96x the work on the small one (3 tries)."""
    ratios = []
    for _ in range(3):
        small_input, large_input = make(small), make(small * FACTOR)
        ratio = cost(func, large_input, 3) / max(cost(func, small_input, 7), 1e-7)
        ratios.append(round(ratio))
        if ratio < FACTOR * SLACK:
            return
    pytest.fail(f"work grew {ratios}x for {FACTOR}x the input: not linear")


def authenticate(value: str) -> object:
    """The chain's decision on one Authorization value (capped at 16 KiB by the chain)."""
    return _common.decide(CHAIN, _common.request([("authorization", value)]))


def resolve_xff(value: str) -> object:
    """Walk an X-Forwarded-For value from a trusted peer."""
    return ClientAddressResolver(TRUSTED).resolve("10.0.0.1", Headers([("x-forwarded-for", value)]))


def resolve_forwarded(value: str) -> object:
    """Walk a Forwarded value from a trusted peer."""
    resolver = ClientAddressResolver(TRUSTED, header="forwarded")
    return resolver.resolve("10.0.0.1", Headers([("forwarded", value)]))


def cookies(value: str) -> object:
    """Parse one Cookie field."""
    return _common.request([("cookie", value)]).cookies


def query(value: bytes) -> object:
    """Parse a query string and look a parameter up."""
    return _common.request(query=value).query_params("api_key")


LINEAR_CASES = [
    pytest.param(authenticate, lambda n: "Bearer " + "a." * (n // 2), 256, id="bearer-dots"),
    pytest.param(authenticate, lambda n: "Basic " + "QUFB" * (n // 4), 256, id="basic-base64"),
    pytest.param(authenticate, lambda n: "Bearer " + "=" * n, 256, id="bearer-padding"),
    pytest.param(resolve_xff, lambda n: "10.0.0.1, " * (n // 10), 1024, id="xff-trusted-hops"),
    pytest.param(resolve_xff, lambda n: '"' + '\\"' * (n // 2), 1024, id="xff-escaped-quotes"),
    pytest.param(resolve_xff, lambda n: "\\" * n + '"', 1024, id="xff-backslashes"),
    pytest.param(resolve_xff, lambda n: "," * n, 1024, id="xff-commas"),
    pytest.param(resolve_forwarded, lambda n: "for=" * (n // 4), 1024, id="forwarded-pairs"),
    pytest.param(
        resolve_forwarded, lambda n: 'for="' + "\\," * (n // 2), 1024, id="forwarded-open-quote"
    ),
    pytest.param(normalize_path, lambda n: "/.." * (n // 3), 1024, id="path-dot-dot"),
    pytest.param(normalize_path, lambda n: "/" * n, 1024, id="path-slashes"),
    pytest.param(cookies, lambda n: "a=b; " * (n // 5), 1024, id="cookie-many-pairs"),
    pytest.param(query, lambda n: b"api_key=%zz&" * (n // 12), 1024, id="query-bad-escapes"),
    pytest.param(query, lambda n: b"&" * n, 1024, id="query-ampersands"),
]


@pytest.mark.parametrize(("func", "make", "small"), LINEAR_CASES)
def test_parsing_work_is_linear_in_input_size(
    func: Callable[[Any], object], make: Callable[[int], Any], small: int
) -> None:
    """Adversarial shapes cost work proportional to their size (ratio of two sizes)."""
    assert_linear(func, make, small)


def test_cookie_quoted_backslashes_parse_in_linear_time() -> None:
    """A quoted cookie value full of backslash escapes costs work linear in its size."""
    assert_linear(cookies, lambda n: 'a="' + "\\0" * (n // 2) + '"', 256)


SIXTY_FOUR_KIB = 64 * 1024


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("authorization", "Bearer " + "a" * SIXTY_FOUR_KIB),
        ("authorization", "Basic " + "A" * SIXTY_FOUR_KIB),
        ("x-api-key", "k" * SIXTY_FOUR_KIB),
        ("cookie", "a=b; " * (SIXTY_FOUR_KIB // 5)),
        ("x-forwarded-for", "10.0.0.1, " * (SIXTY_FOUR_KIB // 10)),
        ("x-forwarded-for", '"' + "\\" * SIXTY_FOUR_KIB),
    ],
    ids=["bearer", "basic", "api-key", "cookie", "xff-hops", "xff-backslashes"],
)
def test_a_64_kib_header_through_the_stack_gets_a_decision(name: str, value: str) -> None:
    """One 64 KiB field through the IP filter and authentication: a decision, never a 500."""
    ip_filter = IPFilter(ClientAddressResolver(TRUSTED), IPPolicy())
    app = ASGIIPFilter(ASGIAuthentication(principal_app, chain=CHAIN), ip_filter=ip_filter)
    scope = http_scope("/private/" + "a/" * 1000, headers=[(name, value)], client=("10.0.0.1", 1))
    scope["query_string"] = b"api_key=" + b"%41" * (SIXTY_FOUR_KIB // 3)
    asgi_answer(app, scope)
    assert RequestView.from_scope(scope).cookies is not None


def test_required_paths_match_normal_forms() -> None:
    """A required-path pattern sees the normal form of any spelling of the path."""
    required = PathSet(["/private/*"])
    for spelling in ["/private/x", "//private/x", "/./private/x", "/a/../private/x", "/PRIVATE/x"]:
        assert normalize_path(spelling) in required
