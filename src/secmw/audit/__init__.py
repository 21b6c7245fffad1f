"""Security events: every denial and every state change, on the ``secmw.audit`` logger.

An event carries its name, a reason, the client address, the principal id when known, the path
and the rule. It never carries a token, key, password or cookie value: callers pass only what is
listed here, and ``extra`` values are written by secmw, never copied from request credentials
(URLs among them lose their user-info and query, where a client secret could hide).

Hooks (:func:`add_hook`) receive every event as an :class:`AuditEvent`. The log is
deduplicated once :func:`configure` has applied an :class:`AuditSettings` (the
``SecurityStack`` adapters apply ``audit.*`` when built; until then every event is
logged): an event identical to one logged less than ``dedup_window`` seconds ago is counted,
not logged, and one ``audit.suppressed`` record with the count is logged when that window ends
(at the next event, or at :func:`flush`). So an attack that repeats one request writes two lines
per window, not one per request.

:class:`JSONFormatter` writes each event (and any other record) as one JSON line.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import Field

from secmw.audit.jsonlog import EVENT_ATTRIBUTE, JSONFormatter
from secmw.core.deny import Deny
from secmw.core.request import RequestView
from secmw.core.section import Section

__all__ = [
    "SUPPRESSED",
    "AuditEvent",
    "AuditSettings",
    "Deduplicator",
    "JSONFormatter",
    "add_hook",
    "configure",
    "emit",
    "flush",
    "remove_hook",
    "request_id",
]

AuditLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class AuditSettings(Section):
    """Audit events on the ``secmw.audit`` logger (``audit.*``).

    Deduplication bounds what an attack can write to the log: an event identical to one logged
    less than ``dedup_window`` seconds ago (same name, reason, client, principal and rule) is
    counted instead of logged, and one ``audit.suppressed`` record with the count follows when
    the window ends. Hooks (``secmw.audit.add_hook``) still receive every event.
    """

    level: AuditLevel = Field(
        "INFO", description="Events below this level are not logged (hooks still get them)."
    )
    dedup_window: float = Field(
        60.0,
        ge=0,
        le=86400,
        description="Seconds an identical event is counted, not logged again; 0 logs each one.",
    )
    max_keys: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="Distinct events tracked per window; past it, new ones are only counted.",
    )

    @property
    def level_number(self) -> int:
        """``level`` as a :mod:`logging` level number."""
        return _LEVELS[self.level]


_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
}

logger = logging.getLogger("secmw.audit")

SUPPRESSED = "audit.suppressed"
"""Name of the summary record that counts events not logged during a dedup window."""


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One security event."""

    name: str
    reason: str
    client: str | None = None
    principal: str | None = None
    path: str | None = None
    rule: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    status: int | None = None
    """The status answered, when the event is a refusal."""
    code: str | None = None
    """The refusal's machine-readable reason (``ip_not_allowed``, ``invalid_token``...)."""
    request_id: str | None = None
    """The request's ``X-Request-ID``, when it carries a plausible one."""

    def as_dict(self) -> dict[str, Any]:
        """The event as plain data (for JSON logs)."""
        return asdict(self)


Hook = Callable[[AuditEvent], None]
Summary = tuple[AuditEvent, int]  # (audit.suppressed event, level to log it at)
_Key = tuple[str, str, str | None, str | None, str | None]


class _Window:
    __slots__ = ("event", "level", "suppressed", "until")

    def __init__(self, event: AuditEvent, level: int, until: float) -> None:
        self.event = event
        self.level = level
        self.until = until
        self.suppressed = 0


