"""Tenants and their bearer tokens: creation, lookup by hash, listing, expiry, revocation."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update

from ckpt.api.db import Database
from ckpt.api.tables import NAMESPACE_PREFIX, Role, Tenant, TenantKind, Token, utcnow

TOKEN_PREFIX = "ckpt_"  # noqa: S105 - a public marker that makes leaked tokens greppable


def hash_token(token: str) -> str:
    # Tokens carry 256 random bits, so a plain sha256 cannot be brute-forced and needs no
    # salt or slow KDF; it also lets the lookup be an indexed equality on the hash.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def create_token(
    db: Database,
    tenant_name: str,
    expires_in: timedelta | None = None,
    role: Role = Role.tenant,
) -> str:
    """Create the admin tenant if needed and a new token for it; return the clear token.

    `expires_in`: the token stops working that long from now; None: it never expires.
    `role`: what the token may do (`Role`); an `operator` token acts for namespace tenants
    only, and its own tenant is the one whose records it adopts
    (`ckpt.api.tenants.adopt_namespace_records`).
    """
    if tenant_name.startswith(NAMESPACE_PREFIX):
        raise ValueError(f"tenant names starting with {NAMESPACE_PREFIX!r} are namespaces'")
    token = new_token()
    expires_at = utcnow() + expires_in if expires_in is not None else None
    with db.transaction() as session:
        tenant = session.scalars(select(Tenant).where(Tenant.name == tenant_name)).first()
        if tenant is None:
            tenant = Tenant(name=tenant_name, kind=TenantKind.tenant.value)
            session.add(tenant)
            session.flush()
        session.add(
            Token(
                tenant_id=tenant.id,
                token_hash=hash_token(token),
                expires_at=expires_at,
                role=role.value,
            )
        )
    return token


@dataclass(frozen=True)
class Caller:
    """Who a token speaks for: its tenant and what it may do there (`Role`)."""

    tenant_id: int
    role: Role


@dataclass(frozen=True)
class TokenRecord:
    """What `token list` shows: never the token, which the server does not have."""

    id: int
    tenant: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    role: str

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


def list_tokens(db: Database, tenant_name: str | None = None) -> list[TokenRecord]:
    query = (
        select(
            Token.id, Tenant.name, Token.created_at, Token.expires_at, Token.revoked_at, Token.role
        )
        .join(Tenant, Tenant.id == Token.tenant_id)
        .order_by(Token.id)
    )
    if tenant_name is not None:
        query = query.where(Tenant.name == tenant_name)
    with db.reader() as session:
        return [TokenRecord(*row) for row in session.execute(query).all()]


def revoke_token(db: Database, *, token_id: int | None = None, token: str | None = None) -> bool:
    """Revoke one token, by its id (from `list_tokens`) or by its value. False: no such token.

    Revoking twice keeps the first revocation time.
    """
    if (token_id is None) == (token is None):
        raise ValueError("give exactly one of token_id and token")
    where = Token.id == token_id if token is None else Token.token_hash == hash_token(token)
    with db.transaction() as session:
        found = session.execute(select(Token.id, Token.revoked_at).where(where)).first()
        if found is None:
            return False
        if found.revoked_at is None:
            session.execute(update(Token).where(Token.id == found.id).values(revoked_at=utcnow()))
    return True


class TokenResolver:
    """Maps a presented token to its `Caller`, with a short positive cache.

    A cached entry lives at most `cache_seconds` and never past the token's expiry, so a
    revocation takes effect within `cache_seconds` and an expiry exactly on time.
    """

    def __init__(self, db: Database, cache_seconds: float) -> None:
        self._db = db
        self._ttl = cache_seconds
        self._cache: dict[str, tuple[Caller, float]] = {}
        self._lock = threading.Lock()

    def cached(self, token: str) -> Caller | None:
        digest = hash_token(token)
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        return None

    def resolve(self, token: str) -> Caller | None:
        """Blocking: may query the database. Returns the caller or None."""
        cached = self.cached(token)
        if cached is not None:
            return cached
        digest = hash_token(token)
        with self._db.reader() as session:
            row = session.execute(
                select(
                    Token.token_hash,
                    Token.tenant_id,
                    Token.expires_at,
                    Token.revoked_at,
                    Token.role,
                ).where(Token.token_hash == digest)
            ).first()
        if row is None:
            return None
        token_hash, tenant_id, expires_at, revoked_at, role = row
        # The index lookup already matched; the constant-time compare keeps the final
        # decision free of data-dependent timing whatever the database's compare does.
        if not hmac.compare_digest(token_hash, digest):
            return None
        if revoked_at is not None:
            return None
        caller = Caller(tenant_id, Role(role))
        ttl = self._ttl
        if expires_at is not None:
            left = (expires_at - utcnow()).total_seconds()
            if left <= 0:
                return None
            ttl = min(ttl, left)
        if ttl > 0:
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[digest] = (caller, time.monotonic() + ttl)
        return caller
