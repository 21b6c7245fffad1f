"""Gates: one security decision each, as plain values, shared by the ASGI and WSGI drivers.

A gate reads a :class:`~secmw.core.request.RequestView` and answers :data:`PASS`, a
:class:`~secmw.core.deny.Deny`, or a :class:`Need`: the I/O the decision waits on. The driver of
each side performs a ``Need`` with its own edge (the WSGI driver calls ``call``, the ASGI driver
awaits ``acall``, or runs a blocking ``call`` in a thread) and hands the answer to
:meth:`Gate.resume`, which may ask again. A gate never knows which side it runs on; a driver
never decides anything a gate could (h11's shape: the caller does the I/O).

A decision that waits more than once is written as a generator (``answer = yield Need(...)``,
returning the verdict) and run by :class:`Stepwise`: one body of code for both sides.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, MutableSequence, Sequence
from contextvars import Token
from typing import Any, NamedTuple, Protocol, TypeAlias

from secmw import audit
from secmw.core.context import csp_nonce_var, principal_var, request_var
from secmw.core.deny import Deny
from secmw.core.request import RequestView

__all__ = [
    "PASS",
    "REJECT",
    "Deny",
    "Flow",
    "Gate",
    "Need",
    "Pass",
    "Raised",
    "Stepwise",
    "Verdict",
]


class Pass:
    """The request may go on to the next gate (use the :data:`PASS` singleton)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "PASS"


PASS = Pass()


class Need:
    """The I/O a decision waits on; the driver performs it and resumes the gate with the answer.

    Attributes:
        call: The synchronous edge (the WSGI driver calls it; so does the ASGI driver when there
            is no ``acall``, awaiting what it returns if that is awaitable).
        args: The arguments of ``call`` / ``acall``.
        acall: The asynchronous edge, awaited by the ASGI driver; None when ``call`` serves.
        blocking: ``call`` is CPU-heavy (argon2): the ASGI driver runs it off the event loop.
        flow: What the gate resumes from (a :class:`Stepwise` gate's suspended decision); set
            and read by the gate only.
    """

    __slots__ = ("acall", "args", "blocking", "call", "flow")

    def __init__(
        self,
        call: Callable[..., Any],
        args: tuple[Any, ...] = (),
        acall: Callable[..., Any] | None = None,
        *,
        blocking: bool = False,
    ) -> None:
        self.call = call
        self.args = args
        self.acall = acall
        self.blocking = blocking
        self.flow: Any = None

    def __repr__(self) -> str:
        return f"Need({getattr(self.call, '__qualname__', self.call)!r})"


class Raised:
    """The answer to a :class:`Need` whose call raised: handed to the gate, which says what it
    means (a :class:`Stepwise` decision receives the exception at its ``yield``)."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


Verdict: TypeAlias = "Pass | Deny | Need"
Flow: TypeAlias = Generator[Need, Any, "Pass | Deny"]
Headers: TypeAlias = MutableSequence[tuple[Any, Any]]


class Gate(Protocol):
    """One layer's decision.

    ``guards``: the gate refuses requests (the driver puts the malformed-request check before
    the first such gate). ``publishes``: the gate stores a principal in ``view.state`` for the
    driver to publish. ``raw``: response fields are ASGI byte pairs (lower-case names), else
    WSGI strings; set by the side that builds the gate.
    """

    guards: bool
    publishes: bool

    def check(self, view: RequestView) -> Verdict:
        """The verdict on ``view``, without I/O."""

    def resume(self, need: Need, answer: Any) -> Verdict:
        """The verdict once the driver performed ``need`` (``answer`` may be :class:`Raised`)."""

    def fields(self, view: RequestView, status: int, headers: Headers) -> Headers:
        """The response start's fields with this gate's merged in (``headers`` as given when
        it adds none); called for the app's answer and for a denial of a gate inside."""

    # Optional: ``admits(peer, path) -> bool``, True only when the request surely passes this
    # gate and the gate has nothing to record for it (``peer``: the TCP peer's address or None;
    # ``path``: the routed path). When every gate of a driver has it and none adds fields, the
    # driver asks these first and calls the app without building the view when all say yes.
    # Optional too: ``plain_fields(path) -> Any``, for the one gate that adds fields when every
    # other gate has ``admits``: what ``merge_plain`` needs to add this gate's fields to an
    # ``http`` response to ``path`` without a view (None: that path needs the view).


class Plain:
    """Defaults for a gate that needs no I/O and adds no response field."""

    guards = True
    publishes = False

    def resume(self, need: Need, answer: Any) -> Verdict:
        raise AssertionError("this gate asks for no I/O")  # pragma: no cover

    def fields(self, view: RequestView, status: int, headers: Headers) -> Headers:
        return headers


class Stepwise(Plain):
    """A gate whose decision may wait on I/O several times: :meth:`flow` is a generator that
    yields each :class:`Need` and returns the verdict; this runs it for both drivers."""

    def resume(self, need: Need, answer: Any) -> Verdict:
        return advance(need.flow, answer)


def advance(flow: Flow, answer: Any = None) -> Verdict:
    """Run ``flow`` to its next :class:`Need` (tagged with the flow) or to its verdict."""
    try:
        need = flow.throw(answer.error) if answer.__class__ is Raised else flow.send(answer)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    need.flow = flow
    return need


class Rejection(Plain):
    """Refuses a request no rule can be matched safely (``RequestView.rejection``: a path with
    dot segments), audited. Every driver with a refusing gate runs it before the first one, so
    the rule is decided here only."""

    def admits(self, peer: str | None, path: str) -> bool:
        """True when ``path`` surely has no dot segment (it has no ``/.``)."""
        return "/." not in path

    def check(self, view: RequestView) -> Verdict:
        rejection = view.rejection
        if rejection is None:
            return PASS
        audit.emit("request.rejected", rejection.detail, request=view, denial=rejection)
        return rejection


