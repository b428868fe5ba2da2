"""The agent against a real S3 server: a real runc container (real CRIU) is checkpointed
straight into the bucket, encrypted, staged from it as for a Restore, and restored from the
staged images as a new container whose counter carries on."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import pyrage
import pytest
from pydantic import SecretStr

from ckpt.agent.criu import CriuInfo, criu_version
from ckpt.agent.gpu import GpuDriver
from ckpt.agent.pipeline import PipelineContext, run_checkpoint
from ckpt.agent.runtimes.process import ProcessRuntime
from ckpt.agent.runtimes.runc import RuncRuntime
from ckpt.agent.staging import StagingError, stage_archive
from ckpt.agent.store import FileStore
from ckpt.apis.storagelocation import Destination
from ckpt.contract.agent import CheckpointRequest, ContainerTarget, StageRequest, StageResult
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
    ctx: PipelineContext, busybox_container: BusyboxContainer, s3: SeaweedS3, bucket: str,
    make_dest: MakeDest, tmp_path: Path,
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

    restores = tmp_path / "restores"

    def stage(location: Destination) -> StageResult:
        return stage_archive(
            StageRequest(restore_id="r-s3", namespace="default", pod_name="counter-r",
                         source=result.restore_path, checksum=result.checksum,
                         location=location),
            restores, archive_root=ctx.store.root,
        )

    # Without the identity: refused clearly, nothing staged.
    with pytest.raises(StagingError, match="no identity"):
        stage(dest)
    assert list(restores.iterdir()) == []

    # With it: staged, and `runc restore` of the staged images (what the ckpt-runc wrapper
    # runs) brings the counter back from memory.
    staged = stage(dest.model_copy(update={"identities": [SecretStr(str(ident))]}))
    assert [p.name for p in restores.iterdir()] == ["r-s3"], "a partial folder was left"
    restored = c.restore_as(Path(staged.path) / "containers" / "c0" / "images", c.id + "-r")
    try:
        assert restored.status() == "running" and pid_alive(restored.pid)
        first = restored.wait_counter(1, timeout=10)
        assert before < first <= final + 1, (before, first, final)
    finally:
        restored.delete()


async def test_staging_refuses_a_path_outside_the_location(
    ctx: PipelineContext, tmp_path: Path, make_dest: MakeDest
) -> None:
    host_file = tmp_path / "host-secret"
    host_file.write_bytes(b"not an archive")
    checksum = "sha256:" + hashlib.sha256(b"not an archive").hexdigest()
    for path, location in ((str(host_file), None), (host_file.as_uri(), None),
                           ("s3://elsewhere/x.tar.zst", make_dest())):
        with pytest.raises(StagingError, match="not in location") as info:
            stage_archive(
                StageRequest(restore_id="r-x", namespace="default", pod_name="p", source=path,
                             checksum=checksum, location=location),
                tmp_path / "restores", archive_root=ctx.store.root,
            )
        assert info.value.code == "bad_source"
        assert str(tmp_path) not in str(info.value)
