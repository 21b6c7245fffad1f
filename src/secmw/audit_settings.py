"""The audit section of the settings (``SECMW_AUDIT__*``): log level and deduplication."""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field

from secmw._config import Section

AuditLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class AuditSettings(Section):
    """Audit events on the ``secmw.audit`` logger (``SECMW_AUDIT__*``).

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
