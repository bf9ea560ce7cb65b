"""Users of the HTTP API: argon2id password hashes, random bearer tokens stored hashed, roles.

Passwords are hashed with argon2-cffi (argon2id, its default RFC 9106 parameters), in a worker
thread so a login never stalls the event loop that follows AMI. A login of an unknown or inactive
user still verifies against a dummy hash, so the answer time does not tell which logins exist.
Tokens are 32 random bytes (URL-safe base64); only their SHA-256 is stored, with an expiry.
Neither a password, a hash nor a token is ever logged or returned by a read.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import logging
import re
import secrets
from dataclasses import dataclass

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from queues.config_models import ROLES
from queues.config_store import Actor, Conflict, write_audit

log = logging.getLogger("hotline.auth")

TOKEN_TTL = dt.timedelta(hours=12)  # one shift
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
_LOGIN = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{20,100}$")
_hasher = PasswordHasher()


@dataclass(frozen=True)
class User:
    id: int
    login: str
    display_name: str
    role: str

    @property
    def actor(self) -> Actor:
        return Actor(self.id, self.login)

    def public(self) -> dict:
        return {"id": self.id, "login": self.login, "display_name": self.display_name, "role": self.role}


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii")).digest()


def check_password_rule(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ValueError(f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters")


async def create_user(pool: asyncpg.Pool, login: str, role: str, password: str, actor: Actor,
                      display_name: str | None = None) -> User:
    """A new active user, with its audit row in the same transaction; Conflict if the login exists."""
    if not _LOGIN.match(login):
        raise ValueError("a login has 1 to 64 letters, digits, '_', '.', '@' or '-'")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    check_password_rule(password)
    name = display_name or login
    if not 1 <= len(name) <= 200 or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValueError("a display name has 1 to 200 characters and no control characters")
    password_hash = await asyncio.to_thread(hash_password, password)
    try:
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO users (login, display_name, role, password_hash) VALUES ($1, $2, $3, $4)"
                " RETURNING id, login, display_name, role, active, created_at",
                login, name, role, password_hash)
            await write_audit(conn, actor, "user", row["id"], "create", None, dict(row))
    except asyncpg.UniqueViolationError:
        raise Conflict(f"a user {login!r} exists (logins are compared without case)", "login") from None
    return User(row["id"], row["login"], row["display_name"], row["role"])


async def login(pool: asyncpg.Pool, login_name: str, password: str) -> tuple[str, dt.datetime, User] | None:
    """A new token, its expiry and the user; None for a wrong login or password, or an inactive user."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT id, login, display_name, role, password_hash, active FROM users WHERE lower(login) = lower($1)",
            login_name)
    if row is None or not row["active"]:
        await asyncio.to_thread(verify_password, _dummy_hash(), password)
        return None
    if not await asyncio.to_thread(verify_password, row["password_hash"], password):
        return None
    user = User(row["id"], row["login"], row["display_name"], row["role"])
    token = secrets.token_urlsafe(32)
    async with pool.acquire() as conn, conn.transaction():
        if _hasher.check_needs_rehash(row["password_hash"]):
            new_hash = await asyncio.to_thread(hash_password, password)
            await conn.execute("UPDATE users SET password_hash = $2 WHERE id = $1", user.id, new_hash)
        await conn.execute("DELETE FROM api_tokens WHERE user_id = $1 AND expires_at <= now()", user.id)
        expires_at = await conn.fetchval(
            "INSERT INTO api_tokens (token_hash, user_id, expires_at) VALUES ($1, $2, now() + $3::interval)"
            " RETURNING expires_at", token_hash(token), user.id, TOKEN_TTL)
    log.info("auth: %s (%s) logged in", user.login, user.role)
    return token, expires_at, user


async def authenticate(pool: asyncpg.Pool, token: str) -> User | None:
    """The active user of an unexpired token, else None."""
    if not _TOKEN.match(token):
        return None
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT u.id, u.login, u.display_name, u.role FROM api_tokens t JOIN users u ON u.id = t.user_id"
            " WHERE t.token_hash = $1 AND t.expires_at > now() AND u.active", token_hash(token))
    return None if row is None else User(row["id"], row["login"], row["display_name"], row["role"])


async def revoke(pool: asyncpg.Pool, token: str) -> None:
    if _TOKEN.match(token):
        async with pool.acquire() as conn:
            await conn.execute("DELETE FROM api_tokens WHERE token_hash = $1", token_hash(token))


async def add_user_command(dsn: str, login_name: str, role: str, password: str, display_name: str | None) -> User:
    """``hotline user add``: create a user as the command line (audit actor 'cli')."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        return await create_user(pool, login_name, role, password, Actor(None, "cli"), display_name)
    finally:
        await pool.close()
