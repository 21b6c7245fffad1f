"""The FastOpenAPI security guide's patterns, written with secmw: credentials are checked by the
middleware, routes only ask for scopes, roles, permissions or ownership.

The app below is what a user of docs/fastopenapi.md writes; each test exercises one pattern.
"""

# No `from __future__ import annotations`: FastOpenAPI reads SecurityScopes annotations at run time.

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
import pytest
from fastopenapi import Depends, Form, Security, SecurityScopes
from fastopenapi.errors import AuthenticationError, BadRequestError, ResourceNotFoundError
from fastopenapi.routers import StarletteRouter
from pwdlib.hashers.bcrypt import BcryptHasher
from pydantic import BaseModel
from starlette.applications import Starlette

from secmw import Principal, SecuritySettings
from secmw.asgi import AuthenticationMiddleware
from secmw.auth.passwords import dummy_hash, hash_password, verify_password
from secmw.fastopenapi import SecurityBridge, security_scheme, token_response
from secmw.tokens import REQUEST_ACCEPTED, Account, MemorySingleUseStore, TokenIssuer
from tests.support import SECRET, make_token

# -- the app ---------------------------------------------------------------------------------

PERMISSION_HIERARCHY = {
    "admin": ["users:read", "users:write", "users:delete", "posts:*"],
    "editor": ["posts:read", "posts:write"],
    "viewer": ["posts:read"],
}
settings = SecuritySettings(
    jwt={"secret": SECRET},
    authz={"roles": PERMISSION_HIERARCHY},
    tokens={
        "token_url": "/token",
        "password_grant": True,
        "scopes": {"items:read": "Read items", "items:write": "Write items", "admin:read": "Admin"},
    },
)
security = SecurityBridge(settings=settings)
issuer = TokenIssuer(settings, store=MemorySingleUseStore())
reset_tokens = issuer.password_reset_tokens()


@dataclass
class User:
    id: str
    username: str
    email: str
    hashed_password: str
    scopes: tuple[str, ...] = ()


# Seeded users get cheap bcrypt hashes to keep the tests fast; the app itself (password reset
# below) stores argon2id hashes from hash_password, and verify_password reads both.
seed_hash = BcryptHasher(rounds=4).hash
USERS = {
    "alice": User(
        "alice",
        "alice",
        "alice@example.test",
        seed_hash("alice-password"),
        ("items:read", "items:write", "admin:read"),
    ),
    "bob": User("bob", "bob", "bob@example.test", seed_hash("bob-password"), ("items:read",)),
}
OUTBOX: list[tuple[str, str]] = []


@dataclass
class Post:
    id: int
    owner_id: str
    title: str


POSTS = {1: Post(1, "alice", "Alice's post"), 2: Post(2, "bob", "Bob's post")}


def authenticate_user(username: str, password: str) -> User | None:
    user = USERS.get(username)
    # An unknown user costs one hash check too, so timing does not tell who exists.
    if not verify_password(password, user.hashed_password if user else dummy_hash()):
        return None
    return user


def account_for(username: str, password: str) -> Account | None:
    user = authenticate_user(username, password)
    return Account.create(user.id, scopes=user.scopes) if user else None


app = Starlette()
router = StarletteRouter(app=app, security_scheme=security_scheme(settings))


# Security() with scopes
@router.get("/admin/users")
def list_users(user: Annotated[Principal, Security(security.principal, scopes=["admin:read"])]):
    return {"users": sorted(USERS), "by": user.id}


# Chained dependencies: your dependency receives the scopes and asks secmw to check them
def get_current_user(security_scopes: SecurityScopes) -> User:
    principal = security.authorize(security_scopes.scopes)
    user = USERS.get(principal.id)
    if user is None:
        raise AuthenticationError("User not found")
    return user


@router.get("/profile")
def profile(user: Annotated[User, Security(get_current_user, scopes=["items:read"])]):
    return {"username": user.username, "email": user.email}


# Roles and multiple roles
@router.get("/admin/stats")
def admin_stats(user: Annotated[Principal, Depends(security.require_roles("admin"))]):
    return {"stats": {"users": len(USERS)}}


@router.get("/moderator/reports")
def get_reports(
    user: Annotated[Principal, Depends(security.require_roles("admin", "moderator"))],
):
    return {"reports": [], "by": user.id}


# Permissions, granted by roles through the hierarchy (wildcards included)
@router.delete("/users/{user_id}")
def delete_user(
    user_id: str,
    user: Annotated[Principal, Depends(security.require_permissions("users:delete"))],
):
    return {"deleted": user_id}


@router.post("/posts")
def create_post(
    user: Annotated[Principal, Depends(security.require_permissions("posts:write"))],
):
    return {"created_by": user.id}


