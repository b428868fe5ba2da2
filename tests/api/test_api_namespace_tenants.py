"""Namespaces isolated in the API (security finding: one tenant for the whole cluster).

Before, the operator kept every namespace's records under its one tenant, and `ckpt list`
needed that tenant's token: whoever held it saw, deprecated and forged the records of every
namespace. Now the operator's token acts for the namespace each request names, a namespace's
users get a read-only token of that namespace's tenant, and the old tenant's records move to
their namespaces when the operator starts.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from alembic import command
from api_support import Backend, Running, make_backend
from sqlalchemy import text, update

from ckpt.api import migrate, tenants
from ckpt.api.db import Database
from ckpt.api.tables import Role, Token, utcnow
from ckpt.api.tokens import create_token
from ckpt.contract.checkpoints_api import TENANT_HEADER
from ckpt.contract.checkpoints_client import CheckpointsClient, SyncCheckpointsClient
from ckpt.errors import NotFound, Rejected

INFO = {"gpu": "none", "platform": "linux/amd64"}


def _name(what: str) -> str:
    # One server serves the whole session: namespaces of their own per test.
    return f"{what}-{uuid4().hex[:8]}"


def _operator(api: Running) -> str:
    return create_token(api.backend.db, _name("operator"), role=Role.operator)


def _as(namespace: str) -> dict[str, str]:
    return {TENANT_HEADER: namespace}


def _record(op: httpx.Client, namespace: str, name: str = "c-1") -> str:
    """A ready record of `namespace`, as the operator writes it."""
    headers = _as(namespace)
    created = op.post(
        "/v2/checkpoints", params={"name": f"{namespace}/{name}"},
        headers={**headers, "Idempotency-Key": str(uuid4())},
    )
    assert created.status_code == 200, created.text
    checkpoint_id = created.text
    info = {**INFO, "info": {"namespace": namespace, "pod": "web"}}
    assert op.put(f"/v2/checkpoints/info/{checkpoint_id}", json=info,
                  headers=headers).status_code == 200
    uploaded = op.post(f"/v2/checkpoints/uploaded/{checkpoint_id}",
                       json={"restore_path": f"file:///{namespace}/{checkpoint_id}.tar.zst"},
                       headers=headers)
    assert uploaded.status_code == 200, uploaded.text
    return checkpoint_id


def _reader(op: httpx.Client, namespace: str, **params: Any) -> dict[str, Any]:
    minted = op.post(f"/ckpt/v1/namespaces/{namespace}/reader-tokens", params=params)
    assert minted.status_code == 200, minted.text
    return dict(minted.json())


@pytest.fixture
def two_namespaces(api: Running) -> Iterator[tuple[httpx.Client, dict[str, str]]]:
    """The operator's client, and one ready record in each of two namespaces."""
    with api.client(_operator(api)) as op:
        yield op, {ns: _record(op, ns) for ns in (_name("team-a"), _name("team-b"))}


