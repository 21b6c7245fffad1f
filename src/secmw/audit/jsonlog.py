"""``JSONFormatter``: one JSON object per log record, for log pipelines that expect JSON lines.

An audit record (one carrying ``secmw_event``) becomes the event's fields under stable names;
any other record (the app's, uvicorn's, another library's) becomes its time, level, logger and
message, so one handler can format a whole process. The audit fields are what secmw wrote for the
event, which never holds a credential (see :mod:`secmw.audit`); nothing is copied from the
record's other attributes, where a library may have put anything.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from secmw.audit.kinds import DENIALS

EVENT_ATTRIBUTE = "secmw_event"
"""The log record attribute holding the audit event as plain data."""


def outcome(event: Mapping[str, Any]) -> str:
    """``refused`` (a 4xx answer), ``unavailable`` (5xx: a dependency could not decide),
    ``suppressed`` (a dedup summary) or ``notice`` (a state change, no request refused)."""
    status = event.get("status")
    name = event.get("name")
    if isinstance(status, int):
        return "refused" if status < 500 else "unavailable"
    if name in DENIALS:  # a refusal outside a request (the token endpoint's)
        return "unavailable" if str(name).endswith(".unavailable") else "refused"
    if name == "audit.suppressed":
        return "suppressed"
    return "notice"


class JSONFormatter(logging.Formatter):
    """Formats each record as one line of JSON (UTF-8 kept, no newline inside).

    An audit event gives ``event``, ``outcome``, ``status``, ``reason_code``, ``reason``,
    ``principal_id``, ``client_address``, ``path``, ``rule`` and ``request_id`` (null when
    unknown), and ``extra`` when the event has more. Every line has ``time`` (UTC, ISO 8601),
    ``level`` and ``logger``; other records have ``message``, and ``exception`` when they carry
    one.

    Args:
        static: Fields added to every line (``{"service": "billing"}``); the record's own
            fields win on a clash.
    """

    def __init__(self, static: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.static = dict(static or {})

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            **self.static,
            "time": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
        }
        event = getattr(record, EVENT_ATTRIBUTE, None)
        if isinstance(event, Mapping):
            line.update(audit_fields(event))
        else:
            line["message"] = record.getMessage()
            if record.exc_info:
                line["exception"] = self.formatException(record.exc_info)
            elif record.exc_text:
                line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str, separators=(",", ":"))


def audit_fields(event: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON line's fields of an audit event (``AuditEvent.as_dict()``)."""
    fields = {
        "event": event.get("name"),
        "outcome": outcome(event),
        "status": event.get("status"),
        "reason_code": event.get("code"),
        "reason": event.get("reason"),
        "principal_id": event.get("principal"),
        "client_address": event.get("client"),
        "path": event.get("path"),
        "rule": event.get("rule"),
        "request_id": event.get("request_id"),
    }
    extra = event.get("extra")
    if extra:
        fields["extra"] = extra
    return fields


def _timestamp(created: float) -> str:
    moment = datetime.fromtimestamp(created, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
