"""Staging a checkpoint for a Restore, from archives built the way the checkpoint pipeline
builds them (CRIU image folders + captured layer diff, emptyDir and pod template), on real
files: whiteouts are character devices 0:0 and opaque folders carry trusted.* xattrs, so this
needs root."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from pipeline_support import Progress

from ckpt.agent import capture
from ckpt.agent.pipeline import PipelineContext, container_entry, run_checkpoint
from ckpt.agent.runtimes.base import ContainerRef, DumpedContainer, ResolvedContainer
from ckpt.agent.slots import FairSlots
from ckpt.agent.staging import (
    StagingCaps,
    StagingError,
    Stagings,
    read_result,
    stage_archive,
    staged_bytes,
)
from ckpt.contract.agent import CheckpointRequest, ContainerTarget, JobState, StageRequest
from ckpt.operator.podtemplate import pod_template
from ckpt.storage import archive
from harness.containers import BusyboxContainer

pytestmark = pytest.mark.e2e

RESTORE_ID = "7d9f0c1e-aaaa-bbbb-cccc-000011112222"


def _upperdir(root: Path) -> Path:
    """An overlay upperdir as a container leaves it: new and changed files, a whiteout, an
    opaque folder, a symlink, a hard link, a setuid file owned by another user."""
    upper = root / "upper"
    (upper / "tmp").mkdir(parents=True)
    (upper / "tmp" / "marker").write_text("written by the original container\n")
    os.chmod(upper / "tmp", 0o1777)  # noqa: S103 - a container's /tmp, as it is
    (upper / "etc").mkdir()
    (upper / "etc" / "app.conf").write_text("x=1\n")
    os.chown(upper / "etc" / "app.conf", 1234, 5678)
    os.chmod(upper / "etc" / "app.conf", 0o4750)  # noqa: S103 - set-id bits must travel
    os.utime(upper / "etc" / "app.conf", (1_600_000_000, 1_600_000_000))
    os.symlink("/etc/app.conf", upper / "etc" / "link")
    os.link(upper / "tmp" / "marker", upper / "tmp" / "marker.hard")
    os.mknod(upper / "etc" / "removed", stat.S_IFCHR | 0o000, os.makedev(0, 0))
    (upper / "var" / "cache").mkdir(parents=True)
    os.setxattr(upper / "var" / "cache", "trusted.overlay.opaque", b"y")
    (upper / "var" / "cache" / "fresh").write_text("only this survives in cache\n")
    return upper


def _archive(tmp: Path, *, gpu: bool = False) -> tuple[str, str, Path]:
    """Writes an archive into a node-local store folder; returns (url, checksum, store)."""
    images = tmp / "images"
    images.mkdir()
    (images / "inventory.img").write_bytes(b"\x01" * 4096)
    (images / "pages-1.img").write_bytes(os.urandom(1 << 16))
    bundle = tmp / "bundle"
    bundle.mkdir()
    empty = tmp / "kubelet" / "pods" / "u1" / "volumes" / "kubernetes.io~empty-dir" / "cache"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "data.bin").write_bytes(b"emptydir data")
    (bundle / "config.json").write_text(json.dumps({"mounts": [
        {"destination": "/cache", "type": "bind", "source": str(empty)},
        {"destination": "/etc/hosts", "type": "bind", "source": "/var/lib/kubelet/hosts"},
    ]}))
    upper = _upperdir(tmp)
    # The runtime's mount table (no parent known: PID 1's), with the overlay at the rootfs.
    mountinfo = tmp / "proc" / "1" / "mountinfo"
    mountinfo.parent.mkdir(parents=True)
    mountinfo.write_text(
        f"1 0 0:50 / {bundle}/rootfs rw,relatime master:1 - overlay overlay "
        f"rw,lowerdir=/l1:/l2,upperdir={upper},workdir={tmp}/work\n"
        "2 1 0:51 / /proc rw - proc proc rw\n"
    )
    template = pod_template({
        "metadata": {"name": "counter", "uid": "u1", "labels": {"app": "c"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "busybox"}]},
        "status": {"containerStatuses": [
            {"name": "app", "imageID": "docker.io/b@sha256:" + "1" * 64}
        ]},
    })
    section = capture.capture_pod(
        template, [capture.CapturedContainer("app", 4242, bundle)], tmp / "capture",
        host_root=Path("/"), proc=tmp / "proc", snapshot_roots=(tmp,),
    )
    ref = ContainerRef(name="app", container_id="c1", namespace="demo", pod="counter")
    dumped = [DumpedContainer(container=ResolvedContainer(ref=ref, pid=4242), images_dir=images)]
    metadata = archive.ArchiveMetadata(
        checkpoint_id="42", namespace="demo", pod="counter", runtime="runc",
        cuda_pids=[4242] if gpu else [], containers=[container_entry(d) for d in dumped],
        capture=section,
    )
    store = tmp / "store"
    (store / "demo").mkdir(parents=True)
    path = store / "demo" / "42.tar.zst"
    with path.open("wb") as sink:
        digest, _ = archive.write_archive(
            sink, dumped, metadata, extra_files=capture.members_of(tmp / "capture")
        )
    return path.as_uri(), f"sha256:{digest}", store


def _request(url: str, checksum: str) -> StageRequest:
    return StageRequest(
        restore_id=RESTORE_ID, namespace="demo", pod_name="counter-restored",
        checkpoint_id="42", source=url, checksum=checksum,
    )


def _tree(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        out[path.relative_to(root).as_posix()] = (
            stat.filemode(st.st_mode), st.st_uid, st.st_gid,
            os.readlink(path) if path.is_symlink() else None,
        )
    return out


def test_stages_the_layout_the_wrapper_reads(tmp_path: Path) -> None:
    url, checksum, store = _archive(tmp_path)
    restores = tmp_path / "restores"
    result = stage_archive(_request(url, checksum), restores, archive_root=store)

    staged = restores / RESTORE_ID
    assert result.path == str(staged) and result.containers == ["app"]
    assert stat.S_IMODE(staged.stat().st_mode) == 0o700
    assert stat.S_IMODE(restores.stat().st_mode) == 0o700
    assert json.loads((staged / "restore.json").read_text()) == {
        "version": 1, "restoreId": RESTORE_ID, "namespace": "demo",
        "podName": "counter-restored", "tcpClose": True,
        "containers": {"app": {
            "images": "containers/app/images", "rootfsDiff": "containers/app/rootfs-diff",
            "deleted": "containers/app/deleted", "gpu": False,
        }},
        "emptyDirs": {"cache": "volumes/cache"},
    }
    images = staged / "containers" / "app" / "images"
    assert sorted(p.name for p in images.iterdir()) == ["inventory.img", "pages-1.img"]
    assert (images / "inventory.img").read_bytes() == b"\x01" * 4096

    diff = staged / "containers" / "app" / "rootfs-diff"
    assert (diff / "tmp" / "marker").read_text() == "written by the original container\n"
    tree = _tree(diff)
    assert tree["tmp"][0] == "drwxrwxrwt"
    assert tree["etc/app.conf"] == ("-rwsr-x---", 1234, 5678, None)
    assert tree["etc/link"][3] == "/etc/app.conf"
    assert (diff / "etc" / "app.conf").stat().st_mtime == 1_600_000_000
    assert (diff / "tmp" / "marker").stat().st_ino == (diff / "tmp" / "marker.hard").stat().st_ino
    assert "etc/removed" not in tree
    assert (diff / "var" / "cache" / "fresh").exists()
    deleted = (staged / "containers" / "app" / "deleted").read_bytes().split(b"\0")
    assert sorted(p for p in deleted if p) == [b"etc/removed", b"var/cache"]
    assert (staged / "volumes" / "cache" / "sub" / "data.bin").read_bytes() == b"emptydir data"
    # Nothing else: no leftovers of the fetch or the unpacking.
    assert sorted(p.name for p in staged.iterdir()) == [
        "containers", "restore.json", "stage.json", "volumes"
    ]
    assert [p.name for p in restores.iterdir()] == [RESTORE_ID]
    assert read_result(staged) == result
    assert result.pod_template is not None
    assert result.pod_template["spec"]["containers"][0]["image"] == "docker.io/b@sha256:" + "1" * 64
    assert "nodeName" not in result.pod_template["spec"]
    assert result.timings.total >= result.timings.fetch


def test_checksum_mismatch_leaves_nothing(tmp_path: Path) -> None:
    url, _checksum, store = _archive(tmp_path)
    wrong = "sha256:" + hashlib.sha256(b"another archive").hexdigest()
    restores = tmp_path / "restores"
    with pytest.raises(StagingError) as failed:
        stage_archive(_request(url, wrong), restores, archive_root=store)
    assert failed.value.code == "checksum_mismatch"
    assert list(restores.iterdir()) == []


def test_a_restore_past_the_nodes_staging_cap_is_refused_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    url, checksum, store = _archive(tmp_path)
    restores = tmp_path / "restores"
    stage_archive(_request(url, checksum), restores, archive_root=store)
    held = staged_bytes(restores)
    assert held > 0
    # Room for one and a half: the node's second restore of the same archive does not fit.
    caps = StagingCaps(max_bytes=held + held // 2, reserve_bytes=0)
    second = _request(url, checksum).model_copy(
        update={"restore_id": "7d9f0c1e-aaaa-bbbb-cccc-000033334444"}
    )
    with pytest.raises(StagingError) as refused:
        stage_archive(second, restores, archive_root=store, caps=caps)
    assert refused.value.code == "too_large"
    assert "CKPT_AGENT_STAGING_MAX_BYTES" in str(refused.value)
    assert [p.name for p in restores.iterdir()] == [RESTORE_ID]
    # Its own earlier files do not count against a restore: with room for one, it fits.
    assert staged_bytes(restores, but=RESTORE_ID) == 0
    again = StagingCaps(max_bytes=held + held // 2, reserve_bytes=0)
    assert again.limits(restores, RESTORE_ID).max_bytes == held + held // 2


def test_tampered_archive_is_refused(tmp_path: Path) -> None:
    url, checksum, store = _archive(tmp_path)
    path = store / "demo" / "42.tar.zst"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    restores = tmp_path / "restores"
    with pytest.raises(StagingError) as failed:
        stage_archive(_request(url, checksum), restores, archive_root=store)
    assert failed.value.code == "checksum_mismatch"
    assert list(restores.iterdir()) == []


def test_archive_outside_the_location_is_refused(tmp_path: Path) -> None:
    url, checksum, _store = _archive(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(StagingError) as failed:
        stage_archive(_request(url, checksum), tmp_path / "restores", archive_root=elsewhere)
    assert failed.value.code in ("bad_source", "not_found")


def test_missing_archive_is_not_found(tmp_path: Path) -> None:
    url, checksum, store = _archive(tmp_path)
    (store / "demo" / "42.tar.zst").unlink()
    with pytest.raises(StagingError) as failed:
        stage_archive(_request(url, checksum), tmp_path / "restores", archive_root=store)
    assert failed.value.code == "not_found"


async def test_jobs_are_idempotent_and_removed_on_request(tmp_path: Path) -> None:
    url, checksum, store = _archive(tmp_path, gpu=True)
    restores = tmp_path / "restores"
    stagings = Stagings(restores, FairSlots(2), archive_root=store)
    request = _request(url, checksum)
    first = stagings.submit(request)
    assert first.state is JobState.running
    assert stagings.submit(request).restore_id == RESTORE_ID
    job = first
    while job.state is JobState.running:
        job = await stagings.watch(RESTORE_ID, job.phase, 5)
    assert job.state is JobState.succeeded, job.error
    assert job.result is not None and job.result.gpu is True
    assert json.loads((restores / RESTORE_ID / "restore.json").read_text())[
        "containers"]["app"]["gpu"] is True

    # A restarted agent answers the same request from the staged folder.
    again = Stagings(restores, FairSlots(2), archive_root=store)
    answered = again.submit(request)
    assert (answered.state, answered.result) == (JobState.succeeded, job.result)
    assert again.get(RESTORE_ID).state is JobState.succeeded

    assert await again.remove(RESTORE_ID) is True
    assert list(restores.iterdir()) == []
    assert await again.remove(RESTORE_ID) is False


async def test_failed_job_says_why(tmp_path: Path) -> None:
    url, _, store = _archive(tmp_path)
    stagings = Stagings(tmp_path / "restores", FairSlots(1), archive_root=store)
    job = stagings.submit(_request(url, "sha256:" + "0" * 64))
    while job.state is JobState.running:
        job = await stagings.watch(RESTORE_ID, job.phase, 5)
    assert (job.state, job.error_code) == (JobState.failed, "checksum_mismatch")
    assert not job.retryable


async def test_a_real_runc_checkpoint_stages_for_the_wrapper(
    ctx: PipelineContext, busybox_container: BusyboxContainer, progress: Progress,
    tmp_path: Path,
) -> None:
    """The checkpoint pipeline's archive (real runc + CRIU, with the pod template the operator
    sends) stages into the layout the ckpt-runc wrapper reads."""
    c = busybox_container
    c.wait_counter(3)
    template = {"metadata": {"labels": {"app": "counter"}},
                "spec": {"containers": [{"name": "c0", "image": "busybox"}]}}
    result = await run_checkpoint(CheckpointRequest(
        checkpoint_id="ck-stage", namespace="default", pod="counter",
        containers=[ContainerTarget(name="c0", container_id=c.id)], pod_template=template,
    ), ctx, progress)

    staged = stage_archive(
        StageRequest(restore_id="r-real", namespace="default", pod_name="counter-restored",
                     checkpoint_id="ck-stage", source=result.restore_path,
                     checksum=result.checksum),
        tmp_path / "restores", archive_root=ctx.store.root,
    )
    folder = tmp_path / "restores" / "r-real"
    assert staged.containers == ["c0"] and staged.pod_template == template
    images = folder / "containers" / "c0" / "images"
    assert (images / "inventory.img").is_file()
    assert any(p.name.startswith("pages-") for p in images.iterdir())
    # The harness's bundle has a plain folder as rootfs (no overlay): an empty diff.
    assert list((folder / "containers" / "c0" / "rootfs-diff").iterdir()) == []
    assert (folder / "containers" / "c0" / "deleted").read_bytes() == b""
    restore = json.loads((folder / "restore.json").read_text())
    assert restore["containers"]["c0"]["images"] == "containers/c0/images"
