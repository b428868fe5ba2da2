"""Handles on the servers that the API tests run against (the fixtures live in conftest)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from ckpt.api import migrate
from ckpt.api.db import Database
from ckpt.api.tokens import create_token
from harness.postgres import ApiServer, PostgresServer


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


def make_backend(name: str, tmp: Path, request: pytest.FixtureRequest) -> Backend:
    """A fresh, migrated database: a SQLite file, or a new database on the test PostgreSQL."""
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
