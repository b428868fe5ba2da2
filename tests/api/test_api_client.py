"""`ckpt.contract.checkpoints_client` against a real server, and its retry policy."""

from __future__ import annotations

from uuid import UUID, uuid4

import httpx
import pytest
from api_support import Running

from ckpt.contract.checkpoints_api import CheckpointStatus
from ckpt.contract.checkpoints_client import CheckpointsClient, SyncCheckpointsClient
from ckpt.errors import Conflict, NotFound, Rejected, ServiceError, Unavailable
from ckpt.retry import Backoff
from harness.controlplane import free_port

FAST = Backoff(attempts=4, first=0.001, cap=0.01, jitter=True)


async def test_async_client_walks_the_lifecycle(api: Running) -> None:
    async with CheckpointsClient(api.base_url, api.backend.token(), retry=FAST) as client:
        checkpoint_id = await client.create(idempotency_key="uid-7", name="db")
        assert await client.create(idempotency_key="uid-7") == checkpoint_id
        assert await client.put_info(checkpoint_id, "none", "linux/amd64", {"node": "n"}) == (
            checkpoint_id
        )
        await client.uploaded(checkpoint_id, "/store/x", checksum="sha256:ff")
        (item,) = await client.list([checkpoint_id])
        assert (item.id, item.status, item.checksum, item.info, item.name) == (
            checkpoint_id,
            CheckpointStatus.ready,
            "sha256:ff",
            {"node": "n"},
            "db",
        )
        other = await client.create()
        assert {c.id for c in await client.list()} == {checkpoint_id, other}
        assert await client.list([]) == []
        assert await client.deprecate(checkpoint_id) == checkpoint_id
        (item,) = await client.list([checkpoint_id])
        assert item.status is CheckpointStatus.deprecated


async def test_client_follows_pages(api: Running) -> None:
    async with CheckpointsClient(api.base_url, api.backend.token(), retry=FAST) as client:
        created = [await client.create() for _ in range(5)]
        first, cursor = await client.list_page(limit=2)
        assert [c.id for c in first] == created[:2] and cursor is not None
        assert [c.id for c in await client.list()] == created


async def test_client_raises_typed_errors_with_status_and_message(api: Running) -> None:
    async with CheckpointsClient(api.base_url, api.backend.token(), retry=FAST) as client:
        missing = uuid4()
        with pytest.raises(NotFound) as not_found:
            await client.deprecate(missing)
        assert not_found.value.status == 404
        assert str(missing) in not_found.value.message
        checkpoint_id = await client.create()
        await client.deprecate(checkpoint_id)
        with pytest.raises(Conflict) as conflict:
            await client.uploaded(checkpoint_id, "/x")
        assert (conflict.value.status, conflict.value.code) == (409, "illegal_transition")
    async with CheckpointsClient(api.base_url, "ckpt_wrong", retry=FAST) as client:
        with pytest.raises(Rejected) as unauthorized:
            await client.list()
        assert unauthorized.value.status == 401


def test_sync_client(api: Running) -> None:
    with SyncCheckpointsClient(api.base_url, api.backend.token(), retry=FAST) as client:
        checkpoint_id = client.create()
        assert isinstance(checkpoint_id, UUID)
        client.put_info(checkpoint_id, "none", "linux/amd64")
        client.uploaded(checkpoint_id, None)
        assert client.list([checkpoint_id])[0].status is CheckpointStatus.possibly_uploaded
        assert client.deprecate(checkpoint_id) == checkpoint_id


def _scripted(statuses: list[int], calls: list[httpx.Request]) -> httpx.MockTransport:
    """A server stand-in that answers the given statuses in turn (the last one repeats)."""

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        status = statuses[min(len(calls), len(statuses)) - 1]
        if status == 200:
            return httpx.Response(200, text=str(UUID(int=1)))
        return httpx.Response(status, json={"message": f"status {status}", "code": "x"})

    return httpx.MockTransport(handler)


async def test_5xx_is_retried_with_the_same_idempotency_key() -> None:
    calls: list[httpx.Request] = []
    transport = _scripted([503, 500, 200], calls)
    async with CheckpointsClient("http://api", "t", retry=FAST, transport=transport) as client:
        assert await client.create() == UUID(int=1)
    assert len(calls) == 3
    assert len({c.headers["idempotency-key"] for c in calls}) == 1


async def test_5xx_retries_are_bounded() -> None:
    calls: list[httpx.Request] = []
    transport = _scripted([502], calls)
    async with CheckpointsClient("http://api", "t", retry=FAST, transport=transport) as client:
        with pytest.raises(Unavailable) as error:
            await client.deprecate(UUID(int=1))
    assert (error.value.status, error.value.message) == (502, "status 502")
    assert len(calls) == FAST.attempts


@pytest.mark.parametrize("status", [400, 401, 404, 409, 422])
async def test_4xx_is_never_retried(status: int) -> None:
    calls: list[httpx.Request] = []
    transport = _scripted([status, 200], calls)
    async with CheckpointsClient("http://api", "t", retry=FAST, transport=transport) as client:
        with pytest.raises(ServiceError) as error:
            await client.put_info(UUID(int=1), "g", "p")
    assert error.value.status == status and not error.value.retryable
    assert len(calls) == 1


async def test_connection_errors_are_retried_then_raised() -> None:
    # Nothing listens on a just-freed loopback port: every attempt is refused.
    url = f"http://127.0.0.1:{free_port()}"
    transport = _Counting()
    async with CheckpointsClient(url, "t", retry=FAST, transport=transport) as client:
        with pytest.raises(Unavailable) as error:
            await client.list()
    assert error.value.status is None
    assert isinstance(error.value.__cause__, httpx.ConnectError)
    assert transport.calls == FAST.attempts


class _Counting(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        return await super().handle_async_request(request)


def test_backoff_is_bounded() -> None:
    policy = Backoff(attempts=10, first=0.1, cap=1.5, jitter=True)
    assert all(0 <= policy.delay(n) <= 1.5 for n in range(30) for _ in range(20))
