"""Where the agent reads a container's writable layer from: the mount namespace of the
container's runtime shim (its init's parent), which need not be PID 1's. Pure logic on a
fake /proc; no root."""

from __future__ import annotations

from pathlib import Path

import pytest

from ckpt.agent import capture


def _proc(tmp: Path, pid: int, ppid: int, upper: Path | None = None) -> Path:
    proc = tmp / "proc"
    folder = proc / str(pid)
    folder.mkdir(parents=True)
    (folder / "status").write_text(f"Name:\tsh\nPid:\t{pid}\nPPid:\t{ppid}\n")
    if upper is not None:
        (folder / "mountinfo").write_text(
            "1 0 0:50 / / rw - overlay overlay "
            f"rw,lowerdir=/l1,upperdir={upper},workdir=/w\n"
        )
    return proc


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
    shim_root = tmp_path / "proc" / "4200" / "root"
    layer = shim_root / "var" / "lib" / "containerd" / "snap" / "fs"
    (layer / "tmp").mkdir(parents=True)
    (layer / "tmp" / "marker").write_text("x\n")
    proc = _proc(tmp_path, 4242, 4200, upper=Path("/var/lib/containerd/snap/fs"))
    section = capture.capture_pod(
        None, [capture.CapturedContainer("app", 4242, None)], tmp_path / "out",
        host_root=tmp_path / "empty-host", proc=proc,
    )
    assert section["containers"]["app"]["files"] == 2  # /tmp and /tmp/marker


def test_an_unreachable_upperdir_is_refused_not_captured_empty(tmp_path: Path) -> None:
    proc = _proc(tmp_path, 4242, 1, upper=Path("/var/lib/containerd/snap/fs"))
    with pytest.raises(FileNotFoundError, match="upperdir is not reachable"):
        capture.capture_container(
            "app", 4242, tmp_path / "out", host_root=tmp_path / "empty-host", proc=proc
        )
