"""Handles on the servers that the API tests run against (the fixtures live in conftest)."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import uuid4

import httpx

from ckpt.api.db import Database
from ckpt.api.testing import ApiServer
from ckpt.api.tokens import create_token


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
