"""Helpers shared by the agent core tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ckpt.agent.gpu import ProcessState
from ckpt.agent.staging import stage_archive
from ckpt.contract.agent import CheckpointResult, StageRequest


class Progress:
    """Records progress calls: (phase, bytes_done)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, phase: str, done: int) -> None:
        self.calls.append((phase, done))

    @property
    def phases(self) -> list[str]:
        out: list[str] = []
        for phase, _ in self.calls:
            if not out or out[-1] != phase:
                out.append(phase)
        return out


def staged_images(
    result: CheckpointResult, restores: Path, archive_root: Path, container: str
) -> Path:
    """Stages a checkpoint's archive as the agent does for a Restore (fetch, verify, extract
    into the layout the ckpt-runc wrapper reads) and returns `container`'s CRIU images."""
    staged = stage_archive(
        StageRequest(restore_id="r-test", namespace="default", pod_name="restored",
                     source=result.restore_path, checksum=result.checksum),
        restores, archive_root=archive_root,
    )
    assert container in staged.containers, staged.containers
    return Path(staged.path) / "containers" / container / "images"


class FakeCuda:
    """Implements the driver calls GpuDriver makes, with per-pid checkpoint states."""

    def __init__(self, pids: dict[int, ProcessState], fail: dict[str, int] | None = None) -> None:
        self.states = dict(pids)
        self.fail = fail or {}
        self.calls: list[tuple[str, int]] = []
        self.lock_timeouts: list[int] = []

    def _ret(self, name: str, pid: int = -1) -> int:
        self.calls.append((name, pid))
        return self.fail.get(name, 0)

    def cuInit(self, flags: int) -> int:
        return self._ret("cuInit")

    def cuDeviceGetCount(self, out: Any) -> int:
        out._obj.value = 1
        return self._ret("cuDeviceGetCount")

    def cuGetErrorString(self, code: int, out: Any) -> int:
        out._obj.value = b"fake error text"
        return 0

    def cuDriverGetVersion(self, out: Any) -> int:
        out._obj.value = 12090
        return 0

    def cuDeviceGet(self, out: Any, i: int) -> int:
        out._obj.value = i
        return 0

    def cuDeviceGetName(self, buf: Any, n: int, dev: int) -> int:
        buf.value = b"Fake H100"
        return 0

    def cuCheckpointProcessGetState(self, pid: int, out: Any) -> int:
        if pid not in self.states:
            return 500  # CUDA_ERROR_NOT_FOUND: no CUDA context
        out._obj.value = int(self.states[pid])
        return self._ret("state", pid)

    def _move(self, name: str, pid: int, frm: ProcessState, to: ProcessState) -> int:
        code = self._ret(name, pid)
        if code:
            return code
        if self.states.get(pid) != frm:
            return 401  # CUDA_ERROR_ILLEGAL_STATE
        self.states[pid] = to
        return 0

    def cuCheckpointProcessLock(self, pid: int, args: Any) -> int:
        self.lock_timeouts.append(args._obj.timeoutMs)
        return self._move("lock", pid, ProcessState.RUNNING, ProcessState.LOCKED)

    def cuCheckpointProcessCheckpoint(self, pid: int, args: Any) -> int:
        return self._move("checkpoint", pid, ProcessState.LOCKED, ProcessState.CHECKPOINTED)

    def cuCheckpointProcessRestore(self, pid: int, args: Any) -> int:
        return self._move("restore", pid, ProcessState.CHECKPOINTED, ProcessState.LOCKED)

    def cuCheckpointProcessUnlock(self, pid: int, args: Any) -> int:
        return self._move("unlock", pid, ProcessState.LOCKED, ProcessState.RUNNING)
