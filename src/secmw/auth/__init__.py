"""Authenticators and the chain that runs them.

``secmw.auth.build.build_chain(settings)`` assembles the chain from ``SecuritySettings``.
"""

from __future__ import annotations

from secmw.auth.apikey import APIKeyAuthenticator, APIKeyRecord, hash_api_key
from secmw.auth.base import AuthChain, Authenticator, Credential, Found
from secmw.auth.basic import BasicAuthenticator, BasicUser
from secmw.auth.jwt import JWTAuthenticator

__all__ = [
    "APIKeyAuthenticator",
    "APIKeyRecord",
    "AuthChain",
    "Authenticator",
    "BasicAuthenticator",
    "BasicUser",
    "Credential",
    "Found",
    "JWTAuthenticator",
    "hash_api_key",
]
