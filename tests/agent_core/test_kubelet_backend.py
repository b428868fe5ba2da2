"""The kubelet backend against a local HTTPS kubelet that makes real CRIU archives."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from agent_core_support import Progress
from fake_kubelet import fake_kubelet

from ckpt.agent.models import CheckpointRequest, ContainerTarget, RestoreRequest
from ckpt.agent.pipeline import PipelineContext, PipelineError, run_checkpoint, run_restore
from ckpt.agent.runtimes.kubelet import KubeletRuntime
from ckpt.agent.store import path_of
from harness.containers import BusyboxContainer, Runc

# Needs runc and CRIU, as root.
pytestmark = pytest.mark.e2e

TOKEN = "operator-sa-token"


async def test_kubelet_checkpoint_and_runc_restore(
    ctx: PipelineContext,
    busybox_container: BusyboxContainer,
    runc_cli: Runc,
    tmp_path: Path,
    progress: Progress,
) -> None:
    c = busybox_container
    before = c.wait_counter(3)
    folder = tmp_path / "kubelet"
    folder.mkdir()
    with fake_kubelet(folder, TOKEN, {("default", "web", "app"): c}) as (url, ca, out_dir):
        kubelet = KubeletRuntime(
            url,
            token=TOKEN,
            verify=ssl.create_default_context(cafile=str(ca)),
            restore_runtime=ctx.runtimes["runc"],
        )
        ctx.runtimes = {**ctx.runtimes, "kubelet": kubelet}
        req = CheckpointRequest(
            checkpoint_id="ck-kubelet",
            namespace="default",
            pod="web",
            containers=[ContainerTarget(name="app", container_id=c.id)],
        )
        result = await run_checkpoint(req, ctx, progress, runtime="kubelet")
        assert result.runtime == "kubelet"
        assert path_of(result.restore_path).is_file()
        assert not list(out_dir.iterdir()), "the kubelet's tar should be removed once archived"
        assert c.status() == "running"  # the kubelet API leaves containers running

        bad = KubeletRuntime(url, token="forged", verify=ssl.create_default_context(cafile=str(ca)))
        ctx.runtimes = {**ctx.runtimes, "kubelet-bad": bad}
        bad.name = "kubelet-bad"
        with pytest.raises(PipelineError, match="HTTP 401"):
            await run_checkpoint(
                req.model_copy(update={"checkpoint_id": "ck-bad"}), ctx, progress,
                runtime="kubelet-bad",
            )

    # Restore through runc from the kubelet archive's checkpoint/ folder, into the same bundle.
    c.delete()
    final = c.counter()
    (c.rootfs / "state" / "counter").write_text("0\n")
    outcome = await run_restore(
        RestoreRequest(
            restore_path=result.restore_path,
            checksum=result.checksum,
            container_id=c.id + "-k",
            bundle=str(c.bundle),
        ),
        ctx,
        progress,
    )
    restored = BusyboxContainer(
        runc=runc_cli, id=outcome.container_id, bundle=c.bundle, owns_bundle=False
    )
    try:
        first = restored.wait_counter(1, timeout=10)
        assert before < first <= final + 1
        assert outcome.runtime == "runc"
    finally:
        restored.delete()
