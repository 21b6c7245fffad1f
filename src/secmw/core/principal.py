"""The authenticated (or anonymous) party making a request."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an immutable identity with scopes and roles.

    Satisfies Starlette's ``BaseUser`` duck type (``is_authenticated``, ``display_name``,
    ``identity``), so ``request.user`` works in Starlette code unchanged.

    Attributes:
        id: Stable identifier (JWT subject, API-key owner, user name). Empty for anonymous.
        scheme: Which authenticator admitted it (``"bearer"``, ``"apikey"``, ``"basic"``...),
            ``"anonymous"`` for the anonymous principal.
        scopes: Granted scopes.
        roles: Granted roles.
        claims: Read-only mapping of the raw claims (JWT payload, key record). Never holds the
            credential itself.
    """

    id: str
    scheme: str
    scopes: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    claims: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, compare=False, hash=False)
    name: str | None = None

    def __post_init__(self) -> None:
        # Freeze whatever the caller handed in: a Principal must never change under a request.
        if not isinstance(self.scopes, frozenset):
            object.__setattr__(self, "scopes", frozenset(self.scopes))
        if not isinstance(self.roles, frozenset):
            object.__setattr__(self, "roles", frozenset(self.roles))
        if not isinstance(self.claims, MappingProxyType):
            object.__setattr__(self, "claims", MappingProxyType(dict(self.claims)))

    @property
    def is_authenticated(self) -> bool:
        """True for every principal but the anonymous one."""
        return self.scheme != "anonymous"

    @property
    def display_name(self) -> str:
        """A human-readable name: the ``name`` given at creation, else the id."""
        return self.name or self.id

    @property
    def identity(self) -> str:
        """Starlette's ``BaseUser.identity``: the id."""
        return self.id

    def has_scopes(self, *required: str) -> bool:
        """True when every scope in ``required`` was granted (no wildcards: see ``secmw.authz``)."""
        return self.scopes.issuperset(required)

    @classmethod
    def create(
        cls,
        id: str,
        scheme: str,
        *,
        scopes: Iterable[str] = (),
        roles: Iterable[str] = (),
        claims: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> Principal:
        """Build a principal from any iterables (convenience for authenticators and tests)."""
        return cls(id, scheme, frozenset(scopes), frozenset(roles), claims or _EMPTY, name)


ANONYMOUS = Principal("", "anonymous")
"""The one anonymous principal: no id, no scopes, ``is_authenticated`` false."""
