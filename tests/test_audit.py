"""Audit events: deduplication with an injected clock, hooks, levels, and no credential ever logged.

The last tests drive every layer's denial through the ASGI and WSGI ``SecurityStack`` with
distinctive credentials, and check that each denial is one event and that no token, key,
password, cookie value or TOTP code appears in any event or log record.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pyotp
import pytest
from werkzeug.test import Client

from secmw import asgi, audit, wsgi
from secmw.audit import AuditEvent, AuditSettings, Deduplicator
from secmw.auth.apikey import hash_api_key
from secmw.auth.passwords import hash_password
from secmw.core.request import RequestView
from tests.support import http_scope, make_token, run_asgi

JWT_SECRET = "jwt-secret-Q7v9-" + "k" * 24
VALID_KEY = "live-key-VALID-7Hq2x9"
WRONG_KEY = "guess-key-WRONG-4Zp8w1"
PASSWORD = "alice-PASSWORD-u2Rk"
WRONG_PASSWORD = "alice-GUESS-n5Wd"
SESSION_ID = "sessionVALUE" + "x7" * 16
TOTP_SECRET = pyotp.random_base32()


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def fresh_audit() -> Iterator[None]:
    """Each test starts and ends with the state of a fresh process: every event logged."""
    audit.configure(AuditSettings(level="DEBUG", dedup_window=0))
    yield
    audit.configure(AuditSettings(level="DEBUG", dedup_window=0))


@pytest.fixture
def events() -> Iterator[list[AuditEvent]]:
    """Every event the hooks receive during the test."""
    seen: list[AuditEvent] = []
    audit.add_hook(seen.append)
    yield seen
    audit.remove_hook(seen.append)


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The messages logged on ``secmw.audit``."""
    return [r.getMessage() for r in caplog.records if r.name == "secmw.audit"]


def request_from(client: str) -> RequestView:
    """A request view from ``client`` on ``/login``."""
    return RequestView("POST", "/login", peer=client)


# -- deduplication ------------------------------------------------------------------------------


def test_identical_events_are_counted_then_summarised(caplog: pytest.LogCaptureFixture) -> None:
    """Within the window a repeat is counted; when it ends one summary carries the count."""
    clock = FakeClock()
    audit.configure(AuditSettings(dedup_window=60), clock=clock)
    with caplog.at_level(logging.INFO, logger="secmw.audit"):
        for _ in range(41):
            audit.emit("auth.denied", "signature invalid", request=request_from("192.0.2.9"))
        assert audit_lines(caplog) == ["auth.denied: signature invalid"]
        clock.now += 60
        audit.emit("auth.denied", "signature invalid", request=request_from("192.0.2.9"))
    assert audit_lines(caplog) == [
        "auth.denied: signature invalid",
        "audit.suppressed: 40 more 'auth.denied' events (signature invalid) within 60s",
        "auth.denied: signature invalid",
    ]
    summary = caplog.records[1].secmw_event  # type: ignore[attr-defined]
    assert summary["client"] == "192.0.2.9"
    assert summary["extra"] == {"event": "auth.denied", "count": 40, "window": 60.0}
    assert caplog.records[1].levelno == logging.WARNING


@pytest.mark.parametrize(
    ("changed", "other"),
    [
        pytest.param("reason", {"reason": "token expired"}, id="another-reason"),
        pytest.param("client", {"request": request_from("192.0.2.10")}, id="another-client"),
        pytest.param("principal", {"principal": "bob"}, id="another-principal"),
        pytest.param("rule", {"rule": "/admin"}, id="another-rule"),
        pytest.param("name", {"name": "ip.denied"}, id="another-name"),
    ],
)
def test_events_differing_in_one_field_are_each_logged(
    caplog: pytest.LogCaptureFixture, changed: str, other: dict[str, Any]
) -> None:
    """Name, reason, client, principal and rule are the dedup key: one differing is logged."""
    audit.configure(AuditSettings(dedup_window=60), clock=FakeClock())
    first: dict[str, Any] = {
        "name": "auth.denied",
        "reason": "signature invalid",
        "request": request_from("192.0.2.9"),
    }
    with caplog.at_level(logging.INFO, logger="secmw.audit"):
        audit.emit(**first)
        audit.emit(**first)
        audit.emit(**{**first, **other})
    assert len(audit_lines(caplog)) == 2, changed


