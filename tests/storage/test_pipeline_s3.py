"""The agent's pipelines against a real S3 server: a real runc container (real CRIU) is
checkpointed straight into the bucket, encrypted, and restored from it as a new container
whose counter carries on."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import pyrage
import pytest
from pydantic import SecretStr

from ckpt.agent.criu import CriuInfo, criu_version
from ckpt.agent.gpu import GpuDriver
from ckpt.agent.models import CheckpointRequest, ContainerTarget, RestoreRequest
from ckpt.agent.pipeline import PipelineContext, PipelineError, run_checkpoint, run_restore
from ckpt.agent.runtimes.process import ProcessRuntime
from ckpt.agent.runtimes.runc import RuncRuntime
from ckpt.agent.store import FileStore
from ckpt.storage import crypto
from harness.containers import BusyboxContainer, Runc, pid_alive
from harness.fixtures import busybox_container, criu_bin, runc_cli
from harness.s3 import SeaweedS3

if TYPE_CHECKING:
    # The fixture's type (tests/storage/conftest.py); only for annotations, so the test
    # module never imports a module named `conftest`, which another folder has too.
    from conftest import MakeDest

pytestmark = pytest.mark.e2e
__all__ = ["busybox_container", "criu_bin", "runc_cli"]

CRIU_IMG_MAGIC = (0x54564319).to_bytes(4, "little")


@pytest.fixture
def ctx(criu_bin: str, runc_cli: Runc, tmp_path: Path) -> PipelineContext:
    return PipelineContext(
        runtimes={"runc": RuncRuntime(runc_cli.root, criu=criu_bin),
                  "process": ProcessRuntime(criu_bin)},
        default_runtime="runc",
        store=FileStore(tmp_path / "store"),
        work_dir=tmp_path / "work",
        node_name="test-node",
        criu=CriuInfo(path=criu_bin, version=criu_version(criu_bin)),
        gpu=GpuDriver.load(),
    )


def _noop(phase: str, done: int) -> None:
    return None


async def test_checkpoint_into_s3_encrypted_then_restore_from_it(
    ctx: PipelineContext, busybox_container: BusyboxContainer, runc_cli: Runc,
    s3: SeaweedS3, bucket: str, make_dest: MakeDest,
) -> None:
    c = busybox_container
    before = c.wait_counter(3)
    ident = pyrage.x25519.Identity.generate()
    dest = make_dest(recipients=[str(ident.to_public())])
    request = CheckpointRequest(
        checkpoint_id="ck-s3", namespace="default", pod="counter",
        containers=[ContainerTarget(name="c0", container_id=c.id)], destination=dest,
    )
    result = await run_checkpoint(request, ctx, _noop)

    key = "archives/default/ck-s3.tar.zst.age"
    assert result.restore_path == f"s3://{bucket}/{key}"
    assert s3.keys(bucket) == [key] and s3.pending_uploads(bucket) == []
    body = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    assert result.checksum == "sha256:" + hashlib.sha256(body).hexdigest()
    assert body.startswith(crypto.AGE_MAGIC) and CRIU_IMG_MAGIC not in body
    assert not any((ctx.store.root).rglob("*.tar*")), "a local copy was written"

    c.delete()
    final = c.counter()
    (c.rootfs / "state" / "counter").write_text("0\n")

    # Without the identity: refused clearly, nothing restored.
    with pytest.raises(PipelineError, match="no identity"):
        await run_restore(
            RestoreRequest(restore_path=result.restore_path, checksum=result.checksum,
                           container_id="never", source=dest),
            ctx, _noop,
        )
    assert await RuncRuntime(runc_cli.root).state("never") is None

    with_key = dest.model_copy(update={"identities": [SecretStr(str(ident))]})
    outcome = await run_restore(
        RestoreRequest(restore_path=result.restore_path, checksum=result.checksum,
                       container_id=c.id + "-r", source=with_key),
        ctx, _noop,
    )
    restored = BusyboxContainer(
        runc=runc_cli, id=outcome.container_id, bundle=c.bundle, owns_bundle=False
    )
    try:
        assert restored.status() == "running" and pid_alive(outcome.pid)
        first = restored.wait_counter(1, timeout=10)
        assert before < first <= final + 1, (before, first, final)
    finally:
        restored.delete()
    assert not any(ctx.work_dir.iterdir()), "scratch left behind"


async def test_restore_refuses_a_path_outside_the_location(
    ctx: PipelineContext, tmp_path: Path, make_dest: MakeDest
) -> None:
    host_file = tmp_path / "host-secret"
    host_file.write_bytes(b"not an archive")
    checksum = "sha256:" + hashlib.sha256(b"not an archive").hexdigest()
    for path, source in ((str(host_file), None), (host_file.as_uri(), None),
                         ("s3://elsewhere/x.tar.zst", make_dest())):
        with pytest.raises(PipelineError, match="not in location") as info:
            await run_restore(
                RestoreRequest(restore_path=path, checksum=checksum, container_id="x",
                               source=source),
                ctx, _noop,
            )
        assert str(tmp_path) not in str(info.value)
