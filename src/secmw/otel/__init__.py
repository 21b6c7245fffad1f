"""OpenTelemetry, optional: the ``otel`` extra and ``otel.enabled=true``.

With it on, ``SecurityStack`` runs inside one span per request (``secmw <METHOD>``, kind
INTERNAL, a child of the server's span when one is current) and each gate's decision is one
event of that span:

========================  ==========================================================
span attribute            value
========================  ==========================================================
``http.request.method``   the request method
``client.address``        the client address (as resolved behind trusted proxies once
                          the IP layer decided)
``user.id``               the principal's id, once authenticated
``http.response.status_code``  the status answered
========================  ==========================================================

A gate event is named ``secmw.gate`` with ``secmw.gate`` (``ip``, ``auth``, ``rate_limit``...),
``secmw.decision`` (``allowed`` or ``refused``) and, when refused, ``http.response.status_code``,
``secmw.reason_code`` and ``secmw.reason`` (text written by secmw, never a credential).

Metrics, on the meter ``secmw``: ``secmw.refusals`` (counter; ``secmw.event``,
``secmw.reason_code``, ``http.response.status_code``), fed by the audit hook every layer already
reports to, so token-endpoint refusals count too; ``secmw.storage.duration`` (histogram, seconds;
``secmw.storage.backend``, ``secmw.storage.outcome``), fed by the rate-limit storage's round-trip
observer (:func:`secmw.metrics.add_storage_observer`).

Nothing of OpenTelemetry is imported, no hook is installed and no gate is wrapped while it is
off: the drivers run exactly as without it. While it is on, every gate's ``check`` runs (the
drivers' shortcuts that skip a gate that surely admits are off), so that each decision is seen.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from secmw import audit, metrics
from secmw.audit.kinds import DENIALS
from secmw.core.deny import Deny
from secmw.core.gate import PASS, Need, Plain
from secmw.core.request import RequestView
from secmw.core.section import Section
from secmw.errors import ConfigurationError

_VARIABLE = "otel.enabled"
STORAGE_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
GATE_EVENT = "secmw.gate"


class OTelSettings(Section):
    """OpenTelemetry spans and metrics (``otel.*``); needs the ``otel`` extra."""

    enabled: bool = Field(
        False, description="A span per request with an event per gate decision, and metrics."
    )


class Telemetry:
    """The tracer and the instruments, from the given providers or the global ones.

    Raises:
        ConfigurationError: ``opentelemetry-api`` is not installed.
    """

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        api = _opentelemetry()
        self.trace = api.trace
        self.context = api.context
        self.tracer = api.trace.get_tracer("secmw", tracer_provider=tracer_provider)
        meter = api.metrics.get_meter("secmw", meter_provider=meter_provider)
        self.refusals = meter.create_counter(
            "secmw.refusals", unit="{refusal}", description="Requests refused, by reason."
        )
        self.storage_duration = meter.create_histogram(
            "secmw.storage.duration",
            unit="s",
            description="Rate-limit storage round trips.",
            explicit_bucket_boundaries_advisory=list(STORAGE_BUCKETS),
        )
        self._internal = api.trace.SpanKind.INTERNAL
        self._error = api.trace.Status(api.trace.StatusCode.ERROR)

    def start(self, method: str, client: str | None) -> tuple[Any, Any]:
        """Start the request's span and make it current; the span and the context token."""
        attributes = {"http.request.method": method}
        if client:
            attributes["client.address"] = client
        span = self.tracer.start_span(f"secmw {method}", kind=self._internal, attributes=attributes)
        return span, self.context.attach(self.trace.set_span_in_context(span))

    def detach(self, token: Any) -> None:
        """Stop the span being current (it may still be open, for a streamed WSGI body)."""
        self.context.detach(token)

    def finish(self, span: Any, status: int | None, view: Any = None) -> None:
        """End the request's span with the status answered (None: no answer started) and what
        the gates learned about the request (its view, when one was built)."""
        if isinstance(view, RequestView):
            _describe_request(span, view)
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if status is None or status >= 500:
            span.set_status(self._error)
        span.end()

    def on_event(self, event: audit.AuditEvent) -> None:
        """The audit hook: count refusals (an event with the status answered, or a denial the
        Prometheus metrics count too) by event, reason code and status."""
        if event.status is None and event.name not in DENIALS:
            return
        attributes: dict[str, Any] = {
            "secmw.event": event.name,
            "secmw.reason_code": event.code or "",
        }
        if event.status is not None:
            attributes["http.response.status_code"] = event.status
        self.refusals.add(1, attributes)

    def on_storage(self, backend: str, seconds: float, failed: bool) -> None:
        """The storage observer: one round trip."""
        outcome = "error" if failed else "ok"
        attributes = {"secmw.storage.backend": backend, "secmw.storage.outcome": outcome}
        self.storage_duration.record(seconds, attributes)

    def current_span(self) -> Any:
        """The span current in this context (a non-recording one outside a request)."""
        return self.trace.get_current_span()


