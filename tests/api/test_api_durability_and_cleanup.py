"""Restart durability, migrations, and the periodic cleanup of deprecated checkpoints."""

from __future__ import annotations

import signal
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from api_support import Backend, InProcessApiServer

from ckpt.api import migrate
from ckpt.api.cleanup import purge_deprecated
from ckpt.api.db import Database
from ckpt.api.service import CheckpointService
from ckpt.api.tables import Base, Tenant, utcnow
from ckpt.api.tokens import create_token
from ckpt.contract.checkpoints_api import CheckpointInfo
from harness.postgres import ApiServer


# A server process of its own, stopped by a signal: e2e.
@pytest.mark.e2e
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL])
def test_nothing_is_lost_on_restart(
    backend: Backend, tmp_path: Path, stop_signal: signal.Signals
) -> None:
    token = backend.token()
    headers = {"Authorization": f"Bearer {token}"}
    log = tmp_path / "server.log"
    with ApiServer(backend.url, log) as server:
        with httpx.Client(base_url=server.base_url, headers=headers) as http:
            ready = http.post("/v2/checkpoints", params={"name": "n"}).text
            http.put(
                f"/v2/checkpoints/info/{ready}", json={"gpu": "g", "platform": "p", "info": [1]}
            )
            http.post(
                f"/v2/checkpoints/uploaded/{ready}", json={"restore_path": "/r", "checksum": "c"}
            )
            keyed = http.post("/v2/checkpoints", headers={"Idempotency-Key": "k"}).text
            before = http.get("/v2/checkpoints").json()
        # SIGKILL: an acknowledged write must already be on disk, not in a buffer.
        server.stop(stop_signal)
    with (
        ApiServer(backend.url, log) as server,
        httpx.Client(base_url=server.base_url, headers=headers) as http,
    ):
        assert http.get("/v2/checkpoints").json() == before
        assert http.post("/v2/checkpoints", headers={"Idempotency-Key": "k"}).text == keyed
    assert [c["status"] for c in before] == ["ready", "initializing"]


def test_migrations_match_the_orm_mapping(backend: Backend) -> None:
    with backend.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def _tenant(backend: Backend) -> int:
    with backend.db.transaction() as session:
        tenant = Tenant(name=f"cleanup-{time.monotonic_ns()}")
        session.add(tenant)
        session.flush()
        return tenant.id


def test_purge_removes_only_deprecated_checkpoints_past_the_grace_period(backend: Backend) -> None:
    service = CheckpointService(backend.db)
    tenant = _tenant(backend)
    old, fresh, live = (service.create(tenant, None, None) for _ in range(3))
    service.put_info(tenant, live, CheckpointInfo(gpu="none", platform="linux/amd64"))
    service.deprecate(tenant, old)
    service.deprecate(tenant, fresh)

    # Nothing has been deprecated for an hour yet.
    assert purge_deprecated(backend.db, grace_seconds=3600) == 0
    # Seen from 90 minutes on, both passed the hour; the live one never goes.
    later = utcnow() + timedelta(minutes=90)
    assert purge_deprecated(backend.db, grace_seconds=3600, now=later) == 2
    remaining, _ = service.list(tenant, None, None, None)
    assert [c.id for c in remaining] == [live]


def test_the_server_cleans_up_periodically(backend: Backend, tmp_path: Path) -> None:
    token = backend.token()
    env = {
        "CKPT_API_DEPRECATED_GRACE_SECONDS": "0.5",
        "CKPT_API_CLEANUP_INTERVAL_SECONDS": "0.2",
    }
    with (
        InProcessApiServer(backend.url, env=env) as server,
        httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}
        ) as http,
    ):
        gone, kept = http.post("/v2/checkpoints").text, http.post("/v2/checkpoints").text
        http.patch(f"/v2/checkpoints/deprecate/{gone}")
        assert http.get("/v2/checkpoints", params={"ids": gone}).json()[0]["status"] == "deprecated"
        deadline = time.monotonic() + 10
        while http.get("/v2/checkpoints", params={"ids": gone}).json():
            assert time.monotonic() < deadline, "deprecated checkpoint was never cleaned up"
            time.sleep(0.1)
        assert [c["id"] for c in http.get("/v2/checkpoints").json()] == [kept]
        # A cleaned-up id is simply unknown now.
        assert http.patch(f"/v2/checkpoints/deprecate/{gone}").status_code == 404


def _in_flight(http: httpx.Client) -> float:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("ckpt_api_requests_in_flight "):
            return float(line.split()[1])
    raise AssertionError("no ckpt_api_requests_in_flight in /metrics")


def test_another_process_holding_the_write_lock_delays_writes_not_reads(tmp_path: Path) -> None:
    # The server runs SQLite work on its event loop and moves a write that would wait for
    # the lock to a thread: meanwhile reads must keep being answered.
    path = tmp_path / "api.db"
    db = Database(f"sqlite:///{path}")
    migrate.upgrade(db.engine)
    headers = {"Authorization": f"Bearer {create_token(db, 'locked')}"}
    db.dispose()
    with (
        InProcessApiServer(f"sqlite:///{path}") as server,
        httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as http,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        first = http.post("/v2/checkpoints").text
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            pending = pool.submit(http.post, "/v2/checkpoints")
            # The write is in the server and waiting once two requests are in flight: it and
            # the scrape that counts it.
            deadline = time.monotonic() + 20
            while _in_flight(http) < 2:
                assert time.monotonic() < deadline, "the write never reached the server"
                assert not pending.done(), pending.result()
                time.sleep(0.01)
            assert not pending.done()  # the write waits for the other process...
            started = time.monotonic()
            listed = http.get("/v2/checkpoints")
            assert time.monotonic() - started < 1.0  # ...and reads do not
            assert [c["id"] for c in listed.json()] == [first]
        finally:
            other.execute("COMMIT")
            other.close()
        created = pending.result(timeout=20)
        assert created.status_code == 200
        assert len(http.get("/v2/checkpoints").json()) == 2
