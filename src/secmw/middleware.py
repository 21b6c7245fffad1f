"""The public middlewares' arguments and the gates each runs, shared by ``secmw.asgi`` and
``secmw.wsgi``.

``secmw.asgi.X`` and ``secmw.wsgi.X`` are ``X`` here on that side's driver: the same arguments,
the same gates; each side supplies its edges (the rate-limit storage and the failed-attempt
throttle, sync or async, like ``limits`` and ``limits.aio``) and how to close them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from secmw import audit, otel
from secmw.auth.base import AuthChain
from secmw.auth.build import build_chain, provider_pools
from secmw.auth.gate import AuthGate
from secmw.auth.stepup import StepUpGate
from secmw.auth.totp import StepUp, replay_store_from_settings
from secmw.config.settings import SecuritySettings, resolve_settings
from secmw.core.layers import Layer, stack_layers
from secmw.core.principal import Principal
from secmw.headers.gate import HeadersGate
from secmw.headers.layer import SecurityHeaders
from secmw.ip.filter import IPFilter
from secmw.ip.gate import IPGate
from secmw.ratelimit.gate import rate_limit_gate
from secmw.ratelimit.policy import KeyFunc
from secmw.route.adopt import routed_settings
from secmw.stores.revocation import AsyncRevocationStore, RevocationStore


class Side:
    """What a side's driver provides to the layers below (declared here for the type checker)."""

    raw: ClassVar[bool]
    """Response fields as ASGI byte pairs, else WSGI strings."""
    limiter_type: ClassVar[Callable[..., Any]]
    """The rate-limit storage edge: ``Limiter`` or ``AsyncLimiter``."""
    throttle_type: ClassVar[Any]
    """The failed-attempt throttle: ``FailedAuthThrottle`` or its async twin."""
    gates: tuple[Any, ...]
    own_gates: tuple[Any, ...]
    own_closes: bool

    def setup(self, app: Any, gates: Sequence[Any], *, closes: bool = False) -> None:
        """Run ``gates`` before ``app`` (``closes``: close the edges at lifespan shutdown)."""
        raise NotImplementedError  # pragma: no cover - the driver's


class IPFilterLayer(Side):
    """``IPFilterMiddleware``'s arguments (see the side's class)."""

    def __init__(
        self,
        app: Any,
        /,
        *,
        settings: SecuritySettings | None = None,
        ip_filter: IPFilter | None = None,
        **overrides: Any,
    ) -> None:
        self.filter = ip_filter or IPFilter.from_settings(resolve_settings(settings, overrides).ip)
        self.setup(app, [IPGate(self.filter)] if self.filter.enabled else [])


class SecurityHeadersLayer(Side):
    """``SecurityHeadersMiddleware``'s arguments (see the side's class)."""

    def __init__(
        self,
        app: Any,
        /,
        *,
        settings: SecuritySettings | None = None,
        policy: SecurityHeaders | None = None,
        **overrides: Any,
    ) -> None:
        if policy is None:
            policy = SecurityHeaders(resolve_settings(settings, overrides).headers)
        self.policy = policy
        self.setup(app, [HeadersGate(policy, raw=self.raw)] if policy.enabled else [])


class RateLimitLayer(Side):
    """``RateLimitMiddleware``'s arguments (see the side's class)."""

    def __init__(
        self,
        app: Any,
        /,
        *,
        settings: SecuritySettings | None = None,
        key_func: KeyFunc | None = None,
        **overrides: Any,
    ) -> None:
        resolved = resolve_settings(settings, overrides)
        self.settings = resolved.rate_limit
        gate = rate_limit_gate(
            self.settings,
            resolved.api_keys,
            key_func=key_func,
            limiter=self.limiter_type,
            raw=self.raw,
        )
        self.policy, self.limiter = gate.policy, gate.limiter
        gates = [gate] if self.settings.enabled else []
        self.setup(app, gates, closes=self.limiter.remote is not None)


class AuthenticationLayer(Side):
    """``AuthenticationMiddleware``'s arguments (see the side's class)."""

    def __init__(
        self,
        app: Any,
        /,
        *,
        settings: SecuritySettings | None = None,
        chain: AuthChain | None = None,
        throttle: Any = None,
        revocation: RevocationStore | AsyncRevocationStore | None = None,
        **overrides: Any,
    ) -> None:
        self.chain = chain or build_chain(
            resolve_settings(settings, overrides), revocation=revocation
        )
        self.throttle = throttle
        self._pools = provider_pools(self.chain)
        self.setup(app, [AuthGate(self.chain, throttle, raw=self.raw)], closes=bool(self._pools))