def test_a_namespace_token_sees_only_its_namespace_and_changes_nothing(
    api: Running, two_namespaces: tuple[httpx.Client, dict[str, str]]
) -> None:
    op, records = two_namespaces
    (mine, theirs) = records
    with api.client(_reader(op, mine)["token"]) as user:
        listed = user.get("/v2/checkpoints").json()
        assert [r["id"] for r in listed] == [records[mine]]
        assert listed[0]["name"] == f"{mine}/c-1" and listed[0]["status"] == "ready"
        # Another namespace's id is as absent as an id nobody has.
        for ids in (records[theirs], str(uuid4())):
            assert user.get("/v2/checkpoints", params={"ids": ids}).json() == []
        # Neither its own records nor another's can be deprecated, rewritten or forged, and
        # the refusal is the same whichever id it names.
        refusals = []
        for checkpoint_id in (records[mine], records[theirs], str(uuid4())):
            for method, path, body in [
                ("PATCH", "/v2/checkpoints/deprecate/{}", None),
                ("PUT", "/v2/checkpoints/info/{}", INFO),
                ("POST", "/v2/checkpoints/uploaded/{}", {"restore_path": "/evil"}),
            ]:
                answer = user.request(method, path.format(checkpoint_id), json=body)
                refusals.append((method, answer.status_code, answer.json()))
        assert {(m, s, b["code"]) for m, s, b in refusals} == {
            ("PATCH", 403, "read_only"), ("PUT", 403, "read_only"), ("POST", 403, "read_only"),
        }
        forged = user.post("/v2/checkpoints", params={"name": f"{theirs}/forged"})
        assert (forged.status_code, forged.json()["code"]) == (403, "read_only")
        # Naming the other namespace's tenant is refused, not honoured.
        named = user.get("/v2/checkpoints", headers={TENANT_HEADER: theirs})
        assert (named.status_code, named.json()["code"]) == (403, "forbidden")
        # And the operator's extensions are not a reader's.
        minted = user.post(f"/ckpt/v1/namespaces/{theirs}/reader-tokens")
        assert (minted.status_code, minted.json()["code"]) == (403, "forbidden")
    # Everything is as the operator left it.
    for namespace, checkpoint_id in records.items():
        (record,) = op.get("/v2/checkpoints", headers=_as(namespace)).json()
        assert (record["id"], record["status"]) == (checkpoint_id, "ready")


def test_the_operator_acts_for_the_namespace_each_request_names(
    api: Running, two_namespaces: tuple[httpx.Client, dict[str, str]]
) -> None:
    op, records = two_namespaces
    (first, second) = records
    # As one namespace, the other's record is absent: no cross-namespace write, even by the
    # operator's own token, can go to the wrong tenant.
    as_first = _as(first)
    assert op.get("/v2/checkpoints", params={"ids": records[second]},
                  headers=as_first).json() == []
    gone = op.patch(f"/v2/checkpoints/deprecate/{records[second]}", headers=as_first)
    missing = op.patch(f"/v2/checkpoints/deprecate/{uuid4()}", headers=as_first)
    assert gone.status_code == missing.status_code == 404
    deprecated = op.patch(f"/v2/checkpoints/deprecate/{records[first]}", headers=as_first)
    assert deprecated.status_code == 200
    statuses = {ns: op.get("/v2/checkpoints", headers=_as(ns)).json()[0]["status"]
                for ns in records}
    assert statuses == {first: "deprecated", second: "ready"}
    # It names a namespace, always, and a valid one.
    for headers, code in [({}, "tenant_required"), ({TENANT_HEADER: "Not_A-Namespace"},
                                                     "validation_error")]:
        answer = op.get("/v2/checkpoints", headers=headers)
        assert (answer.status_code, answer.json()["code"]) == (400, code)


def test_an_ordinary_token_keeps_the_contract_and_cannot_name_a_tenant(
    api: Running, two_namespaces: tuple[httpx.Client, dict[str, str]]
) -> None:
    _, records = two_namespaces
    (namespace, _) = records
    # An admin tenant named like a namespace shares nothing with the namespace's tenant.
    with api.client(api.backend.token(namespace)) as cedana:
        own = cedana.post("/v2/checkpoints").text
        assert [r["id"] for r in cedana.get("/v2/checkpoints").json()] == [own]
        assert cedana.get("/v2/checkpoints", params={"ids": records[namespace]}).json() == []
        for method, path in [("GET", "/v2/checkpoints"),
                             ("PATCH", f"/v2/checkpoints/deprecate/{records[namespace]}")]:
            answer = cedana.request(method, path, headers={TENANT_HEADER: namespace})
            assert (answer.status_code, answer.json()["code"]) == (403, "forbidden")
        adopt = cedana.post("/ckpt/v1/namespaces/adopt")
        assert (adopt.status_code, adopt.json()["code"]) == (403, "forbidden")
    with httpx.Client(base_url=api.base_url) as anonymous:
        assert anonymous.post("/ckpt/v1/namespaces/adopt").status_code == 401
    # The extensions stay out of the contract's OpenAPI document.
    paths = httpx.get(f"{api.base_url}/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/ckpt")]