# Resource ownership: the owner, or an admin
class PostUpdate(BaseModel):
    title: str


def load_post(post_id: int) -> Post:
    post = POSTS.get(post_id)
    if post is None:
        raise ResourceNotFoundError("post not found")
    return post


@router.put("/posts/{post_id}")
def update_post(
    post_id: int,
    updates: PostUpdate,
    post: Annotated[Post, Depends(security.require_owner(load_post, roles=["admin"]))],
):
    return {"updated": post.id, "title": updates.title}


# Login
class LoginRequest(BaseModel):
    username: str
    password: str


@router.post("/login")
def login(credentials: LoginRequest):
    account = account_for(credentials.username, credentials.password)
    if account is None:
        raise AuthenticationError("Invalid credentials")
    return {"access_token": issuer.access_token(account), "token_type": "bearer"}


# OAuth2 password flow (and the refresh_token grant), RFC 6749 answers
@router.post("/token")
def get_token(
    grant_type: str = Form(""),
    username: str | None = Form(None),
    password: str | None = Form(None),
    scope: str | None = Form(None),
    refresh_token: str | None = Form(None),
):
    form = {
        "grant_type": grant_type,
        "username": username,
        "password": password,
        "scope": scope,
        "refresh_token": refresh_token,
    }
    return token_response(issuer.exchange(form, account_for))


# Refresh tokens (the guide's separate endpoint)
class RefreshRequest(BaseModel):
    refresh_token: str


@router.post("/refresh")
def refresh_access_token(body: RefreshRequest):
    return token_response(issuer.refresh(body.refresh_token))


# Password reset
class ResetRequest(BaseModel):
    email: str


class ResetConfirm(BaseModel):
    token: str
    new_password: str


def find_by_email(email: str) -> str | None:
    return next((u.id for u in USERS.values() if u.email == email), None)


@router.post("/password-reset-request")
def request_password_reset(body: ResetRequest):
    return reset_tokens.request(
        body.email, find_by_email, lambda to, token: OUTBOX.append((to, token))
    )


@router.post("/password-reset")
def reset_password(body: ResetConfirm):
    user_id = reset_tokens.consume(body.token)
    if user_id is None:
        raise BadRequestError("Invalid or expired reset token")
    USERS[user_id].hashed_password = hash_password(body.new_password)
    return {"message": "Password reset successful"}


application = AuthenticationMiddleware(app, settings=settings)

# -- the tests -------------------------------------------------------------------------------


