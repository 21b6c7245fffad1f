"""``secmw.audit.JSONFormatter``: one JSON line per audit event, from real requests through both
stacks; other records formatted too; the documented logging configurations work."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from secmw import asgi, audit, wsgi
from secmw.audit import JSONFormatter
from tests.support import SECRET, http_scope, make_token, run_asgi

DOC = Path(__file__).resolve().parents[1] / "docs" / "operations.md"
FORGED = make_token("x" * 32, sub="mallory")  # signed with another key: refused
SECTIONS: dict[str, Any] = {
    "jwt": {"secret": SECRET},
    "auth": {"required": ["/*"]},
    "rate_limit": {"default": "2/minute"},
    "ip": {"rules": {"/internal/*": {"allow": ["10.0.0.0/8"]}}},
}


@contextmanager
def json_audit_log() -> Iterator[io.StringIO]:
    """What a JSONFormatter handler on the ``secmw.audit`` logger writes meanwhile."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    logger = logging.getLogger("secmw.audit")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """The JSON audit log written during the test."""
    with json_audit_log() as stream:
        yield stream


def asgi_ok(scope: Any, receive: Any, send: Any) -> Any:
    async def app() -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app()


def wsgi_ok(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [b"ok"]


def stack(side: str) -> Any:
    """``side``'s SecurityStack around an app answering 200."""
    if side == "asgi":
        return asgi.SecurityStack(asgi_ok, **SECTIONS)
    return Client(wsgi.SecurityStack(wsgi_ok, **SECTIONS))


def request(app: Any, path: str, headers: list[tuple[str, str]]) -> int:
    """One request through ``app`` (a :func:`stack`) from 192.0.2.7; the status."""
    if isinstance(app, Client):
        reply = app.get(path, headers=headers, environ_base={"REMOTE_ADDR": "192.0.2.7"})
        return reply.status_code
    scope = http_scope(path, headers=headers, client=("192.0.2.7", 5000))
    return run_asgi(app, scope).status


def parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize("side", ["asgi", "wsgi"])
def test_a_refused_token_is_one_json_line_without_the_token(side: str, lines: io.StringIO) -> None:
    """A forged bearer token: one line with every field, the request id, and no credential."""
    headers = [("Authorization", f"Bearer {FORGED}"), ("X-Request-ID", "req-42.a")]
    assert request(stack(side), "/items", headers) == 401
    (line,) = parsed(lines)
    assert line["logger"] == "secmw.audit"
    assert line["level"] == "WARNING"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert {k: line[k] for k in line if k not in ("time", "reason", "level", "logger")} == {
        "event": "auth.denied",
        "outcome": "refused",
        "status": 401,
        "reason_code": "invalid_token",
        "principal_id": None,
        "client_address": "192.0.2.7",
        "path": "/items",
        "rule": None,
        "request_id": "req-42.a",
    }
    assert FORGED not in lines.getvalue()
    assert FORGED.split(".")[1] not in lines.getvalue()


@pytest.mark.parametrize("side", ["asgi", "wsgi"])
def test_ip_and_rate_limit_refusals_carry_status_code_and_rule(
    side: str, lines: io.StringIO
) -> None:
    """A 403 from the IP rules and a 429 from the limit name their rule and reason code."""
    token = make_token(sub="alice")
    headers = [("Authorization", f"Bearer {token}")]
    app = stack(side)
    assert request(app, "/internal/x", headers) == 403
    statuses = [request(app, "/items", headers) for _ in range(3)]
    assert statuses[-1] == 429
    refused = [line for line in parsed(lines) if line["outcome"] == "refused"]
    assert [(r["event"], r["status"], r["reason_code"]) for r in refused] == [
        ("ip.denied", 403, "ip_not_allowed"),
        ("ratelimit.exceeded", 429, "rate_limited"),
    ]
    assert refused[0]["rule"] == "/internal/*"
    assert refused[1]["rule"] == "default"
    assert refused[1]["principal_id"] == "alice"  # refused after authentication: named
    assert refused[1]["request_id"] is None
    assert token not in lines.getvalue()