def test_reader_tokens_expire_and_expired_ones_are_dropped(api: Running) -> None:
    db = api.backend.db
    namespace = _name("rotating")
    with api.client(_operator(api)) as op:
        before = datetime.now(UTC)
        first = _reader(op, namespace, expires_in=60)
        expires = datetime.fromisoformat(first["expires_at"].replace("Z", "+00:00"))
        assert 59 <= (expires - before).total_seconds() <= 61, first
        too_long = op.post(f"/ckpt/v1/namespaces/{namespace}/reader-tokens",
                           params={"expires_in": 365 * 86400})
        assert too_long.status_code == 400
        bad = op.post("/ckpt/v1/namespaces/Bad_Name/reader-tokens")
        assert bad.status_code == 400
        # The first one expires; minting the next deletes it.
        with db.transaction() as session:
            session.execute(update(Token).where(Token.role == Role.reader.value,
                                                Token.tenant_id == _tenant_id(api, namespace))
                            .values(expires_at=utcnow() - timedelta(seconds=1)))
        second = _reader(op, namespace)
    with api.client(first["token"]) as expired:
        assert expired.get("/v2/checkpoints").status_code == 401
    with api.client(second["token"]) as current:
        assert current.get("/v2/checkpoints").status_code == 200
    with db.engine.connect() as conn:
        readers = conn.execute(
            text("SELECT count(*) FROM tokens WHERE tenant_id = :t"),
            {"t": _tenant_id(api, namespace)},
        ).scalar()
    assert readers == 1


def _tenant_id(api: Running, namespace: str) -> int:
    return tenants.namespace_tenant(api.backend.db, namespace)


def test_the_operators_old_tenant_moves_to_namespace_tenants_once(api: Running) -> None:
    """Records of an operator before namespace tenants, in its one tenant: the operator (now
    with an operator token of that tenant) adopts them at start, and again changes nothing."""
    home = _name("cluster")
    a, b = _name("ns-a"), _name("ns-b")
    old_token = api.backend.token(home)
    ids: dict[str, str] = {}
    with api.client(old_token) as old:
        def record(name: str, info: Any = None, key: str | None = None) -> str:
            headers = {"Idempotency-Key": key or str(uuid4())}
            checkpoint_id = old.post("/v2/checkpoints", params={"name": name},
                                     headers=headers).text
            if info is not None:
                old.put(f"/v2/checkpoints/info/{checkpoint_id}", json={**INFO, "info": info})
            return checkpoint_id

        ids["a-bound"] = record(f"{a}/web-1", {"namespace": a, "checkpoint_uid": "u1"})
        ids["a-registered"] = record(f"{a}/web-2")  # before its info: the name alone
        ids["b"] = record(f"{b}/db-1", {"namespace": b})
        ids["unnamed"] = record("no-namespace")
        ids["disagrees"] = record(f"{a}/web-3", {"namespace": b})
        ids["registered-again"] = record(f"{b}/db-2", key="uid-db-2")
    operator = create_token(api.backend.db, home, role=Role.operator)
    with api.client(operator) as op:
        # The new operator registered one Checkpoint again in its namespace before adopting.
        again = op.post("/v2/checkpoints", params={"name": f"{b}/db-2"},
                        headers={**_as(b), "Idempotency-Key": "uid-db-2"}).text
        first = op.post("/ckpt/v1/namespaces/adopt")
        assert first.status_code == 200, first.text
        assert first.json() == {"moved": 3, "kept": 3}
        assert op.post("/ckpt/v1/namespaces/adopt").json() == {"moved": 0, "kept": 3}
        seen = {ns: {r["id"] for r in op.get("/v2/checkpoints", headers=_as(ns)).json()}
                for ns in (a, b)}
    assert seen == {a: {ids["a-bound"], ids["a-registered"]}, b: {ids["b"], again}}
    with api.client(old_token) as old:
        left = {r["id"] for r in old.get("/v2/checkpoints").json()}
    assert left == {ids["unnamed"], ids["disagrees"], ids["registered-again"]}


