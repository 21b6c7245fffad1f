"""Shared fixtures: every test starts from a clean ``SECMW_*`` environment."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

# Imported here, before any test starts a thread: hypothesis' pytest plugin otherwise imports
# it at the session's end, and CPython 3.11 can fail parsing a module for assertion rewriting
# while other threads are still winding down ("AST constructor recursion depth mismatch").
import hypothesis  # noqa: F401
import pytest

from secmw import audit, metrics
from secmw.audit import AuditSettings

pytest_plugins = ["tests.redis_support"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Drop inherited SECMW_* variables and run in an empty directory (no stray ``.env``)."""
    for name in list(os.environ):
        if name.startswith("SECMW_") and name != "SECMW_TEST_REDIS_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def reset_observers() -> Iterator[None]:
    """A stack configures audit dedup and metrics process-wide: start each test afresh."""
    yield
    audit.configure(AuditSettings(level="DEBUG", dedup_window=0))
    metrics.disable()


@pytest.fixture
def events() -> Iterator[list[audit.AuditEvent]]:
    """Audit events emitted during the test, as objects."""
    seen: list[audit.AuditEvent] = []
    audit.add_hook(seen.append)
    yield seen
    audit.remove_hook(seen.append)
