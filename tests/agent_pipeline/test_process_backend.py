"""The process backend: CRIU directly on a plain host process tree, its archive staged and
restored with the CRIU CLI."""
# The test drives a child process with plain blocking calls on purpose: it is the only task.
# ruff: noqa: ASYNC220, ASYNC221, ASYNC251

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pipeline_support import Progress, staged_images

from ckpt.agent.pipeline import PipelineContext, run_checkpoint
from ckpt.agent.runtimes.process import DEFAULT_ARGS
from ckpt.contract.agent import CheckpointRequest, ContainerTarget
from harness.containers import pid_alive

# Needs CRIU on real processes, as root.
pytestmark = pytest.mark.e2e


def read_counter(path: Path) -> int:
    for _ in range(50):
        text = path.read_text().strip() if path.exists() else ""
        if text:
            return int(text)
        time.sleep(0.005)
    return 0


def wait_counter(path: Path, at_least: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while (v := read_counter(path)) < at_least:
        assert time.monotonic() < deadline, f"counter at {v}, wanted {at_least}"
        time.sleep(0.05)
    return v


async def test_process_tree_dump_and_restore(
    ctx: PipelineContext, criu_bin: str, tmp_path: Path, progress: Progress
) -> None:
    counter = tmp_path / "counter"
    # One process, no children: a shell's `sleep` children would be orphaned by the dump and
    # wait for init to reap them, holding pids the restore needs back.
    script = (
        "import time, pathlib\n"
        f"p = pathlib.Path({str(counter)!r}); i = 0\n"
        "while True:\n"
        "    i += 1; p.write_text(str(i)); time.sleep(0.1)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    # As an agent configured for process trees (CKPT_AGENT_RUNTIME=process) is.
    ctx.default_runtime = "process"
    restored_pid = None
    try:
        wait_counter(counter, 5)
        req = CheckpointRequest(
            checkpoint_id="ck-proc",
            namespace="default",
            pod="proc",
            containers=[ContainerTarget(name="tree", container_id=str(proc.pid))],
            leave_running=False,
        )
        result = await run_checkpoint(req, ctx, progress)
        assert result.runtime == "process"
        proc.wait(timeout=10)  # CRIU ended the tree; reap it so its pid is free again
        stopped = read_counter(counter)
        time.sleep(0.6)
        assert read_counter(counter) == stopped

        # Staged as for a Restore, then restored with the options the dump used (a shell
        # job's tree needs --shell-job back).
        images = staged_images(result, tmp_path / "restores", ctx.store.root, "tree")
        pidfile = tmp_path / "restored.pid"
        restored = subprocess.run(
            [criu_bin, "restore", "-D", str(images), "-W", str(tmp_path), "-o", "restore.log",
             "--restore-detached", "--pidfile", str(pidfile), *DEFAULT_ARGS],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert restored.returncode == 0, (tmp_path / "restore.log").read_text()[-2000:]
        restored_pid = int(pidfile.read_text())
        assert restored_pid == proc.pid  # CRIU gives the tree its pids back
        assert pid_alive(restored_pid)
        assert wait_counter(counter, stopped + 3) >= stopped + 3
    finally:
        for pid in (restored_pid, proc.pid):
            if pid and pid_alive(pid):
                os.killpg(pid, signal.SIGKILL)
        if proc.returncode is None:
            proc.kill()
            proc.wait()
