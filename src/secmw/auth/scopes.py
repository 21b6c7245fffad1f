"""Per-route scope requirements (``auth.scopes``) and the ``insufficient_scope`` refusal.

A rule names a path pattern, methods and scopes. A request it matches is refused 401 (with every
configured challenge) when anonymous, and 403 ``insufficient_scope`` when the principal lacks a
scope; the 403 carries ``WWW-Authenticate: Bearer error="insufficient_scope", scope="..."``
(RFC 6750 section 3.1) when bearer tokens are configured. Scopes compare exactly, like
``Principal.has_scopes``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from secmw.auth.settings import ScopeRule
from secmw.core.deny import Deny, quote_param
from secmw.core.paths import PathTable
from secmw.core.principal import Principal

_ANY = "*"


def insufficient_scope(
    scopes: Iterable[str], realm: str | None = None, *, challenge: bool = True
) -> Deny:
    """403 ``insufficient_scope`` naming the ``scopes`` required, with the Bearer challenge of
    RFC 6750 section 3.1 (its ``realm`` when given) unless ``challenge`` is False (the API has no
    bearer scheme). Every integration answers a missing scope with this one value."""
    needed = " ".join(scopes)
    headers: tuple[tuple[str, str], ...] = ()
    if challenge:
        params = [f"realm={quote_param(realm)}"] if realm is not None else []
        params.append('error="insufficient_scope"')
        if needed:
            params.append(f"scope={quote_param(needed)}")
        headers = (("www-authenticate", "Bearer " + ", ".join(params)),)
    return Deny(403, "insufficient scope", "insufficient_scope", headers)


class ScopeRules:
    """The compiled ``auth.scopes`` rules: ``required(method, path)`` is the first matching rule's
    scopes, or None when no rule matches.

    Args:
        rules: The rules, in order (the first match wins).
        setting: The setting named in errors.
    """

    __slots__ = ("_tables",)

    def __init__(self, rules: Sequence[ScopeRule], *, setting: str = "auth.scopes") -> None:
        methods = {m for rule in rules for m in rule.methods} | {_ANY}
        self._tables = {
            method: PathTable(
                [
                    (rule.path, tuple(rule.scopes))
                    for rule in rules
                    if not rule.methods or method in rule.methods
                ],
                setting=setting,
            )
            for method in methods
        }

    def __bool__(self) -> bool:
        return any(self._tables.values())

    def required(self, method: str, path: str) -> tuple[str, ...] | None:
        """The scopes a request needs (empty: authentication alone), or None: no rule."""
        table = self._tables.get(method, self._tables[_ANY])
        found = table.match(path)
        return None if found is None else found[1]

    def refusal(
        self, method: str, path: str, principal: Principal, realm: str | None
    ) -> tuple[str, ...] | Deny | None:
        """None when ``principal`` may go on; the missing scopes' 403 (``realm``: see
        :func:`insufficient_scope`; None: no bearer scheme, no challenge); or, for the anonymous
        principal under a rule, the scopes it would need (the caller answers 401 with its
        challenges)."""
        needed = self.required(method, path)
        if needed is None:
            return None
        if not principal.is_authenticated:
            return needed
        if needed and not principal.has_scopes(*needed):
            return insufficient_scope(needed, realm, challenge=realm is not None)
        return None
