"""Tenants and their bearer tokens: creation and lookup by hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time

from sqlalchemy import select

from .db import Database
from .tables import Tenant, Token

TOKEN_PREFIX = "ckpt_"  # noqa: S105 - a public marker that makes leaked tokens greppable


def hash_token(token: str) -> str:
    # Tokens carry 256 random bits, so a plain sha256 cannot be brute-forced and needs no
    # salt or slow KDF; it also lets the lookup be an indexed equality on the hash.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def create_token(db: Database, tenant_name: str) -> str:
    """Create the tenant if needed and a new token for it; return the clear token."""
    token = new_token()
    with db.transaction() as session:
        tenant = session.scalars(select(Tenant).where(Tenant.name == tenant_name)).first()
        if tenant is None:
            tenant = Tenant(name=tenant_name)
            session.add(tenant)
            session.flush()
        session.add(Token(tenant_id=tenant.id, token_hash=hash_token(token)))
    return token


class TokenResolver:
    """Maps a presented token to its tenant id, with a short positive cache."""

    def __init__(self, db: Database, cache_seconds: float) -> None:
        self._db = db
        self._ttl = cache_seconds
        self._cache: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def cached(self, token: str) -> int | None:
        digest = hash_token(token)
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        return None

    def resolve(self, token: str) -> int | None:
        """Blocking: may query the database. Returns the tenant id or None."""
        cached = self.cached(token)
        if cached is not None:
            return cached
        digest = hash_token(token)
        with self._db.reader() as session:
            row = session.execute(
                select(Token.token_hash, Token.tenant_id).where(Token.token_hash == digest)
            ).first()
        # The index lookup already matched; the constant-time compare keeps the final
        # decision free of data-dependent timing whatever the database's compare does.
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            return None
        if self._ttl > 0:
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[digest] = (row.tenant_id, time.monotonic() + self._ttl)
        return row.tenant_id