@pytest.mark.parametrize(
    "value",
    ["a b", "x" * 129, "id\u00e9", "<script>"],
    ids=["space", "too-long", "non-ascii", "markup"],
)
def test_an_implausible_request_id_is_dropped(value: str, lines: io.StringIO) -> None:
    """Only one short token of safe characters is logged as the request id."""
    headers = [("X-Request-ID", value.encode().decode("latin-1"))]
    assert request(stack("asgi"), "/items", headers) == 401
    (line,) = parsed(lines)
    assert line["request_id"] is None


def test_other_records_are_formatted_too() -> None:
    """A record that is no audit event keeps its message and exception, one line each."""
    formatter = JSONFormatter(static={"service": "api"})
    plain = logging.LogRecord(
        "uvicorn.error", logging.INFO, __file__, 1, "started %s", ("x",), None
    )
    assert json.loads(formatter.format(plain)) | {"time": "T"} == {
        "service": "api",
        "time": "T",
        "level": "INFO",
        "logger": "uvicorn.error",
        "message": "started x",
    }
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        failed = logging.LogRecord("app", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = formatter.format(failed)
    assert "\n" not in text
    assert "ValueError: boom" in json.loads(text)["exception"]


def test_state_changes_and_summaries_have_their_outcome(lines: io.StringIO) -> None:
    """State changes are notices, a refusal without a request is still one, and a dedup
    summary says it is one."""
    audit.configure(audit.AuditSettings(level="DEBUG", dedup_window=60))
    audit.emit("ratelimit.storage_down", "redis unreachable")
    for _ in range(2):
        audit.emit("jwks.fetch_failed", "timeout", endpoint="https://user:pw@idp.test/jwks?k=v")
    audit.emit("auth.failed", "invalid credentials at the token endpoint")
    audit.flush()
    outcomes = [(line["event"], line["outcome"]) for line in parsed(lines)]
    assert outcomes == [
        ("ratelimit.storage_down", "notice"),
        ("jwks.fetch_failed", "notice"),
        ("auth.failed", "refused"),  # a refusal outside a request: no status, still refused
        ("audit.suppressed", "suppressed"),
    ]
    assert "pw@" not in lines.getvalue()


def _documented(language: str, marker: str) -> str:
    """The fenced ``language`` block of docs/operations.md that contains ``marker``."""
    blocks = re.findall(rf"```{language}\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    (block,) = [b for b in blocks if marker in b]
    return block


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """dictConfig replaces handlers process-wide: put the loggers it names back afterwards."""
    names = ("secmw.audit", "uvicorn.error", "uvicorn.access", "gunicorn.error")
    loggers = [logging.getLogger(name) for name in names]
    saved = [(log.handlers[:], log.level, log.propagate, log.disabled) for log in loggers]
    yield
    for log, (handlers, level, propagate, disabled) in zip(loggers, saved, strict=True):
        log.handlers[:] = handlers
        log.level, log.propagate, log.disabled = level, propagate, disabled


def test_the_documented_dictconfig_writes_json_lines(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    """The dictConfig example of the docs, applied as written, logs audit events as JSON."""
    namespace: dict[str, Any] = {}
    exec(_documented("python", "logging.config.dictConfig"), namespace)
    headers = [("Authorization", f"Bearer {FORGED}")]
    assert request(stack("asgi"), "/items", headers) == 401
    out = capsys.readouterr()
    (line,) = [json.loads(text) for text in (out.out + out.err).splitlines()]
    assert (line["event"], line["status"]) == ("auth.denied", 401)


def test_the_documented_uvicorn_and_gunicorn_configs_apply(restore_logging: None) -> None:
    """The uvicorn ``--log-config`` JSON and gunicorn's ``logconfig_dict`` are valid dictConfig
    settings that put JSONFormatter on the audit logger."""
    uvicorn_config = json.loads(_documented("json", '"secmw.audit.JSONFormatter"'))
    namespace: dict[str, Any] = {}
    exec(_documented("python", "logconfig_dict"), namespace)
    for config in (uvicorn_config, namespace["logconfig_dict"]):
        logging.config.dictConfig(config)
        handlers = logging.getLogger("secmw.audit").handlers
        assert any(isinstance(h.formatter, JSONFormatter) for h in handlers)
