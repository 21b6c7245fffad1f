"""Revocation stores: the memory store's API, the Redis store's configuration, and the mirror of
the Redis denylist each process keeps (on a real redis-server)."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from secmw.auth.base import Credential
from secmw.auth.build import build_chain, build_jwt_authenticator
from secmw.auth.gate import AuthGate
from secmw.auth.jwt import JWTAuthenticator
from secmw.auth.settings import JWTSettings
from secmw.config.settings import SecuritySettings
from secmw.core.deny import Deny
from secmw.core.gate import PASS, Need, Pass
from secmw.core.principal import Principal
from secmw.core.request import RequestView
from secmw.errors import ConfigurationError
from secmw.stores.mirror import RevocationMirror
from secmw.stores.redis import client_pair
from secmw.stores.revocation import MemoryRevocationStore, RedisRevocationStore
from secmw.tokens import Account, TokenIssuer
from secmw.tokens.oauth import OAuthError
from tests.identity_support import FakeClock
from tests.redis_support import RedisServer, free_port
from tests.support import SECRET, make_token


def test_memory_store_forgets_entries_at_their_expiry() -> None:
    """An entry lasts until the token's exp and is dropped when seen after it."""
    clock = FakeClock(100)
    store = MemoryRevocationStore(clock=clock)
    store.revoke("j", until=160)
    assert store.is_revoked("j")
    clock.advance(60)
    assert not store.is_revoked("j")
    assert "j" not in store._entries


def test_memory_store_is_bounded() -> None:
    """Past max_entries the oldest revocation is dropped."""
    store = MemoryRevocationStore(max_entries=2, clock=FakeClock(0))
    for jti in ("a", "b", "c"):
        store.revoke(jti, until=100)
    assert [store.is_revoked(j) for j in "abc"] == [False, True, True]


def test_memory_store_async_twins() -> None:
    """arevoke and ais_revoked share the same entries."""
    store = MemoryRevocationStore(clock=FakeClock(0))

    async def run() -> tuple[bool, bool]:
        await store.arevoke("x", 50)
        return await store.ais_revoked("x"), await store.ais_revoked("y")

    assert asyncio.run(run()) == (True, False)
    assert store.is_revoked("x")


def test_redis_store_needs_a_client() -> None:
    """A Redis store with no client at all is a programming error caught at construction."""
    with pytest.raises(ValueError, match="needs a sync or an async Redis client"):
        RedisRevocationStore()


def test_bad_revocation_url_names_the_variable() -> None:
    """A URL redis-py cannot read fails at startup naming SECMW_JWT__REVOCATION_URL."""
    with pytest.raises(ConfigurationError, match="SECMW_JWT__REVOCATION_URL"):
        build_jwt_authenticator(JWTSettings(secret=SECRET, revocation_url="http://nope"))


def test_revocation_store_without_lookup_methods_is_refused() -> None:
    """An object that cannot answer is_revoked/ais_revoked is refused when the verifier is built."""
    with pytest.raises(ConfigurationError, match="SECMW_JWT__REVOCATION_URL"):
        JWTAuthenticator(SECRET, revocation=object())  # type: ignore[arg-type]


# -- the mirror of the Redis denylist ------------------------------------------------------------


@pytest.fixture
def mirrors() -> Iterator[Callable[..., RevocationMirror]]:
    """Builds mirrors on a Redis URL (fast timeouts, a prefix of their own); closes them after."""
    built: list[RevocationMirror] = []
    prefix = f"test:{uuid.uuid4().hex}:"

    def make(url: str, **options: Any) -> RevocationMirror:
        options.setdefault("heartbeat", 0.2)
        clock = options.get("clock", time.time)  # a skewed process: its store's clock too
        store = RedisRevocationStore(*client_pair(url, 0.3), prefix=prefix, clock=clock)
        built.append(RevocationMirror(store, **options))
        return built[-1]

    yield make
    for mirror in built:
        mirror.close()


