"""TOTP step-up: drift window, replay protection, throttle reporting, ASGI and WSGI adapters."""

from __future__ import annotations

import asyncio
from typing import Any

import pyotp
import pytest
from werkzeug.test import Client

from secmw import audit
from secmw.asgi import AuthenticationMiddleware as ASGIAuth
from secmw.asgi.stepup import StepUpMiddleware as ASGIStepUp
from secmw.auth.base import Credential
from secmw.auth.totp import MemoryReplayStore, StepUp
from secmw.config.settings import SecuritySettings
from secmw.core.deny import Deny
from secmw.core.fields import Headers
from secmw.core.principal import ANONYMOUS, Principal
from secmw.core.request import RequestView
from secmw.errors import ConfigurationError
from secmw.wsgi import AuthenticationMiddleware as WSGIAuth
from secmw.wsgi.stepup import StepUpMiddleware as WSGIStepUp
from tests.identity_support import FakeClock
from tests.support import SECRET, http_scope, make_token, run_asgi

ALICE_SECRET = pyotp.random_base32()
T0 = 1_700_000_010.0  # 10 s into a 30 s step


def code_at(clock: FakeClock, steps: int = 0, secret: str = ALICE_SECRET) -> str:
    return pyotp.TOTP(secret).at(clock.now + steps * 30)


def policy(clock: FakeClock, **options: Any) -> StepUp:
    return StepUp(paths=["/admin/**"], clock=clock, **options)


