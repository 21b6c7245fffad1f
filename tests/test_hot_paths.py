"""The per-request shortcuts answer exactly as the full paths do.

Each shortcut (a peer remembered as allowed, a memoized path match, a reused rate-limit plan,
fields merged by the outermost layer, a lock-free cache hit) is exercised here on the cases where
a wrong shortcut would let a request through or put it in the wrong bucket.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from werkzeug.test import Client

from secmw import Principal
from secmw.asgi import SecurityStack
from secmw.asgi.ipfilter import IPFilterMiddleware
from secmw.auth.cache import TokenCache
from secmw.core.deny import Deny
from secmw.core.fields import Headers
from secmw.core.paths import PathTable
from secmw.core.request import ASGI_KEY, WSGI_KEY, RequestView
from secmw.ratelimit.plan import Plan
from secmw.ratelimit.policy import RateLimitPolicy
from secmw.ratelimit.settings import RateLimitSettings
from secmw.wsgi.ipfilter import IPFilterMiddleware as WSGIIPFilterMiddleware
from tests.support import SECRET, http_scope, make_token, run_asgi


async def ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def own_401(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 401, "headers": []})
    await send({"type": "http.response.body", "body": b"no"})


# -- the IP layer's remembered peers -----------------------------------------------------------


def test_a_remembered_peer_still_gets_dot_segment_paths_refused() -> None:
    app = IPFilterMiddleware(ok, ip={"allow": ["127.0.0.0/8"]})
    assert run_asgi(app, http_scope("/a")).status == 200
    assert "127.0.0.1" in app.filter.admitted_peers
    assert run_asgi(app, http_scope("/a/../admin")).status == 400


def test_a_remembered_peer_goes_to_the_app_without_a_view_on_both_sides() -> None:
    """The IP layer alone lets an admitted peer through before any view is built (the view is
    kept in the scope / environ when built), and still refuses dot segments and others."""
    seen: list[bool] = []

    async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(ASGI_KEY in scope)
        await ok(scope, receive, send)

    def wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
        seen.append(WSGI_KEY in environ)
        start_response("200 OK", [])
        return [b"ok"]

    asgi = IPFilterMiddleware(asgi_app, ip={"allow": ["127.0.0.0/8"]})
    assert [run_asgi(asgi, http_scope("/a")).status for _ in range(2)] == [200, 200]
    assert run_asgi(asgi, http_scope("/a/../b")).status == 400
    assert run_asgi(asgi, http_scope("/a", client=("10.0.0.1", 1))).status == 403
    wsgi = Client(WSGIIPFilterMiddleware(wsgi_app, ip={"allow": ["127.0.0.0/8"]}))
    local = {"REMOTE_ADDR": "127.0.0.1"}
    assert [wsgi.get("/a", environ_base=local).status_code for _ in range(2)] == [200, 200]
    assert wsgi.get("/a/./b", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 400
    assert wsgi.get("/a", environ_base={"REMOTE_ADDR": "10.0.0.1"}).status_code == 403
    # First request of each side: resolved through the view; the next: remembered, no view.
    assert seen == [True, False, True, False]


def test_a_driver_with_a_gate_that_needs_the_view_always_builds_it() -> None:
    """Composed behind the IP layer, a gate without a view-free check still sees a view."""
    app = SecurityStack(ok, ip={"allow": ["127.0.0.0/8"]}, jwt={"secret": SECRET})
    scope = http_scope("/")
    for _ in range(2):
        scope = http_scope("/")
        assert run_asgi(app, scope).status == 200
    assert isinstance(scope[ASGI_KEY], RequestView)


def test_peers_are_not_remembered_when_paths_have_rules() -> None:
    app = IPFilterMiddleware(
        ok, ip={"allow": ["127.0.0.0/8"], "rules": {"/internal/*": {"allow": ["10.0.0.0/8"]}}}
    )
    assert run_asgi(app, http_scope("/open")).status == 200
    assert "127.0.0.1" not in app.filter.admitted_peers
    assert run_asgi(app, http_scope("/internal/x")).status == 403


def test_a_trusted_proxy_is_never_remembered() -> None:
    """Its next request may forward another client: the header is read every time."""
    app = IPFilterMiddleware(
        ok, ip={"trusted_proxies": ["10.0.0.0/8"], "allow": ["198.51.100.0/24", "10.0.0.0/8"]}
    )
    proxy = ("10.0.0.2", 4000)
    allowed = http_scope(client=proxy, headers=[("x-forwarded-for", "198.51.100.7")])
    assert run_asgi(app, allowed).status == 200
    alone = http_scope(client=proxy)  # the proxy itself, allowed
    assert run_asgi(app, alone).status == 200
    assert "10.0.0.2" not in app.filter.admitted_peers
    forged = http_scope(client=proxy, headers=[("x-forwarded-for", "203.0.113.9")])
    assert run_asgi(app, forged).status == 403


def test_refused_peers_are_not_remembered_and_the_memory_is_bounded() -> None:
    app = IPFilterMiddleware(ok, ip={"deny": ["203.0.113.0/24"]})
    assert run_asgi(app, http_scope(client=("203.0.113.9", 1))).status == 403
    assert "203.0.113.9" not in app.filter.admitted_peers
    for n in range(5000):
        run_asgi(app, http_scope(client=(f"10.{n // 250}.{n % 250}.1", 1)))
    assert 0 < len(app.filter._admitted) <= 4096


# -- memoized path matches ---------------------------------------------------------------------


def test_path_matches_are_memoized_within_a_bound() -> None:
    table = PathTable([("/items/{id}", "item"), ("/admin/*", "admin")])
    for n in range(3000):
        assert table.match(f"/items/{n}") == ("/items/{id}", "item")
        assert table.match(f"/other/{n}") is None
    assert table.match("/ADMIN/x") == ("/admin/*", "admin")
    assert len(table._memo) <= 1024


# -- rate-limit plans --------------------------------------------------------------------------


def view(path: str = "/", principal: Principal | None = None, client: str = "203.0.113.7") -> Any:
    request = RequestView("GET", path, peer=client)
    if principal is not None:
        request.state["principal"] = principal
    return request


def test_plans_are_reused_per_identity_and_never_shared() -> None:
    policy = RateLimitPolicy(
        RateLimitSettings(
            default="10/minute",
            overrides=[{"scope": "premium", "limit": "100/minute"}],
            rules=[{"path": "/files/{name}", "limit": "5/minute", "per_path": True}],
        )
    )
    alice = Principal.create("alice", "bearer")
    rich = Principal.create("rich", "bearer", scopes=["premium"])
    first = policy.plan(view(principal=alice))
    assert isinstance(first, Plan)
    assert policy.plan(view(principal=alice)) is first
    assert policy.plan(view(principal=Principal.create("alice", "bearer"))) is first
    other = policy.plan(view(principal=rich))
    assert isinstance(other, Plan)
    assert other is not first
    assert [hit.amount for hit in other.hits] == [100]
    anonymous = policy.plan(view(client="198.51.100.1"))
    assert isinstance(anonymous, Plan)
    assert anonymous.hits[0].tag == "ip:198.51.100.1"
    one, two = policy.plan(view("/files/a")), policy.plan(view("/files/b"))
    assert isinstance(one, Plan)
    assert isinstance(two, Plan)
    assert {hit.key for hit in one.hits} != {hit.key for hit in two.hits}


def test_plans_stay_right_past_the_memory_bound() -> None:
    policy = RateLimitPolicy(RateLimitSettings(default="10/minute"))
    for n in range(5000):
        principal = Principal.create(f"user-{n}", "bearer")
        plan = policy.plan(view(principal=principal))
        assert isinstance(plan, Plan)
        assert plan.hits[0].tag == f"p:user-{n}"
    assert len(policy._plans) <= 4096


# -- fields merged by the outermost layer ------------------------------------------------------

SECTIONS: dict[str, Any] = {
    "jwt": {"secret": SECRET},
    "ip": {"allow": ["127.0.0.0/8"]},
    "rate_limit": {"default": "100/minute"},
}


def test_the_stack_sends_each_field_once() -> None:
    app = SecurityStack(ok, **SECTIONS)
    token = make_token()
    response = run_asgi(app, http_scope(headers=[("authorization", f"Bearer {token}")]))
    names = [name for name, _ in response.headers]
    assert response.status == 200
    for name in ("ratelimit", "ratelimit-policy", "x-content-type-options", "cache-control"):
        assert names.count(name) == 1, name
    assert names.index("ratelimit") < names.index("x-content-type-options")


def test_an_apps_own_401_gets_the_challenges_once_in_the_stack() -> None:
    response = run_asgi(SecurityStack(own_401, **SECTIONS), http_scope())
    assert response.status == 401
    assert response.header_values("www-authenticate") == ['Bearer realm="api"']
    assert response.header_values("ratelimit")  # the request was charged and says so


# -- request view and token cache --------------------------------------------------------------


def test_header_values_read_raw_pairs_like_the_parsed_headers() -> None:
    raw = [(b"Authorization", b"Bearer a"), (b"x-api-key", b"k"), (b"AUTHORIZATION", b"b")]
    lazy = RequestView.from_scope({**http_scope(), "headers": raw})
    parsed = Headers.from_raw(raw)
    for name in ("authorization", "X-API-Key", "absent"):
        assert lazy.header_values(name) == parsed.getlist(name)
    assert lazy.headers.getlist("authorization") == ["Bearer a", "b"]
    assert lazy.header_values("authorization") == ["Bearer a", "b"]


class Racing(OrderedDict[bytes, Any]):
    """A table whose entry vanishes between the read and the LRU touch (another thread)."""

    def move_to_end(self, key: bytes, last: bool = True) -> None:
        raise KeyError(key)


def test_a_cache_hit_survives_a_concurrent_eviction() -> None:
    cache = TokenCache(clock=lambda: 100.0)
    principal = Principal.create("u", "bearer")
    cache.put("token", principal, expires_at=200.0)
    cache._ok = Racing(cache._ok)
    assert cache.get("token") is principal


def test_an_expired_or_rotated_entry_is_dropped() -> None:
    now = [100.0]
    cache = TokenCache(clock=lambda: now[0])
    principal = Principal.create("u", "bearer")
    cache.put("a", principal, expires_at=150.0)
    cache.put("b", principal, expires_at=500.0, generation=1)
    now[0] = 150.0
    assert cache.get("a") is None
    assert len(cache) == 1
    assert cache.get("b", generation=2) is None
    assert len(cache) == 0


def test_header_values_read_the_environ_like_the_parsed_headers() -> None:
    environ = {
        "REQUEST_METHOD": "post",
        "PATH_INFO": "/a//b",
        "HTTP_AUTHORIZATION": "Bearer a, Bearer b",
        "HTTP_X_API_KEY": "",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": "",
        "REMOTE_ADDR": "127.0.0.1",
    }
    lazy = RequestView.from_environ(dict(environ))
    assert (lazy.method, lazy.normalized_path, lazy.client) == ("POST", "/a/b", "127.0.0.1")
    names = ("authorization", "X-API-Key", "content-type", "content-length", "absent")
    expected = [lazy.header_values(name) for name in names]
    assert lazy.single_raw(b"authorization") == b"Bearer a, Bearer b"
    assert lazy.single_raw(b"absent") is None
    assert expected == [["Bearer a, Bearer b"], [""], ["application/json"], [], []]
    parsed = lazy.headers  # decoding now: the same answers either way
    assert [parsed.getlist(name) for name in names] == expected


# -- the chain's cached-token shortcut ---------------------------------------------------------


def chain_of(**sections: Any) -> Any:
    from secmw.auth.build import build_chain
    from secmw.config.settings import resolve_settings

    return build_chain(resolve_settings(None, {"jwt": {"secret": SECRET}, **sections}))


def bearer_view(value: str, *extra: tuple[str, str]) -> RequestView:
    return RequestView("GET", "/", headers=Headers([("authorization", value), *extra]))


def raw_view(*fields: tuple[bytes, bytes]) -> RequestView:
    """A view of an ASGI scope: the headers stay raw octets until a layer decodes them."""
    scope = {"type": "http", "method": "GET", "path": "/", "headers": list(fields)}
    return RequestView.from_scope(scope)


def test_a_cached_token_is_answered_by_the_chain_itself() -> None:
    from secmw.auth import Found

    chain = chain_of()
    token = make_token(scope="read")
    found = chain.find(bearer_view(f"Bearer {token}"))
    assert isinstance(found, Found)  # first sight: the signature is checked
    principal = found.authenticator.verify(found.credential)
    assert isinstance(principal, Principal)
    raw = token.encode()
    for view in (
        bearer_view(f"Bearer {token}"),
        raw_view((b"authorization", b"Bearer " + raw)),
        raw_view((b"Authorization", b"BEARER " + raw)),  # names and schemes in any case
        raw_view((b"accept", b"*/*"), (b"authorization", b"bearer " + raw)),
    ):
        assert chain.find(view) is principal
    # Padding the shortcut does not read: the long way finds it, and the cache still answers.
    padded = chain.find(raw_view((b"authorization", b"bearer   " + raw + b"  ")))
    assert isinstance(padded, Found)
    assert padded.authenticator.verify(padded.credential) is principal
    for refused in (f"Bearer {token} {token}", f"Bearer {token}\t{token}", "Bearer "):
        answer = chain.find(bearer_view(refused))
        assert not isinstance(answer, Principal), refused
        assert answer.status == 400  # type: ignore[union-attr]
    twice = (b"authorization", b"Bearer " + raw)
    for fields in ((twice, twice), (twice, (b"AUTHORIZATION", b"Bearer " + raw))):
        answer = chain.find(raw_view(*fields))
        assert isinstance(answer, Deny)
        assert (answer.status, answer.detail) == (400, "more than one Authorization header")
    for value in (b"Bearer " + raw + b"\xff", b"Bearer " + raw + b"\x00", b"Basic " + raw):
        assert not isinstance(chain.find(raw_view((b"authorization", value))), Principal)


def test_the_shortcut_keeps_the_schemes_order_and_the_denylist() -> None:
    from secmw import hash_api_key
    from secmw.auth import Found
    from secmw.stores.revocation import MemoryRevocationStore

    keys = {"keys": [{"hash": hash_api_key("k" * 32), "id": "svc"}]}
    token = make_token(jti="t-1")
    apikey_first = chain_of(auth={"order": ["apikey", "bearer"]}, api_keys=keys)
    warm = apikey_first.find(bearer_view(f"Bearer {token}"))
    assert isinstance(warm, Found)
    assert isinstance(warm.authenticator.verify(warm.credential), Principal)
    both = apikey_first.find(bearer_view(f"Bearer {token}", ("x-api-key", "k" * 32)))
    assert isinstance(both, Found)
    assert both.credential.scheme == "apikey"

    store = MemoryRevocationStore()
    from secmw.auth.build import build_chain
    from secmw.config.settings import resolve_settings

    guarded = build_chain(resolve_settings(None, {"jwt": {"secret": SECRET}}), revocation=store)
    first = guarded.find(bearer_view(f"Bearer {token}"))
    assert isinstance(first, Found)
    assert isinstance(first.authenticator.verify(first.credential), Principal)
    again = guarded.find(bearer_view(f"Bearer {token}"))
    assert isinstance(again, Found)  # the denylist is consulted on every request
    store.revoke("t-1", time.time() + 3600)
    assert not isinstance(again.authenticator.verify(again.credential), Principal)


# -- plans remembered per request --------------------------------------------------------------


def test_a_key_function_is_asked_on_every_request() -> None:
    asked: list[str] = []

    def key(request: RequestView) -> str:
        asked.append(request.path)
        return request.headers.get("x-tenant", "none")

    policy = RateLimitPolicy(RateLimitSettings(default="10/minute"), key_func=key)
    one = policy.plan(RequestView("GET", "/", headers=Headers([("x-tenant", "a")])))
    two = policy.plan(RequestView("GET", "/", headers=Headers([("x-tenant", "b")])))
    assert isinstance(one, Plan)
    assert isinstance(two, Plan)
    assert len(asked) == 2
    assert one.hits[0].tag != two.hits[0].tag


def test_api_keys_from_one_client_keep_their_own_budgets() -> None:
    policy = RateLimitPolicy(RateLimitSettings(default="10/minute", key="apikey"))
    service = Principal.create("svc", "apikey")
    tags = set()
    for key in ("k" * 32, "j" * 32):
        request = RequestView("GET", "/", peer="10.0.0.1", headers=Headers([("x-api-key", key)]))
        request.state["principal"] = service
        plan = policy.plan(request)
        assert isinstance(plan, Plan)
        tags.add(plan.hits[0].tag)
    assert len(tags) == 2


def test_preflights_and_long_paths_are_planned_afresh() -> None:
    policy = RateLimitPolicy(RateLimitSettings(default="10/minute"))
    preflight = Headers([("origin", "https://a.example"), ("access-control-request-method", "GET")])
    assert policy.plan(RequestView("OPTIONS", "/x", peer="10.0.0.1", headers=preflight)) is None
    assert isinstance(policy.plan(RequestView("OPTIONS", "/x", peer="10.0.0.1")), Plan)
    before = len(policy._decisions)
    assert isinstance(policy.plan(RequestView("GET", "/" + "a" * 300, peer="10.0.0.1")), Plan)
    assert len(policy._decisions) == before


def test_a_memo_forgets_everything_once_full() -> None:
    from secmw.core.memo import remember

    memo: dict[int, str] = {}
    assert [remember(memo, 3, n, str(n)) for n in range(3)] == ["0", "1", "2"]
    assert memo == {0: "0", 1: "1", 2: "2"}
    assert remember(memo, 3, 3, "3") == "3"
    assert memo == {3: "3"}
