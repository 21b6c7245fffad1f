"""Schemathesis against each demo's own /openapi.json, over real HTTP: every answer, with and
without credentials, must be one the document describes (status code, content type, required
response headers), and none a 5xx other than a documented 503.

Bounded: a few generated requests per operation and mode, no Hypothesis database, no deadline
per example (the password hash check is deliberately slow); the run stops by itself.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    status_code_conformance,
)

from tests.integration.test_demo import demo_server

pytestmark = pytest.mark.server

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
]
EXAMPLES = 5
"""Generated requests per operation and credential mode."""


def credentials(client: httpx.Client, mode: str) -> dict[str, str]:
    """No credential, or a bearer token with every demo scope."""
    if mode == "anonymous":
        return {}
    form = {"grant_type": "password", "username": "alice", "password": "alice-password"}
    token = client.post("/token", data=form).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def run_operation(operation: Any, base_url: str, headers: dict[str, str]) -> int:
    """Up to EXAMPLES generated cases of one operation; how many were sent."""
    sent: list[int] = []

    @given(data=st.data())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def check(data: st.DataObject) -> None:
        case = data.draw(operation.as_strategy())
        response = case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS)
        sent.append(response.status_code)

    check()
    return len(sent)


@pytest.mark.parametrize("mode", ["anonymous", "bearer"])
@pytest.mark.parametrize("framework", ["fastapi", "starlette", "flask"])
def test_demo_answers_as_its_document_says(
    framework: str, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Status codes, content types and required headers conform, for every operation."""
    monkeypatch.setenv("SECMW_RATE_LIMIT__DEFAULT", "10000/minute")
    with demo_server(framework) as client:
        base_url = str(client.base_url)
        schema = schemathesis.openapi.from_url(base_url + "/openapi.json")
        headers = credentials(client, mode)
        sent = 0
        for result in schema.get_all_operations():
            sent += run_operation(result.ok(), base_url, headers)
    assert sent >= 8  # every operation (eight or more) was exercised
