"""Window arithmetic and rate-limit response fields: pure, shared by every storage.

A storage reports, per limit, the *state* of its window as integers in milliseconds:

- fixed window: ``(count, ttl)``: units used, time until the window resets;
- moving window: ``(count, oldest_age)``: units used in the last window, age of the oldest;
- sliding window counter: ``(previous, previous_ttl, current, current_ttl)``: both counters and
  their time to live. As in ``limits``, the current counter lives two windows and becomes the
  previous one when less than one window is left, so ``previous_ttl == current_ttl - window``.

Whether a request fits, how many units remain, when the next unit frees and how long a refused
client should wait are all computed here from those numbers, so memory and Redis storages answer
alike. Fields follow draft-ietf-httpapi-ratelimit-headers-11 (``RateLimit-Policy``,
``RateLimit``) and the de-facto ``X-RateLimit-*`` trio.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from limits import RateLimitItem

Strategy: TypeAlias = Literal["fixed-window", "moving-window", "sliding-window-counter"]
HeaderStyle: TypeAlias = Literal["ietf", "legacy", "both", "none"]
State: TypeAlias = tuple[int, ...]

STATE_WIDTH: dict[str, int] = {"fixed-window": 2, "moving-window": 2, "sliding-window-counter": 4}


@dataclass(frozen=True, slots=True)
class LimitHit:
    """One limit a request is charged against.

    Attributes:
        policy: The policy name shown in the ``RateLimit`` fields.
        item: The ``limits`` item (amount per window).
        key: The storage key: namespaced per rule, bounded in length, never a raw credential.
        tag: The identity part of the key; Redis Cluster keeps one identity's keys on one node.
        cost: Units this request takes.
    """

    policy: str
    item: RateLimitItem
    key: str
    tag: str
    cost: int
    amount: int = field(init=False, repr=False, compare=False)
    """Units allowed per window."""
    window: int = field(init=False, repr=False, compare=False)
    """The window length in seconds."""
    window_ms: int = field(init=False, repr=False, compare=False)
    """The window length in milliseconds."""
    member: str = field(init=False, repr=False, compare=False)
    """The policy name as a structured-field String, as the ``RateLimit`` fields show it."""

    def __post_init__(self) -> None:
        # Read on every request: copied out of the ``limits`` item once.
        object.__setattr__(self, "member", _sf_name(self.policy))
        object.__setattr__(self, "amount", self.item.amount)
        object.__setattr__(self, "window", self.item.get_expiry())
        object.__setattr__(self, "window_ms", self.window * 1000)


class Outcome:
    """What a storage did with a request: admitted (every limit had room) and each window's state
    afterwards (charged when admitted and charging, untouched otherwise).

    A plain slotted class, not a frozen dataclass: one is made per request."""

    __slots__ = ("admitted", "states")

    def __init__(self, admitted: bool, states: tuple[State, ...]) -> None:
        self.admitted = admitted
        self.states = states

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Outcome):
            return NotImplemented
        return (self.admitted, self.states) == (other.admitted, other.states)

    def __hash__(self) -> int:
        return hash((self.admitted, self.states))

    def __repr__(self) -> str:
        return f"Outcome(admitted={self.admitted!r}, states={self.states!r})"


@dataclass(frozen=True, slots=True)
class WindowStats:
    """One limit as the response reports it; times are whole seconds, rounded up."""

    policy: str
    limit: int
    window: int
    remaining: int
    reset: int
    retry_after: int


def used(strategy: Strategy, hit: LimitHit, state: State) -> int:
    """Units counted against the limit now (the sliding counter's estimate, rounded down)."""
    if strategy == "sliding-window-counter":
        previous, previous_ttl, current, _ = state
        return math.floor(previous * previous_ttl / hit.window_ms) + current
    return state[0]


def admits(strategy: Strategy, hit: LimitHit, state: State) -> bool:
    """True when ``hit.cost`` more units fit in the window."""
    return used(strategy, hit, state) + hit.cost <= hit.amount


def charge(strategy: Strategy, hit: LimitHit, state: State) -> State:
    """The state after taking ``hit.cost`` units (the caller checked :func:`admits`)."""
    window = hit.window_ms
    if strategy == "fixed-window":
        count, ttl = state
        return (count + hit.cost, ttl if count else window)
    if strategy == "moving-window":
        count, oldest_age = state
        return (count + hit.cost, oldest_age if count else 0)
    previous, previous_ttl, current, current_ttl = state
    return (previous, previous_ttl, current + hit.cost, current_ttl or 2 * window)


def wait_ms(strategy: Strategy, hit: LimitHit, state: State, need: int) -> int:
    """Milliseconds until ``need`` units fit (0 when they fit now)."""
    amount, window = hit.amount, hit.window_ms
    if used(strategy, hit, state) + need <= amount:
        return 0
    if strategy == "fixed-window":
        return max(0, state[1])
    if strategy == "moving-window":
        # The oldest entry leaving frees one unit; for a cost above one this is a lower bound.
        return max(1, window - state[1])
    previous, previous_ttl, current, current_ttl = state
    room = amount - need  # the estimate must fall to this
    if current <= room:
        # Only the previous window's share has to decay: floor(previous * ttl / window) <= room
        # - current holds once previous * ttl / window < room - current + 1.
        return max(1, math.floor(previous_ttl - (room - current + 1) * window / previous) + 1)
    # The current counter must first become the previous one, then decay the same way.
    to_rotation = max(0, current_ttl - window)
    return to_rotation + max(1, math.floor(window - (room + 1) * window / current) + 1)


def remaining_and_reset(strategy: Strategy, hit: LimitHit, state: State) -> tuple[int, int]:
    """Units left, and whole seconds until the window resets (or the next unit frees)."""
    if strategy == "fixed-window":
        count, ttl = state
        return max(0, hit.amount - count), (-(-ttl // 1000) if count and ttl > 0 else 0)
    remaining = max(0, hit.amount - used(strategy, hit, state))
    if remaining < hit.amount:
        return remaining, _seconds(wait_ms(strategy, hit, state, remaining + 1))
    return remaining, 0


def window_stats(strategy: Strategy, hit: LimitHit, state: State, refused: bool) -> WindowStats:
    """The response view of one limit; ``refused`` asks for the wait before ``cost`` units fit."""
    remaining, reset = remaining_and_reset(strategy, hit, state)
    retry = wait_ms(strategy, hit, state, hit.cost) if refused else 0
    return WindowStats(
        hit.policy,
        hit.amount,
        hit.window,
        remaining,
        reset,
        max(1, _seconds(retry)) if refused else 0,
    )


def policy_field(hits: Sequence[LimitHit]) -> str:
    """The ``RateLimit-Policy`` value for these limits (fixed by configuration)."""
    return ", ".join(f"{hit.member};q={hit.amount};w={hit.window}" for hit in hits)


def current_field(strategy: Strategy, hits: Sequence[LimitHit], states: Sequence[State]) -> str:
    """The ``RateLimit`` value of an admitted request: units left and seconds to reset."""
    if len(hits) == 1:
        remaining, reset = remaining_and_reset(strategy, hits[0], states[0])
        return f"{hits[0].member};r={remaining};t={reset}"
    members = []
    for hit, state in zip(hits, states, strict=True):
        remaining, reset = remaining_and_reset(strategy, hit, state)
        members.append(f"{hit.member};r={remaining};t={reset}")
    return ", ".join(members)


def _seconds(ms: int) -> int:
    return -(-ms // 1000)


def sf_string(value: str) -> str:
    """An RFC 9651 §3.3.3 String (printable ASCII; ``\\`` and ``"`` escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ietf_fields(stats: Sequence[WindowStats]) -> list[tuple[str, str]]:
    """``RateLimit-Policy`` and ``RateLimit``, one list member per limit (draft-11 §3, §4).

    Example: ``RateLimit-Policy: "default";q=100;w=60`` and ``RateLimit: "default";r=42;t=17``.
    """
    if len(stats) == 1:  # the common case, without the generators
        one = stats[0]
        name = _sf_name(one.policy)
        return [
            ("ratelimit-policy", f"{name};q={one.limit};w={one.window}"),
            ("ratelimit", f"{name};r={one.remaining};t={one.reset}"),
        ]
    policy = ", ".join(f"{_sf_name(s.policy)};q={s.limit};w={s.window}" for s in stats)
    current = ", ".join(f"{_sf_name(s.policy)};r={s.remaining};t={s.reset}" for s in stats)
    return [("ratelimit-policy", policy), ("ratelimit", current)]


@functools.lru_cache(maxsize=1024)
def _sf_name(policy: str) -> str:
    """``sf_string`` of a policy name; the names are few and fixed by configuration."""
    return sf_string(policy)


def legacy_fields(stats: Sequence[WindowStats], now: float) -> list[tuple[str, str]]:
    """``X-RateLimit-Limit``, ``-Remaining`` and ``-Reset`` for the tightest limit.

    The trio can describe one limit only: the one with the fewest units left (the longest wait on
    a tie). ``Reset`` is a Unix time in seconds, as GitHub, Flask-Limiter and slowapi send it.
    """
    tightest = min(stats, key=lambda s: (s.remaining, -s.reset))
    return [
        ("x-ratelimit-limit", str(tightest.limit)),
        ("x-ratelimit-remaining", str(tightest.remaining)),
        ("x-ratelimit-reset", str(math.ceil(now) + tightest.reset)),
    ]


def rate_limit_fields(
    style: HeaderStyle, stats: Sequence[WindowStats], now: float
) -> list[tuple[str, str]]:
    """The rate-limit fields for ``style`` (``ietf``, ``legacy``, ``both`` or ``none``)."""
    if not stats or style == "none":
        return []
    fields: list[tuple[str, str]] = []
    if style in ("ietf", "both"):
        fields += ietf_fields(stats)
    if style in ("legacy", "both"):
        fields += legacy_fields(stats, now)
    return fields
