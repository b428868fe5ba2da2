"""Engine and session factory: SQLite (WAL) by default, PostgreSQL by URL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from .settings import ApiSettings

# Execution option that asks for a write transaction up front (see `_sqlite_begin`).
WRITE = {"ckpt_write": True}


def normalize_url(url: str) -> str:
    # A bare `postgresql://` URL would select psycopg2, which is not a dependency.
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str, settings: ApiSettings | None = None) -> Engine:
    settings = settings or ApiSettings()
    parsed = make_url(normalize_url(url))
    kwargs: dict[str, Any] = {
        "pool_size": settings.pool_size,
        "max_overflow": settings.max_overflow,
        "pool_pre_ping": parsed.get_backend_name() != "sqlite",
    }
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise ValueError("an in-memory SQLite database would vanish per connection; use a file")
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    engine = create_engine(parsed, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy emit BEGIN itself: pysqlite's implicit BEGIN comes only before DML, so
    # a read-check-write sequence would otherwise run its read outside the transaction.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable across application crashes in WAL mode; only an OS crash can
        # lose the last commits, and it saves an fsync per commit.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
    finally:
        cursor.close()


def _sqlite_begin(conn: Any) -> None:
    # A deferred transaction that reads and then writes can fail with SQLITE_BUSY without
    # waiting (lock upgrade deadlock); taking the write lock at BEGIN makes writers queue on
    # busy_timeout instead. Readers keep plain BEGIN so WAL lets them run concurrently.
    if conn.get_execution_options().get("ckpt_write"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


class Database:
    """The engine plus two session factories: read-only and write transactions."""

    def __init__(self, url: str, settings: ApiSettings | None = None) -> None:
        self.url = normalize_url(url)
        self.engine = make_engine(self.url, settings)
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = threading.Lock() if is_sqlite(self.engine) else None
        self._write = sessionmaker(self.engine.execution_options(**WRITE), expire_on_commit=False)

    def reader(self) -> Session:
        return self._read()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A write transaction, committed on success and rolled back on error."""
        # SQLite has one writer at a time, and its busy handler waits by sleeping in steps of
        # up to 100 ms; queueing this process's writers on a lock instead keeps the tail
        # latency of concurrent writes down to the time the writes themselves take.
        with self._write_lock or nullcontext(), self._write() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
