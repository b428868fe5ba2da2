"""Finding a container's writable layer in a mount table: the overlay at a mount point."""

from __future__ import annotations

from pathlib import Path

from ckpt.agent.capture import upperdir_from_mountinfo

SNAP = "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots"


def test_the_overlay_mounted_as_root() -> None:
    text = (
        f"1290 1100 0:321 / / rw,relatime master:1 - overlay overlay rw,lowerdir={SNAP}/3/fs:"
        f"{SNAP}/2/fs,upperdir={SNAP}/41/fs,workdir={SNAP}/41/work\n"
        "1291 1290 0:322 / /proc rw,nosuid - proc proc rw\n"
    )
    assert upperdir_from_mountinfo(text) == Path(f"{SNAP}/41/fs")


def test_escaped_paths() -> None:
    text = (
        "1 0 0:50 / / rw - overlay overlay "
        r"rw,lowerdir=/l,upperdir=/var/lib/my\040layers/a\054b/fs,workdir=/w" "\n"
    )
    assert upperdir_from_mountinfo(text) == Path("/var/lib/my layers/a,b/fs")


def test_a_folder_of_the_hosts_overlay_is_not_the_containers_layer() -> None:
    # A plain-folder rootfs on a host whose own root is an overlay: root field is the folder.
    text = (
        "1 0 0:50 /srv/bundles/c1/rootfs / rw - overlay overlay "
        "rw,lowerdir=/l,upperdir=/host/upper,workdir=/host/work\n"
    )
    assert upperdir_from_mountinfo(text) is None


def test_no_overlay_root() -> None:
    assert upperdir_from_mountinfo("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n") is None


def test_the_overlay_at_the_bundles_rootfs_and_the_topmost_one() -> None:
    rootfs = "/run/containerd/io.containerd.runtime.v2.task/k8s.io/c1/rootfs"
    text = (
        f"1 0 0:50 / {rootfs} rw - overlay overlay rw,lowerdir=/l,upperdir={SNAP}/1/fs,"
        "workdir=/w\n"
        f"2 0 0:51 / /other rw - overlay overlay rw,lowerdir=/l,upperdir={SNAP}/2/fs,"
        "workdir=/w\n"
        f"3 1 0:52 / {rootfs} rw - overlay overlay rw,lowerdir=/l,upperdir={SNAP}/3/fs,"
        "workdir=/w\n"
    )
    assert upperdir_from_mountinfo(text, rootfs) == Path(f"{SNAP}/3/fs")
    assert upperdir_from_mountinfo(text) is None