@pytest.fixture(params=("sqlite", pytest.param("postgresql", marks=pytest.mark.e2e)))
def at_0002(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A database of the revision before namespace tenants."""
    b = make_backend(request.param, tmp_path, request, revision="0002")
    yield b
    b.db.dispose()


def test_migration_keeps_tenants_tokens_and_records_and_downgrades(at_0002: Backend) -> None:
    db = at_0002.db
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO tenants (name, created_at) VALUES ('org', :t)"),
                     {"t": utcnow()})
        tenant = conn.execute(text("SELECT id FROM tenants WHERE name = 'org'")).scalar()
        conn.execute(
            text("INSERT INTO tokens (tenant_id, token_hash, created_at) VALUES (:t, 'h', :n)"),
            {"t": tenant, "n": utcnow()},
        )
        conn.execute(
            text("INSERT INTO checkpoints (id, tenant_id, status, gpu, platform, created_at,"
                 " updated_at) VALUES (:id, :t, 'ready', 'g', 'p', :n, :n)"),
            {"id": str(uuid4()), "t": tenant, "n": utcnow()},
        )
    migrate.upgrade(db.engine)
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT name, kind FROM tenants")).all() == [("org", "tenant")]
        assert conn.execute(text("SELECT role FROM tokens")).all() == [("tenant",)]
        assert conn.execute(text("SELECT count(*) FROM checkpoints")).scalar() == 1
    tenants.mint_reader(db, "team-a", timedelta(hours=1))
    _downgrade(db, "0002")
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM tenants")).all() == [("org",)]
        assert conn.execute(text("SELECT count(*) FROM tokens")).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM checkpoints")).scalar() == 1
    migrate.upgrade(db.engine)


def _downgrade(db: Database, revision: str) -> None:
    config = migrate.alembic_config()
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


async def test_the_operators_client_acts_per_namespace_through_one_pool(api: Running) -> None:
    """`CheckpointsClient.for_tenant`, as the operator's flows use it: views of one client
    that share its connections; closing a view leaves the client open."""
    a, b = _name("view-a"), _name("view-b")
    async with CheckpointsClient(api.base_url, _operator(api)) as operator:
        as_a, as_b = operator.for_tenant(a), operator.for_tenant(b)
        mine = await as_a.create(idempotency_key="uid-1", name=f"{a}/c")
        assert await as_b.list([mine]) == []
        with pytest.raises(NotFound):
            await as_b.deprecate(mine)
        # The same idempotency key in another namespace is another Checkpoint's.
        assert await as_b.create(idempotency_key="uid-1") != mine
        await as_a.aclose()
        assert [r.id for r in await as_a.list()] == [mine]
        with pytest.raises(Rejected) as unnamed:
            await operator.list()
        assert unnamed.value.code == "tenant_required"
        reader = await operator.mint_reader_token(a, expires_in=600)
        assert (await operator.adopt_namespace_records()).moved == 0
    async with CheckpointsClient(api.base_url, reader.token) as user:
        assert [r.id for r in await user.list()] == [mine]
        with pytest.raises(Rejected) as refused:
            await user.deprecate(mine)
        assert (refused.value.status, refused.value.code) == (403, "read_only")
        with pytest.raises(Rejected):
            await user.for_tenant(b).list()


def test_the_blocking_client_has_the_same_views(api: Running) -> None:
    namespace = _name("sync")
    with SyncCheckpointsClient(api.base_url, _operator(api)) as operator:
        view = operator.for_tenant(namespace)
        created = view.create(name=f"{namespace}/c")
        view.close()
        assert [r.id for r in operator.for_tenant(namespace).list()] == [created]
