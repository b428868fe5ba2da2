"""Fixtures of the checkpoints API tests: real servers on loopback, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_support import Backend, InProcessApiServer, Running, make_backend

from harness.postgres import PostgresServer

# SQLite runs anywhere; the PostgreSQL server (initdb, as a dedicated user) is e2e.
BACKENDS = ("sqlite", pytest.param("postgresql", marks=pytest.mark.e2e))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    # Never skipped: a missing PostgreSQL is an environment error that must fail loudly.
    with PostgresServer() as server:
        yield server


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A fresh, migrated database of each kind (no server)."""
    b = make_backend(request.param, tmp_path, request)
    yield b
    b.db.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
def api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    """One API server per backend for the whole session; tests isolate by tenant.

    In process (real HTTP on loopback): these tests are about the API's behaviour; the ones
    about the server process itself start their own ApiServer and are e2e.
    """
    tmp = tmp_path_factory.mktemp(f"api-{request.param}")
    b = make_backend(request.param, tmp, request)
    with InProcessApiServer(b.url) as server:
        yield Running(b, server)
    b.db.dispose()


@pytest.fixture
def http(api: Running) -> Iterator[httpx.Client]:
    with api.client() as client:
        yield client
