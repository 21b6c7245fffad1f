"""Security events: every denial and every state change, on the ``secmw.audit`` logger.

An event carries its name, a reason, the client address, the principal id when known, the path
and the rule. It never carries a token, key, password or cookie value: callers pass only what is
listed here, and ``extra`` values are written by secmw, never copied from request credentials.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from secmw.request import RequestView

logger = logging.getLogger("secmw.audit")


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

    def as_dict(self) -> dict[str, Any]:
        """The event as plain data (for JSON logs)."""
        return asdict(self)


Hook = Callable[[AuditEvent], None]
_hooks: list[Hook] = []


def add_hook(hook: Hook) -> None:
    """Receive every event as an object (in addition to the log record)."""
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
    level: int = logging.WARNING,
    **extra: Any,
) -> None:
    """Log an event and hand it to the hooks. Costs nothing when nobody listens."""
    if not _hooks and not logger.isEnabledFor(level):
        return
    event = AuditEvent(
        name,
        reason,
        request.client if request else None,
        principal,
        request.path if request else None,
        rule,
        extra,
    )
    logger.log(level, "%s: %s", name, reason, extra={"secmw_event": event.as_dict()})
    for hook in tuple(_hooks):
        hook(event)