def call(method: str, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(application)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.request(method, path, headers=headers, **kwargs)

    return asyncio.run(send())


def test_security_with_scopes() -> None:
    """`Security(principal, scopes=[...])`: 200 with the scope, 403 without, 401 anonymous."""
    assert (
        call("GET", "/admin/users", make_token(sub="alice", scope="admin:read")).status_code == 200
    )
    assert call("GET", "/admin/users", make_token(sub="bob", scope="items:read")).status_code == 403
    assert call("GET", "/admin/users").status_code == 401


def test_chained_dependencies() -> None:
    """A user-loading dependency gets the scopes through SecurityScopes and checks them."""
    ok = call("GET", "/profile", make_token(sub="bob", scope="items:read"))
    assert ok.json() == {"username": "bob", "email": "bob@example.test"}
    assert call("GET", "/profile", make_token(sub="bob", scope="other")).status_code == 403
    unknown = call("GET", "/profile", make_token(sub="ghost", scope="items:read"))
    assert unknown.status_code == 401
    assert unknown.json()["error"]["message"] == "User not found"


def test_role_check() -> None:
    """`require_roles("admin")` admits admins only."""
    assert call("GET", "/admin/stats", make_token(roles=["admin"])).status_code == 200
    denied = call("GET", "/admin/stats", make_token(roles=["viewer"]))
    assert denied.status_code == 403
    assert denied.json()["error"]["message"] == "One of roles required: admin"


@pytest.mark.parametrize(
    ("roles", "status"),
    [(["admin"], 200), (["moderator"], 200), (["viewer"], 403), ([], 403)],
    ids=["admin", "moderator", "viewer", "none"],
)
def test_multiple_roles(roles: list[str], status: int) -> None:
    """`require_roles("admin", "moderator")` admits either."""
    assert call("GET", "/moderator/reports", make_token(roles=roles)).status_code == status


@pytest.mark.parametrize(
    ("roles", "status"),
    [(["admin"], 200), (["editor"], 403), (["viewer"], 403)],
    ids=["admin", "editor", "viewer"],
)
def test_permissions(roles: list[str], status: int) -> None:
    """`require_permissions("users:delete")`: only a role granting it passes."""
    response = call("DELETE", "/users/7", make_token(roles=roles))
    assert response.status_code == status


@pytest.mark.parametrize(
    ("roles", "status"),
    [(["admin"], 200), (["editor"], 200), (["viewer"], 403)],
    ids=["admin-posts-wildcard", "editor-exact", "viewer"],
)
def test_hierarchical_wildcard_permissions(roles: list[str], status: int) -> None:
    """`"admin": [..., "posts:*"]` grants `posts:write` with no list of every permission."""
    assert call("POST", "/posts", make_token(roles=roles)).status_code == status


@pytest.mark.parametrize(
    ("sub", "roles", "post_id", "status"),
    [
        ("alice", [], 1, 200),
        ("alice", [], 2, 403),
        ("carol", ["admin"], 2, 200),
        ("alice", [], 99, 404),
        (None, [], 99, 401),
    ],
    ids=["owner", "not-owner", "admin", "missing", "anonymous-learns-nothing"],
)
def test_resource_ownership(sub: str | None, roles: list[str], post_id: int, status: int) -> None:
    """`require_owner(load_post, roles=["admin"])`: the owner or an admin; 401 before 404."""
    token = make_token(sub=sub, roles=roles) if sub else None
    response = call("PUT", f"/posts/{post_id}", token, json={"title": "new"})
    assert response.status_code == status
    if status == 200:
        assert response.json() == {"updated": post_id, "title": "new"}


def test_login() -> None:
    """POST /login returns a token the middleware accepts; wrong credentials get 401."""
    response = call("POST", "/login", json={"username": "bob", "password": "bob-password"})
    token = response.json()["access_token"]
    assert call("GET", "/profile", token).json()["username"] == "bob"
    assert call("POST", "/login", json={"username": "bob", "password": "x"}).status_code == 401
    assert call("POST", "/login", json={"username": "eve", "password": "x"}).status_code == 401


def test_oauth2_password_flow() -> None:
    """POST /token (form): tokens with narrowed scope; RFC 6749 errors otherwise."""
    form = {
        "grant_type": "password",
        "username": "alice",
        "password": "alice-password",
        "scope": "items:read",
    }
    response = call("POST", "/token", data=form)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert (body["token_type"], body["scope"], body["expires_in"]) == ("bearer", "items:read", 900)
    assert call("GET", "/profile", body["access_token"]).status_code == 200
    assert call("GET", "/admin/users", body["access_token"]).status_code == 403  # narrowed
    errors = {
        "invalid_grant": {**form, "password": "wrong"},
        "invalid_scope": {**form, "scope": "items:delete"},
        "unsupported_grant_type": {"grant_type": "client_credentials"},
        "invalid_request": {"grant_type": "password", "username": "alice"},
    }
    for error, data in errors.items():
        refused = call("POST", "/token", data=data)
        assert (refused.status_code, refused.json()["error"]) == (400, error)


def test_refresh_tokens() -> None:
    """Refresh rotates: the new pair works, the spent refresh token is refused, and its reuse
    revokes the family."""
    form = {"grant_type": "password", "username": "bob", "password": "bob-password"}
    first = call("POST", "/token", data=form).json()
    second = call("POST", "/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    new = second.json()
    assert call("GET", "/profile", new["access_token"]).status_code == 200
    reused = call("POST", "/refresh", json={"refresh_token": first["refresh_token"]})
    assert (reused.status_code, reused.json()["error"]) == (400, "invalid_grant")
    grant = {"grant_type": "refresh_token", "refresh_token": new["refresh_token"]}
    assert call("POST", "/token", data=grant).json()["error"] == "invalid_grant"


def test_password_reset() -> None:
    """Same answer whether the account exists; the emailed token works once; the new password
    logs in."""
    OUTBOX.clear()
    known = call("POST", "/password-reset-request", json={"email": "bob@example.test"})
    unknown = call("POST", "/password-reset-request", json={"email": "eve@example.test"})
    assert known.json() == unknown.json() == REQUEST_ACCEPTED
    assert known.status_code == unknown.status_code == 200
    assert [to for to, _ in OUTBOX] == ["bob@example.test"]
    token = OUTBOX[0][1]
    reset = {"token": token, "new_password": "new-bob-password"}
    assert call("POST", "/password-reset", json=reset).status_code == 200
    assert call("POST", "/password-reset", json=reset).status_code == 400  # used up
    old = call("POST", "/login", json={"username": "bob", "password": "bob-password"})
    new = call("POST", "/login", json={"username": "bob", "password": "new-bob-password"})
    assert (old.status_code, new.status_code) == (401, 200)
    USERS["bob"].hashed_password = seed_hash("bob-password")
