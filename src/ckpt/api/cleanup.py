"""Removal of deprecated checkpoints once their grace period has passed."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import anyio
import anyio.to_thread
from sqlalchemy import delete

from ckpt.api.db import Database
from ckpt.api.tables import CheckpointRow, utcnow
from ckpt.contract.checkpoints_api import CheckpointStatus

log = logging.getLogger(__name__)


def purge_deprecated(db: Database, grace_seconds: float, now: datetime | None = None) -> int:
    """Delete checkpoints deprecated at least `grace_seconds` ago; return how many."""
    cutoff = (now or utcnow()) - timedelta(seconds=grace_seconds)
    with db.transaction() as session:
        result = session.execute(
            delete(CheckpointRow).where(
                CheckpointRow.status == CheckpointStatus.deprecated.value,
                CheckpointRow.deprecated_at <= cutoff,
            )
        )
    return int(getattr(result, "rowcount", 0) or 0)


async def run_periodically(db: Database, grace_seconds: float, interval_seconds: float) -> None:
    """Purge forever; a failed round is logged and retried at the next interval."""
    while True:
        try:
            removed = await anyio.to_thread.run_sync(purge_deprecated, db, grace_seconds)
            if removed:
                log.info("cleanup removed %d deprecated checkpoint(s)", removed)
        except Exception:
            log.exception("cleanup of deprecated checkpoints failed")
        await anyio.sleep(interval_seconds)


async def run_wal_checkpoints(db: Database, interval_seconds: float) -> None:
    """Checkpoint SQLite's WAL forever, off the request path (see `Database.run`)."""
    while True:
        try:
            await anyio.to_thread.run_sync(db.wal_checkpoint)
        except Exception:
            log.exception("WAL checkpoint failed")
        await anyio.sleep(interval_seconds)
