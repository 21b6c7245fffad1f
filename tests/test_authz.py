"""Authorization helpers: role hierarchy, wildcard permissions, scopes, ownership."""

from __future__ import annotations

import pytest

from secmw import ANONYMOUS, ConfigurationError, Principal, SecuritySettings
from secmw.authz import Authorizer, AuthzSettings, PermissionSet, check_permission

HIERARCHY = {
    "admin": ["users:*", "@editor"],
    "editor": ["posts:read", "posts:write", "@viewer"],
    "viewer": ["posts:read"],
    "root": ["*"],
    "auditor": ["reports:2024:read"],
}


def user(*roles: str, scopes: tuple[str, ...] = (), id: str = "u1") -> Principal:
    return Principal.create(id, "bearer", roles=roles, scopes=scopes)


@pytest.fixture
def authz() -> Authorizer:
    """The example hierarchy."""
    return Authorizer(HIERARCHY)


@pytest.mark.parametrize(
    ("roles", "permission", "granted"),
    [
        (("admin",), "users:delete", True),
        (("admin",), "users:profile:read", True),
        (("admin",), "users", False),
        (("admin",), "usersx:delete", False),
        (("admin",), "posts:write", True),
        (("admin",), "posts:read", True),
        (("admin",), "reports:2024:read", False),
        (("editor",), "posts:write", True),
        (("editor",), "users:delete", False),
        (("viewer",), "posts:write", False),
        (("viewer",), "posts:read", True),
        (("root",), "anything:at:all", True),
        (("auditor",), "reports:2024:read", True),
        (("auditor",), "reports:2025:read", False),
        (("unknown-role",), "posts:read", False),
        ((), "posts:read", False),
        (("viewer", "auditor"), "reports:2024:read", True),
    ],
    ids=lambda v: "+".join(v) if isinstance(v, tuple) else str(v),
)
def test_permissions_through_the_hierarchy(
    authz: Authorizer, roles: tuple[str, ...], permission: str, granted: bool
) -> None:
    """Roles grant permissions directly, through `@role` includes and through wildcards."""
    assert authz.has_permissions(user(*roles), permission) is granted


def test_has_permissions_needs_all_and_has_any_permission_needs_one(authz: Authorizer) -> None:
    """`has_permissions` is all-of; `has_any_permission` is any-of."""
    editor = user("editor")
    assert not authz.has_permissions(editor, "posts:write", "users:delete")
    assert authz.has_any_permission(editor, "posts:write", "users:delete")
    assert not authz.has_any_permission(editor, "users:delete", "users:read")


@pytest.mark.parametrize(
    ("roles", "check", "required", "expected"),
    [
        (("admin",), "any", ("editor",), True),  # included role counts
        (("admin",), "any", ("viewer",), True),  # transitively
        (("editor",), "any", ("admin",), False),
        (("editor",), "any", ("admin", "editor"), True),
        (("editor",), "all", ("editor", "viewer"), True),
        (("editor",), "all", ("editor", "admin"), False),
        (("moderator",), "any", ("moderator",), True),  # a role outside the hierarchy still counts
        ((), "any", ("viewer",), False),
    ],
    ids=lambda v: "+".join(v) if isinstance(v, tuple) else str(v),
)
def test_role_checks(
    authz: Authorizer, roles: tuple[str, ...], check: str, required: tuple[str, ...], expected: bool
) -> None:
    """Any-of and all-of role checks see the roles a role includes."""
    method = authz.has_any_role if check == "any" else authz.has_all_roles
    assert method(user(*roles), *required) is expected


@pytest.mark.parametrize(
    ("scopes", "required", "wildcards", "expected"),
    [
        (("items:read",), ("items:read",), False, True),
        (("items:*",), ("items:read",), False, False),  # exact by default
        (("items:*",), ("items:read",), True, True),
        (("items:*",), ("items:read", "orders:read"), True, False),
        (("*",), ("anything",), True, True),
        (("*",), ("anything",), False, False),
        (("a:*:b", "items:*"), ("items:read",), True, True),  # an odd scope never spoils the rest
        (("a:*:b",), ("a:x:b",), True, False),  # and is never widened
        (("a:*:b",), ("a:*:b",), True, True),
    ],
    ids=lambda v: "+".join(v) if isinstance(v, tuple) else str(v),
)
def test_scope_checks(
    scopes: tuple[str, ...], required: tuple[str, ...], wildcards: bool, expected: bool
) -> None:
    """Scope wildcards count only when switched on; odd scopes compare exactly."""
    authz = Authorizer({}, scope_wildcards=wildcards)
    assert authz.has_scopes(user(scopes=scopes), *required) is expected