def eventually(check: Callable[[], bool], within: float = 5.0) -> float:
    """Seconds until ``check()`` held; fails past ``within``."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < within, "not within the bound"
        time.sleep(0.002)
    return time.monotonic() - start


def unreachable_url() -> str:
    """A loopback port nobody listens on."""
    return f"redis://127.0.0.1:{free_port()}/0"


def test_mirror_hears_revocations_from_other_processes_stores(
    redis_url: str, mirrors: Callable[..., RevocationMirror]
) -> None:
    """What one mirror, or a plain Redis store, revokes, another mirror refuses shortly after."""
    first, second = mirrors(redis_url), mirrors(redis_url)
    assert first.wait_synced(5)
    assert second.wait_synced(5)
    first.revoke("by-mirror", time.time() + 60)
    assert first.is_revoked("by-mirror")  # at once, here
    eventually(lambda: second.is_revoked("by-mirror"), within=1.0)
    second.store.revoke("by-store", time.time() + 60)
    eventually(lambda: first.is_revoked("by-store"), within=1.0)
    assert not first.is_revoked("never", "revoked")


def test_mirror_loads_what_redis_holds_when_it_connects(
    redis_url: str, mirrors: Callable[..., RevocationMirror]
) -> None:
    """Entries written before the mirror started are refused once it has loaded them."""
    writer = mirrors(redis_url, start=False)
    writer.store.revoke("older", time.time() + 60)
    reader = mirrors(redis_url)
    assert reader.wait_synced(5)
    assert reader.is_revoked("older")
    assert 50 < reader.remaining("older") <= 60


def test_dropped_subscription_is_noticed_and_reloaded(
    redis_process: RedisServer, mirrors: Callable[..., RevocationMirror]
) -> None:
    """CLIENT KILL TYPE pubsub while Redis stays up: an entry written without any message (so
    only a reload can find it) is refused shortly after; the mirror never goes silently stale."""
    redis_process.start()
    mirror = mirrors(redis_process.url)
    assert mirror.wait_synced(5)
    loads = mirror.syncs
    with redis_process.client() as client:
        assert client.execute_command("CLIENT", "KILL", "TYPE", "pubsub") == 1
        client.set(mirror.store.prefix + "unannounced", b"1", px=60_000)
    eventually(lambda: mirror.is_revoked("unannounced"), within=2.0)
    assert mirror.syncs > loads


@pytest.mark.parametrize("policy", ["serve", "refuse"])
def test_stale_mirror_applies_its_policy_and_refuses_what_it_knows(
    redis_process: RedisServer,
    mirrors: Callable[..., RevocationMirror],
    events: list[Any],
    policy: str,
) -> None:
    """Redis down past max_staleness: a known revoked token stays 401; another gets the policy's
    answer (admitted with a revocation.stale event, or 503)."""
    redis_process.start()
    mirror = mirrors(redis_process.url, max_staleness=0.3, stale_policy=policy)
    auth = JWTAuthenticator(SECRET, revocation=mirror)
    assert mirror.wait_synced(5)
    known, other = make_token(jti="known"), make_token(jti="other")
    mirror.revoke("known", time.time() + 60)
    assert isinstance(auth.verify(Credential("bearer", other)), Principal)  # fresh
    redis_process.kill()
    time.sleep(0.4)
    refused = auth.verify(Credential("bearer", known))
    assert isinstance(refused, Deny)
    assert refused.status == 401
    answer = auth.verify(Credential("bearer", other))
    if policy == "serve":
        assert isinstance(answer, Principal)
        assert "revocation.stale" in [event.name for event in events]
    else:
        assert isinstance(answer, Deny)
        assert (answer.status, answer.detail) == (503, "revocation list unavailable")


def test_revocation_while_redis_is_down_applies_here_and_reaches_redis_on_return(
    redis_process: RedisServer, mirrors: Callable[..., RevocationMirror], events: list[Any]
) -> None:
    """Revoked during an outage: refused here at once, no error for the caller, written (and
    announced to the other mirrors) once Redis is back."""
    redis_process.start()
    mirror = mirrors(redis_process.url)
    other = mirrors(redis_process.url)
    assert mirror.wait_synced(5)
    assert other.wait_synced(5)
    redis_process.kill()
    mirror.revoke("during-outage", time.time() + 60)
    asyncio.run(mirror.arevoke("async-during-outage", time.time() + 60))
    assert mirror.is_revoked("during-outage")
    assert mirror.is_revoked("async-during-outage")
    assert not other.is_revoked("during-outage")
    assert "revocation.deferred" in [event.name for event in events]
    redis_process.start()
    with redis_process.client() as client:
        key = mirror.store.prefix + "during-outage"
        eventually(lambda: bool(client.exists(key)), within=5.0)
        assert client.exists(mirror.store.prefix + "async-during-outage")
        assert 80 < client.pttl(key) / 1000 <= 90  # the token's life plus the skew margin
    eventually(lambda: other.is_revoked("during-outage", "x"), within=5.0)


def test_clock_skew_between_processes_does_not_readmit_a_revoked_token(
    redis_url: str, mirrors: Callable[..., RevocationMirror]
) -> None:
    """A revoking process whose clock runs 5 s ahead: every other process still refuses the
    token for at least its whole remaining life (entries travel as durations, plus a margin)."""
    ahead = mirrors(redis_url, clock=lambda: time.time() + 5)
    reader = mirrors(redis_url)
    assert ahead.wait_synced(5)
    assert reader.wait_synced(5)
    expires = time.time() + 10  # the token's exp, by a true clock
    ahead.revoke("skewed", expires)
    eventually(lambda: reader.is_revoked("skewed"), within=1.0)
    assert reader.remaining("skewed") >= expires - time.time()


def test_mirror_holds_at_most_max_entries(mirrors: Callable[..., RevocationMirror]) -> None:
    """Past the cap the entries closest to expiry go first, audited."""
    mirror = mirrors(unreachable_url(), max_entries=3)
    now = time.time()
    for jti, life in (("a", 50), ("b", 10), ("c", 40), ("d", 30)):
        mirror.revoke(jti, now + life)
    assert [mirror.is_revoked(one) for one in "abcd"] == [True, False, True, True]


def test_local_mirror_is_asked_without_io_on_the_cached_path_too(
    mirrors: Callable[..., RevocationMirror],
) -> None:
    """With a mirror the JWT check awaits nothing; a cached token is re-checked against the
    mirror on every request, revoked at once on both sides."""
    mirror = mirrors(unreachable_url())
    auth = JWTAuthenticator(SECRET, revocation=mirror)
    assert not auth.needs_io
    token = make_token(jti="cached")
    assert isinstance(auth.verify(Credential("bearer", token)), Principal)
    assert isinstance(auth.cached(token), Principal)
    mirror.revoke("cached", time.time() + 60)
    assert auth.cached(token) is None
    refused = asyncio.run(auth.averify(Credential("bearer", token)))
    assert isinstance(refused, Deny)
    assert refused.detail == "token revoked"


def test_bad_stale_policy_names_the_variable() -> None:
    """An unknown policy fails at startup naming SECMW_JWT__REVOCATION_STALE_POLICY."""
    with pytest.raises(ConfigurationError, match="SECMW_JWT__REVOCATION_STALE_POLICY"):
        SecuritySettings(jwt={"revocation_stale_policy": "maybe"})


def test_auth_gate_decides_a_mirrored_token_without_a_need(
    mirrors: Callable[..., RevocationMirror],
) -> None:
    """Behind the gate: a token seen before passes straight from check(), with no Need for the
    driver to perform; its first check and its refusal once revoked await nothing."""
    mirror = mirrors(unreachable_url())
    chain = build_chain(SecuritySettings(jwt={"secret": SECRET}), revocation=mirror)
    gate = AuthGate(chain, raw=True)
    token = make_token(jti="gated")
    view = RequestView.from_scope(
        {"type": "http", "method": "GET", "path": "/", "headers": [bearer_field(token)]}
    )
    first = gate.check(view)  # not cached yet: the signature check, with nothing to await
    assert isinstance(first, Need)
    assert first.acall is None
    assert isinstance(gate.resume(first, first.call(*first.args)), Pass)
    assert gate.check(view) is PASS
    mirror.revoke("gated", time.time() + 60)
    again = gate.check(view)  # the refusal takes the long way (challenge, throttle, audit)
    assert isinstance(again, Need)
    assert again.acall is None
    refused = gate.resume(again, again.call(*again.args))
    assert isinstance(refused, Deny)
    assert refused.detail == "token revoked"


def bearer_field(token: str) -> tuple[bytes, bytes]:
    return (b"authorization", f"Bearer {token}".encode())


def test_frozen_redis_is_noticed_and_known_revocations_stay_refused(
    redis_process: RedisServer, mirrors: Callable[..., RevocationMirror], events: list[Any]
) -> None:
    """SIGSTOP: the unanswered pings end the session (no silent staleness), what the mirror
    knows stays refused; SIGCONT: it loads again."""
    redis_process.start()
    mirror = mirrors(redis_process.url)
    assert mirror.wait_synced(5)
    mirror.revoke("before-freeze", time.time() + 60)
    process = redis_process.process
    assert process is not None
    process.send_signal(signal.SIGSTOP)
    try:
        eventually(lambda: "revocation.mirror_disconnected" in [e.name for e in events], 5.0)
        assert mirror.is_revoked("before-freeze")
        loads = mirror.syncs
    finally:
        process.send_signal(signal.SIGCONT)
    eventually(lambda: mirror.syncs > loads, within=5.0)


def test_refresh_against_a_refusing_stale_mirror_is_503_not_500(
    mirrors: Callable[..., RevocationMirror],
) -> None:
    """The token endpoint asks the mirror whether a family is revoked: stale under the refuse
    policy, that is 503 temporarily_unavailable (never a 500), and nothing is issued."""
    mirror = mirrors(unreachable_url(), stale_policy="refuse")
    issuer = TokenIssuer(revocation=mirror, jwt={"secret": SECRET})
    issued = issuer.issue(Account.create("alice", scopes=["read"]))
    assert issued.refresh_token is not None
    answer = issuer.refresh(issued.refresh_token)
    assert isinstance(answer, OAuthError)
    assert (answer.status, answer.error) == (503, "temporarily_unavailable")
