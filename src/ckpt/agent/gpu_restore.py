"""CUDA state of a container restored as a Pod, on behalf of the ckpt-runc wrapper.

The wrapper runs `runc restore` on the host, where there is no Python and no CUDA library of
ours; its GPU hook (`ckpt-cuda-restore PID`) asks this agent, which holds the driver API
(``ckpt.agent.gpu``), to restore and unlock the CUDA state of the restored processes before
the container counts as created. The agent acts only on what it can verify:

- the caller is root on the node (SO_PEERCRED of a socket in a root-only host folder);
- the staged restore exists on this node and marks the container as a GPU container;
- runc's records of the container id put it in that restore's Pod (the CRI annotations and
  the `ckpt.dev/restore` annotation of its OCI config), and its init is the pid named.

Protocol: one JSON line each way. Request ``{"restoreId", "container", "containerId",
"pid"}``; reply ``{"restored": [pid, ...], "error": null | "message"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ckpt.agent.gpu import GpuDriver, GpuError
from ckpt.agent.runtimes.base import process_tree
from ckpt.agent.runtimes.runc import CONTAINERD_POD_ANNOTATIONS, annotations_of
from ckpt.agent.staging import RESTORE_JSON
from ckpt.contract.agent import RESTORE_ANNOTATION

log = logging.getLogger(__name__)

# The wrapper restores only under containerd's CRI plugin, whose records these are.
_CRI_NAMESPACE, _CRI_POD, _, _CRI_CONTAINER, _ = CONTAINERD_POD_ANNOTATIONS
# One request line; anything longer is not a request.
MAX_LINE = 4096
READ_TIMEOUT_S = 10.0

RuncState = Callable[[str], Awaitable[dict[str, object] | None]]


# A restore id (a uid) and a container id name a folder and go to `runc state` as an argument:
# no path separators, and no leading "-" that runc would read as an option.
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class GpuRestoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    restore_id: str = Field(alias="restoreId", max_length=253, pattern=_ID)
    container: str = Field(min_length=1, max_length=253)
    container_id: str = Field(alias="containerId", max_length=128, pattern=_ID)
    pid: int = Field(gt=0)


class GpuRestoreReply(BaseModel):
    restored: list[int] = Field(default_factory=list)
    error: str | None = None


class Refused(Exception):
    """The request does not name what it must; the message goes back to the hook."""


def _staged_gpu_container(restores_dir: Path, req: GpuRestoreRequest) -> dict[str, object]:
    """restore.json of the request's staged restore, which must mark its container as GPU."""
    folder = restores_dir / req.restore_id
    try:
        staged = json.loads((folder / RESTORE_JSON).read_text())
    except (OSError, ValueError):
        raise Refused(f"no staged restore {req.restore_id} on this node") from None
    container = (staged.get("containers") or {}).get(req.container)
    if not isinstance(container, dict):
        raise Refused(f"staged restore {req.restore_id} has no container {req.container!r}")
    if container.get("gpu") is not True:
        raise Refused(
            f"container {req.container!r} of restore {req.restore_id} holds no GPU state"
        )
    return dict(staged)


async def verified_pids(
    req: GpuRestoreRequest, *, restores_dir: Path, runc_state: RuncState,
) -> list[int]:
    """The host pids of the restored container, once everything the request claims is
    checked against this node's own records; Refused otherwise."""
    staged = _staged_gpu_container(restores_dir, req)
    state = await runc_state(req.container_id)
    if state is None:
        raise Refused(f"no container {req.container_id} on this node")
    if state.get("status") != "running" or state.get("pid") != req.pid:
        raise Refused(
            f"container {req.container_id} is not running with init pid {req.pid}"
        )
    annotations = annotations_of(Path(str(state.get("bundle", ""))))
    recorded = (
        annotations.get(RESTORE_ANNOTATION), annotations.get(_CRI_NAMESPACE),
        annotations.get(_CRI_POD), annotations.get(_CRI_CONTAINER),
    )
    claimed = (req.restore_id, staged.get("namespace"), staged.get("podName"), req.container)
    if recorded != claimed:
        log.warning("GPU restore refused: container %s is recorded as %s, the request "
                    "claims %s", req.container_id, recorded, claimed)
        raise Refused(
            f"container {req.container_id} is not container {req.container!r} of the Pod "
            f"of restore {req.restore_id}"
        )
    return process_tree(req.pid)


async def handle(
    line: bytes, *, restores_dir: Path, runc_state: RuncState, gpu: GpuDriver,
) -> GpuRestoreReply:
    """One request line to its reply; never raises."""
    try:
        req = GpuRestoreRequest.model_validate_json(line)
    except ValidationError as exc:
        fields = ", ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'request'}: {e['msg']}"
            for e in exc.errors()
        )
        return GpuRestoreReply(error=f"bad request: {fields}")
    try:
        pids = await verified_pids(req, restores_dir=restores_dir, runc_state=runc_state)
        if not gpu.available():
            raise Refused(f"no CUDA driver here: {gpu.unavailable_reason()}")
        restored = await gpu.resume_checkpointed(pids)
    except Refused as exc:
        return GpuRestoreReply(error=str(exc))
    except GpuError as exc:
        log.error("GPU restore of container %s failed: %s", req.container_id, exc)
        return GpuRestoreReply(error=f"CUDA restore failed: {exc}")
    log.info("GPU restore %s container %s: CUDA state resumed for pids %s",
             req.restore_id, req.container, restored)
    return GpuRestoreReply(restored=restored)


def peer_uid(writer: asyncio.StreamWriter) -> int | None:
    """The uid of the process at the other end of a unix socket (SO_PEERCRED)."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class GpuRestoreServer:
    """The unix socket the GPU hook calls; only root peers are answered."""

    def __init__(
        self, path: Path, *, restores_dir: Path, runc_state: RuncState, gpu: GpuDriver,
    ) -> None:
        self.path = path
        self._restores_dir = restores_dir
        self._runc_state = runc_state
        self._gpu = gpu
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.path.parent, 0o700)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by an agent that did not stop cleanly
        self._server = await asyncio.start_unix_server(
            self._serve, path=str(self.path), limit=MAX_LINE
        )
        os.chmod(self.path, 0o600)
        log.info("GPU restore hook socket at %s", self.path)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            uid = peer_uid(writer)
            if uid != 0:
                log.warning("GPU restore socket: refused a peer with uid %s", uid)
                reply = GpuRestoreReply(error="only root on this node may ask for a GPU restore")
            else:
                try:
                    line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT_S)
                except (TimeoutError, ValueError, asyncio.LimitOverrunError):
                    line = b""
                if not line.endswith(b"\n"):
                    reply = GpuRestoreReply(error="bad request: one JSON line expected")
                else:
                    reply = await handle(line, restores_dir=self._restores_dir,
                                         runc_state=self._runc_state, gpu=self._gpu)
            writer.write(reply.model_dump_json().encode() + b"\n")
            await writer.drain()
        except (ConnectionError, OSError) as exc:
            log.warning("GPU restore socket: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
