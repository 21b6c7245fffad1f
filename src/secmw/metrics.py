"""Prometheus metrics, optional: the ``metrics`` extra and ``metrics.enabled=true``.

Names follow the Prometheus and OpenTelemetry conventions (``snake_case``, base units in the name,
``_total`` on counters), so an OpenTelemetry collector scraping them keeps them as they are:

============================================  =========  ====================================
``secmw_decisions_total{layer,outcome}``      counter    one per request at ``layer="stack"``
                                                         (``allow``/``deny``, from the metrics
                                                         middleware) and one per denial at the
                                                         layer that refused (``deny`` or
                                                         ``unavailable``, from the audit events)
``secmw_audit_events_total{event}``           counter    every audit event, by name
``secmw_request_duration_seconds{outcome}``   histogram  whole request, through the stack
``secmw_dependency_up{dependency}``           gauge      1/0 on each recovery/failure event of
                                                         ``ratelimit`` storage, ``jwks``,
                                                         ``introspection``
``secmw_storage_latency_seconds{backend}``    histogram  one rate-limit storage round trip
``secmw_storage_errors_total{backend}``       counter    failed storage round trips
``secmw_token_cache_hits_total{cache}``       counter    verified-token cache hits
``secmw_token_cache_misses_total{cache}``     counter    verified-token cache misses
============================================  =========  ====================================

Zero cost when off: nothing imports ``prometheus_client``, no audit hook is installed, no
middleware is in the stack, and the recording functions return after one ``None`` check.
Denials and state changes are counted by an audit hook (every layer already emits them);
allowed requests and latencies by ``secmw.asgi.MetricsMiddleware`` /
``secmw.wsgi.MetricsMiddleware``. Labels take values from small fixed sets, never from a request.
Under gunicorn, set ``PROMETHEUS_MULTIPROC_DIR`` so workers share their counts
(``prometheus_client`` multiprocess mode).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from pydantic import Field

from secmw import audit
from secmw.audit.kinds import DENIALS, STATE_CHANGES
from secmw.core.section import Section
from secmw.errors import ConfigurationError

_VARIABLE = "metrics.enabled"
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STORAGE_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class MetricsSettings(Section):
    """Prometheus metrics (``metrics.*``); needs the ``metrics`` extra."""

    enabled: bool = Field(False, description="Count decisions, latencies and cache hits.")


class Tally:
    """What the metrics middleware learns about one request while the layers run."""

    __slots__ = ("denied",)

    def __init__(self) -> None:
        self.denied = False


current_tally: ContextVar[Tally | None] = ContextVar("secmw_metrics_tally", default=None)
"""The running request's tally, set by the metrics middleware (None outside one)."""


