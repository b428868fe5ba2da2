"""The agent's GPU restore socket, which the ckpt-runc wrapper's hook calls after `runc
restore` of a GPU container: a real unix socket, real peer credentials, real processes and
OCI configs on disk; the driver library is the stand-in of test_gpu_logic (no GPU here), so
what is proven is who may ask and for which processes, not CUDA itself (tools/gpu-check.sh
runs the driver calls on a GPU machine).

Each refusal is an attack the agent must resist: root on the node is the only caller, and even
root only gets the CUDA state of the container that the named staged restore brought back."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pipeline_support import FakeCuda

from ckpt.agent.gpu import GpuDriver, ProcessState
from ckpt.agent.gpu_restore import GpuRestoreServer
from ckpt.agent.staging import RESTORE_JSON
from harness.fixtures import build_wrapper_module

RESTORE_ID = "5b0c6f7e-1d2a-4c3b-9e8f-7a6b5c4d3e2f"
CONTAINER_ID = "a" * 64


@dataclass
class Node:
    """What the agent checks a request against: the staged restores and runc's records."""

    restores: Path
    bundle: Path
    socket: Path
    workload: subprocess.Popen[bytes]
    pids: list[int]
    records: dict[str, dict[str, object]]

    async def runc_state(self, container_id: str) -> dict[str, object] | None:
        return self.records.get(container_id)


def _stage(restores: Path, restore_id: str, containers: dict[str, bool]) -> None:
    folder = restores / restore_id
    folder.mkdir(parents=True, mode=0o700)
    (folder / RESTORE_JSON).write_text(json.dumps({
        "version": 1, "restoreId": restore_id, "namespace": "ml", "podName": "trainer-restored",
        "tcpClose": True,
        "containers": {name: {"images": f"containers/{name}/images", "gpu": gpu}
                       for name, gpu in containers.items()},
    }))


def _bundle(folder: Path, annotations: dict[str, str]) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"ociVersion": "1.2.0",
                                                    "annotations": annotations}))
    return folder


def _children(pid: int, want: int) -> list[int]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = [int(c) for t in Path(f"/proc/{pid}/task").iterdir()
                    for c in (t / "children").read_text().split()]
        if len(children) >= want:
            return children
        time.sleep(0.02)
    raise AssertionError(f"pid {pid} did not start {want} children")


@pytest.fixture
def node() -> Iterator[Node]:
    # Unix socket paths are limited to 108 bytes: a short folder, not pytest's tmp_path.
    top = Path(tempfile.mkdtemp(prefix="gr"))
    workload = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60 & wait"])
    try:
        restores = top / "restores"
        _stage(restores, RESTORE_ID, {"trainer": True, "sidecar": False})
        bundle = _bundle(top / "task" / CONTAINER_ID, {
            "ckpt.dev/restore": RESTORE_ID,
            "io.kubernetes.cri.sandbox-namespace": "ml",
            "io.kubernetes.cri.sandbox-name": "trainer-restored",
            "io.kubernetes.cri.container-name": "trainer",
            "io.kubernetes.cri.container-type": "container",
        })
        pids = [workload.pid, *_children(workload.pid, 2)]
        records: dict[str, dict[str, object]] = {CONTAINER_ID: {
            "id": CONTAINER_ID, "pid": workload.pid, "status": "running", "bundle": str(bundle),
        }}
        yield Node(restores, bundle, top / "run" / "gpu-restore.sock", workload, pids, records)
    finally:
        workload.kill()
        workload.wait()
        subprocess.run(["pkill", "-P", str(workload.pid)], check=False)
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def cuda(node: Node) -> FakeCuda:
    # The init and one child hold CUDA state, as after CRIU restored a checkpointed process;
    # the other child has none.
    return FakeCuda({node.pids[0]: ProcessState.CHECKPOINTED,
                     node.pids[1]: ProcessState.CHECKPOINTED})


@pytest.fixture
async def server(node: Node, cuda: FakeCuda) -> AsyncIterator[GpuRestoreServer]:
    srv = GpuRestoreServer(node.socket, restores_dir=node.restores,
                           runc_state=node.runc_state, gpu=GpuDriver(cuda))
    await srv.start()
    yield srv
    await srv.stop()


async def _ask(path: Path, request: dict[str, object] | bytes) -> dict[str, object]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    line = request if isinstance(request, bytes) else json.dumps(request).encode() + b"\n"
    writer.write(line)
    await writer.drain()
    reply = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    result: dict[str, object] = json.loads(reply)
    return result