_active: Telemetry | None = None


def enable(tracer_provider: Any = None, meter_provider: Any = None) -> Telemetry:
    """Start reporting in this process; returns the active :class:`Telemetry`.

    Without providers, the global ones (``opentelemetry.trace.set_tracer_provider``...), so an
    app configured by the OpenTelemetry SDK or its auto-instrumentation needs nothing more.
    Enabling again replaces the previous telemetry.

    Raises:
        ConfigurationError: ``opentelemetry-api`` is not installed.
    """
    global _active
    telemetry = Telemetry(tracer_provider, meter_provider)
    disable()
    audit.add_hook(telemetry.on_event)
    metrics.add_storage_observer(telemetry.on_storage)
    _active = telemetry
    return telemetry


def disable() -> None:
    """Stop reporting (spans already started end normally)."""
    global _active
    if _active is not None:
        audit.remove_hook(_active.on_event)
        metrics.remove_storage_observer(_active.on_storage)
        _active = None


def active() -> Telemetry | None:
    """The running :class:`Telemetry`, or None when OpenTelemetry is off."""
    return _active


def current() -> Telemetry:
    """The running :class:`Telemetry`, enabled on the global providers if none runs yet."""
    return _active if _active is not None else enable()


def traced(layer: str, gate: Any, telemetry: Telemetry) -> Any:
    """``gate`` reporting each decision as an event of the current span."""
    if type(gate).fields is Plain.fields:
        return TracedGate(layer, gate, telemetry)
    return FieldingTracedGate(layer, gate, telemetry)


class TracedGate(Plain):
    """A gate whose decisions become span events; everything else is the gate's own.

    Its ``admits`` and ``plain_fields`` are hidden, so the driver always asks ``check``.
    """

    _HIDDEN = frozenset({"admits", "plain_fields", "merge_plain"})

    def __init__(self, layer: str, gate: Any, telemetry: Telemetry) -> None:
        self.layer = layer
        self.gate = gate
        self.telemetry = telemetry
        self.guards = gate.guards
        self.publishes = gate.publishes

    def __getattr__(self, name: str) -> Any:
        if name in TracedGate._HIDDEN or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.gate, name)

    def check(self, view: RequestView) -> Any:
        return self._seen(self.gate.check(view))

    def resume(self, need: Need, answer: Any) -> Any:
        return self._seen(self.gate.resume(need, answer))

    def _seen(self, verdict: Any) -> Any:
        if verdict.__class__ is Need:
            return verdict
        span = self.telemetry.current_span()
        if not span.is_recording():
            return verdict
        attributes: dict[str, Any] = {"secmw.gate": self.layer}
        if verdict is PASS:
            attributes["secmw.decision"] = "allowed"
        elif isinstance(verdict, Deny):
            attributes["secmw.decision"] = "refused"
            attributes["http.response.status_code"] = verdict.status
            attributes["secmw.reason_code"] = verdict.code
            attributes["secmw.reason"] = verdict.detail
        span.add_event(GATE_EVENT, attributes)
        return verdict


class FieldingTracedGate(TracedGate):
    """A :class:`TracedGate` around a gate that adds response fields."""

    def fields(self, view: RequestView, status: int, headers: Any) -> Any:
        return self.gate.fields(view, status, headers)


def _describe_request(span: Any, view: RequestView) -> None:
    """What the gates learned: the resolved client, the authenticated principal."""
    if view.client:
        span.set_attribute("client.address", view.client)
    principal = view.state.get("principal")
    if principal is not None and principal.is_authenticated:
        span.set_attribute("user.id", principal.id)


def _opentelemetry() -> Any:
    try:
        import opentelemetry.context
        import opentelemetry.metrics
        import opentelemetry.trace
    except ImportError:
        raise ConfigurationError(
            f"{_VARIABLE}: OpenTelemetry needs opentelemetry-api (pip install 'secmw[otel]')"
        ) from None
    return opentelemetry
