"""The kubelet backend's handling of the kubelet's answers, for the answers a real kubelet
cannot be made to give on demand through the deployed agent: a refusal (the agent's token is
always valid and allowed, and kubelets cache authorization answers for minutes), an answer
without an archive path, a path the agent cannot read, a container that vanished between
the operator's check and the call. The real kubelet's success path, the removal of its tar and
the restore through runc run on the cluster (tests/cluster/test_backends_e2e.py).

The kubelet is an httpx MockTransport: each test sees the request the backend sent.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from ckpt.agent.runtimes import kubelet
from ckpt.agent.runtimes.base import ContainerNotFound, ContainerRef, ContainerRuntimeError
from ckpt.agent.runtimes.kubelet import KubeletRuntime

Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def answer(monkeypatch: pytest.MonkeyPatch) -> Callable[[Handler], list[httpx.Request]]:
    """Installs `handler` as the kubelet; returns the list of requests it gets."""

    def install(handler: Handler) -> list[httpx.Request]:
        seen: list[httpx.Request] = []

        def record(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return handler(request)

        client = functools.partial(httpx.AsyncClient, transport=httpx.MockTransport(record))
        monkeypatch.setattr(kubelet.httpx, "AsyncClient", client)
        return seen

    return install


async def _dump(rt: KubeletRuntime, tmp_path: Path, pod: str = "web",
                leave_running: bool = True) -> Path:
    container = await rt.resolve(ContainerRef("app", "c0ffee", "team a", pod))
    dumped = await rt.dump(container, tmp_path, leave_running=leave_running)
    assert dumped.source_tar is not None
    return dumped.source_tar


async def test_the_call_and_the_archive_it_names(
    answer: Callable[[Handler], list[httpx.Request]], tmp_path: Path
) -> None:
    tar = tmp_path / "checkpoint-web_team a-app-2026.tar"
    tar.write_bytes(b"tar")
    token = tmp_path / "token"
    token.write_text("first\n")
    seen = answer(lambda r: httpx.Response(200, json={"items": [str(tar)]}))
    rt = KubeletRuntime("https://10.0.0.1:10250/", token_file=token, timeout_s=60)

    assert await _dump(rt, tmp_path, pod="web/x") == tar
    token.write_text("rotated\n")  # projected tokens rotate: read on every call
    await _dump(rt, tmp_path, pod="web/x")

    first, second = seen
    assert first.method == "POST"
    # Every part quoted: a name cannot reach another kubelet path.
    assert first.url.raw_path == b"/checkpoint/team%20a/web%2Fx/app?timeout=60"
    assert first.url.host == "10.0.0.1"
    assert first.headers["authorization"] == "Bearer first"
    assert second.headers["authorization"] == "Bearer rotated"


async def test_the_archive_read_where_the_agent_mounts_it(
    answer: Callable[[Handler], list[httpx.Request]], tmp_path: Path
) -> None:
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    (mounted / "checkpoint-web.tar").write_bytes(b"tar")
    answer(lambda r: httpx.Response(
        200, json={"items": ["/var/lib/kubelet/checkpoints/checkpoint-web.tar"]}))
    rt = KubeletRuntime(token="t", checkpoints_dir=mounted)
    assert await _dump(rt, tmp_path) == mounted / "checkpoint-web.tar"


@pytest.mark.parametrize("code", [401, 403, 500])
async def test_a_refusal_names_the_status_and_not_the_kubelets_words(
    answer: Callable[[Handler], list[httpx.Request]], tmp_path: Path, code: int
) -> None:
    answer(lambda r: httpx.Response(code, text="criu failed: /var/lib/secret/path"))
    with pytest.raises(ContainerRuntimeError) as caught:
        await _dump(KubeletRuntime(token="t"), tmp_path)
    message = str(caught.value)
    assert f"HTTP {code}" in message and "team a/web/app" in message
    # CRIU's messages and host paths stay in the agent's log.
    assert "/var/lib/secret" not in message


async def test_a_vanished_container(
    answer: Callable[[Handler], list[httpx.Request]], tmp_path: Path
) -> None:
    answer(lambda r: httpx.Response(404, text="not found"))
    with pytest.raises(ContainerNotFound, match="team a/web/app"):
        await _dump(KubeletRuntime(token="t"), tmp_path)


@pytest.mark.parametrize("body", [b"{}", b'{"items": []}', b"<html>", b'{"items": 3}'])
async def test_an_answer_without_an_archive(
    answer: Callable[[Handler], list[httpx.Request]], tmp_path: Path, body: bytes
) -> None:
    answer(lambda r: httpx.Response(200, content=body))
    with pytest.raises(ContainerRuntimeError, match="unexpected answer"):
        await _dump(KubeletRuntime(token="t"), tmp_path)


async def test_an_archive_the_agent_cannot_read(
    answer: Callable[[Handler], list[httpx.Request]], tmp_path: Path
) -> None:
    answer(lambda r: httpx.Response(200, json={"items": [str(tmp_path / "elsewhere.tar")]}))
    with pytest.raises(ContainerRuntimeError, match="not readable by the agent"):
        await _dump(KubeletRuntime(token="t"), tmp_path)


async def test_unreachable_and_without_a_token(
    answer: Callable[[Handler], list[httpx.Request]], tmp_path: Path
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    answer(refuse)
    with pytest.raises(ContainerRuntimeError, match="unreachable"):
        await _dump(KubeletRuntime(token="t"), tmp_path)
    with pytest.raises(ContainerRuntimeError, match="no token for the kubelet"):
        await _dump(KubeletRuntime(token_file=tmp_path / "missing"), tmp_path)


async def test_stopping_the_container_is_refused_before_any_call(
    answer: Callable[[Handler], list[httpx.Request]], tmp_path: Path
) -> None:
    seen = answer(lambda r: httpx.Response(200, content=json.dumps({"items": []})))
    with pytest.raises(ContainerRuntimeError, match="always leaves the container running"):
        await _dump(KubeletRuntime(token="t"), tmp_path, leave_running=False)
    assert seen == []