REJECT = Rejection()


def with_rejection(gates: list[Any]) -> list[Any]:
    """``gates`` with :data:`REJECT` placed once, before the first gate that refuses requests
    (gates gathered from several middlewares may hold it already)."""
    gates = [gate for gate in gates if gate is not REJECT]
    for index, gate in enumerate(gates):
        if gate.guards:
            return [*gates[:index], REJECT, *gates[index:]]
    return gates


class Lineup(NamedTuple):
    """What a driver precomputes from its gates (:func:`line_up`)."""

    gates: tuple[Any, ...]
    """The gates in order, the malformed-request check placed."""
    fielders: tuple[tuple[Any, ...], ...]
    """By how many gates a response went past: the gates whose fields it gets, innermost first."""
    error_depth: int
    """How many gates' fields the 500 for an app's error gets (-1: no gate answers errors)."""
    rewrites: bool
    """A gate resolves the client address for the driver to write back."""
    nonces: bool
    """A gate makes CSP nonces for the driver to publish."""
    principals: bool
    """A gate finds the principal for the driver to publish."""
    admits: tuple[Callable[[str | None, str], bool], ...] | None
    """The gates' view-free ``admits`` when every gate has one and none adds fields (the
    request goes straight to the app when all say yes), else None."""
    plain: tuple[tuple[Callable[[str | None, str], bool], ...], Any] | None
    """When one gate adds fields and has ``plain_fields`` and every other gate has ``admits``:
    those ``admits`` and that gate (an ``http`` request they all admit, on a path the gate can
    answer without the view, needs no view), else None."""


def line_up(given: list[Any]) -> Lineup:
    """The :class:`Lineup` of ``given`` (outermost first)."""
    gates = tuple(with_rejection(given))
    fielders = tuple(
        tuple(g for g in reversed(gates[:n]) if type(g).fields is not Plain.fields)
        for n in range(len(gates) + 1)
    )
    answering = [n for n, g in enumerate(gates) if getattr(g, "answers_errors", False)]
    admits = [getattr(g, "admits", None) for g in gates]
    quick = tuple(a for a in admits if a is not None)
    return Lineup(
        gates,
        fielders,
        answering[0] + 1 if answering else -1,
        any(getattr(g, "rewrites_client", False) for g in gates),
        any(getattr(g, "makes_nonce", False) for g in gates),
        any(getattr(g, "publishes", False) for g in gates),
        quick if gates and len(quick) == len(gates) and not fielders[-1] else None,
        _plain(gates, admits, fielders[-1]),
    )


def _plain(
    gates: tuple[Any, ...], admits: list[Any], fielding: tuple[Any, ...]
) -> tuple[tuple[Callable[[str | None, str], bool], ...], Any] | None:
    """:attr:`Lineup.plain` of ``gates``."""
    if len(fielding) != 1 or getattr(fielding[0], "plain_fields", None) is None:
        return None
    others = [a for g, a in zip(gates, admits, strict=True) if g is not fielding[0]]
    if any(a is None for a in others):
        return None
    return tuple(others), fielding[0]


def enter(view: RequestView, nonce: str | None, principal: Any) -> tuple[Token[Any], ...] | None:
    """Set the context variables of what the gates found (``secmw.current_principal()``,
    ``current_request()``, ``current_csp_nonce()``); their tokens, None when none was set."""
    if principal is not None:
        if nonce is None:
            return principal_var.set(principal), request_var.set(view)
        return csp_nonce_var.set(nonce), principal_var.set(principal), request_var.set(view)
    return None if nonce is None else (csp_nonce_var.set(nonce),)


def leave(tokens: tuple[Token[Any], ...] | None) -> None:
    """Undo :func:`enter` once the app has answered."""
    if tokens is not None:
        for token in tokens[::-1]:
            token.var.reset(token)


class Runner:
    """The part of a driver both sides share: its gates, lined up once.

    A driver of the same side directly inside, which runs nothing but its gates (a single-layer
    middleware wrapped in another), is not called: its gates run here after ours, in the same
    order, and its app is called directly, so composed middlewares take one driver per request
    as the stack does. Its edges are closed with ours.
    """

    app: Any
    gates: tuple[Any, ...]
    drive: Any
    taken_gates: tuple[Any, ...]
    """The gates this driver runs as given (its own, then those of the driver it took in)."""
    closers: tuple[Any, ...]
    """The drivers whose edges close with this one (itself first, when it has any)."""

    def setup(self, app: Any, gates: Sequence[Any], *, closes: bool = False) -> None:
        """Run ``gates`` (outermost first) before ``app`` (``closes``: close the edges when an
        ASGI app's lifespan shuts down)."""
        self.own_gates = tuple(gates)
        """The gates of this middleware alone (without those of a driver it took in)."""
        self.own_closes = closes
        given = list(gates)
        closers: list[Any] = [self] if closes else []
        if isinstance(app, Runner) and type(app).__call__ is type(self).drive:
            given += app.taken_gates
            closers += app.closers
            app = app.app
        self.taken_gates = tuple(given)
        self.closers = tuple(closers)
        self.app = app
        self._closes = bool(closers)
        lineup = line_up(given)
        self.gates, self._fielders, self._error_depth = lineup[:3]
        self._rewrites, self._nonces, self._publishes, self._admits, self._plain = lineup[3:]
        self._publishing = self._publishes or self._nonces