def test_path_variants_of_one_attack_are_one_event(caplog: pytest.LogCaptureFixture) -> None:
    """The path is not in the key: ``/admin``, ``/ADMIN/``, ``/admin//`` log once."""
    audit.configure(AuditSettings(dedup_window=60), clock=FakeClock())
    with caplog.at_level(logging.INFO, logger="secmw.audit"):
        for path in ("/admin", "/ADMIN/", "/admin//"):
            audit.emit("ip.denied", "not allowed", request=RequestView("GET", path, peer="::1"))
    assert audit_lines(caplog) == ["ip.denied: not allowed"]


def test_flush_logs_pending_summaries_once(caplog: pytest.LogCaptureFixture) -> None:
    """``flush`` writes the summaries now; a second flush has nothing left."""
    audit.configure(AuditSettings(dedup_window=60), clock=FakeClock())
    with caplog.at_level(logging.INFO, logger="secmw.audit"):
        for _ in range(3):
            audit.emit("ratelimit.exceeded", "limit reached", rule="default", level=logging.INFO)
        audit.emit("ip.denied", "not allowed")  # logged once, nothing suppressed: no summary
        audit.flush()
        audit.flush()
    assert audit_lines(caplog) == [
        "ratelimit.exceeded: limit reached",
        "ip.denied: not allowed",
        "audit.suppressed: 2 more 'ratelimit.exceeded' events (limit reached) within 60s",
    ]
    assert caplog.records[-1].levelno == logging.INFO


def test_window_zero_logs_every_event(caplog: pytest.LogCaptureFixture) -> None:
    """``dedup_window=0`` turns deduplication off."""
    audit.configure(AuditSettings(dedup_window=0))
    with caplog.at_level(logging.INFO, logger="secmw.audit"):
        for _ in range(5):
            audit.emit("auth.denied", "signature invalid")
    assert audit_lines(caplog) == ["auth.denied: signature invalid"] * 5


