"""Fixtures of the checkpoints API tests: real servers on loopback, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from ckpt.api import migrate
from ckpt.api.db import Database
from ckpt.api.testing import ApiServer, PostgresServer
from ckpt.api.tokens import create_token

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    # Never skipped: a missing PostgreSQL is an environment error that must fail loudly.
    with PostgresServer() as server:
        yield server


@dataclass
class Backend:
    name: str
    url: str
    db: Database

    def token(self, tenant: str | None = None) -> str:
        return create_token(self.db, tenant or f"tenant-{uuid4()}")


def _backend(name: str, tmp: Path, request: pytest.FixtureRequest) -> Backend:
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
    migrate.upgrade(db.engine)
    return Backend(name, url, db)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A fresh, migrated database of each kind (no server)."""
    b = _backend(request.param, tmp_path, request)
    yield b
    b.db.dispose()


@dataclass
class Running:
    backend: Backend
    server: ApiServer

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def client(self, token: str | None = None) -> httpx.Client:
        """An HTTP client authenticated as a new tenant (or with `token`)."""
        token = token or self.backend.token()
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )


@pytest.fixture(scope="session", params=BACKENDS)
def api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    """One API server per backend for the whole session; tests isolate by tenant."""
    tmp = tmp_path_factory.mktemp(f"api-{request.param}")
    b = _backend(request.param, tmp, request)
    with ApiServer(b.url, tmp / "server.log") as server:
        yield Running(b, server)
    b.db.dispose()


@pytest.fixture
def http(api: Running) -> Iterator[httpx.Client]:
    with api.client() as client:
        yield client