@pytest.mark.parametrize(
    ("offset", "window", "matches"),
    [(0, 1, True), (-1, 1, True), (1, 1, True), (-2, 1, False), (2, 1, False), (-1, 0, False)],
    ids=["now", "previous", "next", "two-back", "two-ahead", "previous-no-window"],
)
def test_drift_window(offset: int, window: int, matches: bool) -> None:
    """Codes of `window` neighbouring steps match, and they report their own step."""
    clock = FakeClock(T0)
    step = policy(clock, window=window).match(ALICE_SECRET, code_at(clock, offset))
    assert (step is not None) is matches
    if matches:
        assert step == int(T0 // 30) + offset


@pytest.mark.parametrize(
    "code",
    ["", "12345", "1234567", "12a456", " 123456", "\uff11\uff12\uff13\uff14\uff15\uff16"],
    ids=str,
)
def test_malformed_codes_never_match(code: str) -> None:
    """Only exactly `digits` ASCII digits are considered."""
    assert policy(FakeClock(T0)).match(ALICE_SECRET, code) is None


def test_eight_digit_sha256_codes() -> None:
    """digits and digest are honoured."""
    clock = FakeClock(T0)
    totp = pyotp.TOTP(ALICE_SECRET, digits=8, digest="sha256")
    step_up = policy(clock, digits=8, digest="sha256")
    assert step_up.match(ALICE_SECRET, totp.at(T0)) == int(T0 // 30)


def test_non_base32_secret_raises_value_error() -> None:
    """The adapters turn this into 403 not-enrolled; the core says what happened."""
    with pytest.raises(ValueError):  # noqa: PT011 - binascii.Error is a ValueError
        policy(FakeClock(T0)).match("not base32!", "123456")


def test_memory_replay_store_accepts_each_step_once_and_only_forward() -> None:
    """A used step, and any earlier one, is refused until the entry expires."""
    clock = FakeClock(0)
    store = MemoryReplayStore(clock=clock)
    assert store.use("alice", 10, 120)
    assert not store.use("alice", 10, 120)
    assert not store.use("alice", 9, 120)
    assert store.use("bob", 10, 120)
    assert store.use("alice", 11, 120)
    clock.advance(121)
    assert store.use("alice", 5, 120)


def _request(path: str, method: str = "GET") -> RequestView:
    return RequestView(method, path, headers=Headers())


@pytest.mark.parametrize(
    ("path", "method", "scopes", "needed"),
    [
        ("/admin/users", "GET", set(), True),
        ("/admin", "POST", set(), True),
        ("/items", "GET", set(), False),
        ("/items", "GET", {"payments"}, True),
        ("/transfers", "POST", set(), True),
        ("/transfers", "GET", set(), False),
    ],
    ids=["path", "prefix", "other-path", "scope", "method-listed", "method-not-listed"],
)
def test_which_requests_need_a_code(path: str, method: str, scopes: set[str], needed: bool) -> None:
    """Paths, paths restricted by method, and principals holding a marked scope."""
    admin = StepUp(paths=["/admin/**"], scopes=["payments"])
    transfers = StepUp(paths=["/transfers"], methods=["post"])
    principal = Principal.create("u", "bearer", scopes=scopes)
    request = _request(path, method)
    assert (admin.needed(request, principal) or transfers.needed(request, principal)) is needed


def test_bad_totp_settings_name_the_variable() -> None:
    """A drift window above 3 steps is refused at startup."""
    with pytest.raises(ConfigurationError, match="SECMW_TOTP__WINDOW"):
        SecuritySettings(totp={"window": 10})


# -- the middlewares ------------------------------------------------------------------------


class Attempt:
    """A charged attempt of :class:`Throttle`: counted as a failure until refunded."""

    def __init__(self, throttle: Throttle, credential: Credential) -> None:
        self.throttle, self.credential = throttle, credential

    def refund(self) -> None:
        self.throttle.failures.remove(self.credential)


class AsyncAttempt(Attempt):
    async def refund(self) -> None:  # type: ignore[override]
        Attempt.refund(self)


class Throttle:
    """Charges every attempt (kept as a failure unless refunded); refuses once told to."""

    def __init__(self) -> None:
        self.failures: list[Credential] = []
        self.block = False

    def charge(self, request: RequestView, credential: Credential) -> Deny | Attempt:
        if self.block:
            return Deny(429, "too many failed attempts", "throttled")
        self.failures.append(credential)
        return Attempt(self, credential)


class AsyncThrottle(Throttle):
    async def charge(self, request: RequestView, credential: Credential) -> Deny | Attempt:  # type: ignore[override]
        refused = Throttle.charge(self, request, credential)
        return refused if isinstance(refused, Deny) else AsyncAttempt(self, credential)


SECRETS = {"alice": ALICE_SECRET, "mallory": "not base32!"}


def lookup(principal: Principal) -> str | None:
    return SECRETS.get(principal.id)


async def alookup(principal: Principal) -> str | None:
    return lookup(principal)


async def _asgi_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [b"ok"]


class ASGISide:
    def __init__(self, clock: FakeClock, throttle: AsyncThrottle) -> None:
        step_up = ASGIStepUp(
            _asgi_app,
            secret_for=alookup,
            step_up=policy(clock, scopes=["payments"]),
            replay=MemoryReplayStore(),
            throttle=throttle,
        )
        self.app = ASGIAuth(step_up, jwt={"secret": SECRET})

    def __call__(self, path: str, user: str | None, code: str | None) -> tuple[int, bytes, str]:
        headers = [("Authorization", f"Bearer {make_token(sub=user)}")] if user else []
        if code is not None:
            headers.append(("X-TOTP-Code", code))
        sent = run_asgi(self.app, http_scope(path, headers=headers))
        challenge = ", ".join(sent.header_values("www-authenticate"))
        return sent.status, sent.body, challenge


class WSGISide:
    def __init__(self, clock: FakeClock, throttle: Throttle) -> None:
        step_up = WSGIStepUp(
            _wsgi_app,
            secret_for=lookup,
            step_up=policy(clock, scopes=["payments"]),
            replay=MemoryReplayStore(),
            throttle=throttle,
        )
        self.client = Client(WSGIAuth(step_up, jwt={"secret": SECRET}))

    def __call__(self, path: str, user: str | None, code: str | None) -> tuple[int, bytes, str]:
        headers = {"Authorization": f"Bearer {make_token(sub=user)}"} if user else {}
        if code is not None:
            headers["X-TOTP-Code"] = code
        response = self.client.get(path, headers=headers)
        challenge = ", ".join(response.headers.getlist("www-authenticate"))
        return response.status_code, response.data, challenge


@pytest.fixture(params=["asgi", "wsgi"])
def side(request: pytest.FixtureRequest) -> tuple[Any, FakeClock, Throttle]:
    clock = FakeClock(T0)
    throttle = AsyncThrottle() if request.param == "asgi" else Throttle()
    make = ASGISide if request.param == "asgi" else WSGISide
    return make(clock, throttle), clock, throttle  # type: ignore[arg-type]


def test_step_up_flow(side: tuple[Any, FakeClock, Throttle]) -> None:
    """No code: 401 totp_required with a TOTP challenge; wrong: 401 counted; right: 200; the same
    code again: 401 counted (replay); the next step's code: 200."""
    call, clock, throttle = side
    assert call("/items", "alice", None)[0] == 200
    status, body, challenge = call("/admin/users", "alice", None)
    assert (status, b'"code":"totp_required"' in body) == (401, True)
    assert challenge == 'TOTP realm="api", header="X-TOTP-Code"'
    assert call("/admin/users", "alice", "000000")[0] == 401
    assert call("/admin/users", "alice", code_at(clock))[:2] == (200, b"ok")
    replay = call("/admin/users", "alice", code_at(clock))
    assert (replay[0], b"invalid_totp" in replay[1]) == (401, True)
    assert [(c.scheme, c.username, c.secret) for c in throttle.failures] == [
        ("totp", "alice", ""),
        ("totp", "alice", ""),
    ]
    clock.advance(30)
    assert call("/admin/users", "alice", code_at(clock))[0] == 200


def test_step_up_refusals(side: tuple[Any, FakeClock, Throttle]) -> None:
    """Anonymous: 401; no secret enrolled or a corrupt one: 403; throttled: 429 before checking."""
    call, clock, throttle = side
    assert call("/admin", None, code_at(clock))[0] == 401
    assert call("/admin", "bob", code_at(clock))[0] == 403
    assert call("/admin", "mallory", "123456")[0] == 403
    throttle.block = True
    assert call("/admin", "alice", code_at(clock))[0] == 429
    assert throttle.failures == []


def test_failing_secret_lookup_is_503() -> None:
    """The app's lookup raising (database down) is a 503 problem, never a 500."""

    def broken(principal: Principal) -> str | None:
        raise ConnectionError("database down")

    clock = FakeClock(T0)
    app = ASGIAuth(
        ASGIStepUp(_asgi_app, secret_for=broken, step_up=policy(clock)), jwt={"secret": SECRET}
    )
    headers = [("Authorization", f"Bearer {make_token()}"), ("X-TOTP-Code", code_at(clock))]
    sent = run_asgi(app, http_scope("/admin", headers=headers))
    assert sent.status == 503
    assert b"temporarily_unavailable" in sent.body
    wsgi = WSGIAuth(
        WSGIStepUp(_wsgi_app, secret_for=broken, step_up=policy(clock)), jwt={"secret": SECRET}
    )
    assert Client(wsgi).get("/admin", headers=dict(headers)).status_code == 503


def test_scope_marks_every_request_of_its_holders() -> None:
    """A principal holding a marked scope needs a code on any path."""
    clock = FakeClock(T0)
    call = ASGISide(clock, AsyncThrottle())
    token = make_token(sub="alice", scope="payments")
    sent = run_asgi(call.app, http_scope("/items", headers=[("Authorization", f"Bearer {token}")]))
    assert sent.status == 401


def test_repeated_header_is_a_failure() -> None:
    """Two X-TOTP-Code fields are never a valid code."""
    clock = FakeClock(T0)
    throttle = AsyncThrottle()
    call = ASGISide(clock, throttle)
    headers = [
        ("Authorization", f"Bearer {make_token(sub='alice')}"),
        ("X-TOTP-Code", code_at(clock)),
        ("X-TOTP-Code", code_at(clock)),
    ]
    assert run_asgi(call.app, http_scope("/admin", headers=headers)).status == 401
    assert len(throttle.failures) == 1


def test_concurrent_requests_with_one_code_pass_once() -> None:
    """Ten concurrent ASGI requests carrying the same fresh code: exactly one passes."""
    clock = FakeClock(T0)
    call = ASGISide(clock, AsyncThrottle())
    code = code_at(clock)
    token = make_token(sub="alice")

    async def one() -> int:
        sent: list[Any] = []

        async def send(message: Any) -> None:
            sent.append(message)

        async def receive() -> Any:
            return {"type": "http.request", "body": b""}

        headers = [("Authorization", f"Bearer {token}"), ("X-TOTP-Code", code)]
        await call.app(http_scope("/admin", headers=headers), receive, send)
        return int(sent[0]["status"])

    async def many() -> list[int]:
        return list(await asyncio.gather(*(one() for _ in range(10))))

    assert sorted(asyncio.run(many())) == [200] + [401] * 9


def test_denials_are_audited_without_the_code() -> None:
    """totp.denied events name the principal, never the code."""
    seen: list[audit.AuditEvent] = []
    audit.add_hook(seen.append)
    try:
        clock = FakeClock(T0)
        call = ASGISide(clock, AsyncThrottle())
        call("/admin", "alice", "424242")
    finally:
        audit.remove_hook(seen.append)
    (event,) = [e for e in seen if e.name == "totp.denied"]
    assert (event.principal, event.reason) == ("alice", "second factor invalid")
    assert "424242" not in repr(event)


def test_middleware_from_settings() -> None:
    """StepUpMiddleware(totp={...}) builds its policy and a memory replay store."""
    app = ASGIStepUp(_asgi_app, secret_for=lookup, totp={"paths": ["/admin/**"]})
    assert app.step_up.needed(_request("/admin/x"), Principal("a", "bearer"))
    assert not app.step_up.needed(_request("/x"), ANONYMOUS)
    assert isinstance(app.replay, MemoryReplayStore)


# -- throttled by default, 503s that say when to come back, honest audit reasons ---------------


class BrokenReplay:
    """A replay store whose backend is down."""

    def use(self, subject: str, step: int, ttl: int) -> bool:
        raise ConnectionError("replay store down")

    async def ause(self, subject: str, step: int, ttl: int) -> bool:
        raise ConnectionError("replay store down")


def side_without_throttle(kind: str, clock: FakeClock, **options: Any) -> Any:
    """A step-up stack built with no ``throttle`` argument; a callable (user, code) -> status."""
    settings = {"rate_limit": {"storage_uri": "memory://"}, "totp": {"failures": "3/minute"}}
    settings["totp"].update(options)
    token = {"alice": make_token(sub="alice"), "bob": make_token(sub="bob")}
    if kind == "asgi":
        asgi = ASGIAuth(
            ASGIStepUp(_asgi_app, secret_for=alookup, step_up=policy(clock), **settings),
            jwt={"secret": SECRET},
        )

        def call(user: str, code: str, peer: str = "198.51.100.1") -> int:
            headers = [("Authorization", f"Bearer {token[user]}"), ("X-TOTP-Code", code)]
            scope = http_scope("/admin", headers=headers)
            scope["client"] = (peer, 1234)
            return run_asgi(asgi, scope).status

        return call
    client = Client(
        WSGIAuth(
            WSGIStepUp(_wsgi_app, secret_for=lookup, step_up=policy(clock), **settings),
            jwt={"secret": SECRET},
        )
    )

    def wsgi_call(user: str, code: str, peer: str = "198.51.100.1") -> int:
        headers = {"Authorization": f"Bearer {token[user]}", "X-TOTP-Code": code}
        return client.get("/admin", headers=headers, environ_base={"REMOTE_ADDR": peer}).status_code

    return wsgi_call


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_step_up_is_throttled_by_default(kind: str) -> None:
    """With no throttle passed, wrong codes are budgeted per principal (from any address) and
    per address (for any principal): 429 past the budget, even for the right code."""
    clock = FakeClock(T0)
    call = side_without_throttle(kind, clock)
    assert [call("alice", "000000", f"198.51.100.{n}") for n in range(3)] == [401] * 3
    assert call("alice", code_at(clock), "198.51.100.99") == 429  # the principal's budget
    assert call("bob", "000000", "203.0.113.5") == 403  # bob is not enrolled: refunded
    assert [call("bob", "000000", "198.51.100.7") for _ in range(3)] == [403] * 3


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_right_codes_are_refunded_and_the_throttle_can_be_turned_off(kind: str) -> None:
    """A right code gives its attempt back; ``SECMW_TOTP__THROTTLE=false`` turns it off."""
    clock = FakeClock(T0)
    call = side_without_throttle(kind, clock)
    for _ in range(5):  # more successes than the budget holds
        assert call("alice", code_at(clock)) == 200
        clock.advance(30)
    unthrottled = side_without_throttle(kind, clock, throttle=False)
    assert [unthrottled("alice", "000000") for _ in range(5)] == [401] * 5


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
@pytest.mark.parametrize("broken", ["lookup", "replay"])
def test_step_up_503s_carry_retry_after(kind: str, broken: str) -> None:
    """A failing secret lookup or replay store: 503 with Retry-After (RFC 9110 §10.2.3)."""

    def failing(principal: Principal) -> str | None:
        raise ConnectionError("database down")

    async def afailing(principal: Principal) -> str | None:
        return failing(principal)

    clock = FakeClock(T0)
    options: dict[str, Any] = {"step_up": policy(clock)}
    if broken == "replay":
        options["replay"] = BrokenReplay()
    headers = [
        ("Authorization", f"Bearer {make_token(sub='alice')}"),
        ("X-TOTP-Code", code_at(clock)),
    ]
    if kind == "asgi":
        secret_for: Any = afailing if broken == "lookup" else alookup
        app = ASGIAuth(
            ASGIStepUp(_asgi_app, secret_for=secret_for, **options), jwt={"secret": SECRET}
        )
        sent = run_asgi(app, http_scope("/admin", headers=headers))
        status, retry_after = sent.status, sent.header_values("retry-after")
    else:
        sync_lookup: Any = failing if broken == "lookup" else lookup
        wsgi = WSGIAuth(
            WSGIStepUp(_wsgi_app, secret_for=sync_lookup, **options), jwt={"secret": SECRET}
        )
        response = Client(wsgi).get("/admin", headers=dict(headers))
        status, retry_after = response.status_code, response.headers.getlist("retry-after")
    assert status == 503
    assert retry_after == ["5"]


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        ("JBSWY3DPEHPK3PXP", "stored secret is 80 bits, shorter than the 112 bits pyotp accepts"),
        ("not base32!", "stored secret is not base32"),
    ],
    ids=["too-short", "not-base32"],
)
def test_a_bad_stored_secret_is_logged_for_what_it_is(secret: str, reason: str) -> None:
    """A base32 secret pyotp refuses as too short is not called "not base32"; neither reason
    holds the secret."""
    seen: list[audit.AuditEvent] = []
    audit.add_hook(seen.append)
    clock = FakeClock(T0)
    app = ASGIAuth(
        ASGIStepUp(_asgi_app, secret_for=lambda p: secret, step_up=policy(clock)),
        jwt={"secret": SECRET},
    )
    try:
        headers = [("Authorization", f"Bearer {make_token()}"), ("X-TOTP-Code", "123456")]
        assert run_asgi(app, http_scope("/admin", headers=headers)).status == 403
    finally:
        audit.remove_hook(seen.append)
    (event,) = [e for e in seen if e.name == "totp.bad_secret"]
    assert event.reason.startswith(reason)
    assert secret not in repr(event)