class Metrics:
    """The collectors, registered on one ``prometheus_client`` registry.

    Args:
        registry: Where to register; default ``prometheus_client.REGISTRY`` (what
            ``start_http_server`` and ``make_asgi_app`` expose).

    Raises:
        ConfigurationError: ``prometheus-client`` is not installed.
    """

    def __init__(self, registry: Any = None) -> None:
        prom = _prometheus()
        self.registry = registry if registry is not None else prom.REGISTRY
        common: dict[str, Any] = {"namespace": "secmw", "registry": self.registry}
        self.decisions = prom.Counter(
            "decisions", "Security decisions by layer and outcome.", ["layer", "outcome"], **common
        )
        self.events = prom.Counter("audit_events", "Audit events by name.", ["event"], **common)
        self.request_duration = prom.Histogram(
            "request_duration_seconds",
            "Time to serve a request through the stack.",
            ["outcome"],
            buckets=REQUEST_BUCKETS,
            **common,
        )
        self.dependency_up = prom.Gauge(
            "dependency_up",
            "1 while a dependency answers, 0 after it failed (set on state-change events).",
            ["dependency"],
            multiprocess_mode="livemin",  # down in any worker is down
            **common,
        )
        self.storage_latency = prom.Histogram(
            "storage_latency_seconds",
            "Rate-limit storage round trips.",
            ["backend"],
            buckets=STORAGE_BUCKETS,
            **common,
        )
        self.storage_errors = prom.Counter(
            "storage_errors", "Failed rate-limit storage round trips.", ["backend"], **common
        )
        self.cache_hits = prom.Counter(
            "token_cache_hits", "Verified-token cache hits.", ["cache"], **common
        )
        self.cache_misses = prom.Counter(
            "token_cache_misses", "Verified-token cache misses.", ["cache"], **common
        )

    def on_event(self, event: audit.AuditEvent) -> None:
        """The audit hook: count the event, a denial by layer, a state change as a gauge."""
        self.events.labels(event.name).inc()
        layer = DENIALS.get(event.name)
        if layer is not None:
            unavailable = event.name.endswith(".unavailable") or 503 in (
                event.status,
                event.extra.get("status"),
            )
            self.decisions.labels(layer, "unavailable" if unavailable else "deny").inc()
            tally = current_tally.get()
            if tally is not None:
                tally.denied = True
            return
        state = STATE_CHANGES.get(event.name)
        if state is not None:
            self.dependency_up.labels(state[0]).set(state[1])

    def finish(self, tally: Tally, seconds: float) -> None:
        """Count one request at ``layer="stack"`` and time it (called by the middlewares)."""
        outcome = "deny" if tally.denied else "allow"
        self.decisions.labels("stack", outcome).inc()
        self.request_duration.labels(outcome).observe(seconds)


_active: Metrics | None = None
_built: weakref.WeakKeyDictionary[Any, Metrics] = weakref.WeakKeyDictionary()


def enable(registry: Any = None) -> Metrics:
    """Start counting in this process; returns the active :class:`Metrics`.

    Idempotent for one registry (collectors are registered once per registry); enabling with
    another registry moves the audit hook there.

    Raises:
        ConfigurationError: ``prometheus-client`` is not installed.
    """
    global _active
    if registry is None:
        registry = _prometheus().REGISTRY
    metrics = _built.get(registry)
    if metrics is None:
        metrics = _built[registry] = Metrics(registry)
    if _active is not metrics:
        disable()
        audit.add_hook(metrics.on_event)
        _active = metrics
    return metrics


def disable() -> None:
    """Stop counting (the collectors stay registered, with their values)."""
    global _active
    if _active is not None:
        audit.remove_hook(_active.on_event)
        _active = None


def active() -> Metrics | None:
    """The running :class:`Metrics`, or None when metrics are off."""
    return _active


StorageObserver = Callable[[str, float, bool], None]
"""Receives each storage round trip: backend, seconds, whether it failed."""

_storage_observers: list[StorageObserver] = []


def add_storage_observer(observer: StorageObserver) -> None:
    """Receive every rate-limit storage round trip (OpenTelemetry uses it), metrics on or off."""
    _storage_observers.append(observer)


def remove_storage_observer(observer: StorageObserver) -> None:
    """Stop sending round trips to ``observer``."""
    _storage_observers.remove(observer)


def observe_storage(backend: str, seconds: float, *, failed: bool = False) -> None:
    """Record one rate-limit storage round trip (``backend``: ``"redis"``, ``"memory"``)."""
    metrics = _active
    if metrics is not None:
        metrics.storage_latency.labels(backend).observe(seconds)
        if failed:
            metrics.storage_errors.labels(backend).inc()
    if _storage_observers:
        for observer in _storage_observers:
            observer(backend, seconds, failed)


def count_token_cache(hit: bool, cache: str = "jwt") -> None:
    """Record one verified-token cache lookup (``cache``: ``"jwt"``, ``"introspection"``)."""
    metrics = _active
    if metrics is None:
        return
    (metrics.cache_hits if hit else metrics.cache_misses).labels(cache).inc()


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise ConfigurationError(
            f"{_VARIABLE}: metrics need prometheus-client (pip install 'secmw[metrics]')"
        ) from None
    return prometheus_client
