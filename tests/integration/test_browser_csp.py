"""Headless Chromium against pages served by uvicorn on 127.0.0.1: nonces and framing, for real.

Scripts on the pages write what happened into the DOM; ``--dump-dom`` reads it back after they
ran. Framing is observed from a second server (another port, so another origin): each framed
page posts a message to its parent when its script runs, and the parent writes it down. A
frameable control page proves the harness sees a frame that did load.
"""

from __future__ import annotations

import datetime
import html
import http.server
import json
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from secmw.asgi.headers import SecurityHeadersMiddleware
from secmw.headers.csp import NONCE
from tests.support import uvicorn_server

pytestmark = pytest.mark.server

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--virtual-time-budget=5000",
]
NONCE_CSP = {"default-src": ["'none'"], "script-src": [NONCE]}


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium; skipped where it is not installed, a failure under CI."""
    path = shutil.which("chromium")
    if path is None:
        reason = "chromium is not installed (apt-get install chromium; see docs/headers.md)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " - .ci/run installs it, so under CI its absence is a bug")
        pytest.skip(reason)
    return path


def dump_dom(chromium: str, url: str) -> str:
    """The DOM of ``url`` after its scripts ran, as headless Chromium serializes it."""
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def marker(dom: str, element_id: str) -> str:
    """The text of the element with this id."""
    found = re.search(rf'id="{element_id}">([^<]*)<', dom)
    assert found, f"#{element_id} not in the DOM"
    return found.group(1)


async def page(request: Request) -> Response:
    """Three inline scripts: the right nonce, none, a wrong one. Each marks its own element."""
    nonce = html.escape(request.state.csp_nonce, quote=True)

    def script(attrs: str, element: str) -> str:
        return (
            f"<script {attrs}>document.getElementById('{element}').textContent = 'ran';"
            "if (parent !== window) parent.postMessage(location.pathname, '*');</script>"
        )

    return HTMLResponse(
        "<!doctype html><html><body>"
        '<p id="with-nonce">blocked</p><p id="without-nonce">blocked</p>'
        '<p id="wrong-nonce">blocked</p>'
        + script(f'nonce="{nonce}"', "with-nonce")
        + script("", "without-nonce")
        + script('nonce="AAAAAAAAAAAAAAAAAAAAAA"', "wrong-nonce")
        + "</body></html>"
    )


def protected_app(reports: list[Any]) -> Any:
    """The app under test: ``/page`` strict, ``/frameable`` without framing protection."""

    async def report(request: Request) -> Response:
        reports.append(json.loads(await request.body()))
        return Response(status_code=204)

    app = Starlette(
        routes=[
            Route("/page", page),
            Route("/frameable", page),
            Route("/csp-report", report, methods=["POST"]),
        ]
    )
    return SecurityHeadersMiddleware(
        app,
        headers={
            "csp": NONCE_CSP,
            "report_uri": "/csp-report",
            "paths": {"/frameable": {"frame_options": ""}},
        },
    )


def framer_app(target: str) -> Any:
    """Another origin that frames the protected page and a frameable control page."""

    async def framer(request: Request) -> Response:
        return HTMLResponse(
            "<!doctype html><html><body>"
            '<p id="messages"></p>'
            "<script>window.addEventListener('message', (event) => {"
            "document.getElementById('messages').textContent += event.data + ' ';});</script>"
            f'<iframe src="{target}/page"></iframe>'
            f'<iframe src="{target}/frameable"></iframe>'
            "</body></html>"
        )

    return Starlette(routes=[Route("/", framer)])


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[str, str, list[Any]]]:
    """The protected app and the framer, on two loopback ports (two origins)."""
    reports: list[Any] = []
    with (
        uvicorn_server(protected_app(reports)) as target,
        uvicorn_server(framer_app(target)) as framer,
    ):
        yield target, framer, reports


def test_only_the_script_with_the_right_nonce_runs(
    chromium: str, servers: tuple[str, str, list[Any]]
) -> None:
    """Only the script with the response's nonce runs; the others are blocked and reported."""
    target, _, reports = servers
    dom = dump_dom(chromium, f"{target}/page")
    assert marker(dom, "with-nonce") == "ran"
    assert marker(dom, "without-nonce") == "blocked"
    assert marker(dom, "wrong-nonce") == "blocked"
    deadline = time.monotonic() + 5  # reports are POSTed asynchronously; bounded wait
    while len(script_reports(reports)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(script_reports(reports)) == 2


def script_reports(reports: list[Any]) -> list[dict[str, Any]]:
    """The CSP reports about blocked scripts on ``/page``."""
    return [
        r["csp-report"]
        for r in reports
        if r.get("csp-report", {}).get("effective-directive") == "script-src-elem"
        and r["csp-report"].get("document-uri", "").endswith("/page")
    ]


def test_the_page_cannot_be_framed(chromium: str, servers: tuple[str, str, list[Any]]) -> None:
    """Another origin cannot frame the protected page, while a frameable control loads."""
    _, framer, _ = servers
    messages = marker(dump_dom(chromium, f"{framer}/"), "messages").split()
    assert messages == ["/frameable"]


# -- the default Permissions-Policy, as Chromium reads it -----------------------------------------


def console(chromium: str, url: str) -> str:
    """What headless Chromium logs (its console included) while loading ``url``."""
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--enable-logging=stderr",
                "--v=0",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "permissions page" in result.stdout  # the page did load
    return result.stderr


def test_the_default_permissions_policy_raises_no_console_error(chromium: str) -> None:
    """A page with the default policy logs no Permissions-Policy error in Chromium's console,
    while a control page naming a feature Chromium does not know logs one (the console is read)."""

    async def plain_page(request: Request) -> Response:
        return HTMLResponse("<!doctype html><html><body><p>permissions page</p></body></html>")

    app = Starlette(routes=[Route("/default", plain_page), Route("/control", plain_page)])
    control = {"/control": {"permissions_policy": "camera=(), web-share=()"}}
    with uvicorn_server(SecurityHeadersMiddleware(app, headers={"paths": control})) as url:
        assert "Unrecognized feature: 'web-share'" in console(chromium, f"{url}/control")
        logged = console(chromium, f"{url}/default")
    assert "Permissions-Policy" not in logged
    assert "Unrecognized feature" not in logged


# -- the docs presets, against the real Swagger UI and ReDoc bundles (opt-in) ---------------------

DOCS_ASSETS = os.environ.get("DOCS_PRESET_ASSETS", "")
CDN_ROOTS = {
    "/npm/swagger-ui-dist@5.20.0/": "swagger-ui-dist-5.20.0/package/",
    "/npm/redoc@2.5.3/": "redoc-2.5.3/package/",
}


@contextmanager
def cdn_mirror(root: Path) -> Iterator[int]:
    """An HTTPS server on 127.0.0.1 answering for cdn.jsdelivr.net from unpacked npm packages."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cdn.jsdelivr.net")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    with tempfile.TemporaryDirectory() as tmp:
        cert_file, key_file = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                for prefix, folder in CDN_ROOTS.items():
                    file = root / folder / self.path[len(prefix) :]
                    if self.path.startswith(prefix) and file.is_file():
                        self.send_response(200)
                        css = file.suffix == ".css"
                        self.send_header("Content-Type", "text/css" if css else "text/javascript")
                        self.end_headers()
                        self.wfile.write(file.read_bytes())
                        return
                self.send_response(404)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()
            thread.join(10)
            server.server_close()


@pytest.mark.skipif(
    not DOCS_ASSETS,
    reason="set DOCS_PRESET_ASSETS to a folder holding `npm pack`ed and unpacked "
    "swagger-ui-dist@5.20.0 and redoc@2.5.3 (see docs/headers.md)",
)
@pytest.mark.parametrize(("path", "rendered"), [("/docs", "swagger-ui"), ("/redoc", "redoc")])
def test_docs_presets_load_fastopenapi_pages_without_violations(
    chromium: str, path: str, rendered: str
) -> None:
    """FastOpenAPI's docs pages render under their presets with zero CSP violation reports."""
    from fastopenapi.routers import StarletteRouter

    reports: list[Any] = []

    async def report(request: Request) -> Response:
        reports.append(json.loads(await request.body()))
        return Response(status_code=204)

    app = Starlette(routes=[Route("/csp-report", report, methods=["POST"])])
    router = StarletteRouter(app=app, title="Preset check")

    @router.get("/items/{item_id}")
    async def get_item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    wrapped = SecurityHeadersMiddleware(app, headers={"report_uri": "/csp-report"})
    with cdn_mirror(Path(DOCS_ASSETS)) as port, uvicorn_server(wrapped) as url:
        with tempfile.TemporaryDirectory() as profile:
            result = subprocess.run(
                [
                    chromium,
                    *CHROMIUM_FLAGS[:-1],
                    "--virtual-time-budget=15000",
                    f"--user-data-dir={profile}",
                    f"--host-resolver-rules=MAP cdn.jsdelivr.net:443 127.0.0.1:{port}",
                    "--ignore-certificate-errors",
                    "--dump-dom",
                    url + path,
                ],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        time.sleep(0.5)  # let report POSTs in flight land before reading them
    assert {"swagger-ui": "opblock", "redoc": "api-content"}[rendered] in result.stdout
    assert reports == []
