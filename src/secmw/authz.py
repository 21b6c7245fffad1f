"""Authorization helpers: roles, permissions with wildcards, scopes, ownership. Framework-free.

The role hierarchy (``authz.roles``) maps a role to what it grants::

    {"admin": ["users:*", "@editor"], "editor": ["posts:read", "posts:write"]}

- A permission is ``:``-separated segments (``users:delete``, ``reports:2024:read``).
- A trailing ``*`` segment grants everything below its prefix: ``users:*`` grants
  ``users:delete`` and ``users:profile:read``, but not ``users`` itself. ``*`` alone grants every
  permission (a super-user role: write it only on purpose). ``*`` anywhere else is refused.
- ``@role`` includes another role: its permissions, and the role itself for role checks (an
  ``admin`` that includes ``@editor`` passes ``require_roles("editor")``). Unknown roles and
  cycles are configuration errors.

Permissions come from roles only; scopes come from the credential only. A scope check never
consults roles, so a token narrowed at ``/token`` stays narrow even for an admin. Wildcard scopes
(``items:*``) are honoured only when a hierarchy is configured or ``authz.scope_wildcards``
is true: by default scopes are opaque strings compared exactly (RFC 6749 §3.3), like
``Principal.has_scopes`` and Starlette's ``requires``.

The hierarchy is compiled once, when the :class:`Authorizer` is built.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from secmw.core.principal import Principal
from secmw.core.section import Section, StrList, settings_or_environment
from secmw.errors import ConfigurationError

WILDCARD = "*"
INCLUDE = "@"


class AuthzSettings(Section):
    """Authorization (``authz.*``): the role hierarchy used by permission checks."""

    roles: Annotated[dict[str, StrList], NoDecode] = Field(
        default_factory=dict,
        description='JSON object: role to permissions, e.g. `{"admin": ["users:*", "@editor"]}`;'
        " a trailing `*` segment is a wildcard, `@role` includes another role.",
    )
    scope_wildcards: bool | None = Field(
        None,
        description="Honour `*` wildcards in scopes (`items:*` grants `items:read`);"
        " default: on when roles are configured.",
    )

    @field_validator("roles", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        # Parsed here, not by pydantic-settings, so bad JSON is a ConfigurationError naming the
        # variable like any other invalid value.
        return json.loads(value) if isinstance(value, str) else value

    @field_validator("roles")
    @classmethod
    def _valid_hierarchy(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        compile_roles(value)  # raises ValueError; the settings name the variable
        return value


@dataclass(frozen=True, slots=True)
class PermissionSet:
    """Compiled grants: exact names, wildcard prefixes, and the all-granting ``*``."""

    exact: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    everything: bool = False

    @classmethod
    def of(cls, grants: Iterable[str]) -> PermissionSet:
        """Compile grants such as ``["posts:read", "users:*"]`` (each checked first)."""
        exact: set[str] = set()
        prefixes: set[str] = set()
        everything = False
        for grant in grants:
            check_permission(grant)
            if grant == WILDCARD:
                everything = True
            elif grant.endswith(":" + WILDCARD):
                prefixes.add(grant[:-1])  # keep the ":" so "users:*" never grants "usersx"
            else:
                exact.add(grant)
        return cls(frozenset(exact), tuple(sorted(prefixes)), everything)

    def grants(self, permission: str) -> bool:
        """True when ``permission`` is granted exactly or through a wildcard."""
        if self.everything or permission in self.exact:
            return True
        return any(permission.startswith(prefix) for prefix in self.prefixes)

    def union(self, other: PermissionSet) -> PermissionSet:
        """Both sets of grants."""
        return PermissionSet(
            self.exact | other.exact,
            tuple(sorted(set(self.prefixes) | set(other.prefixes))),
            self.everything or other.everything,
        )


NOTHING = PermissionSet()


def check_permission(permission: str) -> None:
    """Raise ValueError unless ``permission`` is well formed (``*`` only as a last segment)."""
    if not permission or any(c.isspace() for c in permission):
        raise ValueError(f"invalid permission {permission!r}: empty or contains whitespace")
    segments = permission.split(":")
    if any(not segment for segment in segments):
        raise ValueError(f"invalid permission {permission!r}: empty segment")
    if any(WILDCARD in segment for segment in segments[:-1]) or (
        WILDCARD in segments[-1] and segments[-1] != WILDCARD
    ):
        raise ValueError(f"invalid permission {permission!r}: '*' only as a whole last segment")


@dataclass(frozen=True, slots=True)
class _CompiledRoles:
    closure: Mapping[str, frozenset[str]]  # role -> itself and every role it includes
    permissions: Mapping[str, PermissionSet]  # role -> its own and inherited grants


def compile_roles(roles: Mapping[str, Iterable[str]]) -> _CompiledRoles:
    """Resolve ``@role`` includes and compile every role's grants; ValueError on any mistake."""
    direct: dict[str, tuple[list[str], list[str]]] = {}
    for role, entries in roles.items():
        if not role or role.startswith(INCLUDE) or any(c.isspace() for c in role):
            raise ValueError(f"invalid role name {role!r}")
        items = list(entries)
        includes = [e[1:] for e in items if e.startswith(INCLUDE)]
        grants = [e for e in items if not e.startswith(INCLUDE)]
        for name in includes:
            if name not in roles:
                raise ValueError(f"role {role!r} includes unknown role {name!r}")
        for grant in grants:
            check_permission(grant)
        direct[role] = (includes, grants)

    closure: dict[str, frozenset[str]] = {}

    def visit(role: str, path: tuple[str, ...]) -> frozenset[str]:
        if role in path:
            cycle = " -> ".join((*path[path.index(role) :], role))
            raise ValueError(f"role cycle: {cycle}")
        if role not in closure:
            found = {role}
            for name in direct[role][0]:
                found |= visit(name, (*path, role))
            closure[role] = frozenset(found)
        return closure[role]

    for role in direct:
        visit(role, ())
    permissions = {
        role: PermissionSet.of(g for member in members for g in direct[member][1])
        for role, members in closure.items()
    }
    return _CompiledRoles(closure, permissions)


