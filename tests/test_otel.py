"""OpenTelemetry (``otel.enabled``): a span per request with an event per gate decision, and
metrics for refusals and storage round trips, from real requests through both stacks, read back
with the SDK's in-memory exporter and reader."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from werkzeug.test import Client

from secmw import asgi, audit, metrics, otel, wsgi
from tests.support import (
    SECRET,
    Recorder,
    empty_receive,
    http_scope,
    make_token,
    run_asgi,
    uvicorn_server,
    werkzeug_server,
)
from tests.test_json_logs import asgi_ok, wsgi_ok

SIDES = ["asgi", "wsgi"]
ROOT = Path(__file__).resolve().parents[1]


class Telemetry:
    """The SDK's in-memory exporter and reader, wired to secmw."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        otel.enable(tracer_provider=tracer_provider, meter_provider=self.meter_provider)

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    installed = Telemetry()
    yield installed
    otel.disable()
    installed.meter_provider.shutdown()


def sections(storage: str = "memory://") -> dict[str, Any]:
    return {
        "otel": {"enabled": True},
        "jwt": {"secret": SECRET},
        "auth": {"required": ["/items"]},
        "ip": {"rules": {"/internal/*": {"allow": ["10.0.0.0/8"]}}},
        "rate_limit": {
            "default": "2/minute",
            "storage_uri": storage,
            "key_prefix": f"otel{uuid.uuid4().hex[:8]}",
        },
    }


def stack(side: str, **given: Any) -> Any:
    if side == "asgi":
        return asgi.SecurityStack(asgi_ok, **given)
    return wsgi.SecurityStack(wsgi_ok, **given)


def send(app: Any, path: str, token: str | None = None, method: str = "GET") -> int:
    """One request from 192.0.2.7 through ``app``; the status."""
    headers = [("Authorization", f"Bearer {token}")] if token else []
    if isinstance(app, asgi.SecurityStack):
        scope = http_scope(path, method=method, headers=headers, client=("192.0.2.7", 5000))
        return run_asgi(app, scope).status
    reply = Client(app).open(
        path, method=method, headers=headers, environ_base={"REMOTE_ADDR": "192.0.2.7"}
    )
    reply.close()
    return reply.status_code


def decisions(span: Any) -> list[tuple[Any, ...]]:
    return [
        (
            e.attributes["secmw.gate"],
            e.attributes["secmw.decision"],
            e.attributes.get("http.response.status_code"),
            e.attributes.get("secmw.reason_code"),
        )
        for e in span.events
        if e.name == "secmw.gate"
    ]


@pytest.mark.parametrize("side", SIDES)
def test_an_allowed_request_is_one_span_with_every_gate_allowed(
    side: str, telemetry: Telemetry
) -> None:
    """Each gate's decision is one event; the span has the semconv attributes and status."""
    app = stack(side, **sections())
    assert send(app, "/items", make_token(sub="alice")) == 200
    (span,) = telemetry.spans.get_finished_spans()
    assert span.name == "secmw GET"
    assert dict(span.attributes) == {
        "http.request.method": "GET",
        "client.address": "192.0.2.7",
        "user.id": "alice",
        "http.response.status_code": 200,
    }
    assert decisions(span) == [
        ("headers", "allowed", None, None),
        ("ip", "allowed", None, None),
        ("auth", "allowed", None, None),
        ("rate_limit", "allowed", None, None),
    ]


@pytest.mark.parametrize("side", SIDES)
def test_refusals_are_events_with_their_reason_and_are_counted(
    side: str, telemetry: Telemetry
) -> None:
    """A refused token, an IP rule and a rate limit: the refusing gate's event says why, the
    gates after it do not run, and ``secmw.refusals`` counts each by reason."""
    app = stack(side, **sections())
    token = make_token(sub="alice")
    forged = make_token("x" * 32, sub="mallory")
    assert send(app, "/items", forged) == 401
    assert send(app, "/internal/x", token) == 403
    assert [send(app, "/items", token) for _ in range(3)][-1] == 429
    spans = telemetry.spans.get_finished_spans()
    assert decisions(spans[0])[-1] == ("auth", "refused", 401, "invalid_token")
    assert "user.id" not in spans[0].attributes
    assert decisions(spans[1]) == [
        ("headers", "allowed", None, None),
        ("ip", "refused", 403, "ip_not_allowed"),
    ]
    assert decisions(spans[-1])[-1] == ("rate_limit", "refused", 429, "rate_limited")
    assert spans[-1].attributes["http.response.status_code"] == 429
    assert spans[1].events[-1].attributes["secmw.reason"] == (
        "Access from this address is not allowed."
    )
    counted = {
        (p.attributes["secmw.event"], p.attributes["secmw.reason_code"]): p.value
        for p in telemetry.points("secmw.refusals")
    }
    assert counted == {
        ("auth.denied", "invalid_token"): 1,
        ("ip.denied", "ip_not_allowed"): 1,
        ("ratelimit.exceeded", "rate_limited"): 1,
    }
    audit.emit("auth.failed", "invalid credentials at the token endpoint")  # no request
    audit.emit("ratelimit.storage_up", "answers again")  # a state change: no refusal
    counted = {p.attributes["secmw.event"]: p.value for p in telemetry.points("secmw.refusals")}
    assert counted["auth.failed"] == 1
    assert "ratelimit.storage_up" not in counted
    assert forged not in repr([s.to_json() for s in spans])


