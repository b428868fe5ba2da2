"""Where the agent reads a container's writable layer from: the mount table and namespace of
the container's runtime shim (its init's parent), which need not be PID 1's, at the bundle's
rootfs; never the container's own mountinfo. Pure logic on a fake /proc; no root."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from ckpt.agent import capture

SNAP = "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots"
BUNDLE = Path("/run/containerd/io.containerd.runtime.v2.task/k8s.io/c0ffee")


def _overlay(mount_point: str, upper: str) -> str:
    return (f"1 0 0:50 / {mount_point} rw - overlay overlay "
            f"rw,lowerdir=/l1,upperdir={upper},workdir=/w\n")


def _proc(tmp: Path, pid: int, ppid: int, upper: Path | None = None,
          own: str | None = None) -> Path:
    """A fake /proc: `pid` (the container's init; `own` its own mountinfo) under `ppid` (the
    shim, whose mount table has the overlay at the bundle's rootfs with `upper`)."""
    proc = tmp / "proc"
    folder = proc / str(pid)
    folder.mkdir(parents=True)
    (folder / "status").write_text(f"Name:\tsh\nPid:\t{pid}\nPPid:\t{ppid}\n")
    (folder / "mountinfo").write_text(own or "")
    shim = proc / str(max(ppid, 1))
    shim.mkdir(parents=True, exist_ok=True)
    if upper is not None:
        (shim / "mountinfo").write_text(_overlay(str(BUNDLE / "rootfs"), str(upper)))
    return proc


def _bundle(tmp: Path) -> Path:
    """The bundle as the agent reaches it (its config.json names the rootfs)."""
    bundle = tmp / "bundle"
    bundle.mkdir(exist_ok=True)
    (bundle / "config.json").write_text(json.dumps({"root": {"path": f"{BUNDLE}/rootfs"}}))
    return bundle


def test_the_runtime_root_is_the_parents_root(tmp_path: Path) -> None:
    proc = _proc(tmp_path, 4242, 4200)
    assert capture.runtime_root(4242, Path("/host"), proc) == proc / "4200" / "root"


@pytest.mark.parametrize("ppid", [0, 1])
def test_a_parent_that_is_no_shim_falls_back_to_the_host_root(tmp_path: Path, ppid: int) -> None:
    proc = _proc(tmp_path, 4242, ppid)
    assert capture.runtime_root(4242, Path("/host"), proc) == Path("/host")


def test_no_pid_or_no_status_falls_back_to_the_host_root(tmp_path: Path) -> None:
    assert capture.runtime_root(None, Path("/host"), tmp_path) == Path("/host")
    assert capture.runtime_root(7, Path("/host"), tmp_path) == Path("/host")


def test_the_layer_is_read_through_the_shims_namespace(tmp_path: Path) -> None:
    # The upperdir exists only under the shim's root (as in a node's private namespace).
    upper = f"{SNAP}/41/fs"
    layer = tmp_path / "proc" / "4200" / "root" / upper.lstrip("/")
    (layer / "tmp").mkdir(parents=True)
    (layer / "tmp" / "marker").write_text("x\n")
    proc = _proc(tmp_path, 4242, 4200, upper=Path(upper))
    section = capture.capture_pod(
        None, [capture.CapturedContainer("app", 4242, _bundle(tmp_path))], tmp_path / "out",
        host_root=tmp_path / "empty-host", proc=proc,
    )
    assert section["containers"]["app"]["files"] == 2  # /tmp and /tmp/marker


def test_the_containers_own_mountinfo_is_not_believed(tmp_path: Path) -> None:
    """Attack: a container able to make mount namespaces mounts an overlay at its `/` whose
    upperdir names another container's layer; the runtime's table still names its own."""
    mine, theirs = f"{SNAP}/41/fs", f"{SNAP}/7/fs"
    root = tmp_path / "proc" / "4200" / "root"
    for upper, file in ((mine, "mine"), (theirs, "victims-secret")):
        (root / upper.lstrip("/")).mkdir(parents=True)
        (root / upper.lstrip("/") / file).write_text("x\n")
    proc = _proc(tmp_path, 4242, 4200, upper=Path(mine), own=_overlay("/", theirs))
    section = capture.capture_container(
        "app", 4242, tmp_path / "out", host_root=root, proc=proc, bundle=_bundle(tmp_path),
    )
    assert section["files"] == 1
    with tarfile.open(tmp_path / "out" / "rootfs-diff.tar") as tar:
        assert tar.getnames() == ["mine"]


def test_a_layer_outside_the_snapshot_folders_is_refused(tmp_path: Path) -> None:
    proc = _proc(tmp_path, 4242, 4200, upper=Path("/proc/1/root/etc"))
    with pytest.raises(PermissionError, match="not under the runtime's snapshot folders"):
        capture.capture_container("app", 4242, tmp_path / "out", host_root=tmp_path,
                                  proc=proc, bundle=_bundle(tmp_path))


def test_an_unreachable_upperdir_is_refused_not_captured_empty(tmp_path: Path) -> None:
    proc = _proc(tmp_path, 4242, 1, upper=Path(f"{SNAP}/41/fs"))
    with pytest.raises(FileNotFoundError, match="upperdir is not reachable"):
        capture.capture_container(
            "app", 4242, tmp_path / "out", host_root=tmp_path / "empty-host", proc=proc,
            bundle=_bundle(tmp_path),
        )


def test_no_bundle_or_no_pid_captures_nothing_and_says_so(tmp_path: Path) -> None:
    for pid, bundle in ((None, _bundle(tmp_path)), (4242, None)):
        facts = capture.capture_container("app", pid, tmp_path / "out", host_root=tmp_path,
                                          bundle=bundle)
        assert facts["rootfsDiff"] is None and facts["note"] == "runtime exposes no rootfs"
