"""/docs of the FastAPI and FastOpenAPI demos in headless Chromium: Swagger UI, served by the
demo itself under its nonce CSP, renders, and its Authorize dialog offers every security scheme
the settings configure, the ones /openapi.json lists.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: requests
on fd 3, answers on fd 4, each a JSON text ended by a NUL byte), to click the Authorize button.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.integration.test_browser_csp import CHROMIUM_FLAGS, chromium  # noqa: F401
from tests.integration.test_demo import demo_server

pytestmark = pytest.mark.server
FLAGS = [flag for flag in CHROMIUM_FLAGS if not flag.startswith("--virtual-time-budget")]


class DevTools:
    """A minimal DevTools protocol client over Chromium's debugging pipe."""

    def __init__(self, process: subprocess.Popen[bytes], send: int, receive: int) -> None:
        self.process, self._send, self._receive = process, send, receive
        self._next = 0
        self._buffer = b""

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        reply = self.send(method, session, **params)
        assert "error" not in reply, reply
        result: dict[str, Any] = reply["result"]
        return result

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """The whole reply, an error included."""
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._send, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next:
                return reply

    def evaluate(self, session: str, expression: str) -> Any:
        """The value of ``expression`` in the page; None while the page has no context yet."""
        reply = self.send("Runtime.evaluate", session, expression=expression, returnByValue=True)
        return reply.get("result", {}).get("result", {}).get("value")

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._receive, 65536)
            assert chunk, "chromium closed the pipe"
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        parsed: dict[str, Any] = json.loads(message)
        return parsed


@contextmanager
def devtools(chromium_path: str) -> Iterator[DevTools]:
    """Headless Chromium with its debugging pipe on fds 3 and 4."""
    to_child, from_parent = os.pipe()
    to_parent, from_child = os.pipe()

    def wire() -> None:  # in the child: fd 3 reads our requests, fd 4 writes its answers
        os.dup2(to_child, 3)
        os.dup2(from_child, 4)

    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        process = subprocess.Popen(
            [chromium_path, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe"],
            preexec_fn=wire,
            pass_fds=(3, 4),  # kept open through the exec: they are the pipe ends by then
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_child)
        os.close(from_child)
        try:
            yield DevTools(process, from_parent, to_parent)
        finally:
            os.close(from_parent)
            os.close(to_parent)
            process.kill()
            process.wait(30)


def authorize_dialog(tools: DevTools, url: str) -> list[str]:
    """Open ``url``, wait for Swagger UI, click Authorize; the dialog's scheme headings."""
    target = tools.call("Target.createTarget", url=url)["targetId"]
    session = tools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    deadline = time.monotonic() + 30
    while not tools.evaluate(session, "!!document.querySelector('.btn.authorize')"):
        assert time.monotonic() < deadline, "Swagger UI did not render its Authorize button"
        time.sleep(0.2)
    tools.evaluate(session, "document.querySelector('.btn.authorize').click()")
    while not tools.evaluate(session, "document.querySelectorAll('.auth-container').length"):
        assert time.monotonic() < deadline, "the Authorize dialog did not open"
        time.sleep(0.2)
    headings = tools.evaluate(
        session, "[...document.querySelectorAll('.auth-container h4')].map(e => e.textContent)"
    )
    return list(headings)


@pytest.mark.parametrize("framework", ["fastapi", "starlette", "flask"])
def test_docs_offer_every_configured_scheme(framework: str, chromium: str) -> None:  # noqa: F811
    """The document lists the configured schemes (OAuth2 password and client-credentials
    flows, API key in header and query, Basic); the rendered dialog shows each of them."""
    with demo_server(framework) as client:
        document = client.get("/openapi.json").json()
        schemes = document["components"]["securitySchemes"]
        assert set(schemes) == {"OAuth2", "ApiKeyAuth", "ApiKeyQuery", "BasicAuth"}
        assert set(schemes["OAuth2"]["flows"]) == {"password", "clientCredentials"}
        secured = document["paths"]["/items"]["get"]["security"]
        assert {name for entry in secured for name in entry} == set(schemes)
        with devtools(chromium) as tools:
            headings = authorize_dialog(tools, str(client.base_url.join("/docs")))
    shown = " ".join(headings)
    for name in schemes:
        assert name in shown, (name, headings)
    assert "password" in shown
    assert "clientCredentials" in shown or "application" in shown
