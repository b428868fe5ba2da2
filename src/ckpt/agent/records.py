"""Job records on disk: one JSON file per job, replaced atomically on every change.

A record holds the request and the job's latest state, so a finished result can be answered
after an agent restart and an interrupted job can be recognised (and failed) at start-up.
"""

from __future__ import annotations

import logging
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Generic, TypeVar

from pydantic import BaseModel, Field, ValidationError

log = logging.getLogger(__name__)

ReqT = TypeVar("ReqT", bound=BaseModel)
JobT = TypeVar("JobT", bound=BaseModel)


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobRecord(BaseModel, Generic[ReqT, JobT]):
    request: ReqT
    job: JobT
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class RecordStore(Generic[ReqT, JobT]):
    """The records of one kind of job, in one directory, keyed by the job's id.

    Keys are the request's id fields, whose schema pattern (``[A-Za-z0-9][A-Za-z0-9_.-]*``)
    already makes them safe file names.
    """

    def __init__(self, directory: Path, model: type[JobRecord[ReqT, JobT]]) -> None:
        self.directory = directory
        self._model = model
        directory.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"not a valid job key: {key!r}")
        return self.directory / f"{key}.json"

    def save(self, key: str, record: JobRecord[ReqT, JobT]) -> None:
        """Write the record to a temporary file and rename it over the old one.

        fsync before the rename, and of the directory after it, so that a crash (or power
        loss) leaves either the old record or the new one, never a torn file.
        """
        record.updated_at = utcnow()
        data = record.model_dump_json(indent=2).encode()
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def load_all(self) -> dict[str, JobRecord[ReqT, JobT]]:
        """Every readable record; leftovers of interrupted writes are removed."""
        records: dict[str, JobRecord[ReqT, JobT]] = {}
        for path in sorted(self.directory.iterdir()):
            if path.name.startswith(".tmp-"):
                # A write the agent did not finish: the previous record (if any) is intact.
                path.unlink(missing_ok=True)
                continue
            if path.suffix != ".json":
                continue
            try:
                records[path.stem] = self._model.model_validate_json(path.read_bytes())
            except (OSError, ValidationError) as exc:
                # Keep it for a human to look at, but out of the way of the next start.
                log.error("unreadable job record %s moved aside: %s", path.name, exc)
                path.rename(path.with_suffix(".corrupt"))
        return records
