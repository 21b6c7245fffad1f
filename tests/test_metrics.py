"""Prometheus metrics: decisions by layer and outcome, latencies, state gauges, zero cost when off.

Skipped with a reason when ``prometheus-client`` is not installed, except under CI (``CI=true``),
where that is a failure. Each test registers on its own registry.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from werkzeug.test import Client

from secmw import asgi, audit, metrics, wsgi
from secmw.asgi.metrics import MetricsMiddleware as ASGIMetrics
from secmw.auth.apikey import hash_api_key
from secmw.errors import ConfigurationError
from secmw.metrics import MetricsSettings
from secmw.wsgi.metrics import MetricsMiddleware as WSGIMetrics
from tests.support import http_scope, run_asgi

if os.environ.get("CI", "").lower() == "true":
    import prometheus_client
else:
    prometheus_client = pytest.importorskip(
        "prometheus_client", reason="prometheus-client is not installed (the metrics extra)"
    )

KEY = "metrics-test-key-0001"
SECTIONS: dict[str, Any] = {
    "api_keys": {"keys": [{"hash": hash_api_key(KEY), "id": "svc"}]},
    "auth": {"required": ["/**"]},
    "ip": {"rules": {"/internal/*": {"allow": ["10.0.0.0/8"]}}},
    "rate_limit": {"default": "2/minute"},
}


@pytest.fixture
def registry() -> Iterator[Any]:
    """A fresh registry with metrics enabled on it; metrics off again afterwards."""
    registry = prometheus_client.CollectorRegistry()
    metrics.enable(registry)
    yield registry
    metrics.disable()


def value(registry: Any, name: str, **labels: str) -> float:
    """A sample's value, 0 when absent."""
    return registry.get_sample_value(name, labels) or 0.0


async def ok_app(scope: Any, receive: Any, send: Any) -> None:
    """200 ok."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def wsgi_ok(environ: Any, start_response: Any) -> Iterable[bytes]:
    """200 ok."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


REQUESTS = [  # (path, headers) and the layer that refuses it (None: allowed)
    pytest.param("/items", [("X-API-Key", KEY)], None, id="allowed"),
    pytest.param("/items", [("X-API-Key", "wrong")], "auth", id="auth-denied"),
    pytest.param("/internal/x", [("X-API-Key", KEY)], "ip", id="ip-denied"),
]


def asgi_get(app: Any, path: str, headers: list[tuple[str, str]]) -> int:
    """Status of one GET through an ASGI app."""
    return run_asgi(app, http_scope(path, headers=headers)).status


@pytest.mark.parametrize(("path", "headers", "layer"), REQUESTS)
def test_asgi_decisions_by_layer_and_outcome(
    registry: Any, path: str, headers: list[tuple[str, str]], layer: str | None
) -> None:
    """One request: one stack-level decision and, when refused, one at the refusing layer."""
    app = ASGIMetrics(asgi.SecurityStack(ok_app, **SECTIONS), registry=registry)
    status = asgi_get(app, path, headers)
    outcome = "allow" if layer is None else "deny"
    assert (status == 200) == (layer is None)
    assert value(registry, "secmw_decisions_total", layer="stack", outcome=outcome) == 1
    assert value(registry, "secmw_request_duration_seconds_count", outcome=outcome) == 1
    if layer is not None:
        assert value(registry, "secmw_decisions_total", layer=layer, outcome="deny") == 1


@pytest.mark.parametrize(("path", "headers", "layer"), REQUESTS)
def test_wsgi_decisions_by_layer_and_outcome(
    registry: Any, path: str, headers: list[tuple[str, str]], layer: str | None
) -> None:
    """The WSGI twin counts the same, and times the request once the server closes it."""
    app = WSGIMetrics(wsgi.SecurityStack(wsgi_ok, **SECTIONS), registry=registry)
    response = Client(app).get(path, headers=headers, environ_base={"REMOTE_ADDR": "127.0.0.1"})
    outcome = "allow" if layer is None else "deny"
    assert (response.status_code == 200) == (layer is None)
    assert value(registry, "secmw_request_duration_seconds_count", outcome=outcome) == 0
    response.close()  # what a server does once the body is sent
    assert value(registry, "secmw_decisions_total", layer="stack", outcome=outcome) == 1
    assert value(registry, "secmw_request_duration_seconds_count", outcome=outcome) == 1
    if layer is not None:
        assert value(registry, "secmw_decisions_total", layer=layer, outcome="deny") == 1


