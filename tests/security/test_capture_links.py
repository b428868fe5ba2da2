"""Attack: a container of the pod that is not frozen swaps captured files and folders for
symlinks to node files in a tight loop, hoping the root agent's capture follows one into the
tenant's archive; and an archive whose members would write through links when staged.

The capture opens every component relative to its parent's descriptor with O_NOFOLLOW and
takes type, size and content from the opened descriptor, so no timing wins. Before that fix
(path checks, then `tarfile.add` by path) the race below put the secret into the tar within a
few hundred captures on this machine.
"""

from __future__ import annotations

import ctypes
import io
import os
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ckpt.agent.capture import CaptureBudget, CaptureTooLarge, tar_tree, write_layer_diff
from ckpt.agent.staging import StagingError, untar_captured

SECRET = b"NODE-SECRET-" + b"s" * 4000


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    node = tmp_path / "node"
    node.mkdir()
    (node / "agent.key").write_bytes(SECRET)
    (node / "dir").mkdir()
    (node / "dir" / "inner").write_bytes(SECRET)
    return node


class Swapper:
    """Flips names of the captured tree between a real entry and a symlink to the node,
    atomically, as fast as it can: what an unfrozen sidecar sharing the volume can do."""

    def __init__(self, root: Path, node: Path) -> None:
        self.root = root
        self.stop = threading.Event()
        self.swaps = 0
        spare = root.parent
        (root / "file").write_bytes(b"benign")
        (root / "folder").mkdir()
        (root / "folder" / "inner").write_bytes(b"benign")
        os.symlink(node / "agent.key", spare / "file.link")
        os.symlink(node / "dir", spare / "folder.link")

    def run(self) -> None:
        spare = self.root.parent
        while not self.stop.is_set():
            for name in ("file", "folder"):
                # Twice: the link is live in between, and the name is never absent.
                exchange(self.root / name, spare / f"{name}.link")
                exchange(self.root / name, spare / f"{name}.link")
                self.swaps += 1


_libc = ctypes.CDLL(None, use_errno=True)
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange(a: Path, b: Path) -> None:
    """renameat2(RENAME_EXCHANGE): swaps two names atomically."""
    if _libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b),
                       _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(a))


@pytest.fixture
def swapper(tmp_path: Path, secret: Path) -> Iterator[Swapper]:
    root = tmp_path / "shared" / "emptydir"
    root.mkdir(parents=True)
    s = Swapper(root, secret)
    thread = threading.Thread(target=s.run, daemon=True)
    thread.start()
    yield s
    s.stop.set()
    thread.join(timeout=10)


def test_capture_never_follows_a_link_swapped_in_during_the_walk(
    swapper: Swapper, tmp_path: Path
) -> None:
    out = tmp_path / "out.tar"
    deadline = time.monotonic() + 4
    captures = 0
    while time.monotonic() < deadline:
        for writer in (lambda: tar_tree(swapper.root, out),
                       lambda: write_layer_diff(swapper.root, out, tmp_path / "deleted")):
            writer()
            captures += 1
            data = out.read_bytes()
            assert b"NODE-SECRET" not in data, f"capture {captures} followed a swapped link"
            with tarfile.open(out) as tar:
                for member in tar.getmembers():
                    if member.issym():
                        # A link is content: kept as a link, resolved in the new container.
                        assert member.size == 0
    assert captures > 50 and swapper.swaps > 1000, (captures, swapper.swaps)


def test_the_capture_cap_refuses_a_pod_that_writes_too_much(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "big").write_bytes(b"x" * 10_000)
    with pytest.raises(CaptureTooLarge, match="capture limit at 'big'"):
        tar_tree(volume, tmp_path / "v.tar", budget=CaptureBudget(9_999))
    assert tar_tree(volume, tmp_path / "v.tar", budget=CaptureBudget(10_000)) == 1


def archive(tmp_path: Path, *members: tuple[tarfile.TarInfo, bytes]) -> Path:
    path = tmp_path / "diff.tar"
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, b""


def regular(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def test_staging_never_writes_through_a_link_of_the_same_archive(
    tmp_path: Path, secret: Path
) -> None:
    victim = secret / "agent.key"
    tar = archive(tmp_path, link("x", str(victim)), regular("x", b"overwritten"))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(StagingError, match="twice"):
        untar_captured(tar, dest)
    assert victim.read_bytes() == SECRET


def test_staging_refuses_a_hard_link_through_a_symlinked_folder(
    tmp_path: Path, secret: Path
) -> None:
    tar = archive(tmp_path, link("up", str(secret)), link("stolen", "up/agent.key",
                                                           tarfile.LNKTYPE))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(StagingError, match="escapes"):
        untar_captured(tar, dest)
    assert not (dest / "stolen").exists()


def test_staging_keeps_symlinks_as_content(tmp_path: Path) -> None:
    tar = archive(tmp_path, link("etc/alternatives/python", "/usr/bin/python3.13"),
                  regular("etc/app.conf", b"ok"))
    dest = tmp_path / "dest"
    dest.mkdir()
    untar_captured(tar, dest)
    assert os.readlink(dest / "etc/alternatives/python") == "/usr/bin/python3.13"
    assert (dest / "etc/app.conf").read_bytes() == b"ok"