def _request(node: Node, **changes: object) -> dict[str, object]:
    return {"restoreId": RESTORE_ID, "container": "trainer", "containerId": CONTAINER_ID,
            "pid": node.pids[0], **changes}


def _resumed(cuda: FakeCuda) -> list[tuple[str, int]]:
    return [c for c in cuda.calls if c[0] in ("restore", "unlock")]


async def test_restores_and_unlocks_the_cuda_processes_of_the_restored_container(
    node: Node, cuda: FakeCuda, server: GpuRestoreServer,
) -> None:
    reply = await _ask(node.socket, _request(node))
    assert reply == {"restored": node.pids[:2], "error": None}
    first, second = node.pids[:2]
    assert _resumed(cuda) == [("restore", first), ("unlock", first),
                              ("restore", second), ("unlock", second)]
    assert {cuda.states[p] for p in node.pids[:2]} == {ProcessState.RUNNING}


async def test_the_socket_and_its_folder_are_root_only(
    node: Node, server: GpuRestoreServer,
) -> None:
    assert stat.S_IMODE(node.socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(node.socket.parent.stat().st_mode) == 0o700
    await server.stop()
    assert not node.socket.exists()


async def test_a_peer_that_is_not_root_is_refused_even_if_it_can_reach_the_socket(
    node: Node, cuda: FakeCuda, server: GpuRestoreServer,
) -> None:
    # A folder or socket mode loosened by mistake must not open the driver to every user.
    for folder in (node.socket.parent.parent, node.socket.parent):
        os.chmod(folder, 0o755)  # noqa: S103 - the mistake this test makes on purpose
    os.chmod(node.socket, 0o666)  # noqa: S103
    line = json.dumps(_request(node))
    client = (
        "import os, socket, sys\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
        # The agent may answer and close before reading: the reply is read all the same.
        "try: s.sendall(sys.argv[2].encode() + b'\\n')\n"
        "except BrokenPipeError: pass\n"
        "print(s.makefile().readline(), end='')\n"
    )
    proc = await asyncio.create_subprocess_exec(
        "python3", "-c", client, str(node.socket), line, stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    assert json.loads(out) == {"restored": [],
                               "error": "only root on this node may ask for a GPU restore"}
    assert _resumed(cuda) == []


@pytest.mark.parametrize(("changes", "error"), [
    ({"container": "sidecar"},
     f"container 'sidecar' of restore {RESTORE_ID} holds no GPU state"),
    ({"container": "other"}, f"staged restore {RESTORE_ID} has no container 'other'"),
    ({"restoreId": "9d1e2f3a-0000-4000-8000-000000000000"},
     "no staged restore 9d1e2f3a-0000-4000-8000-000000000000 on this node"),
    ({"containerId": "b" * 64}, f"no container {'b' * 64} on this node"),
])
async def test_a_request_naming_anything_not_staged_here_is_refused(
    node: Node, cuda: FakeCuda, server: GpuRestoreServer, changes: dict[str, object],
    error: str,
) -> None:
    reply = await _ask(node.socket, _request(node, **changes))
    assert reply == {"restored": [], "error": error}
    assert _resumed(cuda) == []


async def test_a_pid_other_than_the_containers_init_is_refused(
    node: Node, cuda: FakeCuda, server: GpuRestoreServer,
) -> None:
    # Another process of the node (here: the test's own) would otherwise get its CUDA state
    # restored and unlocked on the strength of a container id it does not belong to.
    reply = await _ask(node.socket, _request(node, pid=os.getpid()))
    assert reply["error"] == (f"container {CONTAINER_ID} is not running with init pid "
                              f"{os.getpid()}")
    assert _resumed(cuda) == []


@pytest.mark.parametrize(("annotation", "value"), [
    ("ckpt.dev/restore", "0e0e0e0e-1111-4222-8333-444444444444"),  # another restore's Pod
    ("io.kubernetes.cri.sandbox-namespace", "other-team"),
    ("io.kubernetes.cri.sandbox-name", "someone-else"),
    ("io.kubernetes.cri.container-name", "sidecar"),
])
async def test_a_container_that_runc_records_in_another_pod_is_refused(
    node: Node, cuda: FakeCuda, server: GpuRestoreServer, annotation: str, value: str,
) -> None:
    config = json.loads((node.bundle / "config.json").read_text())
    config["annotations"][annotation] = value
    (node.bundle / "config.json").write_text(json.dumps(config))
    reply = await _ask(node.socket, _request(node))
    assert reply["error"] == (f"container {CONTAINER_ID} is not container 'trainer' of the Pod "
                              f"of restore {RESTORE_ID}")
    assert _resumed(cuda) == []


async def test_a_stopped_container_is_refused(
    node: Node, cuda: FakeCuda, server: GpuRestoreServer,
) -> None:
    node.records[CONTAINER_ID]["status"] = "stopped"
    reply = await _ask(node.socket, _request(node))
    assert str(reply["error"]).endswith(f"is not running with init pid {node.pids[0]}")
    assert _resumed(cuda) == []


@pytest.mark.parametrize(("line", "error"), [
    (b"not json\n", "bad request: request: Invalid JSON"),
    (b'{"restoreId": "x", "container": "c", "containerId": "i"}\n',
     "bad request: pid: Field required"),
    (b'{"restoreId": "x", "container": "c", "containerId": "i", "pid": 0}\n',
     "bad request: pid: Input should be greater than 0"),
    (b'{"restoreId": "x", "container": "c", "containerId": "i", "pid": 1, "uid": 0}\n',
     "bad request: uid: Extra inputs are not permitted"),
    # A path out of the restores folder, and an id runc would take for an option.
    (b'{"restoreId": "../restores/x", "container": "c", "containerId": "i", "pid": 1}\n',
     "bad request: restoreId: String should match pattern"),
    (b'{"restoreId": "x", "container": "c", "containerId": "--root=/tmp", "pid": 1}\n',
     "bad request: containerId: String should match pattern"),
    (b'{"restoreId": "x"}', "bad request: one JSON line expected"),
])
async def test_malformed_requests_get_a_precise_error(
    node: Node, cuda: FakeCuda, server: GpuRestoreServer, line: bytes, error: str,
) -> None:
    reader, writer = await asyncio.open_unix_connection(str(node.socket))
    writer.write(line)
    writer.write_eof()
    reply = json.loads(await asyncio.wait_for(reader.readline(), 10))
    writer.close()
    assert str(reply["error"]).startswith(error)
    assert _resumed(cuda) == []


async def test_without_a_cuda_driver_the_reply_says_why(node: Node) -> None:
    srv = GpuRestoreServer(node.socket, restores_dir=node.restores, runc_state=node.runc_state,
                           gpu=GpuDriver(None, None, "libcuda.so.1 cannot be loaded"))
    await srv.start()
    try:
        reply = await _ask(node.socket, _request(node))
    finally:
        await srv.stop()
    assert reply == {"restored": [],
                     "error": "no CUDA driver here: libcuda.so.1 cannot be loaded"}


async def test_a_driver_failure_is_reported_with_the_cuda_error(
    node: Node, server: GpuRestoreServer, cuda: FakeCuda,
) -> None:
    cuda.fail["restore"] = 401
    reply = await _ask(node.socket, _request(node))
    assert reply["restored"] == []
    assert "CUDA restore failed" in str(reply["error"])
    assert "CUDA_ERROR_ILLEGAL_STATE" in str(reply["error"])


@pytest.fixture(scope="module")
def hook_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ckpt-cuda-restore built from cmd/ckpt-runc/cudarestore as the Dockerfile builds it."""
    return build_wrapper_module("./cudarestore",
                                tmp_path_factory.mktemp("hook") / "ckpt-cuda-restore")


async def _hook(hook_bin: Path, node: Node, pid: int, container: str = "trainer") -> tuple[
        int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(hook_bin), str(pid),
        env={"CKPT_GPU_RESTORE_SOCKET": str(node.socket), "CKPT_RESTORE_ID": RESTORE_ID,
             "CKPT_CONTAINER_NAME": container, "CKPT_CONTAINER_ID": CONTAINER_ID},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_wrappers_hook_and_the_agent_speak_the_same_protocol(
    hook_bin: Path, node: Node, cuda: FakeCuda, server: GpuRestoreServer,
) -> None:
    code, out, err = await _hook(hook_bin, node, node.pids[0])
    assert (code, err) == (0, "")
    first, second = node.pids[:2]
    assert out.strip() == ("ckpt-cuda-restore: CUDA state restored and unlocked for pids "
                           f"{first} {second}")
    assert _resumed(cuda) == [("restore", first), ("unlock", first),
                              ("restore", second), ("unlock", second)]

    code, out, err = await _hook(hook_bin, node, node.pids[0], container="sidecar")
    assert code == 1
    assert err.strip() == ("ckpt-cuda-restore: agent refused: container 'sidecar' of restore "
                           f"{RESTORE_ID} holds no GPU state")
