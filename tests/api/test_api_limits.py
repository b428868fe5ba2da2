"""Attack tests of the API's limits (issue 13, finding 9): each request is refused with the
right status and leaves nothing behind, and the service keeps answering everyone else."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from api_support import InProcessApiServer, Running
from typer.testing import CliRunner

from ckpt.api import migrate
from ckpt.api.db import Database
from ckpt.api.ratelimit import RateLimiter
from ckpt.api.tables import utcnow
from ckpt.api.tokens import create_token, list_tokens, revoke_token
from ckpt.cli import app as cli_app


def _nested(depth: int) -> object:
    value: object = []
    for _ in range(depth - 1):
        value = [value]
    return value


# ---- JSON depth ----


def test_deep_info_is_422_and_list_keeps_working(api: Running) -> None:
    with api.client() as http:
        checkpoint_id = http.post("/v2/checkpoints").text
        url = f"/v2/checkpoints/info/{checkpoint_id}"
        # 256+ levels used to be stored and then broke every list that included it (500).
        for depth in (300, 33):
            response = http.put(url, json={"gpu": "g", "platform": "p", "info": _nested(depth)})
            assert response.status_code == 422, response.text
            body = response.json()
            assert body["code"] == "validation_error" and "nested" in body["message"]
        listed = http.get("/v2/checkpoints")
        assert listed.status_code == 200
        assert [(c["status"], c["info"]) for c in listed.json()] == [("initializing", None)]
        # The default limit (32 levels in the whole body) leaves info 31.
        ok = http.put(url, json={"gpu": "g", "platform": "p", "info": _nested(31)})
        assert ok.status_code == 200, ok.text
        (stored,) = http.get("/v2/checkpoints").json()
        assert stored["info"] == _nested(31)


# ---- cursor ----


@pytest.mark.parametrize("cursor", [str(2**63), "9" * 20, "1" + "0" * 40])
def test_a_cursor_out_of_range_is_422_not_500(api: Running, cursor: str) -> None:
    with api.client() as http:
        response = http.get("/v2/checkpoints", params={"cursor": cursor, "limit": 5})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error" and "cursor" in response.text


def test_the_largest_cursor_is_an_empty_page(api: Running) -> None:
    with api.client() as http:
        http.post("/v2/checkpoints")
        response = http.get("/v2/checkpoints", params={"cursor": str(2**63 - 1)})
    assert (response.status_code, response.json()) == (200, [])


# ---- servers with small limits ----


Served = tuple[InProcessApiServer, Database]


def _server(tmp: Path, env: dict[str, str]) -> Served:
    url = f"sqlite:///{tmp / 'api.db'}"
    db = Database(url)
    migrate.upgrade(db.engine)
    return InProcessApiServer(url, env=env), db


@pytest.fixture(scope="module")
def paged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    server, db = _server(
        tmp_path_factory.mktemp("paged"),
        {"CKPT_API_LIST_DEFAULT_LIMIT": "2", "CKPT_API_LIST_MAX_LIMIT": "3"},
    )
    with server:
        yield server, db
    db.dispose()


def test_list_pages_are_capped(paged: Served) -> None:
    server, db = paged
    headers = {"Authorization": f"Bearer {create_token(db, 'paged')}"}
    with httpx.Client(base_url=server.base_url, headers=headers) as http:
        created = [http.post("/v2/checkpoints").text for _ in range(5)]
        default = http.get("/v2/checkpoints")
        assert [c["id"] for c in default.json()] == created[:2]
        capped = http.get("/v2/checkpoints", params={"limit": 1000})
        assert [c["id"] for c in capped.json()] == created[:3]
        # The cursor says there is more; following it reaches everything.
        seen, cursor = [c["id"] for c in capped.json()], capped.headers["x-next-cursor"]
        while cursor:
            page = http.get("/v2/checkpoints", params={"limit": 1000, "cursor": cursor})
            seen += [c["id"] for c in page.json()]
            cursor = page.headers.get("x-next-cursor")
        assert seen == created
        # The ids filter is paged the same way.
        by_ids = http.get("/v2/checkpoints", params={"ids": ",".join(created)})
        assert [c["id"] for c in by_ids.json()] == created[:2]
        assert "x-next-cursor" in by_ids.headers


def test_the_client_gets_every_page(paged: Served) -> None:
    from ckpt.contract.checkpoints_client import SyncCheckpointsClient

    server, db = paged
    with SyncCheckpointsClient(server.base_url, create_token(db, "paged-client")) as client:
        created = [client.create() for _ in range(5)]
        assert [c.id for c in client.list(created)] == created
        assert [c.id for c in client.list()] == created


# ---- rate limits ----


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    server, db = _server(
        tmp_path_factory.mktemp("limited"),
        {
            "CKPT_API_RATE_LIMIT_PER_SECOND": "0.5",
            "CKPT_API_RATE_LIMIT_BURST": "4",
            "CKPT_API_UNKNOWN_TOKEN_LOOKUPS_PER_SECOND": "0.5",
            "CKPT_API_UNKNOWN_TOKEN_LOOKUPS_BURST": "3",
        },
    )
    with server:
        yield server, db
    db.dispose()


def test_a_tenant_over_its_rate_gets_429_with_retry_after(
    limited: Served,
) -> None:
    server, db = limited
    greedy = {"Authorization": f"Bearer {create_token(db, 'greedy')}"}
    other = {"Authorization": f"Bearer {create_token(db, 'other')}"}
    with httpx.Client(base_url=server.base_url) as http:
        statuses = [http.get("/v2/checkpoints", headers=greedy).status_code for _ in range(4)]
        assert statuses == [200] * 4
        refused = http.post("/v2/checkpoints", headers=greedy)
        assert refused.status_code == 429
        assert refused.json()["code"] == "rate_limited"
        retry_after = int(refused.headers["retry-after"])
        assert 1 <= retry_after <= 2  # one token at 0.5/s
        # Refused means not done: nothing was created.
        # Another tenant is not held back by the greedy one.
        assert http.get("/v2/checkpoints", headers=other).status_code == 200
        # Waiting as told is enough.
        time.sleep(retry_after)
        assert http.get("/v2/checkpoints", headers=greedy).json() == []


def test_guessing_tokens_is_429_before_any_lookup(limited: Served) -> None:
    server, db = limited
    known = {"Authorization": f"Bearer {create_token(db, 'known')}"}
    with httpx.Client(base_url=server.base_url) as http:
        assert http.get("/v2/checkpoints", headers=known).status_code == 200  # now cached
        guesses = [
            http.get("/v2/checkpoints", headers={"Authorization": f"Bearer ckpt_guess{i}"})
            for i in range(5)
        ]
        assert [g.status_code for g in guesses] == [401, 401, 401, 429, 429]
        assert int(guesses[-1].headers["retry-after"]) >= 1
        assert guesses[-1].json()["code"] == "rate_limited"
        # A tenant whose token the server already knows is not locked out by the guesser.
        assert http.get("/v2/checkpoints", headers=known).status_code == 200


def test_rate_limiter_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(2.0, 3, clock=lambda: now[0], max_keys=2)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)
    now[0] += 0.5
    assert limiter.take("a") == 0.0
    assert limiter.retry_after("a") == pytest.approx(0.5)
    # Keys past max_keys first forget buckets that are full again (the same as new ones).
    limiter.take("b")
    now[0] += 10
    limiter.take("c")
    assert limiter.take("a") == 0.0
    assert RateLimiter(0, 1).take("x") == 0.0  # rate 0: no limit


# ---- token revocation and expiry ----


@pytest.fixture(scope="module")
def short_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    server, db = _server(tmp_path_factory.mktemp("tokens"), {"CKPT_API_TOKEN_CACHE_SECONDS": "1"})
    with server:
        yield server, db
    db.dispose()


def _wait_for_status(http: httpx.Client, headers: dict[str, str], status: int) -> None:
    deadline = time.monotonic() + 10
    while (got := http.get("/v2/checkpoints", headers=headers).status_code) != status:
        assert time.monotonic() < deadline, f"still {got}, expected {status}"
        time.sleep(0.1)


def _ckpt(*args: str) -> subprocess.CompletedProcess[str]:
    """`ckpt api token ARGS`, run in process (the same typer app that `ckpt` runs)."""
    argv = ["api", "token", *args]
    result = CliRunner().invoke(cli_app, argv)
    return subprocess.CompletedProcess(argv, result.exit_code, result.stdout, result.stderr)


def test_a_revoked_token_gets_401(short_cache: Served) -> None:
    server, db = short_cache
    url = server.database_url
    token = _ckpt("create", "--tenant", "revoked", "--database", url).stdout.strip()
    keep = create_token(db, "revoked")  # the same tenant's other token keeps working
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.base_url) as http:
        assert http.get("/v2/checkpoints", headers=headers).status_code == 200
        listed = _ckpt("list", "--tenant", "revoked", "--database", url)
        assert listed.returncode == 0, listed.stderr
        rows = [line.split("\t") for line in listed.stdout.splitlines()[1:]]
        assert [row[1:3] for row in rows] == [["revoked", "active"]] * 2
        assert token not in listed.stdout  # values are never shown (nor stored)
        revoked = _ckpt("revoke", rows[0][0], "--database", url)
        assert revoked.returncode == 0, revoked.stderr
        # Running servers notice within CKPT_API_TOKEN_CACHE_SECONDS (1 s here).
        _wait_for_status(http, headers, 401)
        assert http.get("/v2/checkpoints", headers=headers).json()["code"] == "unauthorized"
        assert http.get("/v2/checkpoints", headers={"Authorization": f"Bearer {keep}"}).is_success
    states = {r.id: r.state(utcnow()) for r in list_tokens(db, "revoked")}
    assert sorted(states.values()) == ["active", "revoked"]
    # Revoking by value (a leaked token) works the same; unknown ids are an error.
    assert revoke_token(db, token=keep)
    assert _ckpt("revoke", "999999", "--database", url).returncode == 1


def test_an_expired_token_gets_401(short_cache: Served) -> None:
    server, db = short_cache
    token = create_token(db, "expiring", expires_in=timedelta(seconds=3))
    (record,) = list_tokens(db, "expiring")
    assert record.expires_at is not None
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.base_url) as http:
        assert http.get("/v2/checkpoints", headers=headers).status_code == 200
        # Wait for the expiry itself, then the very next request must fail: the server never
        # caches a token past its expiry.
        while utcnow() < record.expires_at:
            time.sleep(0.05)
        assert http.get("/v2/checkpoints", headers=headers).status_code == 401
    assert record.state(utcnow()) == "expired"
    bad = _ckpt(
        "create", "--tenant", "x", "--expires-in", "soon", "--database", server.database_url
    )
    assert bad.returncode != 0 and "--expires-in" in bad.stderr


# ---- the SQLite file ----


def test_the_sqlite_database_is_created_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask, under which SQLite would make it 0644
    try:
        created = _ckpt("create", "--tenant", "t", "--database", f"sqlite:///{tmp_path / 'a.db'}")
        assert created.returncode == 0, created.stderr
        db = Database(f"sqlite:///{tmp_path / 'b.db'}")
        migrate.upgrade(db.engine)
        create_token(db, "t")
        # While b.db is open: its -wal and -shm files exist too.
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
        db.dispose()
    finally:
        os.umask(old)
    assert {"a.db", "b.db", "b.db-wal", "b.db-shm"} <= set(modes)
    assert modes == dict.fromkeys(modes, 0o600)
