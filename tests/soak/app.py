"""The app the soak serves: the Starlette demo behind the whole stack, configured by ``SECMW_*``.

Built at import, so gunicorn's ``--preload`` builds it once in the master. Audit records go to
stderr with the worker's pid, deduplicated with the default settings.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from uvicorn.workers import UvicornWorker

from secmw import audit
from secmw.audit import AuditSettings
from secmw.demo import build

_handler = logging.StreamHandler(sys.stderr)
_handler.setFormatter(logging.Formatter("%(process)d %(name)s %(levelname)s %(message)s"))
_audit_logger = logging.getLogger("secmw.audit")
_audit_logger.addHandler(_handler)
_audit_logger.setLevel(logging.INFO)
_audit_logger.propagate = False
audit.configure(AuditSettings())

app = build("starlette")


class SoakWorker(UvicornWorker):
    """uvicorn's gunicorn worker without its own proxy-header handling.

    uvicorn trusts ``X-Forwarded-For`` from 127.0.0.1 by default and rewrites the client before
    secmw sees it; secmw resolves the client itself (``SECMW_IP__TRUSTED_PROXIES``).
    """

    CONFIG_KWARGS: dict[str, Any] = {**UvicornWorker.CONFIG_KWARGS, "proxy_headers": False}
