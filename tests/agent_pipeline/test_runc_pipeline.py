"""The checkpoint pipeline against real runc containers and real CRIU; its archive restored
the way a Restore restores it (staged, then `runc restore` of the staged images)."""

from __future__ import annotations

import asyncio
import hashlib
import tarfile
import time
from pathlib import Path

import pytest
import zstandard
from pipeline_support import Progress, staged_images

from ckpt.agent.pipeline import PipelineContext, archive_name, run_checkpoint
from ckpt.agent.runtimes.base import DumpedContainer, ResolvedContainer
from ckpt.agent.runtimes.runc import RuncRuntime
from ckpt.agent.store import PARTIAL_SUFFIX, path_of
from ckpt.contract.agent import CheckpointRequest, ContainerTarget
from harness.containers import BusyboxContainer, Pod, Runc, pid_alive

# Needs runc and CRIU, as root.
pytestmark = pytest.mark.e2e


def request_for(cid: str, *containers: BusyboxContainer, **kw: object) -> CheckpointRequest:
    return CheckpointRequest(
        checkpoint_id=cid,
        namespace="default",
        pod="counter",
        containers=[
            ContainerTarget(name=f"c{i}", container_id=c.id) for i, c in enumerate(containers)
        ],
        **kw,
    )


def archive_members(path: Path) -> list[str]:
    with path.open("rb") as f:
        reader = zstandard.ZstdDecompressor().stream_reader(f)
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            return [m.name for m in tar]


async def test_leave_running_checkpoint_then_restore_continues(
    ctx: PipelineContext,
    busybox_container: BusyboxContainer,
    progress: Progress,
    tmp_path: Path,
) -> None:
    c = busybox_container
    before = c.wait_counter(5)

    result = await run_checkpoint(request_for("ck-leave", c), ctx, progress)

    # The container kept running and counting.
    assert c.status() == "running"
    after = c.counter()
    assert c.wait_counter(after + 3, timeout=10) >= after + 3

    archive = path_of(result.restore_path)
    assert archive.name == archive_name("ck-leave", "zstd") and archive.is_file()
    assert result.size_bytes == archive.stat().st_size
    assert result.checksum == "sha256:" + hashlib.sha256(archive.read_bytes()).hexdigest()
    assert result.runtime == "runc" and result.gpu == "none"
    assert result.platform.startswith("linux/") and result.criu_version.startswith("4.")
    assert result.timings.dump > 0 and result.timings.total >= result.timings.dump
    assert progress.phases == ["resolving", "freezing", "dumping", "storing", "done"]
    members = archive_members(archive)
    assert members[0] == "ckpt.json"
    assert any(m.startswith("containers/c0/") and m.endswith(".img") for m in members)
    assert not list(archive.parent.glob(".*partial")), "temporary file left behind"
    assert not any(ctx.work_dir.iterdir()), "work folder left behind"

    # Stop the original, blank the counter file, and restore the archive as a new container
    # the way a Restore does: the agent stages it, and `runc restore` (the ckpt-runc wrapper's
    # create) runs on the staged images. The in-memory counter carries on from the dump.
    c.delete()
    final = c.counter()
    (c.rootfs / "state" / "counter").write_text("0\n")
    images = staged_images(result, tmp_path / "restores", ctx.store.root, "c0")
    restored = c.restore_as(images, c.id + "-r")
    try:
        assert restored.status() == "running" and pid_alive(restored.pid)
        first = restored.wait_counter(1, timeout=10)
        assert before < first <= final + 1, (before, first, final)
        assert restored.wait_counter(first + 3, timeout=10) >= first + 3
    finally:
        restored.delete()


