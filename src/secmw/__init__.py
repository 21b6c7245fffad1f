"""secmw: composable security middlewares for ASGI and WSGI apps."""

from __future__ import annotations

from secmw.auth.apikey import hash_api_key
from secmw.auth.passwords import hash_password, verify_password
from secmw.config.settings import SecuritySettings
from secmw.core.context import current_csp_nonce, current_principal, current_request
from secmw.core.deny import Deny
from secmw.core.principal import ANONYMOUS, Principal
from secmw.core.request import RequestView
from secmw.errors import ConfigurationError, MiddlewareNotInstalled, StoreUnavailable

__version__ = "0.1.0"

__all__ = [
    "ANONYMOUS",
    "ConfigurationError",
    "Deny",
    "MiddlewareNotInstalled",
    "Principal",
    "RequestView",
    "SecuritySettings",
    "StoreUnavailable",
    "__version__",
    "current_csp_nonce",
    "current_principal",
    "current_request",
    "hash_api_key",
    "hash_password",
    "verify_password",
]
