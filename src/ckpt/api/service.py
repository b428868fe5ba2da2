"""Checkpoint operations of one tenant, on the database. Blocking: call from a thread."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from uuid import UUID, uuid4

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import lifecycle
from .db import Database
from .errors import ApiException, not_found
from .models import Checkpoint, CheckpointInfo, CheckpointStatus, UploadedBody
from .tables import CheckpointRow, utcnow


def to_model(row: CheckpointRow) -> Checkpoint:
    return Checkpoint(
        id=UUID(row.id),
        status=CheckpointStatus(row.status),
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
        row = CheckpointRow(
            id=str(new_id),
            tenant_id=tenant_id,
            status=CheckpointStatus.initializing.value,
            gpu="",
            platform="",
            name=name,
            idempotency_key=idempotency_key,
            created_at=now,
            updated_at=now,
        )
        try:
            with self._db.transaction() as session:
                session.add(row)
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
        with self._db.transaction() as session:
            row = self._locked(session, tenant_id, checkpoint_id)
            row.status = _transition(lambda: lifecycle.after_info(_status(row))).value
            row.gpu = body.gpu
            row.platform = body.platform
            row.info = body.info
            row.updated_at = utcnow()

    def uploaded(self, tenant_id: int, checkpoint_id: UUID, body: UploadedBody) -> None:
        with self._db.transaction() as session:
            row = self._locked(session, tenant_id, checkpoint_id)
            repeat = row.restore_path == body.restore_path and row.checksum == body.checksum
            current = _status(row)
            new = _transition(lambda: lifecycle.after_uploaded(current, body.restore_path, repeat))
            if current is new and repeat:
                return
            row.status = new.value
            row.restore_path = body.restore_path
            row.checksum = body.checksum
            row.updated_at = utcnow()

    def deprecate(self, tenant_id: int, checkpoint_id: UUID) -> None:
        with self._db.transaction() as session:
            row = self._locked(session, tenant_id, checkpoint_id)
            if _status(row) is CheckpointStatus.deprecated:
                # Idempotent, and the grace period keeps counting from the first call.
                return
            now = utcnow()
            row.status = lifecycle.after_deprecate(_status(row)).value
            row.deprecated_at = now
            row.updated_at = now

    def list(
        self,
        tenant_id: int,
        ids: Sequence[UUID] | None,
        limit: int | None,
        after: int | None,
    ) -> tuple[list[Checkpoint], int | None]:
        """Checkpoints in creation order and, when `limit` cut the page, the next cursor."""
        query = select(CheckpointRow).where(CheckpointRow.tenant_id == tenant_id)
        if ids is not None:
            query = query.where(CheckpointRow.id.in_([str(i) for i in ids]))
        if after is not None:
            query = query.where(CheckpointRow.seq > after)
        query = query.order_by(CheckpointRow.seq)
        if limit is not None:
            query = query.limit(limit + 1)
        with self._db.reader() as session:
            rows = list(session.scalars(query))
        next_cursor = None
        if limit is not None and len(rows) > limit:
            rows = rows[:limit]
            next_cursor = rows[-1].seq
        return [to_model(r) for r in rows], next_cursor

    def _id_for_key(self, tenant_id: int, key: str) -> UUID | None:
        with self._db.reader() as session:
            found = session.scalar(
                select(CheckpointRow.id).where(
                    CheckpointRow.tenant_id == tenant_id, CheckpointRow.idempotency_key == key
                )
            )
        return UUID(found) if found is not None else None

    @staticmethod
    def _locked(session: Session, tenant_id: int, checkpoint_id: UUID) -> CheckpointRow:
        # Another tenant's checkpoint is indistinguishable from a missing one.
        row = session.scalar(
            select(CheckpointRow)
            .where(CheckpointRow.id == str(checkpoint_id), CheckpointRow.tenant_id == tenant_id)
            .with_for_update()
        )
        if row is None:
            raise not_found(checkpoint_id)
        return row


def _status(row: CheckpointRow) -> CheckpointStatus:
    return CheckpointStatus(row.status)


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