class Deduplicator:
    """Lets the first of identical events through per window and counts the others.

    Events are identical when name, reason, client, principal and rule are equal (the path is
    left out: path variants of one attack are one event). Memory is bounded by ``max_keys``
    windows; past it, new events are counted in one overflow summary. Thread-safe.

    Args:
        window: Seconds a logged event suppresses its twins; 0 lets every event through.
        max_keys: Distinct events remembered at once.
        clock: Monotonic time source (injected in tests).
    """

    def __init__(
        self,
        window: float = 60.0,
        max_keys: int = 10_000,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: OrderedDict[_Key, _Window] = OrderedDict()
        self._overflow = 0
        self._overflow_level = logging.NOTSET

    def __len__(self) -> int:
        return len(self._windows)

    def admit(self, event: AuditEvent, level: int) -> tuple[bool, list[Summary]]:
        """Whether to log ``event`` now, and the summaries of windows that have ended."""
        if self.window <= 0:
            return True, []
        key = (event.name, event.reason, event.client, event.principal, event.rule)
        with self._lock:
            now = self._clock()
            due = self._expire(now)
            current = self._windows.get(key)
            if current is not None:
                current.suppressed += 1
                return False, due
            if len(self._windows) >= self.max_keys:
                self._overflow += 1
                self._overflow_level = max(self._overflow_level, level)
                return False, due
            self._windows[key] = _Window(event, level, now + self.window)
            return True, due

    def drain(self) -> list[Summary]:
        """Every pending summary, now; forgets every window."""
        with self._lock:
            due = self._expire(float("inf"))
        return due

    def _expire(self, now: float) -> list[Summary]:
        # Every window lasts the same time, so insertion order is expiry order: the oldest
        # windows sit at the front and each call pops only what has ended (amortised O(1)).
        due: list[Summary] = []
        windows = self._windows
        while windows:
            oldest = next(iter(windows.values()))
            if oldest.until > now:
                break
            windows.popitem(last=False)
            if oldest.suppressed:
                due.append((self._summary(oldest), oldest.level))
        if self._overflow and len(windows) < self.max_keys:
            text = (
                f"{self._overflow} events not logged: more than {self.max_keys}"
                f" distinct events within {self.window:g}s"
            )
            extra = {"count": self._overflow, "window": self.window}
            due.append((AuditEvent(SUPPRESSED, text, extra=extra), self._overflow_level))
            self._overflow, self._overflow_level = 0, logging.NOTSET
        return due

    def _summary(self, window: _Window) -> AuditEvent:
        event = window.event
        text = (
            f"{window.suppressed} more '{event.name}' events ({event.reason})"
            f" within {self.window:g}s"
        )
        extra = {"event": event.name, "count": window.suppressed, "window": self.window}
        return AuditEvent(SUPPRESSED, text, event.client, event.principal, None, event.rule, extra)


_hooks: list[Hook] = []
_threshold = logging.NOTSET  # until configured, the logger's own level decides alone
_dedup = Deduplicator(0)  # until configured, every event is logged


def configure(
    settings: AuditSettings | None = None, *, clock: Callable[[], float] = time.monotonic
) -> None:
    """Apply an :class:`AuditSettings` (``SecuritySettings().audit``) to this process.

    Without arguments, the defaults (60 s dedup window). Pending summaries of the previous
    configuration are logged first. Called by the ``SecurityStack`` adapters; call it yourself
    when composing the middlewares one by one. ``AuditSettings(level="DEBUG", dedup_window=0)``
    restores the behaviour of a fresh process (every event logged).
    """
    global _threshold, _dedup
    settings = settings or AuditSettings()
    flush()
    _threshold = settings.level_number
    _dedup = Deduplicator(settings.dedup_window, settings.max_keys, clock=clock)


def flush() -> None:
    """Log every pending ``audit.suppressed`` summary now (at shutdown, or in tests)."""
    for summary, level in _dedup.drain():
        _log(summary, level)


def add_hook(hook: Hook) -> None:
    """Receive every event as an object (in addition to the log record), before any dedup."""
    _hooks.append(hook)


def remove_hook(hook: Hook) -> None:
    """Stop sending events to ``hook``."""
    _hooks.remove(hook)


def emit(
    name: str,
    reason: str,
    *,
    request: RequestView | None = None,
    principal: str | None = None,
    rule: str | None = None,
    denial: Deny | None = None,
    level: int = logging.WARNING,
    **extra: Any,
) -> None:
    """Log an event and hand it to the hooks. Costs nothing when nobody listens.

    ``denial``: the refusal answered, for its status and code. A hook that raises is logged and
    skipped: an observer must not turn a denial into a 500.
    """
    log = level >= _threshold and logger.isEnabledFor(level)
    if not log and not _hooks:
        return
    if principal is None and request is not None:
        known = request.state.get("principal")
        if known is not None and known.is_authenticated:
            principal = known.id  # a refusal after authentication (a rate limit) names whom
    event = AuditEvent(
        name,
        reason,
        request.client if request else None,
        principal,
        request.path if request else None,
        rule,
        {key: _scrub(value) for key, value in extra.items()} if extra else {},
        denial.status if denial else None,
        (denial.code or None) if denial else None,
        request_id(request) if request else None,
    )
    if log:
        admitted, due = _dedup.admit(event, level)
        for summary, summary_level in due:
            _log(summary, summary_level)
        if admitted:
            _log(event, level)
    for hook in tuple(_hooks):
        try:
            hook(event)
        except Exception:
            logger.error("audit hook %s failed on %s", _name_of(hook), name, exc_info=True)


REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@+=/-]{1,128}")


def request_id(request: RequestView) -> str | None:
    """The request's ``X-Request-ID`` (set by a proxy or the client), when it is one short token
    of safe characters; anything else is dropped rather than logged."""
    values = request.header_values(REQUEST_ID_HEADER)
    if len(values) != 1:
        return None
    value = values[0].strip()
    return value if _REQUEST_ID.fullmatch(value) else None


def _log(event: AuditEvent, level: int) -> None:
    logger.log(level, "%s: %s", event.name, event.reason, extra={EVENT_ATTRIBUTE: event.as_dict()})


_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#@\s]*@")
_QUERY = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^?#\s]*)\?[^#\s]*")


def _scrub(value: Any) -> Any:
    """A URL in ``value`` without user-info or query (both may carry a client secret)."""
    if isinstance(value, str) and "://" in value:
        return _QUERY.sub(r"\1?***", _USERINFO.sub(r"\1***@", value))
    return value


def _name_of(hook: Hook) -> str:
    return getattr(hook, "__qualname__", type(hook).__qualname__)