def test_scope_wildcards_default_on_with_a_hierarchy_and_off_without() -> None:
    """Configuring roles switches scope wildcards on unless told otherwise."""
    assert Authorizer(HIERARCHY).scope_wildcards is True
    assert Authorizer({}).scope_wildcards is False
    assert Authorizer(HIERARCHY, scope_wildcards=False).scope_wildcards is False


def test_scope_checks_never_consult_roles(authz: Authorizer) -> None:
    """An admin whose token was narrowed to `posts:read` cannot pass a `users:delete` scope."""
    narrowed = user("admin", scopes=("posts:read",))
    assert authz.has_permissions(narrowed, "users:delete")
    assert authz.missing_scopes(narrowed, ["posts:read", "users:delete"]) == ["users:delete"]


@pytest.mark.parametrize(
    ("principal", "owner_id", "or_roles", "expected"),
    [
        (user(id="42"), 42, (), True),
        (user(id="42"), "42", (), True),
        (user(id="42"), 7, (), False),
        (user("admin", id="42"), 7, ("admin",), True),
        (user("editor", id="42"), 7, ("admin",), False),
        (user("admin", id="42"), 7, ("editor",), True),  # admin includes editor
        (ANONYMOUS, "", (), False),
        (ANONYMOUS, None, (), False),
        (user(id="42"), None, (), False),
    ],
    ids=[
        "owner-int",
        "owner-str",
        "stranger",
        "admin-override",
        "editor-no-override",
        "included-role-override",
        "anonymous-empty-owner",
        "anonymous-no-owner",
        "nobody-owns-none",
    ],
)
def test_ownership(
    authz: Authorizer,
    principal: Principal,
    owner_id: object,
    or_roles: tuple[str, ...],
    expected: bool,
) -> None:
    """Owner or a given role; the anonymous principal owns nothing."""
    assert authz.is_owner(principal, owner_id, or_roles=or_roles) is expected


@pytest.mark.parametrize(
    ("roles", "fragment"),
    [
        ({"admin": ["us*ers"]}, "'*' only as a whole last segment"),
        ({"admin": ["*:read"]}, "'*' only as a whole last segment"),
        ({"admin": ["users::read"]}, "empty segment"),
        ({"admin": ["users read"]}, "whitespace"),
        ({"admin": ["@ghost"]}, "unknown role 'ghost'"),
        ({"a": ["@b"], "b": ["@a"]}, "role cycle: a -> b -> a"),
        ({"a": ["@a"]}, "role cycle: a -> a"),
        ({"@a": ["x"]}, "invalid role name"),
    ],
    ids=["inner-star", "leading-star", "empty-segment", "space", "unknown", "cycle", "self", "at"],
)
def test_bad_hierarchies_fail_at_construction(roles: dict[str, list[str]], fragment: str) -> None:
    """Malformed permissions, unknown includes and cycles raise ConfigurationError naming the
    variable."""
    with pytest.raises(ConfigurationError, match="SECMW_AUTHZ__ROLES") as info:
        Authorizer(roles)
    assert fragment in str(info.value)


def test_environment_roles_are_json_and_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    """`SECMW_AUTHZ__ROLES` is read as JSON; a bad one names the variable."""
    monkeypatch.setenv("SECMW_AUTHZ__ROLES", '{"admin": ["users:*", "posts:*"]}')
    authz = Authorizer.from_settings()
    assert authz.has_permissions(user("admin"), "posts:write", "users:delete")
    assert authz.roles == {"admin"}
    for bad in ('{"admin": ["@nobody"]}', "{not json", '["admin"]'):
        monkeypatch.setenv("SECMW_AUTHZ__ROLES", bad)
        with pytest.raises(ConfigurationError, match="SECMW_AUTHZ__ROLES"):
            SecuritySettings()


def test_from_settings_accepts_either_section_or_root() -> None:
    """An `AuthzSettings` section and a whole `SecuritySettings` build the same authorizer."""
    section = AuthzSettings(roles={"viewer": ["posts:read"]}, scope_wildcards=False)
    for source in (section, SecuritySettings(authz=section)):
        authz = Authorizer.from_settings(source)
        assert authz.has_permissions(user("viewer"), "posts:read")
        assert authz.scope_wildcards is False


def test_permission_set_union_and_grammar() -> None:
    """PermissionSet compiles wildcards once; `check_permission` refuses malformed names."""
    merged = PermissionSet.of(["a:*"]).union(PermissionSet.of(["b:c"]))
    assert merged.grants("a:x")
    assert merged.grants("b:c")
    assert not merged.grants("b:d")
    check_permission("reports:2024:*")
    with pytest.raises(ValueError, match="empty"):
        check_permission("")


def test_compiled_permissions_are_cached_per_role_set(authz: Authorizer) -> None:
    """The same role set compiles once (the hierarchy is not re-walked per request)."""
    first = authz.permissions_of(user("admin", "viewer"))
    again = authz.permissions_of(user("viewer", "admin", id="someone-else"))
    assert first is again
