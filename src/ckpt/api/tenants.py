"""Namespace tenants: one per Kubernetes namespace, made on the operator's first request for
it. Their reader tokens, which the operator hands to the namespace's users, and the move of
the records an operator kept in one tenant before namespaces had their own.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ckpt.api.db import Database
from ckpt.api.tables import NAMESPACE_PREFIX, CheckpointRow, Role, Tenant, TenantKind, Token, utcnow
from ckpt.api.tokens import hash_token, new_token

log = logging.getLogger(__name__)

# A Kubernetes namespace name (RFC 1123 label).
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def valid_namespace(name: str) -> bool:
    return _NAMESPACE.fullmatch(name) is not None


def _find(session: Session, namespace: str) -> int | None:
    return session.scalar(
        select(Tenant.id).where(
            Tenant.name == NAMESPACE_PREFIX + namespace,
            Tenant.kind == TenantKind.namespace.value,
        )
    )


def namespace_tenant(db: Database, namespace: str) -> int:
    """Blocking: the id of `namespace`'s tenant, made if it is new."""
    if not valid_namespace(namespace):
        raise ValueError(f"not a namespace name: {namespace!r}")
    with db.reader() as session:
        found = _find(session, namespace)
    if found is not None:
        return found
    try:
        with db.transaction() as session:
            tenant = Tenant(name=NAMESPACE_PREFIX + namespace, kind=TenantKind.namespace.value)
            session.add(tenant)
            session.flush()
            return tenant.id
    except IntegrityError:
        # Another request made it first; anything else (an admin tenant holding the name)
        # finds nothing and raises again.
        with db.reader() as session:
            found = _find(session, namespace)
        if found is None:
            raise
        return found


class NamespaceTenants:
    """Namespace name -> tenant id, cached for good: a tenant's id never changes."""

    def __init__(self, db: Database, max_entries: int = 100_000) -> None:
        self._db = db
        self._max = max_entries
        self._ids: dict[str, int] = {}
        self._lock = threading.Lock()

    def cached(self, namespace: str) -> int | None:
        return self._ids.get(namespace)

    def resolve(self, namespace: str) -> int:
        """Blocking: may query and write the database."""
        found = self._ids.get(namespace)
        if found is not None:
            return found
        tenant_id = namespace_tenant(self._db, namespace)
        with self._lock:
            if len(self._ids) >= self._max:
                self._ids.clear()
            self._ids[namespace] = tenant_id
        return tenant_id


@dataclass(frozen=True)
class ReaderToken:
    token: str
    expires_at: datetime


def mint_reader(db: Database, namespace: str, lifetime: timedelta) -> ReaderToken:
    """Blocking: a new read-only token of `namespace`'s tenant, valid for `lifetime`.

    The tenant's reader tokens that have expired are deleted on the way: the operator mints
    one per namespace and lifetime, and they would otherwise pile up forever.
    """
    tenant_id = namespace_tenant(db, namespace)
    token = new_token()
    now = utcnow()
    expires_at = now + lifetime
    with db.transaction() as session:
        session.execute(
            delete(Token).where(
                Token.tenant_id == tenant_id,
                Token.role == Role.reader.value,
                Token.expires_at <= now,
            )
        )
        session.add(
            Token(
                tenant_id=tenant_id,
                token_hash=hash_token(token),
                expires_at=expires_at,
                role=Role.reader.value,
            )
        )
    return ReaderToken(token, expires_at)


@dataclass(frozen=True)
class Adoption:
    moved: int
    kept: int


def _namespace_of(name: str | None, info: Any) -> str | None:
    """The namespace a record of the operator's names: its name is "namespace/checkpoint",
    and its info, once written, carries the same namespace (`ckpt.operator.binding`)."""
    namespace, slash, rest = (name or "").partition("/")
    if not slash or not rest or not valid_namespace(namespace):
        return None
    if isinstance(info, Mapping) and info.get("namespace", namespace) != namespace:
        return None
    return namespace


# Rows per statement: bound parameters stay far below SQLite's and PostgreSQL's limits.
_BATCH = 500


def _move(
    session: Session, records: list[tuple[int, str | None]], home: int, target: int
) -> int:
    row = CheckpointRow
    keys = [key for _, key in records if key is not None]
    taken = set(
        session.scalars(
            select(row.idempotency_key).where(
                row.tenant_id == target, row.idempotency_key.in_(keys)
            )
        )
    )
    seqs = [seq for seq, key in records if key is None or key not in taken]
    if not seqs:
        return 0
    result = session.execute(
        update(row)
        .where(row.seq.in_(seqs), row.tenant_id == home)
        .values(tenant_id=target)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def adopt_namespace_records(db: Database, home_tenant_id: int) -> Adoption:
    """Blocking, idempotent: move the records of `home_tenant_id` (an operator token's tenant,
    where operators before namespace tenants kept every namespace's records) to the tenant of
    the namespace each names. Records that name none, or disagree with themselves about it,
    stay; so does one whose Checkpoint already has a record in its namespace's tenant (the
    same idempotency key: the operator registered it again there)."""
    row = CheckpointRow
    with db.reader() as session:
        rows = session.execute(
            select(row.seq, row.name, row.info, row.idempotency_key).where(
                row.tenant_id == home_tenant_id
            )
        ).all()
    if not rows:
        return Adoption(0, 0)
    by_namespace: dict[str, list[tuple[int, str | None]]] = defaultdict(list)
    for seq, name, info, key in rows:
        namespace = _namespace_of(name, info)
        if namespace is not None:
            by_namespace[namespace].append((seq, key))
    targets = {namespace: namespace_tenant(db, namespace) for namespace in by_namespace}
    moved = 0
    with db.transaction() as session:
        for namespace, records in by_namespace.items():
            target = targets[namespace]
            for start in range(0, len(records), _BATCH):
                moved += _move(session, records[start : start + _BATCH], home_tenant_id, target)
    adoption = Adoption(moved, len(rows) - moved)
    if moved:
        log.info(
            "moved %d record(s) of tenant %d to %d namespace tenant(s); %d stay",
            moved, home_tenant_id, len(targets), adoption.kept,
        )
    return adoption