def test_rate_limit_denials_are_counted_at_their_layer(registry: Any) -> None:
    """Two admitted, the third refused: 2 allow and 1 deny at the stack, 1 deny at ratelimit."""
    app = ASGIMetrics(asgi.SecurityStack(ok_app, **SECTIONS), registry=registry)
    statuses = [asgi_get(app, "/items", [("X-API-Key", KEY)]) for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert value(registry, "secmw_decisions_total", layer="stack", outcome="allow") == 2
    assert value(registry, "secmw_decisions_total", layer="stack", outcome="deny") == 1
    assert value(registry, "secmw_decisions_total", layer="ratelimit", outcome="deny") == 1
    assert value(registry, "secmw_audit_events_total", event="ratelimit.exceeded") == 1


def test_a_denial_outside_the_middleware_marks_no_request(registry: Any) -> None:
    """Events emitted with no request in flight count per layer, and nothing else."""
    audit.emit("auth.denied", "signature invalid", level=logging.DEBUG)
    audit.emit("ratelimit.unavailable", "storage down", level=logging.DEBUG)
    assert value(registry, "secmw_decisions_total", layer="auth", outcome="deny") == 1
    assert value(registry, "secmw_decisions_total", layer="ratelimit", outcome="unavailable") == 1
    assert value(registry, "secmw_decisions_total", layer="stack", outcome="deny") == 0


def test_a_503_denial_is_counted_as_unavailable(registry: Any) -> None:
    """A denial event carrying status 503 is an unavailable dependency, not a refusal."""
    audit.emit("auth.denied", "introspection unavailable", status=503, level=logging.DEBUG)
    assert value(registry, "secmw_decisions_total", layer="auth", outcome="unavailable") == 1
    assert value(registry, "secmw_decisions_total", layer="auth", outcome="deny") == 0


@pytest.mark.parametrize(
    ("down", "up", "dependency"),
    [
        pytest.param("ratelimit.storage_down", "ratelimit.storage_up", "ratelimit", id="storage"),
        pytest.param("jwks.fetch_failed", "jwks.recovered", "jwks", id="jwks"),
        pytest.param(
            "introspection.failed", "introspection.recovered", "introspection", id="introspection"
        ),
    ],
)
def test_state_changes_drive_the_dependency_gauge(
    registry: Any, down: str, up: str, dependency: str
) -> None:
    """A failure event sets the gauge to 0, the recovery event back to 1."""
    audit.emit(down, "failed", level=logging.DEBUG)
    assert registry.get_sample_value("secmw_dependency_up", {"dependency": dependency}) == 0
    audit.emit(up, "answers again", level=logging.DEBUG)
    assert registry.get_sample_value("secmw_dependency_up", {"dependency": dependency}) == 1


def test_storage_and_cache_recorders(registry: Any) -> None:
    """The functions the storage and token-cache edges call land in their metrics."""
    metrics.observe_storage("redis", 0.002)
    metrics.observe_storage("redis", 0.3, failed=True)
    metrics.count_token_cache(True)
    metrics.count_token_cache(False, "introspection")
    assert value(registry, "secmw_storage_latency_seconds_count", backend="redis") == 2
    assert (
        value(registry, "secmw_storage_latency_seconds_bucket", backend="redis", le="0.0025") == 1
    )
    assert value(registry, "secmw_storage_errors_total", backend="redis") == 1
    assert value(registry, "secmw_token_cache_hits_total", cache="jwt") == 1
    assert value(registry, "secmw_token_cache_misses_total", cache="introspection") == 1


def test_exposition_uses_the_documented_names(registry: Any) -> None:
    """The text format shows every family under its OpenTelemetry-friendly name."""
    asgi_get(ASGIMetrics(ok_app, registry=registry), "/", [])
    metrics.observe_storage("memory", 0.0001)
    metrics.count_token_cache(True)
    text = prometheus_client.generate_latest(registry).decode()
    for family in (
        "secmw_decisions_total",
        "secmw_request_duration_seconds_bucket",
        "secmw_storage_latency_seconds_bucket",
        "secmw_token_cache_hits_total",
    ):
        assert family in text


def test_enable_is_idempotent_and_disable_stops_counting() -> None:
    """One hook per process; after ``disable`` nothing is counted and no hook remains."""
    registry = prometheus_client.CollectorRegistry()
    first = metrics.enable(registry)
    assert metrics.enable(registry) is first
    assert audit._hooks.count(first.on_event) == 1
    metrics.disable()
    assert metrics.active() is None
    assert first.on_event not in audit._hooks
    audit.emit("auth.denied", "signature invalid", level=logging.DEBUG)
    metrics.observe_storage("redis", 0.1)
    assert value(registry, "secmw_decisions_total", layer="auth", outcome="deny") == 0
    assert value(registry, "secmw_storage_latency_seconds_count", backend="redis") == 0


def test_missing_prometheus_client_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the extra, enabling fails at construction and says which variable asked for it."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ConfigurationError, match="SECMW_METRICS__ENABLED"):
        ASGIMetrics(ok_app)
    with pytest.raises(ConfigurationError, match="secmw\\[metrics\\]"):
        WSGIMetrics(wsgi_ok)
    assert metrics.active() is None


def test_metrics_are_off_by_default() -> None:
    """The settings default is off, and secmw alone never imports prometheus_client."""
    assert MetricsSettings().enabled is False
    code = (
        "import sys, secmw, secmw.asgi, secmw.wsgi, secmw.config.settings, secmw.metrics\n"
        "from secmw import audit\n"
        "assert 'prometheus_client' not in sys.modules, 'imported'\n"
        "assert audit._hooks == [], audit._hooks\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_middleware_passes_lifespan_through(registry: Any) -> None:
    """Only http and websocket scopes are counted."""
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    asyncio.run(ASGIMetrics(app, registry=registry)({"type": "lifespan"}, None, None))  # type: ignore[arg-type]
    assert seen == ["lifespan"]
    assert value(registry, "secmw_decisions_total", layer="stack", outcome="allow") == 0
