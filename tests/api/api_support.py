"""Handles on the servers that the API tests run against (the fixtures live in conftest)."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self
from uuid import uuid4

import httpx
import pytest
import uvicorn

from ckpt.api import migrate
from ckpt.api.app import create_app
from ckpt.api.db import Database
from ckpt.api.settings import ApiSettings
from ckpt.api.tokens import create_token
from harness.postgres import ApiServer, PostgresServer

ENV_PREFIX = "CKPT_API_"


class InProcessApiServer:
    """The API app served by uvicorn on loopback from a thread of the test process.

    The same app and HTTP stack as `ckpt api serve` (ApiServer), without starting an
    interpreter per server: on a loaded machine that start-up cost seconds per server. Tests
    that need a server process of its own (restart, SIGKILL, its memory, its log file) use
    ApiServer and are e2e. `env` takes the same CKPT_API_* variables as ApiServer's.
    """

    def __init__(self, database_url: str, env: dict[str, str] | None = None) -> None:
        self.database_url = database_url
        overrides = {
            key.removeprefix(ENV_PREFIX).lower(): value for key, value in (env or {}).items()
        }
        # No apiserver here to review scrapers' tokens (tests/api/test_api_tls.py has the
        # guarded /metrics).
        settings = ApiSettings.model_validate(
            {"metrics_auth": "none", **overrides, "database_url": database_url}
        )
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._server = uvicorn.Server(
            uvicorn.Config(create_app(settings), access_log=False, log_level="warning")
        )
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return self.base_url

    def __enter__(self) -> Self:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the in-process API server stopped while starting")
            if time.monotonic() > deadline:
                raise RuntimeError("the in-process API server did not start within 30 s")
            time.sleep(0.01)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()


@dataclass
class Backend:
    name: str
    url: str
    db: Database

    def token(self, tenant: str | None = None) -> str:
        return create_token(self.db, tenant or f"tenant-{uuid4()}")


@dataclass
class Running:
    backend: Backend
    server: ApiServer | InProcessApiServer

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def client(self, token: str | None = None) -> httpx.Client:
        """An HTTP client authenticated as a new tenant (or with `token`)."""
        token = token or self.backend.token()
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )


def make_backend(
    name: str, tmp: Path, request: pytest.FixtureRequest, revision: str = "head"
) -> Backend:
    """A fresh database migrated to `revision`: a SQLite file, or a new database on the test
    PostgreSQL."""
    if name == "sqlite":
        url = f"sqlite:///{tmp / 'api.db'}"
    else:
        pg: PostgresServer = request.getfixturevalue("postgres")
        database = f"ckpt_{uuid4().hex[:12]}"
        admin = Database(pg.url)
        with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{database}"')
        admin.dispose()
        url = pg.url.rsplit("/", 1)[0] + f"/{database}"
    db = Database(url)
    migrate.upgrade(db.engine, revision)
    return Backend(name, url, db)
