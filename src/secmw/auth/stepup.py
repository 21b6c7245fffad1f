"""The step-up decision, shared by ``secmw.asgi.stepup`` and ``secmw.wsgi.stepup``.

:func:`decide` is a generator: it yields each I/O step it waits on (:class:`Charge`,
:class:`LookUpSecret`, :class:`UseStep`, :class:`Refund`) and receives the answer, or the
exception the step raised; the WSGI driver sends back what a call returned, the ASGI driver what
an await returned. Every rule of the check lives here once.

Wrong codes are throttled per principal and per client address (``totp.failures``): each
attempt is charged to the throttle before its secret is looked up and refunded unless the code
was wrong, so codes in flight never outnumber the budget (see :mod:`secmw.auth.throttle`).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeAlias

from secmw import audit
from secmw.auth.base import Credential
from secmw.auth.totp import StepUp
from secmw.core.deny import Deny
from secmw.core.principal import Principal
from secmw.core.request import RequestView


@dataclass(frozen=True, slots=True)
class Charge:
    """Charge the throttle for one attempt; answer: a Deny or the attempt."""

    credential: Credential


@dataclass(frozen=True, slots=True)
class LookUpSecret:
    """The app's ``secret_for(principal)``; answer: the secret, or None when not enrolled."""

    principal: Principal


@dataclass(frozen=True, slots=True)
class UseStep:
    """Record a used time step in the replay store; answer: False on a replay."""

    subject: str
    step: int
    ttl: int


@dataclass(frozen=True, slots=True)
class Refund:
    """Refund a charged attempt (it did not fail); answer: None."""

    attempt: Any


Need: TypeAlias = Charge | LookUpSecret | UseStep | Refund
Decision: TypeAlias = Generator[Need, Any, "Deny | None"]

# RFC 9110 §10.2.3: a 503 says when to come back; the lookup or store is usually back quickly.
_UNAVAILABLE = Deny(
    503, "second factor check unavailable", "temporarily_unavailable", (("retry-after", "5"),)
)


def decide(
    step_up: StepUp, request: RequestView, principal: Principal, throttled: bool
) -> Decision:
    """None when the request carries a fresh, valid code for ``principal``, else the refusal."""
    if not principal.is_authenticated:
        return step_up.deny(401, "authentication required", "authentication_required")
    code = step_up.code(request)
    if code is None:
        return step_up.deny(401, "second factor required", "totp_required")
    attempt = None
    if throttled:
        # The principal's id as the user name; the code itself is never passed on.
        attempt = yield Charge(Credential("totp", "", principal.id))
        if isinstance(attempt, Deny):
            return attempt
    verdict = yield from _check(step_up, principal, code)
    if attempt is not None and (verdict is None or verdict.status != 401):
        yield Refund(attempt)  # only a wrong code stays counted
    return verdict


def _check(step_up: StepUp, principal: Principal, code: str) -> Decision:
    try:
        secret = yield LookUpSecret(principal)
    except Exception as exc:  # the app's lookup failed (database down...): not the client's
        audit.emit("totp.lookup_failed", type(exc).__name__, principal=principal.id)
        return _UNAVAILABLE
    if not secret:
        return step_up.deny(403, "second factor not enrolled", "totp_not_enrolled")
    try:
        step = step_up.match(secret, code)
    except ValueError as exc:  # the app's data, not the client's fault; the reason is secmw's
        audit.emit("totp.bad_secret", str(exc), principal=principal.id)
        return step_up.deny(403, "second factor not enrolled", "totp_not_enrolled")
    if step is None:
        return _invalid(step_up)
    try:
        fresh = yield UseStep(principal.id, step, step_up.replay_ttl)
    except Exception as exc:  # replay store down: refuse rather than accept a replay
        audit.emit("totp.store_unavailable", type(exc).__name__)
        return _UNAVAILABLE
    return None if fresh else _invalid(step_up)


def _invalid(step_up: StepUp) -> Deny:
    return step_up.deny(401, "second factor invalid", "invalid_totp")
