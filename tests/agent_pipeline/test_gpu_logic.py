"""GPU logic of ckpt.agent.gpu with a stand-in driver library (pure logic: no GPU here),
plus the real thing on a machine with an NVIDIA GPU."""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import pytest
from pipeline_support import FakeCuda, Progress

from ckpt.agent import gpu as gpu_mod
from ckpt.agent.gpu import GpuDriver, GpuError, ProcessState
from ckpt.agent.pipeline import GpuRequiredError, PipelineContext, run_checkpoint
from ckpt.contract.agent import CheckpointRequest, ContainerTarget, GpuMode
from harness.containers import BusyboxContainer

GPU_REASON = "needs an NVIDIA GPU with libcuda.so.1"


def ops(fake: FakeCuda) -> list[tuple[str, int]]:
    return [c for c in fake.calls if c[0] in ("lock", "checkpoint", "restore", "unlock")]


def test_no_library_means_unavailable_with_reason() -> None:
    d = GpuDriver(None, None, "libcuda.so.1 cannot be loaded")
    assert not d.available()
    assert "libcuda.so.1" in d.unavailable_reason()
    assert d.driver_version() is None


def test_old_driver_without_checkpoint_api_is_unavailable() -> None:
    class Old:
        def cuInit(self, flags: int) -> int:
            return 0

    d = GpuDriver(Old())
    assert not d.available()
    assert "no CUDA checkpoint API" in d.unavailable_reason()


async def test_suspend_locks_all_before_checkpointing_any_and_resume_reverses() -> None:
    fake = FakeCuda({10: ProcessState.RUNNING, 11: ProcessState.RUNNING})
    d = GpuDriver(fake)
    assert d.available()
    done: list[int] = []
    await d.suspend([10, 11], 2500, done=done)
    assert ops(fake) == [("lock", 10), ("lock", 11), ("checkpoint", 10), ("checkpoint", 11)]
    assert fake.lock_timeouts == [2500, 2500] and done == [10, 11]
    fake.calls.clear()
    assert await d.resume(done) == [10, 11]
    assert ops(fake) == [("restore", 10), ("unlock", 10), ("restore", 11), ("unlock", 11)]
    assert set(fake.states.values()) == {ProcessState.RUNNING}


async def test_lock_timeout_reports_clearly_and_resume_undoes_partial_work() -> None:
    fake = FakeCuda({10: ProcessState.RUNNING, 11: ProcessState.RUNNING})

    def lock(pid: int, args: Any) -> int:
        if pid == 11:
            return 909  # CUDA_ERROR_TIMEOUT
        return FakeCuda.cuCheckpointProcessLock(fake, pid, args)

    fake.cuCheckpointProcessLock = lock  # type: ignore[method-assign]
    d = GpuDriver(fake)
    done: list[int] = []
    with pytest.raises(GpuError, match=r"cuCheckpointProcessLock\(11\).*TIMEOUT.*long-running"):
        await d.suspend([10, 11], 100, done=done)
    assert done == [10]
    assert await d.resume(done) == [10]
    assert fake.states[10] == ProcessState.RUNNING


async def test_not_supported_names_the_unsupported_features() -> None:
    fake = FakeCuda({10: ProcessState.RUNNING}, fail={"checkpoint": 801})
    with pytest.raises(GpuError, match="UVM, CUDA IPC, MIG and MPS"):
        await GpuDriver(fake).suspend([10], 100, done=[])


def test_cuda_pids_needs_device_files_and_a_context(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCuda({10: ProcessState.RUNNING})
    monkeypatch.setattr(gpu_mod, "uses_nvidia_device", lambda pid: pid in (10, 12))
    # 10: device open + context; 11: no device; 12: device open but no CUDA context.
    assert GpuDriver(fake).cuda_pids([10, 11, 12]) == [10]


async def test_resume_checkpointed_finds_processes_by_state() -> None:
    fake = FakeCuda({20: ProcessState.CHECKPOINTED, 21: ProcessState.RUNNING})
    assert await GpuDriver(fake).resume_checkpointed([20, 21, 22]) == [20]
    assert fake.states == {20: ProcessState.RUNNING, 21: ProcessState.RUNNING}


def test_models_and_version_without_nvml_come_from_the_driver() -> None:
    d = GpuDriver(FakeCuda({}))
    assert d.models() == ["Fake H100"]
    assert d.driver_version() == "CUDA 12.9"


def test_lock_args_layout_matches_the_driver_header() -> None:
    assert ctypes.sizeof(gpu_mod.CUcheckpointLockArgs) == 64
    assert gpu_mod.CUcheckpointLockArgs.timeoutMs.offset == 0


@pytest.mark.e2e  # a real runc container, as root
async def test_gpu_required_is_refused_without_a_gpu(
    ctx: PipelineContext, busybox_container: BusyboxContainer, progress: Progress
) -> None:
    ctx.gpu = GpuDriver(None, None, "libcuda.so.1 cannot be loaded; no NVIDIA driver here")
    req = CheckpointRequest(
        checkpoint_id="ck-gpu",
        namespace="default",
        pod="counter",  # the pod the harness's containers are recorded in
        containers=[ContainerTarget(name="c", container_id=busybox_container.id)],
        gpu=GpuMode.required,
    )
    with pytest.raises(GpuRequiredError, match=r"gpu: required.*libcuda\.so\.1"):
        await run_checkpoint(req, ctx, progress)
    assert busybox_container.status() == "running"  # refused before anything was frozen


def _has_gpu() -> bool:
    return GpuDriver.load().available()


@pytest.mark.gpu
@pytest.mark.e2e  # CRIU and runc on the GPU machine, as root
@pytest.mark.skipif(not _has_gpu(), reason=GPU_REASON)
def test_gpu_check_script_on_a_real_gpu(criu_bin: str) -> None:
    import subprocess

    script = Path(__file__).resolve().parents[2] / "tools" / "gpu-check.sh"
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "GPU CHECK PASSED" in proc.stdout
