"""The GPU path end to end: a CUDA process checkpointed through the agent's process backend
and gpu.py (lock + checkpoint, CRIU dump, store), restored the way a Restore restores it
(the agent's staging, CRIU restore of the staged images, CUDA restore + unlock as the agent
does for the ckpt-runc wrapper's GPU hook), then its GPU memory pattern verified and its
counter seen running. Prints timings and "GPU CHECK PASSED". Run through tools/gpu-check.sh."""
# A script with one task: blocking waits on the worker are fine here.
# ruff: noqa: ASYNC220, ASYNC221, ASYNC251

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ckpt.agent.criu import find_criu
from ckpt.agent.gpu import GpuDriver
from ckpt.agent.pipeline import PipelineContext, run_checkpoint
from ckpt.agent.runtimes.base import process_tree
from ckpt.agent.runtimes.process import DEFAULT_ARGS, ProcessRuntime
from ckpt.agent.staging import stage_archive
from ckpt.agent.store import FileStore
from ckpt.contract.agent import CheckpointRequest, ContainerTarget, GpuMode, StageRequest

HERE = Path(__file__).resolve().parent


def counter(state: Path) -> int:
    try:
        return int((state / "counter").read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def wait_for(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"FAILED: timed out waiting for {what}")
        time.sleep(0.1)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--criu", default=None)
    a = ap.parse_args()

    gpu = GpuDriver.load()
    if not gpu.available():
        raise SystemExit(f"FAILED: {gpu.unavailable_reason()}")
    print(f"GPUs: {gpu.models()}, driver {gpu.driver_version()}")
    criu = find_criu(a.criu)
    print(f"CRIU {criu.version} at {criu.path}")

    work = Path(tempfile.mkdtemp(prefix="ckpt-gpu-check-"))
    state = work / "state"
    state.mkdir()
    worker = subprocess.Popen(
        [sys.executable, str(HERE / "pattern_worker.py"),
         "--mib", str(a.mib), "--state", str(state)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    restored_pid = None
    try:
        wait_for(lambda: (state / "ready").exists() or worker.poll() is not None, 300, "worker")
        if worker.poll() is not None:
            raise SystemExit(f"FAILED: the CUDA worker exited with {worker.returncode}")
        wait_for(lambda: counter(state) >= 5, 60, "worker counter")
        ctx = PipelineContext(
            runtimes={"process": ProcessRuntime(criu.path)},
            default_runtime="process",
            store=FileStore(work / "store"),
            work_dir=work / "work",
            node_name=os.uname().nodename,
            criu=criu,
            gpu=gpu,
        )

        def progress(phase: str, done: int) -> None:
            print(f"  {phase} {done}", flush=True)

        req = CheckpointRequest(
            checkpoint_id="gpu-check", namespace="local", pod="gpu-check",
            containers=[ContainerTarget(name="worker", container_id=str(worker.pid))],
            leave_running=False, gpu=GpuMode.required,
        )
        t = time.monotonic()
        result = await run_checkpoint(req, ctx, progress)
        print(f"checkpoint: {time.monotonic() - t:.2f}s, {result.size_bytes / 1e9:.2f} GB, "
              f"gpu={result.gpu}, timings={result.timings.model_dump()}")
        worker.wait(timeout=30)  # CRIU ended it; reap it so its pid is free for the restore
        stopped = counter(state)
        time.sleep(1)
        if counter(state) != stopped:
            raise SystemExit("FAILED: the counter moved while the process was checkpointed")

        t = time.monotonic()
        staged = stage_archive(
            StageRequest(restore_id="gpu-check", namespace="local", pod_name="gpu-check",
                         source=result.restore_path, checksum=result.checksum),
            work / "restores", archive_root=ctx.store.root,
        )
        if not staged.gpu:
            raise SystemExit("FAILED: the staged restore does not say it holds GPU state")
        images = Path(staged.path) / "containers" / "worker" / "images"
        pidfile = work / "restored.pid"
        # The options the process backend dumped with (a shell job's tree needs them back).
        restored = subprocess.run(
            [criu.path, "restore", "-D", str(images), "-W", str(work), "-o", "restore.log",
             "--restore-detached", "--pidfile", str(pidfile), *DEFAULT_ARGS],
            capture_output=True, text=True, timeout=600, check=False,
        )
        if restored.returncode != 0:
            tail = (work / "restore.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"FAILED: criu restore exited with {restored.returncode}\n{tail}")
        restored_pid = int(pidfile.read_text())
        t_gpu = time.monotonic()
        gpu_pids = await gpu.resume_checkpointed(process_tree(restored_pid))
        print(f"restore: {time.monotonic() - t:.2f}s (staging {staged.timings.total} ms, "
              f"CUDA restore + unlock {time.monotonic() - t_gpu:.2f}s), pid {restored_pid}, "
              f"gpu pids {gpu_pids}")
        if not gpu_pids:
            raise SystemExit("FAILED: no CUDA process was restored")
        wait_for(lambda: counter(state) >= stopped + 5, 60, "the restored counter")
        os.kill(restored_pid, signal.SIGUSR1)
        wait_for(lambda: (state / "verify").exists(), 120, "pattern verification")
        verdict = (state / "verify").read_text().strip()
        print(f"verify: {verdict}; counter {stopped} -> {counter(state)}")
        if not verdict.startswith("OK"):
            raise SystemExit(f"FAILED: GPU memory pattern differs after restore ({verdict})")
        print("GPU CHECK PASSED")
    finally:
        for pid in (restored_pid, worker.pid):
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        if worker.returncode is None:
            worker.kill()
            worker.wait()


if __name__ == "__main__":
    asyncio.run(main())