def test_distinct_events_past_max_keys_are_counted_in_one_summary(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A flood of distinct clients cannot grow the table or the log past ``max_keys``."""
    clock = FakeClock()
    audit.configure(AuditSettings(dedup_window=10, max_keys=3), clock=clock)
    with caplog.at_level(logging.INFO, logger="secmw.audit"):
        for host in range(50):
            audit.emit("auth.denied", "API key invalid", request=request_from(f"10.0.0.{host}"))
        assert len(audit._dedup) == 3
        assert len(audit_lines(caplog)) == 3
        clock.now += 10
        audit.emit("auth.denied", "API key invalid", request=request_from("10.0.1.1"))
    lines = audit_lines(caplog)
    assert lines[3:] == [
        "audit.suppressed: 47 events not logged: more than 3 distinct events within 10s",
        "auth.denied: API key invalid",
    ]


def test_windows_expire_oldest_first() -> None:
    """Only the windows that have ended are dropped, so memory follows the traffic of one window."""
    clock = FakeClock()
    dedup = Deduplicator(10, 100, clock=clock)
    for index in range(5):
        assert dedup.admit(AuditEvent("e", str(index)), logging.INFO) == (True, [])
        clock.now += 3
    assert dedup.admit(AuditEvent("e", "late"), logging.INFO)[0]
    # At 1015 the windows opened at 1000 and 1003 have ended; three remain, plus the new one.
    assert len(dedup) == 4


def test_hooks_receive_every_event_even_when_the_log_skips_it(
    events: list[AuditEvent], caplog: pytest.LogCaptureFixture
) -> None:
    """Dedup and the level threshold apply to the log only; hooks (metrics) count everything."""
    audit.configure(AuditSettings(level="WARNING", dedup_window=60), clock=FakeClock())
    with caplog.at_level(logging.DEBUG, logger="secmw.audit"):
        for _ in range(3):
            audit.emit("auth.denied", "signature invalid")
        audit.emit("ratelimit.exceeded", "limit reached", level=logging.INFO)
    assert [event.name for event in events] == ["auth.denied"] * 3 + ["ratelimit.exceeded"]
    assert audit_lines(caplog) == ["auth.denied: signature invalid"]


def test_nothing_is_built_when_nobody_listens(caplog: pytest.LogCaptureFixture) -> None:
    """With the logger off and no hook, emit returns before touching the dedup table."""
    audit.configure(AuditSettings(dedup_window=60), clock=FakeClock())
    with caplog.at_level(logging.CRITICAL, logger="secmw.audit"):
        audit.emit("auth.denied", "signature invalid")
    assert len(audit._dedup) == 0
    assert audit_lines(caplog) == []


def test_a_failing_hook_is_logged_and_skipped(
    events: list[AuditEvent], caplog: pytest.LogCaptureFixture
) -> None:
    """A hook that raises does not reach the layer (no 500) nor stop the other hooks."""

    def broken(event: AuditEvent) -> None:
        raise RuntimeError("observer down")

    audit._hooks.insert(0, broken)
    try:
        with caplog.at_level(logging.ERROR, logger="secmw.audit"):
            audit.emit("auth.denied", "signature invalid", level=logging.DEBUG)
    finally:
        audit.remove_hook(broken)
    assert [event.name for event in events] == ["auth.denied"]
    assert "audit hook" in caplog.text
    assert "failed on auth.denied" in caplog.text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(
            "https://client:s3cr3t@idp.example/introspect",
            "https://***@idp.example/introspect",
            id="userinfo",
        ),
        pytest.param(
            "https://idp.example/jwks?client_secret=s3cr3t#k",
            "https://idp.example/jwks?***#k",
            id="query",
        ),
        pytest.param("https://idp.example/jwks", "https://idp.example/jwks", id="plain-url"),
        pytest.param("TimeoutError", "TimeoutError", id="not-a-url"),
        pytest.param(3, 3, id="not-text"),
    ],
)
def test_urls_in_extra_lose_userinfo_and_query(
    events: list[AuditEvent], value: object, expected: object
) -> None:
    """An operator's URL with an embedded secret is never written out whole."""
    audit.emit("jwks.fetch_failed", "timed out", endpoint=value)
    assert events[0].extra == {"endpoint": expected}


def test_settings_bounds() -> None:
    """The section has closed, documented defaults and refuses nonsense."""
    settings = AuditSettings()
    assert (settings.level, settings.dedup_window, settings.max_keys) == ("INFO", 60.0, 10_000)
    assert AuditSettings(level="ERROR").level_number == logging.ERROR
    with pytest.raises(ValueError, match="dedup_window"):
        AuditSettings(dedup_window=-1)
    with pytest.raises(ValueError, match="max_keys"):
        AuditSettings(max_keys=0)


# -- no credential in any event, through the whole stack ------------------------------------


@dataclass(frozen=True)
class Step:
    """One request and what it must get: a status and the (name, reason) of each event."""

    path: str
    status: int
    events: tuple[tuple[str, str], ...] | None  # None: exactly one event, whatever it is
    headers: tuple[tuple[str, str], ...] = ()
    method: str = "GET"
    query: str = ""


@dataclass(frozen=True)
class Case:
    """A sequence of requests from one client address."""

    client: str | None
    steps: tuple[Step, ...]


def basic(user: str, password: str) -> tuple[str, str]:
    """An ``Authorization: Basic`` header."""
    return ("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())


def wrong_totp_code() -> str:
    """A well-formed code that no time step within the drift window accepts."""
    totp = pyotp.TOTP(TOTP_SECRET)
    now = time.time()
    valid = {totp.at(now + drift) for drift in (-60, -30, 0, 30, 60)}
    return next(f"{n:06d}" for n in range(100_000, 999_999, 7919) if f"{n:06d}" not in valid)


BAD_SIGNATURE = make_token("z" * 32, sub="alice")
VALID_TOKEN = make_token(JWT_SECRET, sub="alice")
EXPIRED = make_token(JWT_SECRET, sub="alice", exp=int(time.time()) - 3600)
WRONG_CODE = wrong_totp_code()
KEY = ("X-API-Key", VALID_KEY)
WRONG_BASIC = basic("alice", WRONG_PASSWORD)
DENIED = 401
TOO_MANY = "Too many failed authentication attempts."
UNIDENTIFIED = "The client cannot be identified for rate limiting."


def denied(reason: str) -> tuple[tuple[str, str], ...]:
    """One ``auth.denied`` event with this reason."""
    return (("auth.denied", reason),)


CASES = {
    "ip-denied": Case(
        "192.0.2.1",
        (Step("/internal/status", 403, (("ip.denied", "address not in allow list"),), (KEY,)),),
    ),
    "bearer-bad-signature": Case(
        "192.0.2.2",
        (
            Step(
                "/items",
                DENIED,
                denied("signature invalid"),
                (("Authorization", f"Bearer {BAD_SIGNATURE}"),),
            ),
        ),
    ),
    "bearer-expired": Case(
        "192.0.2.3",
        (
            Step(
                "/items", DENIED, denied("token expired"), (("Authorization", f"Bearer {EXPIRED}"),)
            ),
        ),
    ),
    "apikey-unknown-header": Case(
        "192.0.2.4",
        (Step("/items", DENIED, denied("API key invalid"), (("X-API-Key", WRONG_KEY),)),),
    ),
    "apikey-unknown-query": Case(
        "192.0.2.5",
        (Step("/items", DENIED, denied("API key invalid"), query=f"api_key={WRONG_KEY}"),),
    ),
    "basic-wrong-password": Case(
        "192.0.2.6",
        (
            Step(
                "/items",
                DENIED,
                denied("invalid user name or password"),
                (basic("alice", WRONG_PASSWORD),),
            ),
        ),
    ),
    "basic-unknown-user": Case(
        "192.0.2.7",
        (
            Step(
                "/items",
                DENIED,
                denied("invalid user name or password"),
                (basic("mallory", PASSWORD),),
            ),
        ),
    ),
    "session-unknown": Case(
        "192.0.2.8",
        (
            Step(
                "/items",
                DENIED,
                denied("session expired or unknown"),
                (("Cookie", f"__Host-session={SESSION_ID}"),),
            ),
        ),
    ),
    "session-cross-site": Case(
        "192.0.2.9",
        (
            Step(
                "/items",
                403,
                denied("cross-origin request refused"),
                (("Cookie", f"__Host-session={SESSION_ID}"), ("Origin", "https://evil.example")),
                method="POST",
            ),
        ),
    ),
    "anonymous-on-required-path": Case(
        "192.0.2.10", (Step("/items", DENIED, denied("authentication required")),)
    ),
    "totp-wrong-code": Case(
        "192.0.2.11",
        (
            Step(
                "/admin/panel",
                DENIED,
                (("totp.denied", "second factor invalid"),),
                (KEY, ("X-TOTP-Code", WRONG_CODE)),
            ),
        ),
    ),
    "ratelimit-exceeded": Case(
        "192.0.2.12",
        (
            Step("/items", 200, (), (KEY,)),
            Step("/items", 200, (), (KEY,)),
            Step("/items", 200, (), (KEY,)),
            Step("/items", 429, (("ratelimit.exceeded", "Rate limit exceeded."),), (KEY,)),
        ),
    ),
    "ratelimit-exceeded-bearer": Case(
        "192.0.2.15",
        (
            *[Step("/items", 200, (), (("Authorization", f"Bearer {VALID_TOKEN}"),))] * 3,
            Step(
                "/items",
                429,
                (("ratelimit.exceeded", "Rate limit exceeded."),),
                (("Authorization", f"Bearer {VALID_TOKEN}"),),
            ),
        ),
    ),
    "auth-failures-throttled": Case(
        "192.0.2.13",
        (
            Step("/items", DENIED, denied("invalid user name or password"), (WRONG_BASIC,)),
            Step("/items", DENIED, denied("API key invalid"), (("X-API-Key", WRONG_KEY),)),
            Step("/items", 429, denied(TOO_MANY), (basic("alice", PASSWORD),)),
        ),
    ),
    "ratelimit-unidentified": Case(
        None, (Step("/health", 403, (("ratelimit.unidentified", UNIDENTIFIED),)),)
    ),
    "dot-segments": Case("192.0.2.14", (Step("/items/../internal/status", 400, None, (KEY,)),)),
}

SECRETS = (
    JWT_SECRET,
    VALID_KEY,
    WRONG_KEY,
    PASSWORD,
    WRONG_PASSWORD,
    SESSION_ID,
    TOTP_SECRET,
    WRONG_CODE,
    BAD_SIGNATURE,
    VALID_TOKEN,
    VALID_TOKEN.rsplit(".", 1)[1],
    BAD_SIGNATURE.rsplit(".", 1)[1],
    EXPIRED,
    EXPIRED.rsplit(".", 1)[1],
    basic("alice", WRONG_PASSWORD)[1].split()[1],
    basic("alice", PASSWORD)[1].split()[1],
)


@pytest.fixture(scope="module")
def sections() -> dict[str, Any]:
    """Every layer on: IP rules, four schemes, step-up, tight limits, a failure throttle."""
    return {
        "jwt": {"secret": JWT_SECRET},
        "api_keys": {"keys": [{"hash": hash_api_key(VALID_KEY), "id": "svc", "scopes": ["r"]}]},
        "basic": {"users": {"alice": {"password_hash": hash_password(PASSWORD)}}},
        "auth": {
            "order": ["bearer", "apikey", "basic", "session"],
            "required": ["/**"],
            "public": ["/health"],
        },
        "session": {"secure": True},
        "ip": {"rules": {"/internal/*": {"allow": ["10.0.0.0/8"]}}},
        "totp": {"paths": ["/admin/*"]},
        "rate_limit": {"default": "3/minute", "auth_failures": "2/minute"},
    }


def secret_for(principal: Any) -> str:
    """Every principal is enrolled with the one test secret."""
    return TOTP_SECRET


async def asgi_ok(scope: Any, receive: Any, send: Any) -> None:
    """The protected ASGI app: 200 ok."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def wsgi_ok(environ: Any, start_response: Any) -> Iterable[bytes]:
    """The protected WSGI app: 200 ok."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


class Driver:
    """Sends one step through the ASGI or the WSGI stack; returns the status."""

    def __init__(self, adapter: str, sections: dict[str, Any]) -> None:
        self.adapter = adapter
        if adapter == "asgi":
            self.asgi = asgi.SecurityStack(asgi_ok, secret_for=secret_for, **sections)
        else:
            self.wsgi = Client(
                wsgi.SecurityStack(wsgi_ok, secret_for=secret_for, **sections), use_cookies=False
            )

    def send(self, step: Step, client: str | None) -> int:
        if self.adapter == "asgi":
            scope = http_scope(
                step.path,
                method=step.method,
                headers=list(step.headers),
                query_string=step.query.encode(),
                client=(client, 40000) if client else None,
            )
            return run_asgi(self.asgi, scope).status
        response = self.wsgi.open(
            step.path,
            method=step.method,
            headers=list(step.headers),
            query_string=step.query,
            environ_base={"REMOTE_ADDR": client or ""},
        )
        return response.status_code


def leaked(text: str) -> list[str]:
    """The credentials found in ``text``."""
    return [secret for secret in SECRETS if secret in text]


@pytest.mark.parametrize("adapter", ["asgi", "wsgi"])
@pytest.mark.parametrize("name", list(CASES))
def test_every_denial_is_one_event_without_credentials(
    adapter: str,
    name: str,
    sections: dict[str, Any],
    events: list[AuditEvent],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each layer's denial through the stack: one event, no credential in it or in any log."""
    driver = Driver(adapter, sections)
    case = CASES[name]
    with caplog.at_level(logging.DEBUG, logger="secmw"):
        for step in case.steps:
            del events[:]
            assert driver.send(step, case.client) == step.status, step
            if step.events is None:
                assert len(events) == 1, [event.name for event in events]
            else:
                assert tuple((event.name, event.reason) for event in events) == step.events
            for event in events:
                assert leaked(repr(event.as_dict())) == [], event
    for record in caplog.records:
        assert leaked(record.getMessage() + repr(record.__dict__)) == [], record.getMessage()
