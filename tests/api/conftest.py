"""Fixtures of the checkpoints API tests: real servers on loopback, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from api_support import Backend, Running

from ckpt.api import migrate
from ckpt.api.db import Database
from ckpt.api.testing import ApiServer, PostgresServer

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    # Never skipped: a missing PostgreSQL is an environment error that must fail loudly.
    with PostgresServer() as server:
        yield server


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
