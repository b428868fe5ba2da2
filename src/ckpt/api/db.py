"""Engine and session factory: SQLite (WAL) by default, PostgreSQL by URL."""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

import anyio.to_thread
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from ckpt.api.settings import ApiSettings

P = ParamSpec("P")
R = TypeVar("R")

# Execution option that asks for a write transaction up front (see `_sqlite_begin`).
WRITE = {"ckpt_write": True}

# Set while `Database.run` runs work on the event loop itself: taking a lock must then fail
# at once (`WouldBlock`) rather than wait, since waiting would stall every request.
_NO_WAIT: ContextVar[bool] = ContextVar("ckpt_db_no_wait", default=False)
BUSY_TIMEOUT_MS = 30_000


class WouldBlock(Exception):
    """A transaction could not start without waiting for a lock; nothing was done."""


def normalize_url(url: str) -> str:
    # A bare `postgresql://` URL would select psycopg2, which is not a dependency.
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(
    url: str, settings: ApiSettings | None = None, *, wal_autocheckpoint: bool = True
) -> Engine:
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
        create_private_file(parsed.database)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    engine = create_engine(parsed, **kwargs)
    if engine.dialect.name == "sqlite":
        pragmas = _SQLITE_PRAGMAS if wal_autocheckpoint else (*_SQLITE_PRAGMAS, _NO_AUTOCHECKPOINT)

        def on_connect(dbapi_conn: Any, _record: Any) -> None:
            _sqlite_connect(dbapi_conn, pragmas)

        event.listen(engine, "connect", on_connect)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def create_private_file(path: str) -> None:
    """Create the SQLite file readable by its owner only (0600), unless it exists.

    SQLite would create it with 0644 under the usual umask, and it holds every tenant's
    checkpoints and token hashes. SQLite gives the -wal and -shm files it creates next to it the
    database file's permissions, so they are private too. An existing file is left as it is:
    its owner chose its mode.
    """
    if path.startswith("file:"):
        return  # a URI filename: SQLite parses it, not us
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    except FileNotFoundError:
        return  # no such folder: SQLite's own error on connect says so
    os.close(fd)


_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    # NORMAL is durable across application crashes in WAL mode; only an OS crash can lose
    # the last commits, and it saves an fsync per commit.
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
)
# The commit that crosses the WAL size threshold would otherwise copy the WAL into the
# database and fsync both, milliseconds during which the request path (the event loop, see
# `Database.run`) stands still; `Database.wal_checkpoint` does that work in the background.
_NO_AUTOCHECKPOINT = "PRAGMA wal_autocheckpoint=0"


def _sqlite_connect(dbapi_conn: Any, pragmas: tuple[str, ...]) -> None:
    # Let SQLAlchemy emit BEGIN itself: pysqlite's implicit BEGIN comes only before DML, so
    # a read-check-write sequence would otherwise run its read outside the transaction.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        for pragma in pragmas:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _sqlite_begin(conn: Any) -> None:
    # A deferred transaction that reads and then writes can fail with SQLITE_BUSY without
    # waiting (lock upgrade deadlock); taking the write lock at BEGIN makes writers queue on
    # busy_timeout instead. Readers keep plain BEGIN so WAL lets them run concurrently.
    # Straight on the DBAPI connection: through exec_driver_sql, SQLAlchemy's statement
    # machinery would cost as much CPU as the transaction's real statement.
    dbapi_conn = conn.connection.driver_connection
    if not conn.get_execution_options().get("ckpt_write"):
        dbapi_conn.execute("BEGIN")
    elif not _NO_WAIT.get():
        dbapi_conn.execute("BEGIN IMMEDIATE")
    else:
        # Only BEGIN IMMEDIATE can wait in WAL mode (for another process's writer); once it
        # holds the write lock, the statements and the commit never do.
        dbapi_conn.execute("PRAGMA busy_timeout=0")
        try:
            dbapi_conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:  # any extended BUSY code
                raise
            raise WouldBlock from exc
        finally:
            dbapi_conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


class Database:
    """The engine plus read-only and write transactions, as Core connections (the request
    path) or ORM sessions (tokens, tests)."""

    def __init__(
        self,
        url: str,
        settings: ApiSettings | None = None,
        *,
        background_wal_checkpoints: bool = False,
    ) -> None:
        """`background_wal_checkpoints`: on SQLite, commits never checkpoint the WAL; the
        owner must call `wal_checkpoint` periodically (the API server does)."""
        self.url = normalize_url(url)
        self.engine = make_engine(
            self.url, settings, wal_autocheckpoint=not background_wal_checkpoints
        )
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._inline = is_sqlite(self.engine)
        self._write_lock = threading.Lock() if self._inline else None
        self._write_engine = self.engine.execution_options(**WRITE)
        self._write = sessionmaker(self._write_engine, expire_on_commit=False)

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

    def read(self) -> Connection:
        """A Core connection for reads; its transaction is rolled back when it closes."""
        return self.engine.connect()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A Core write transaction, committed on success and rolled back on error."""
        # The same writer lock as `transaction`: see there.
        lock = self._write_lock
        if lock is None:
            with self._write_engine.begin() as conn:
                yield conn
            return
        if not lock.acquire(blocking=not _NO_WAIT.get()):
            raise WouldBlock
        try:
            with self._write_engine.begin() as conn:
                yield conn
        finally:
            lock.release()

    async def run(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run blocking database work (one request's) without blocking the event loop.

        On SQLite the work runs on the event loop itself: its statements take tens of
        microseconds, less than handing them to a worker thread and back, and a thread pool
        only adds GIL contention in front of a database that has a single writer anyway.
        Where a transaction would have to wait for a lock (another thread's or process's
        writer), it raises `WouldBlock` before doing anything and the work reruns in a
        thread, where waiting is harmless. `fn` must therefore be safe to rerun from the
        start when one of its transactions cannot begin: all transactions before its first
        write must be reads. PostgreSQL work, which waits on the network, always runs in a
        thread.
        """
        if self._inline:
            token = _NO_WAIT.set(True)
            try:
                return fn(*args, **kwargs)
            except WouldBlock:
                pass
            finally:
                _NO_WAIT.reset(token)
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

    def wal_checkpoint(self) -> None:
        """Blocking: copy SQLite's WAL into the database without waiting for, or holding
        up, readers and writers (a PASSIVE checkpoint). No-op on PostgreSQL."""
        if not is_sqlite(self.engine):
            return
        raw = self.engine.raw_connection()
        try:
            # On the DBAPI connection, outside any transaction: a checkpoint cannot run
            # inside one.
            conn = raw.driver_connection
            if not isinstance(conn, sqlite3.Connection):
                raise TypeError(f"not a sqlite3 connection: {type(conn).__name__}")
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").close()
        finally:
            raw.close()

    def dispose(self) -> None:
        self.engine.dispose()