@pytest.mark.redis
@pytest.mark.parametrize("side", SIDES)
def test_storage_round_trips_are_a_histogram(
    side: str, telemetry: Telemetry, redis_url: str
) -> None:
    """Each Redis round trip of the rate-limit layer is one histogram point."""
    app = stack(side, **sections(redis_url))
    token = make_token(sub="bob")
    if side == "wsgi":
        assert [send(app, "/open", token) for _ in range(2)] == [200, 200]
        app.close()
    else:

        async def twice() -> list[int]:
            statuses = []
            for _ in range(2):
                recorder = Recorder()
                scope = http_scope("/open", headers=[("Authorization", f"Bearer {token}")])
                await app(scope, empty_receive, recorder)
                statuses.append(recorder.status)
            await app.aclose()
            return statuses

        assert asyncio.run(twice()) == [200, 200]
    (point,) = telemetry.points("secmw.storage.duration")
    assert dict(point.attributes) == {
        "secmw.storage.backend": "redis",
        "secmw.storage.outcome": "ok",
    }
    assert point.count == 2
    assert 0 < point.sum < 10


def test_without_the_setting_nothing_is_traced(telemetry: Telemetry) -> None:
    """``otel.enabled`` false: no span, gates unwrapped, the drivers' shortcuts kept."""
    given = sections()
    given["otel"] = {"enabled": False}
    app = stack("asgi", **given)
    assert send(app, "/items", make_token(sub="alice")) == 200
    assert telemetry.spans.get_finished_spans() == ()
    assert app.entry == app.drive
    assert not any(isinstance(g, otel.TracedGate) for g in app.gates)


def test_a_traced_gate_keeps_the_gate_s_answers(telemetry: Telemetry) -> None:
    """Outside a span a traced gate is the gate: same verdicts, same flags, no shortcuts."""
    app = stack("asgi", **sections())
    traced = [g for g in app.gates if isinstance(g, otel.TracedGate)]
    assert [g.layer for g in traced] == ["headers", "ip", "auth", "rate_limit"]
    assert all(getattr(g, "admits", None) is None for g in traced)
    ip = traced[1]
    assert ip.rewrites_client == ip.gate.rewrites_client
    assert ip.guards is ip.gate.guards


def test_enable_and_disable_install_and_remove_the_observers(telemetry: Telemetry) -> None:
    """The audit hook and the storage observer come and go with ``enable``/``disable``."""
    active = otel.active()
    assert active is not None
    assert active.on_event in audit._hooks
    assert active.on_storage in metrics._storage_observers
    otel.disable()
    assert active.on_event not in audit._hooks
    assert active.on_storage not in metrics._storage_observers
    assert otel.active() is None


def test_without_the_extra_the_stack_runs_and_enabling_names_the_extra() -> None:
    """With OpenTelemetry not installed (its imports fail), the stack serves as before, and
    ``otel.enabled`` fails at start naming the variable and the extra."""
    code = (
        "import sys\n"
        "class NoOpenTelemetry:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'opentelemetry':\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, NoOpenTelemetry())\n"
        "from secmw import asgi\n"
        "from secmw.errors import ConfigurationError\n"
        "from tests.support import http_scope, run_asgi\n"
        "async def app(scope, receive, send):\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': b''})\n"
        "assert run_asgi(asgi.SecurityStack(app), http_scope('/')).status == 200\n"
        "try:\n"
        "    asgi.SecurityStack(app, otel={'enabled': True})\n"
        "except ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "SECMW_OTEL__ENABLED: OpenTelemetry needs opentelemetry-api (pip install 'secmw[otel]')"
    )


def test_a_refused_websocket_handshake_is_a_403_span(telemetry: Telemetry) -> None:
    """A handshake closed before accept is recorded as refused (403), not as an error."""
    app = stack("asgi", **sections())
    recorder = Recorder()
    scope = http_scope("/items", type="websocket", client=("192.0.2.7", 5000))
    asyncio.run(app(scope, empty_receive, recorder))
    assert recorder.messages[0]["type"] in ("websocket.close", "websocket.http.response.start")
    (span,) = telemetry.spans.get_finished_spans()
    assert span.name == "secmw WEBSOCKET"
    assert span.attributes["http.response.status_code"] in (401, 403)
    assert span.status.is_ok
    assert decisions(span)[-1][:2] == ("auth", "refused")


@pytest.mark.server
@pytest.mark.parametrize("side", SIDES)
def test_spans_from_a_real_server(side: str, telemetry: Telemetry) -> None:
    """Served by uvicorn or werkzeug on 127.0.0.1 and called over HTTP: the refused and the
    allowed request are one span each, with the gate events and the client's address."""
    app = stack(side, **sections())
    server = uvicorn_server(app) if side == "asgi" else werkzeug_server(app)
    token = make_token(sub="carol")
    with server as base, httpx.Client(base_url=base, timeout=10) as client:
        assert client.get("/internal/x").status_code == 403
        assert client.get("/items", headers={"Authorization": f"Bearer {token}"}).text == "ok"
        deadline = time.monotonic() + 10  # a span ends once the server has sent the answer
        while len(telemetry.spans.get_finished_spans()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    refused, allowed = telemetry.spans.get_finished_spans()
    assert refused.attributes["client.address"] == "127.0.0.1"
    assert decisions(refused)[-1] == ("ip", "refused", 403, "ip_not_allowed")
    assert allowed.attributes["user.id"] == "carol"
    assert allowed.attributes["http.response.status_code"] == 200
    assert [d[1] for d in decisions(allowed)] == ["allowed"] * 4
