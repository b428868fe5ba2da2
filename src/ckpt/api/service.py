"""Checkpoint operations of one tenant, on the database. Blocking: the server calls them
through `Database.run`, which may rerun an operation from the start when its write
transaction cannot begin at once; so each operation has at most one write transaction and
does nothing but read before it.

SQLAlchemy Core, not ORM units of work: every request is one or two statements, and the ORM's
identity map, attribute instrumentation and flush planning cost more CPU than the statements.
The statements are built once with bind parameters, so each call only binds values and hits
the compiled-statement cache.

A transition is one conditional UPDATE whose WHERE clause holds the statuses it is allowed
from; the database applies the check and the write atomically, so no row lock and no prior
read are needed. Only when it matches nothing (missing, another tenant's, or a status that
needs a closer look) does the slow path read the row under a lock and decide as before.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    Table,
    bindparam,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from ckpt.api import lifecycle
from ckpt.api.db import Database
from ckpt.api.errors import ApiException, not_found
from ckpt.api.tables import CheckpointRow, utcnow
from ckpt.contract.checkpoints_api import Checkpoint, CheckpointInfo, CheckpointStatus, UploadedBody

S = CheckpointStatus
_T = CheckpointRow.__table__
# Declarative classes declare __table__ as any FromClause; a mapped class's is a Table.
assert isinstance(_T, Table)
_c = _T.c
_this = (_c.id == bindparam("b_id")) & (_c.tenant_id == bindparam("b_tenant"))

_INSERT = insert(_T)
_ID_FOR_KEY = select(_c.id).where(
    _c.tenant_id == bindparam("b_tenant"), _c.idempotency_key == bindparam("b_key")
)
_LOCKED = select(_c.status, _c.restore_path, _c.checksum).where(_this).with_for_update()


def _status_in(*statuses: CheckpointStatus) -> ColumnElement[bool]:
    # OR of equalities rather than IN: SQLAlchemy renders an IN list anew on every execution.
    return or_(*(_c.status == s.value for s in statuses))


# Fast paths. Each lists only the statuses from which the transition always writes, so a
# matched row is exactly the case where the locked read-check-write would have written the
# same values; every other case (including idempotent repeats) goes to the slow path.
_INFO = (
    update(_T)
    .where(_this, _status_in(S.initializing, S.updated_info))
    .values(status=S.updated_info.value)
)
_UPLOADED = update(_T).where(_this, _status_in(S.initializing, S.updated_info))
_DEPRECATE = (
    update(_T).where(_this, _c.status != S.deprecated.value).values(status=S.deprecated.value)
)
# The slow path's write, once the locked read has decided.
_SET_BY_ID = update(_T).where(_this)

_LIST_COLUMNS = (
    _c.seq,
    _c.id,
    _c.status,
    _c.gpu,
    _c.platform,
    _c.checksum,
    _c.info,
    _c.name,
)


@functools.cache
def _list_query(by_ids: bool, after: bool, limit: bool) -> Select[Any]:
    # One statement object per shape, reused: building it anew costs more than running it.
    query = select(*_LIST_COLUMNS).where(_c.tenant_id == bindparam("b_tenant"))
    if by_ids:
        query = query.where(_c.id.in_(bindparam("b_ids", expanding=True)))
    if after:
        query = query.where(_c.seq > bindparam("b_after"))
    query = query.order_by(_c.seq)
    if limit:
        query = query.limit(bindparam("b_limit"))
    return query


def _checkpoint(row: Any) -> Checkpoint:
    # model_construct skips validation: every value was validated on its way into the
    # database, and the columns have exactly the model's types once id and status are wrapped.
    return Checkpoint.model_construct(
        id=UUID(row.id),
        status=S(row.status),
        gpu=row.gpu,
        platform=row.platform,
        checksum=row.checksum,
        info=row.info,
        name=row.name,
    )


class CheckpointService:
    def __init__(self, db: Database) -> None:
        self._db = db

    def create(self, tenant_id: int, idempotency_key: str | None, name: str | None) -> UUID:
        if idempotency_key is not None:
            existing = self._id_for_key(tenant_id, idempotency_key)
            if existing is not None:
                return existing
        new_id = uuid4()
        now = utcnow()
        row = {
            "id": str(new_id),
            "tenant_id": tenant_id,
            "status": S.initializing.value,
            "gpu": "",
            "platform": "",
            "name": name,
            "idempotency_key": idempotency_key,
            "created_at": now,
            "updated_at": now,
        }
        try:
            with self._db.write() as conn:
                conn.execute(_INSERT, row)
        except IntegrityError:
            # A concurrent request with the same key won the unique constraint; its id is
            # the answer. Anything else is a genuine error.
            if idempotency_key is None:
                raise
            existing = self._id_for_key(tenant_id, idempotency_key)
            if existing is None:
                raise
            return existing
        return new_id

    def put_info(self, tenant_id: int, checkpoint_id: UUID, body: CheckpointInfo) -> None:
        where = {"b_id": str(checkpoint_id), "b_tenant": tenant_id}
        values = {
            "gpu": body.gpu,
            "platform": body.platform,
            "info": body.info,
            "updated_at": utcnow(),
        }
        with self._db.write() as conn:
            if conn.execute(_INFO, {**where, **values}).rowcount == 1:
                return
            current = self._locked_status(conn, where, checkpoint_id)[0]
            new = _transition(lambda: lifecycle.after_info(current))
            conn.execute(_SET_BY_ID, {**where, **values, "status": new.value})

    def uploaded(self, tenant_id: int, checkpoint_id: UUID, body: UploadedBody) -> None:
        where = {"b_id": str(checkpoint_id), "b_tenant": tenant_id}
        values = {
            "status": (S.ready if body.restore_path is not None else S.possibly_uploaded).value,
            "restore_path": body.restore_path,
            "checksum": body.checksum,
            "updated_at": utcnow(),
        }
        with self._db.write() as conn:
            if conn.execute(_UPLOADED, {**where, **values}).rowcount == 1:
                return
            current, restore_path, checksum = self._locked_status(conn, where, checkpoint_id)
            repeat = restore_path == body.restore_path and checksum == body.checksum
            new = _transition(lambda: lifecycle.after_uploaded(current, body.restore_path, repeat))
            if current is new and repeat:
                return
            conn.execute(_SET_BY_ID, {**where, **values, "status": new.value})

    def deprecate(self, tenant_id: int, checkpoint_id: UUID) -> None:
        where = {"b_id": str(checkpoint_id), "b_tenant": tenant_id}
        now = utcnow()
        values = {"deprecated_at": now, "updated_at": now}
        with self._db.write() as conn:
            if conn.execute(_DEPRECATE, {**where, **values}).rowcount == 1:
                return
            # Not matched: missing, or already deprecated. Idempotent, and the grace period
            # keeps counting from the first call.
            self._locked_status(conn, where, checkpoint_id)

    def list(
        self,
        tenant_id: int,
        ids: Sequence[UUID] | None,
        limit: int | None,
        after: int | None,
    ) -> tuple[list[Checkpoint], int | None]:
        """Checkpoints in creation order and, when `limit` cut the page, the next cursor."""
        params: dict[str, Any] = {"b_tenant": tenant_id}
        if ids is not None:
            params["b_ids"] = [str(i) for i in ids]
        if after is not None:
            params["b_after"] = after
        if limit is not None:
            params["b_limit"] = limit + 1
        query = _list_query(ids is not None, after is not None, limit is not None)
        with self._db.read() as conn:
            rows = conn.execute(query, params).all()
        next_cursor = None
        if limit is not None and len(rows) > limit:
            rows = rows[:limit]
            next_cursor = rows[-1].seq
        return [_checkpoint(r) for r in rows], next_cursor

    def _id_for_key(self, tenant_id: int, key: str) -> UUID | None:
        with self._db.read() as conn:
            found = conn.execute(_ID_FOR_KEY, {"b_tenant": tenant_id, "b_key": key}).scalar()
        return UUID(found) if found is not None else None

    @staticmethod
    def _locked_status(
        conn: Connection, where: dict[str, Any], checkpoint_id: UUID
    ) -> tuple[CheckpointStatus, str | None, str | None]:
        # Another tenant's checkpoint is indistinguishable from a missing one.
        row = conn.execute(_LOCKED, where).first()
        if row is None:
            raise not_found(checkpoint_id)
        return S(row.status), row.restore_path, row.checksum


def _transition(step: Callable[[], CheckpointStatus]) -> CheckpointStatus:
    try:
        return step()
    except lifecycle.IllegalTransition as exc:
        raise ApiException(
            409,
            str(exc),
            "illegal_transition",
            details={"status": exc.current.value, "action": exc.action},
        ) from exc
