"""``SecurityStack`` runs an http request through its layers in one call; the middlewares
composed (``stack._entry``) must answer every request exactly alike: status, headers in order,
body, audit events and what the app saw."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from secmw import current_principal, hash_api_key
from secmw.asgi import SecurityStack
from tests.support import SECRET, Recorder, empty_receive, http_scope, make_token

KEY = "k" * 32
SECTIONS: dict[str, Any] = {
    "jwt": {"secret": SECRET},
    "api_keys": {"keys": [{"hash": hash_api_key(KEY), "id": "svc", "scopes": ["r"]}]},
    "auth": {"required": ["/private/*"]},
    "ip": {"allow": ["127.0.0.0/8", "10.0.0.0/8"], "rules": {"/lan/*": {"allow": ["10.0.0.0/8"]}}},
    "rate_limit": {"default": "100/minute", "rules": [{"path": "/tight", "limit": "3/minute"}]},
}


async def app(scope: Any, receive: Any, send: Any) -> None:
    """Echo what the app can see, answer 401 on /own-401, raise on /boom."""
    path = scope["path"]
    if path == "/boom":
        raise RuntimeError("boom")
    status = 401 if path == "/own-401" else 200
    seen = f"{current_principal().id}|{scope['client']}|{scope['user'].identity}"
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": seen.encode()})


def run(stack: Any, scope: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes, str]:
    recorder = Recorder()
    error = ""
    try:
        asyncio.run(stack(scope, empty_receive, recorder))
    except RuntimeError as exc:
        error = str(exc)
    if not recorder.messages:  # the app raised and no headers layer answered for it
        return 0, [], b"", error
    return recorder.status, recorder.headers, recorder.body, error


def requests() -> list[dict[str, Any]]:
    token = make_token(scope="read")
    bearer = [("authorization", f"Bearer {token}")]
    return [
        http_scope("/", headers=bearer),
        http_scope("/private/x"),
        http_scope("/private/x", headers=bearer),
        http_scope("/", headers=[("authorization", "Bearer nope")]),
        http_scope("/", headers=[("authorization", "Bearer a b")]),
        http_scope("/", headers=[("authorization", "Digest x")]),
        http_scope("/", headers=[("x-api-key", KEY)]),
        http_scope("/", headers=[("x-api-key", "wrong")]),
        http_scope("/", client=("203.0.113.9", 1), headers=bearer),
        http_scope("/lan/a", headers=bearer),
        http_scope("/a/../private/x", headers=bearer),
        http_scope("/own-401"),
        http_scope("/own-401", headers=bearer),
        http_scope("/boom", headers=bearer),
        http_scope(
            "/",
            method="OPTIONS",
            headers=[("origin", "https://a.example"), ("access-control-request-method", "GET")],
        ),
        *(http_scope("/tight", client=("10.1.1.1", 1)) for _ in range(5)),
        *(http_scope("/tight", client=("10.2.2.2", 1), headers=bearer) for _ in range(5)),
        http_scope("/", scheme="https", headers=bearer),
    ]


@pytest.mark.parametrize("headers_enabled", [True, False])
def test_one_call_answers_as_the_layers_composed(headers_enabled: bool, events: Any) -> None:
    sections = {**SECTIONS, "headers": {"enabled": headers_enabled}}
    fused, composed = SecurityStack(app, **sections), SecurityStack(app, **sections)
    assert fused._fused
    answers: list[Any] = []
    for scope in requests():
        events.clear()
        one = run(fused, dict(scope))
        fused_events = [event.as_dict() for event in events]
        events.clear()
        other = run(composed._entry, dict(scope))
        assert one == other, scope["path"]
        assert fused_events == [event.as_dict() for event in events], scope["path"]
        answers.append(one[0])
    # The matrix covers every kind of answer of the layers.
    expected = {200, 400, 401, 403, 429, 500 if headers_enabled else 0}
    assert expected <= set(answers)
