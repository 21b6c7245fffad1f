"""Password hashing with pwdlib: argon2id for new hashes, bcrypt hashes still verify."""

from __future__ import annotations

from functools import lru_cache

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from pwdlib.hashers.bcrypt import BcryptHasher


@lru_cache(maxsize=1)
def password_hasher() -> PasswordHash:
    """The shared hasher: argon2id (pwdlib's recommended parameters) first, bcrypt accepted."""
    return PasswordHash((Argon2Hasher(), BcryptHasher()))


def hash_password(password: str) -> str:
    """An argon2id hash of ``password``, ready to store."""
    return password_hasher().hash(password)


def verify_password(password: str, password_hash: str) -> bool:
    """True when ``password`` matches ``password_hash``; a malformed hash is simply no match."""
    try:
        return password_hasher().verify(password, password_hash)
    except Exception:  # pwdlib raises UnknownHashError and hasher-specific errors
        return False


@lru_cache(maxsize=1)
def dummy_hash() -> str:
    """A real hash of a random password, verified when a user is unknown (equal timing)."""
    import secrets

    return hash_password(secrets.token_urlsafe(16))
