"""Finding and thawing a process's freezer, on v1, hybrid and pure v2 layouts (fake trees)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ckpt.agent import cgroups


def _proc(tmp_path: Path, lines: list[str]) -> Path:
    proc = tmp_path / "proc"
    (proc / "42").mkdir(parents=True)
    (proc / "42" / "cgroup").write_text("\n".join(lines) + "\n")
    return proc


def test_v1_freezer_wins_on_a_hybrid_host(tmp_path: Path) -> None:
    proc = _proc(tmp_path, ["12:freezer:/k8s/abc", "3:cpu,cpuacct:/k8s/abc", "0::/k8s/abc"])
    found = cgroups.freezer_file(42, proc, tmp_path / "cg")
    assert found == tmp_path / "cg" / "freezer" / "k8s" / "abc" / "freezer.state"


@pytest.mark.parametrize("hybrid", [True, False])
def test_v2_freeze_file(tmp_path: Path, hybrid: bool) -> None:
    root = tmp_path / "cg"
    base = root / "unified" if hybrid else root
    base.mkdir(parents=True)
    (base / "cgroup.controllers").write_text("cpu memory pids\n")
    proc = _proc(tmp_path, ["0::/kubepods/pod1/abc"])
    assert cgroups.freezer_file(42, proc, root) == base / "kubepods/pod1/abc/cgroup.freeze"


def test_no_freezer_at_all(tmp_path: Path) -> None:
    assert cgroups.freezer_file(42, _proc(tmp_path, ["5:pids:/x"]), tmp_path) is None


@pytest.mark.parametrize(
    ("name", "value", "frozen", "thawed"),
    [
        ("freezer.state", "FROZEN", True, "THAWED"),
        # CRIU killed while freezing leaves this; runc calls it running, yet nothing runs.
        ("freezer.state", "FREEZING", True, "THAWED"),
        ("freezer.state", "THAWED", False, "THAWED"),
        ("cgroup.freeze", "1", True, "0"),
        ("cgroup.freeze", "0", False, "0"),
    ],
)
def test_frozen_states_and_thawing(
    tmp_path: Path, name: str, value: str, frozen: bool, thawed: str
) -> None:
    file = tmp_path / name
    file.write_text(value + "\n")
    assert cgroups.is_frozen(file) is frozen
    cgroups.thaw(file)
    assert file.read_text() == thawed
