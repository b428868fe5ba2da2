"""Tenant isolation and token handling: hashed at rest, never logged."""

from __future__ import annotations

import hashlib
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from api_support import Backend, Running
from sqlalchemy import text
from typer.testing import CliRunner

from ckpt.cli import app as cli_app
from harness.postgres import ApiServer


def test_another_tenants_checkpoint_is_indistinguishable_from_a_missing_one(api: Running) -> None:
    with api.client() as alice, api.client() as mallory:
        theirs = alice.post("/v2/checkpoints").text
        info = alice.put(f"/v2/checkpoints/info/{theirs}", json={"gpu": "g", "platform": "p"})
        assert info.status_code == 200
        missing = str(uuid4())
        for method, path, body in [
            ("PUT", "/v2/checkpoints/info/{}", {"gpu": "x", "platform": "y"}),
            ("POST", "/v2/checkpoints/uploaded/{}", {"restore_path": "/evil"}),
            ("PATCH", "/v2/checkpoints/deprecate/{}", None),
        ]:
            foreign = mallory.request(method, path.format(theirs), json=body)
            absent = mallory.request(method, path.format(missing), json=body)
            assert foreign.status_code == absent.status_code == 404
            assert foreign.text.replace(theirs, "ID") == absent.text.replace(missing, "ID")
        assert mallory.get("/v2/checkpoints").json() == []
        assert mallory.get("/v2/checkpoints", params={"ids": theirs}).json() == []
        (mine,) = alice.get("/v2/checkpoints").json()
        assert (mine["id"], mine["status"], mine["gpu"]) == (theirs, "updated_info", "g")


def test_tokens_of_one_tenant_share_its_checkpoints(api: Running) -> None:
    tenant = f"shared-{id(api)}-{api.backend.name}"
    first, second = api.backend.token(tenant), api.backend.token(tenant)
    assert first != second
    with api.client(first) as a, api.client(second) as b:
        checkpoint_id = a.post("/v2/checkpoints").text
        assert [x["id"] for x in b.get("/v2/checkpoints").json()] == [checkpoint_id]


def _all_text(backend: Backend) -> str:
    with backend.db.engine.connect() as conn:
        tables = ["tenants", "tokens", "checkpoints"]
        return "\n".join(
            repr(row)
            for t in tables
            for row in conn.execute(text(f"SELECT * FROM {t}"))  # noqa: S608
        )


def test_only_the_token_hash_is_stored(backend: Backend, tmp_path: Path) -> None:
    token = backend.token("hash-check")
    digest = hashlib.sha256(token.encode()).hexdigest()
    rows = _all_text(backend)
    assert digest in rows
    assert token not in rows
    secret_part = token.removeprefix("ckpt_")
    assert secret_part not in rows
    if backend.name == "sqlite":
        database = Path(backend.url.removeprefix("sqlite:///"))
        for path in database.parent.glob(database.name + "*"):  # the file, -wal and -shm
            assert secret_part.encode() not in path.read_bytes(), path


def test_token_create_command_prints_only_the_token(backend: Backend) -> None:
    # In process: the same typer app that `ckpt` runs, without an interpreter start.
    result = CliRunner().invoke(
        cli_app,
        ["api", "token", "create", "--tenant", "cli-tenant", "--database", backend.url],
    )
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert result.stdout == token + "\n"
    assert token.startswith("ckpt_") and len(token) > 40
    assert hashlib.sha256(token.encode()).hexdigest() in _all_text(backend)
    assert token not in _all_text(backend)


# The log file of a server process of its own: e2e.
@pytest.mark.e2e
def test_tokens_never_reach_the_server_log(backend: Backend, tmp_path: Path) -> None:
    token = backend.token()
    log = tmp_path / "server.log"
    with ApiServer(backend.url, log, env={"CKPT_API_CLEANUP_INTERVAL_SECONDS": "0.1"}) as server:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.base_url, headers=headers) as http:
            checkpoint_id = http.post("/v2/checkpoints").text
            http.put(f"/v2/checkpoints/info/{checkpoint_id}", content=b"{bad")
            http.patch(f"/v2/checkpoints/deprecate/{checkpoint_id}")
        httpx.get(f"{server.base_url}/v2/checkpoints", headers={"Authorization": "Bearer nope"})
    text_of_log = log.read_text()
    assert "Application startup complete" in text_of_log
    assert token not in text_of_log
    assert token.removeprefix("ckpt_") not in text_of_log