class StepUpLayer(Side):
    """``StepUpMiddleware``'s arguments (see the side's class)."""

    def __init__(
        self,
        app: Any,
        /,
        *,
        secret_for: Callable[[Principal], Any],
        settings: SecuritySettings | None = None,
        step_up: StepUp | None = None,
        replay: Any = None,
        throttle: Any = None,
        **overrides: Any,
    ) -> None:
        self.secret_for = secret_for
        resolved = resolve_settings(settings, overrides)
        self.step_up = step_up or StepUp.from_settings(resolved.totp, resolved.auth.realm)
        self.replay = replay or replay_store_from_settings(resolved.totp)
        self._own_throttle = throttle is None and resolved.totp.throttle
        if self._own_throttle:
            throttle = self.throttle_type.for_step_up(resolved)
        self.throttle = throttle
        self.setup(app, [StepUpGate(self.step_up, secret_for, self.replay, throttle)])


class StackLayer(Side):
    """``SecurityStack``'s arguments: the side's single-layer middlewares, built from one set of
    settings, whose gates one driver runs in the stack's fixed order (``secmw.core.layers``)."""

    reads_routes: ClassVar[bool] = True
    """Reads the route table of the app it protects for ``secmw.route`` marks, once, before
    the first lifespan or request (a stack further out leaves this app's routes to it)."""
    layer_types: ClassVar[dict[Layer, Any]]
    """The side's middleware class of each layer but ``"metrics"``."""
    measure: ClassVar[type[Any]]
    """The side's ``MetricsMiddleware``, around the stack when ``metrics.enabled``."""
    trace: ClassVar[type[Any]]
    """The side's ``TracingMiddleware``, outermost when ``otel.enabled``."""

    def __init__(
        self,
        app: Any,
        /,
        *,
        settings: SecuritySettings | None = None,
        revocation: RevocationStore | AsyncRevocationStore | None = None,
        secret_for: Callable[[Principal], Any] | None = None,
        **overrides: Any,
    ) -> None:
        self.settings = resolved = resolve_settings(settings, overrides)
        self.routes_read = False
        self.retired: list[Any] = getattr(self, "retired", [])
        """Layers and throttles of a build replaced when the routes were read (to close)."""
        self._given = (app, revocation, secret_for)
        self._routes_lock = threading.Lock()
        audit.configure(resolved.audit)
        enabled = stack_layers(resolved, step_up=secret_for is not None)
        throttle = self.throttle_type(settings=resolved) if "rate_limit" in enabled else None
        own: dict[Layer, dict[str, Any]] = {
            # Wrong codes have budgets of their own (totp.failures), built by the layer.
            "step_up": {"secret_for": secret_for or _no_secret},
            "auth": {"throttle": throttle, "revocation": revocation},
        }
        types = self.layer_types
        self.layers: dict[Layer, Any] = {
            layer: types[layer](app, settings=resolved, **own.get(layer, {}))
            for layer in reversed(enabled)
            if layer != "metrics"
        }
        self.throttle = throttle
        throttles = [throttle, getattr(self.layers.get("step_up"), "throttle", None)]
        remote = any(getattr(getattr(t, "limiter", None), "remote", None) for t in throttles)
        closes = remote or any(layer.own_closes for layer in self.layers.values())
        gates = [gate for layer in self.layers.values() for gate in layer.own_gates]
        telemetry = otel.current() if resolved.otel.enabled else None
        if telemetry is not None:
            named = [(name, g) for name, layer in self.layers.items() for g in layer.own_gates]
            gates = [otel.traced(name, gate, telemetry) for name, gate in named]
        self.setup(app, gates, closes=closes)
        entry = self.measure(self.drive) if "metrics" in enabled else self.drive
        self.entry = entry if telemetry is None else self.trace(entry, telemetry=telemetry)
        """What the side's ``__call__`` runs: the driver, measured or traced or neither."""

    def drive(self, *args: Any) -> Any:
        """The driver's own ``__call__``."""
        raise NotImplementedError  # pragma: no cover - the driver's

    def read_routes(self) -> None:
        """Compile the ``secmw.route`` marks of the protected app's routes into the settings and
        rebuild the layers on them; done once (the sides call it before the first lifespan or
        request). Nothing was served yet, so the edges built first never connected.

        Raises:
            ConfigurationError: a mark conflicting with the settings or another route; raised
                again at every call until fixed (the stack never serves without the marks).
        """
        with self._routes_lock:
            if self.routes_read:
                return
            app, revocation, secret_for = self._given
            merged = routed_settings(self.settings, app)
            if merged is not None:
                # The first build's edges never served: closed with the stack's own.
                retired = [*self.retired, *self.layers.values(), self.throttle]
                StackLayer.__init__(
                    self, app, settings=merged, revocation=revocation, secret_for=secret_for
                )
                self.retired = [edge for edge in retired if edge is not None]
            self.routes_read = True


def _no_secret(principal: Principal) -> None:
    return None
