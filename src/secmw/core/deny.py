"""Denials as values, rendered as RFC 9457 ``application/problem+json``.

A layer that refuses a request returns a :class:`Deny`; the adapters turn it into a response. A
Deny's text is written by secmw, never copied from the request, so it cannot echo a credential.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from http import HTTPStatus

PROBLEM_CONTENT_TYPE = "application/problem+json"


@dataclass(frozen=True, slots=True)
class Deny:
    """A refusal: status, extra response headers, and the problem details.

    Attributes:
        status: HTTP status (401, 403, 429, 503...).
        detail: What went wrong, in general terms ("token expired").
        code: A short machine-readable reason (``"invalid_token"``), also the RFC 6750 error code
            for bearer challenges.
        headers: Extra headers (``WWW-Authenticate``, ``Retry-After``...), as (name, value) pairs.
    """

    status: int
    detail: str
    code: str = ""
    headers: tuple[tuple[str, str], ...] = field(default=())

    @property
    def title(self) -> str:
        """The status phrase: RFC 9457 §4.2 asks for it when ``type`` is ``about:blank``."""
        try:
            return HTTPStatus(self.status).phrase
        except ValueError:
            return "Error"

    def body(self) -> bytes:
        """The problem document, UTF-8 JSON."""
        doc: dict[str, object] = {
            "type": "about:blank",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.code:
            doc["code"] = self.code
        return json.dumps(doc, separators=(",", ":")).encode()

    def response_headers(self, body_length: int) -> list[tuple[str, str]]:
        """All headers of the rendered response, content type and length first."""
        return [
            ("content-type", PROBLEM_CONTENT_TYPE),
            ("content-length", str(body_length)),
            *self.headers,
        ]

    def rendered(self, method: str) -> tuple[list[tuple[str, str]], bytes]:
        """The response fields and body answering a request with ``method``.

        A ``HEAD`` answer has the fields a ``GET`` would get, its ``Content-Length`` included,
        and no body (RFC 9110 §9.3.2): every adapter renders through here, so neither side can
        send one. Not every server drops a body the app hands it for ``HEAD``.
        """
        body = self.body()
        return self.response_headers(len(body)), b"" if method == "HEAD" else body

    def with_headers(self, *headers: tuple[str, str]) -> Deny:
        """A copy with more headers appended."""
        return Deny(self.status, self.detail, self.code, self.headers + headers)


def quote_param(value: str) -> str:
    """An RFC 9110 quoted-string (for challenge parameters)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