class Authorizer:
    """Role, permission, scope and ownership checks against one compiled role hierarchy.

    Args:
        roles: Role to grants (permissions and ``@role`` includes); see the module docs.
        scope_wildcards: Honour ``*`` in scopes; None: on when ``roles`` is non-empty.
        setting: Variable named in configuration errors.

    Raises:
        ConfigurationError: a malformed permission, an unknown included role or a cycle.
    """

    def __init__(
        self,
        roles: Mapping[str, Iterable[str]] | None = None,
        *,
        scope_wildcards: bool | None = None,
        setting: str = "authz.roles",
    ) -> None:
        try:
            self._compiled = compile_roles(roles or {})
        except ValueError as exc:
            raise ConfigurationError(f"{setting}: {exc}") from None
        self.scope_wildcards = bool(roles) if scope_wildcards is None else scope_wildcards
        # Principals repeat the same few role and scope sets: compile each set once (bounded).
        self._permissions_for = lru_cache(maxsize=1024)(self._compile_permissions)
        self._scopes_for = lru_cache(maxsize=1024)(_scope_set)

    @classmethod
    def from_settings(cls, settings: Any = None) -> Authorizer:
        """From ``SecuritySettings`` (its ``authz`` section), ``AuthzSettings``, or the
        environment when None."""
        if settings is None:
            settings = settings_or_environment(None, {})
        section: AuthzSettings = getattr(settings, "authz", settings)
        return cls(section.roles, scope_wildcards=section.scope_wildcards)

    @property
    def roles(self) -> frozenset[str]:
        """The roles the hierarchy defines."""
        return frozenset(self._compiled.closure)

    def roles_of(self, principal: Principal) -> frozenset[str]:
        """The principal's roles plus every role they include."""
        closure = self._compiled.closure
        found: set[str] = set()
        for role in principal.roles:
            found |= closure.get(role, {role})
        return frozenset(found)

    def has_any_role(self, principal: Principal, *roles: str) -> bool:
        """True when the principal holds at least one of ``roles`` (directly or included)."""
        return not self.roles_of(principal).isdisjoint(roles)

    def has_all_roles(self, principal: Principal, *roles: str) -> bool:
        """True when the principal holds every one of ``roles`` (directly or included)."""
        return self.roles_of(principal).issuperset(roles)

    def permissions_of(self, principal: Principal) -> PermissionSet:
        """What the principal's roles grant (roles outside the hierarchy grant nothing)."""
        return self._permissions_for(principal.roles)

    def has_permissions(self, principal: Principal, *permissions: str) -> bool:
        """True when the principal's roles grant every permission in ``permissions``."""
        granted = self.permissions_of(principal)
        return all(granted.grants(p) for p in permissions)

    def has_any_permission(self, principal: Principal, *permissions: str) -> bool:
        """True when the principal's roles grant at least one of ``permissions``."""
        granted = self.permissions_of(principal)
        return any(granted.grants(p) for p in permissions)

    def missing_scopes(self, principal: Principal, required: Iterable[str]) -> list[str]:
        """The required scopes the principal's credential does not grant, in order."""
        if not self.scope_wildcards:
            return [s for s in required if s not in principal.scopes]
        granted = self._scopes_for(principal.scopes)
        return [s for s in required if not granted.grants(s)]

    def has_scopes(self, principal: Principal, *required: str) -> bool:
        """True when every scope in ``required`` is granted (wildcards as configured)."""
        return not self.missing_scopes(principal, required)

    def is_owner(
        self, principal: Principal, owner_id: object, *, or_roles: Iterable[str] = ()
    ) -> bool:
        """True when an authenticated principal owns the resource or holds one of ``or_roles``.

        ``owner_id`` is compared as a string with the principal's id; None or ``""`` is owned by
        nobody (so the anonymous principal, whose id is empty, never owns anything).
        """
        if not principal.is_authenticated:
            return False
        if owner_id is not None and str(owner_id) != "" and str(owner_id) == principal.id:
            return True
        return self.has_any_role(principal, *or_roles)

    def _compile_permissions(self, roles: frozenset[str]) -> PermissionSet:
        result = NOTHING
        for role in roles:
            result = result.union(self._compiled.permissions.get(role, NOTHING))
        return result


def _scope_set(scopes: frozenset[str]) -> PermissionSet:
    """Scopes as grants; a scope that is no valid permission (``a:*:b``) only matches itself."""
    valid, odd = [], []
    for scope in scopes:
        try:
            check_permission(scope)
        except ValueError:
            odd.append(scope)
        else:
            valid.append(scope)
    compiled = PermissionSet.of(valid)
    return PermissionSet(compiled.exact | frozenset(odd), compiled.prefixes, compiled.everything)
