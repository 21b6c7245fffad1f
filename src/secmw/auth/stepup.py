"""The step-up layer's gate: a TOTP code on the requests that need a second factor.

:class:`StepUpGate` decides in one generator (:meth:`StepUpGate.flow`): it yields each I/O step
it waits on (the throttle's charge, the app's secret lookup, the replay store, the refund) as a
:class:`~secmw.core.gate.Need` and receives the answer, or the exception the step raised; the
WSGI driver sends back what a call returned, the ASGI driver what an await returned. Every rule
of the check lives here once.

Wrong codes are throttled per principal and per client address (``totp.failures``): each
attempt is charged to the throttle before its secret is looked up and refunded unless the code
was wrong, so codes in flight never outnumber the budget (see :mod:`secmw.auth.throttle`).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeAlias

from secmw import audit
from secmw.auth.base import Credential
from secmw.auth.totp import StepUp
from secmw.core.deny import Deny
from secmw.core.gate import PASS, Flow, Need, Stepwise, Verdict, advance
from secmw.core.principal import ANONYMOUS, Principal
from secmw.core.request import RequestView

Decision: TypeAlias = Generator[Need, Any, "Deny | None"]

# RFC 9110 §10.2.3: a 503 says when to come back; the lookup or store is usually back quickly.
_UNAVAILABLE = Deny(
    503, "second factor check unavailable", "temporarily_unavailable", (("retry-after", "5"),)
)


class StepUpGate(Stepwise):
    """Requires ``X-TOTP-Code`` where ``totp.paths`` / ``totp.scopes`` say so; runs after the
    authentication gate (it reads the principal that gate stored). A refusal is audited as
    ``totp.denied``.

    Args:
        step_up: Which requests need a code, and whether a code is right.
        secret_for: The app's lookup of a principal's secret (the driver awaits what it returns
            when that is awaitable).
        replay: The replay store (``use`` is called, ``ause`` awaited).
        throttle: The side's throttle of wrong codes (sync or async ``charge``), or None.
    """

    __slots__ = ("_ause", "_use", "secret_for", "step_up", "throttle")

    def __init__(
        self,
        step_up: StepUp,
        secret_for: Callable[[Principal], Any],
        replay: Any,
        throttle: Any = None,
    ) -> None:
        self.step_up = step_up
        self.secret_for = secret_for
        self.throttle = throttle
        self._ause: Any = getattr(replay, "ause", None)
        self._use: Any = getattr(replay, "use", None) or self._ause

    def check(self, view: RequestView) -> Verdict:
        principal = view.state.get("principal", ANONYMOUS)
        if not self.step_up.needed(view, principal):
            return PASS
        return advance(self.flow(view, principal))

    def flow(self, view: RequestView, principal: Principal) -> Flow:
        """The decision on a request that needs a code."""
        denied = yield from self.decide(view, principal)
        if denied is None:
            return PASS
        audit.emit(
            "totp.denied", denied.detail, request=view, principal=principal.id, denial=denied
        )
        return denied

    def decide(self, request: RequestView, principal: Principal) -> Decision:
        """None when the request carries a fresh, valid code for ``principal``, else the
        refusal."""
        step_up = self.step_up
        if not principal.is_authenticated:
            return step_up.deny(401, "authentication required", "authentication_required")
        code = step_up.code(request)
        if code is None:
            return step_up.deny(401, "second factor required", "totp_required")
        attempt = None
        if self.throttle is not None:
            # The principal's id as the user name; the code itself is never passed on.
            credential = Credential("totp", "", principal.id)
            attempt = yield Need(self.throttle.charge, (request, credential))
            if isinstance(attempt, Deny):
                return attempt
        verdict = yield from self._check(principal, code)
        if attempt is not None and (verdict is None or verdict.status != 401):
            yield Need(attempt.refund)  # only a wrong code stays counted
        return verdict

    def _check(self, principal: Principal, code: str) -> Decision:
        step_up = self.step_up
        try:
            secret = yield Need(self.secret_for, (principal,))
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
            fresh = yield Need(self._use, (principal.id, step, step_up.replay_ttl), self._ause)
        except Exception as exc:  # replay store down: refuse rather than accept a replay
            audit.emit("totp.store_unavailable", type(exc).__name__)
            return _UNAVAILABLE
        return None if fresh else _invalid(step_up)


def _invalid(step_up: StepUp) -> Deny:
    return step_up.deny(401, "second factor invalid", "invalid_totp")
