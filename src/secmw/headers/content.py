"""Which responses a browser may treat as a document: the choice between the two header sets.

The fields of the full set (a full CSP, Permissions-Policy, COOP, COEP, X-XSS-Protection,
X-Permitted-Cross-Domain-Policies) act on what a browser renders or runs: an HTML or XML
document (scripts run in XHTML inside any XML, and in SVG), and a script that may become a
worker (its CSP and COEP come from its own response). Every other response (JSON, problem+json,
plain text, images) gets the API set of the OWASP REST Security Cheat Sheet.

A response stays a document whenever that is unclear: no ``Content-Type``, an empty or malformed
one, a type browsers sniff (``*/*``, ``unknown/unknown``), or several values of which any is a
document type (RFC 9110 §8.3 allows one field; browsers differ on which of several they use).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# fmt: off
DOCUMENT_TYPES = frozenset((
    "text/html",
    # Scripts (a worker's CSP and COEP are those of its script's response; WHATWG MIME Sniffing
    # lists the JavaScript MIME type essences).
    "application/ecmascript", "application/javascript", "application/x-ecmascript",
    "application/x-javascript", "text/ecmascript", "text/javascript", "text/javascript1.0",
    "text/javascript1.1", "text/javascript1.2", "text/javascript1.3", "text/javascript1.4",
    "text/javascript1.5", "text/jscript", "text/livescript", "text/x-ecmascript",
    "text/x-javascript",
    # Types browsers sniff or render part by part.
    "*/*", "unknown/unknown", "application/unknown", "multipart/x-mixed-replace",
))
# fmt: on
_MEDIA_TYPE = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+/[!#$%&'*+.^_`|~0-9a-z-]+")


def is_document(values: Sequence[str | bytes]) -> bool:
    """True when a response with these ``Content-Type`` field values gets the full set (the
    header blocks remember the answer per value: this runs once for each)."""
    return not values or any(_classify(value) for value in values)


def _classify(value: str | bytes) -> bool:
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    # A comma cannot occur in one media type (outside a quoted parameter, which then reads as
    # malformed: a document): several members were joined into one field.
    for member in text.split(","):
        media = member.split(";", 1)[0].strip().lower()
        if not _MEDIA_TYPE.fullmatch(media) or media in DOCUMENT_TYPES or media.endswith("xml"):
            return True
    return False
