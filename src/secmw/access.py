"""Route-level access decisions, as :class:`~secmw.core.deny.Deny` values. Framework-free.

The FastAPI and FastOpenAPI bridges declare dependencies in their framework's shape and raise
what these functions decide, so a refusal from a route reads like one from the middleware:
problem+json, the same codes, the same challenges.

- Anonymous: 401 ``authentication_required``, without a challenge of its own: the
  authentication layer adds one ``WWW-Authenticate`` per configured scheme to every 401 that
  carries none.
- A scope missing: 403 ``insufficient_scope`` with ``WWW-Authenticate: Bearer
  error="insufficient_scope", scope="..."`` naming the scopes the operation needs
  (RFC 6750 §3.1).
- A role, permission or ownership check failing: 403 ``forbidden``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from http import HTTPStatus
from operator import attrgetter
from typing import Any, TypeVar

from secmw.auth.scopes import insufficient_scope
from secmw.authz import Authorizer, check_permission
from secmw.core.context import current_principal
from secmw.core.deny import Deny
from secmw.core.principal import Principal
from secmw.errors import ConfigurationError, MiddlewareNotInstalled

AUTHENTICATION_REQUIRED = Deny(401, "Authentication required", "authentication_required")

Rule = Callable[[Principal], "Deny | None"]
"""A check on an authenticated principal: None to let it through, else the refusal."""

Dependency = Callable[..., Any]
B = TypeVar("B", bound="Bridge")


def raised_denial(status: int, detail: str, headers: Iterable[tuple[str, str]] = ()) -> Deny | None:
    """The Deny for a 401 or 403 a framework or the app raised itself (its headers kept, its
    status phrase when it gave no text); None for any other status."""
    code = _CODES.get(status)
    if code is None:
        return None
    return Deny(status, detail or HTTPStatus(status).phrase, code, tuple(headers))


_CODES = {401: "authentication_required", 403: "forbidden"}


def forbidden(detail: str) -> Deny:
    """403 for a role, permission or ownership check."""
    return Deny(403, detail, "forbidden")


def check_scopes(scopes: Iterable[str], where: str) -> tuple[str, ...]:
    """The scopes, each a valid RFC 6749 §3.3 scope-token, else ConfigurationError naming
    ``where``.

    A scope with a space would be two scopes in a token's ``scope`` claim and in the
    ``insufficient_scope`` challenge; a control character or a quote cannot be sent in a header.
    """
    found = tuple(scopes)
    for scope in found:
        if not isinstance(scope, str) or not scope or not all(_scope_char(c) for c in scope):
            raise ConfigurationError(
                f"{where}: invalid scope {scope!r}: a scope is one or more printable ASCII"
                ' characters, no space, no " and no \\ (RFC 6749 section 3.3)'
            )
    return found


def _scope_char(char: str) -> bool:
    # NQCHAR: %x21 / %x23-5B / %x5D-7E
    code = ord(char)
    return code == 0x21 or 0x23 <= code <= 0x5B or 0x5D <= code <= 0x7E


class AccessRules:
    """Scope, role, permission and ownership decisions against one authorizer.

    Args:
        get_authorizer: Asked for the authorizer at each decision (so a module-level bridge can
            read the environment on first use).
    """

    def __init__(self, get_authorizer: Callable[[], Authorizer]) -> None:
        self._get_authorizer = get_authorizer

    @classmethod
    def of(cls, authorizer: Authorizer) -> AccessRules:
        """Rules bound to one authorizer."""
        return cls(lambda: authorizer)

    @property
    def authorizer(self) -> Authorizer:
        """The authorizer the decisions use."""
        return self._get_authorizer()

    def scopes(self, principal: Principal, scopes: Iterable[str]) -> Deny | None:
        """401 for the anonymous principal, 403 when a scope is missing, else None."""
        if not principal.is_authenticated:
            return AUTHENTICATION_REQUIRED
        required = list(scopes)
        missing = self.authorizer.missing_scopes(principal, required)
        return insufficient_scope(required) if missing else None

    def before_parsing(self, scopes: list[str] | None) -> Deny | None:
        """The refusal an operation requiring ``scopes`` (None: not secured) gives the request
        being served, decided before the framework reads its body. None without the middleware:
        the dependency itself answers that (a logged 500)."""
        if scopes is None:
            return None
        try:
            principal = current_principal()
        except MiddlewareNotInstalled:
            return None
        return self.scopes(principal, scopes)

    def any_role(self, *roles: str) -> Rule:
        """At least one of ``roles`` (roles a role includes count)."""
        return self._rule(roles, "One of roles", lambda a, p: a.has_any_role(p, *roles))

    def all_roles(self, *roles: str) -> Rule:
        """Every one of ``roles``."""
        return self._rule(roles, "Roles", lambda a, p: a.has_all_roles(p, *roles))

    def permissions(self, *permissions: str) -> Rule:
        """Every permission, granted through the role hierarchy (wildcards included)."""
        for permission in permissions:
            try:
                check_permission(permission)
            except ValueError as exc:
                raise ConfigurationError(f"require_permissions: {exc}") from None
        return self._rule(
            permissions, "Permission", lambda a, p: a.has_permissions(p, *permissions)
        )

    def owner(self, principal: Principal, owner_id: object, roles: Iterable[str]) -> Deny | None:
        """None when the principal owns the resource or holds one of ``roles``."""
        if self.authorizer.is_owner(principal, owner_id, or_roles=roles):
            return None
        return forbidden("You do not own this resource")

    def _rule(
        self, names: tuple[str, ...], label: str, check: Callable[[Authorizer, Principal], bool]
    ) -> Rule:
        if not names:
            raise ConfigurationError(f"{label}: name at least one")
        refusal = forbidden(f"{label} required: {', '.join(names)}")

        def rule(principal: Principal) -> Deny | None:
            return None if check(self.authorizer, principal) else refusal

        return rule


class EnvironmentAuthorizer:
    """A module-level bridge's authorizer: built from the environment once, on first use, or
    set explicitly (``configure``)."""

    def __init__(self) -> None:
        self._value: Authorizer | None = None
        self._lock = threading.Lock()

    def __call__(self) -> Authorizer:
        if self._value is None:
            with self._lock:
                if self._value is None:
                    self._value = Authorizer.from_settings(None)
        return self._value

    def set(self, authorizer: Authorizer) -> None:
        """Use ``authorizer`` from now on."""
        with self._lock:
            self._value = authorizer

    def configure(self, settings: Any = None, *, authorizer: Authorizer | None = None) -> None:
        """Use ``authorizer``, else one built from ``settings`` (or the environment, read now):
        call it at app start so a bad ``authz.roles`` fails there."""
        self.set(authorizer or Authorizer.from_settings(settings))


class Bridge:
    """What every framework bridge shares: the authorizer, ``authorize`` and the role and
    permission dependencies. A subclass gives the framework's shapes: the principal dependency,
    how a refusal is raised, how a rule becomes a dependency, reading the principal.

    The module-level functions of a bridge module belong to a bridge that reads ``authz.*`` from
    the environment at its first use (or takes ``configure``'s settings); build your own bridge to
    hold explicit settings.

    Args:
        authorizer: The role hierarchy and scope rules; default: built from ``settings``.
        settings: ``SecuritySettings`` for the authorizer; default: the environment, read now.
    """

    principal: Dependency

    def __init__(self, authorizer: Authorizer | None = None, *, settings: Any = None) -> None:
        fixed = authorizer or Authorizer.from_settings(settings)
        self._setup(lambda: fixed)

    @classmethod
    def deferred(cls: type[B], get_authorizer: Callable[[], Authorizer]) -> B:
        """A bridge asking ``get_authorizer`` for its authorizer at each check."""
        bridge = cls.__new__(cls)
        bridge._setup(get_authorizer)
        return bridge

    def _setup(self, get_authorizer: Callable[[], Authorizer]) -> None:
        self.rules = AccessRules(get_authorizer)
        self.principal = self._principal_dependency()

    @property
    def authorizer(self) -> Authorizer:
        """The authorizer the checks use."""
        return self.rules.authorizer

    def authorize(self, scopes: Iterable[str] = ()) -> Principal:
        """The request's principal, checked: authenticated and holding every scope in ``scopes``
        (401 for the anonymous principal, 403 ``insufficient_scope``). Use it in your own
        dependencies with ``security_scopes.scopes``."""
        found = self._current()
        deny = self.rules.scopes(found, scopes)
        if deny is not None:
            raise self._refusal(deny)
        return found

    def require_roles(self, *roles: str) -> Dependency:
        """A dependency: at least one of the roles (roles a role includes count)."""
        return self._check(self.rules.any_role(*roles))

    def require_all_roles(self, *roles: str) -> Dependency:
        """A dependency: every one of the roles."""
        return self._check(self.rules.all_roles(*roles))

    def require_permissions(self, *permissions: str) -> Dependency:
        """A dependency: every permission, granted by the principal's roles through the
        hierarchy (wildcards included)."""
        return self._check(self.rules.permissions(*permissions))

    def require_owner(
        self,
        load: Dependency,
        *,
        owner: Callable[[Any], object] = attrgetter("owner_id"),
        roles: Iterable[str] = (),
    ) -> Dependency:
        """A dependency: the resource ``load`` finds, for its owner or a holder of one of
        ``roles`` only (``Security(require_owner(load_post, roles=["admin"]))``).

        Args:
            load: A dependency loading the resource (the framework resolves its parameters,
                such as a path parameter); it may raise the framework's 404. It runs after
                authentication, so an anonymous caller learns nothing.
            owner: Reads the owner's id from the resource (``resource.owner_id`` by default);
                compared as a string with ``Principal.id``.
            roles: Roles that may act on resources they do not own (``"admin"``).
        """
        allowed = tuple(roles)

        def check(principal: Principal, resource: Any) -> Any:
            deny = self.rules.owner(principal, owner(resource), allowed)
            if deny is not None:
                raise self._refusal(deny)
            return resource

        return self._owner_dependency(load, check)

    def enforce(self, rule: Rule, principal: Principal) -> Principal:
        """``principal`` when ``rule`` lets it through, else the framework's refusal."""
        deny = rule(principal)
        if deny is not None:
            raise self._refusal(deny)
        return principal

    def _principal_dependency(self) -> Dependency:
        raise NotImplementedError

    def _owner_dependency(
        self, load: Dependency, check: Callable[[Principal, Any], Any]
    ) -> Dependency:
        raise NotImplementedError

    def _current(self) -> Principal:
        raise NotImplementedError

    def _refusal(self, deny: Deny) -> Exception:
        raise NotImplementedError

    def _check(self, rule: Rule) -> Dependency:
        raise NotImplementedError