class RecordingRunc(RuncRuntime):
    """Real runc; notes, at each dump, the state and counter of every container of the pod."""

    def __init__(self, pod: Pod, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.pod = pod
        self.events: list[tuple[str, str, float]] = []
        self.snapshots: list[dict[str, tuple[str | None, int]]] = []

    async def freeze(self, container: ResolvedContainer) -> None:
        await super().freeze(container)
        self.events.append(("freeze", container.name, time.monotonic()))

    async def thaw(self, container: ResolvedContainer) -> None:
        self.events.append(("thaw", container.name, time.monotonic()))
        await super().thaw(container)

    async def dump(
        self, container: ResolvedContainer, work_dir: Path, *, leave_running: bool
    ) -> DumpedContainer:
        self.events.append(("dump", container.name, time.monotonic()))
        self.snapshots.append(
            {n: (c.status(), c.counter()) for n, c in self.pod.containers.items()}
        )
        return await super().dump(container, work_dir, leave_running=leave_running)


async def test_two_container_pod_is_one_cut(
    ctx: PipelineContext, runc_cli: Runc, criu_bin: str, tmp_path: Path, progress: Progress
) -> None:
    with Pod.launch(tmp_path / "pod", runc_cli, ("app", "sidecar")) as pod:
        for c in pod.containers.values():
            c.wait_counter(3)
        rt = RecordingRunc(pod, runc_cli.root, criu=criu_bin)
        ctx.runtimes = {"runc": rt}
        req = CheckpointRequest(
            checkpoint_id="ck-pod",
            namespace="default",
            # The pod the harness's containers are recorded in (harness.containers).
            pod="counter",
            containers=[
                ContainerTarget(name=n, container_id=c.id) for n, c in pod.containers.items()
            ],
        )
        result = await run_checkpoint(req, ctx, progress)

        kinds = [e[0] for e in rt.events]
        # Every container frozen before the first dump, every one thawed after the last.
        assert kinds == ["freeze", "freeze", "dump", "dump", "thaw", "thaw"], rt.events
        # At each dump both containers were paused and neither counter moved between the
        # first dump and the second: the two images are one consistent cut.
        first, second = rt.snapshots
        assert all(status == "paused" for status, _ in first.values()), first
        assert all(status == "paused" for status, _ in second.values()), second
        assert {n: v for n, (_, v) in first.items()} == {n: v for n, (_, v) in second.items()}
        # Both run again afterwards.
        for c in pod.containers.values():
            assert c.status() == "running"
            now = c.counter()
            c.wait_counter(now + 2, timeout=10)
        members = archive_members(path_of(result.restore_path))
        assert any(m.startswith("containers/app/") for m in members)
        assert any(m.startswith("containers/sidecar/") for m in members)
        assert result.containers == ["app", "sidecar"]


def _partials(folder: Path) -> list[Path]:
    """The store's temporary (partial) files, in any namespace folder: archives being
    written."""
    return list(folder.rglob(f".*{PARTIAL_SUFFIX}")) if folder.exists() else []


@pytest.mark.parametrize("cancel_in", ["dumping", "storing"])
async def test_cancelled_checkpoint_leaves_no_archive(
    ctx: PipelineContext,
    runc_cli: Runc,
    tmp_path: Path,
    cancel_in: str,
) -> None:
    # A ballast makes dump and store take long enough to be cancelled in the middle.
    with BusyboxContainer.launch(tmp_path / "b", runc_cli, ballast_mib=96) as c:
        # Cancel in the middle of the phase, not at its first instant: once CRIU has written
        # image files (dumping), or once the store has opened the temporary file the archive
        # streams into (storing). Files have no event to wait on: the watcher looks at them.
        work, store_dir = ctx.work_dir, ctx.store.root  # type: ignore[attr-defined]

        def midway() -> bool:
            if cancel_in == "dumping":
                return any(work.rglob("*.img"))
            return bool(_partials(store_dir))

        async def phase_under_way() -> None:
            while not midway():  # noqa: ASYNC110
                await asyncio.sleep(0.01)

        ctx.zstd_threads = 0  # slower compression: a wider window to cancel in
        ctx.zstd_level = 19 if cancel_in == "storing" else 1
        task = asyncio.create_task(
            run_checkpoint(request_for("ck-cancel", c), ctx, lambda phase, done: None)
        )
        await asyncio.wait_for(phase_under_way(), 120)
        assert not task.done(), "the checkpoint ended before it could be cancelled"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        # Neither the archive (under its namespace's folder) nor a temporary file is left.
        assert not list(store_dir.rglob(f"{archive_name('ck-cancel', 'zstd')}*"))
        assert not list(store_dir.rglob(".*")) if store_dir.exists() else True
        assert not any(ctx.work_dir.iterdir())
        # Thawed again, and still counting.
        assert c.status() == "running"
        now = c.counter()
        assert c.wait_counter(now + 2, timeout=10) >= now + 2
