"""pytest fixtures for real runc containers; conftest files import the ones they use.

``criu_bin`` runs tools/criu/install.sh once per session (cached, instant after the first
run) and yields the CRIU path; ``runc_cli`` is runc bound to a private state root and that
CRIU; ``busybox_container`` yields a started counter container and removes it afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.containers import BusyboxContainer, Runc
from harness.tools import REPO_ROOT, criu_binary


@pytest.fixture(scope="session")
def criu_bin() -> str:
    if os.geteuid() != 0:
        pytest.fail("runc and CRIU checkpoints need root: run the tests as root (sudo make test)")
    path = criu_binary()
    for tool in ("runc", "iptables-restore"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} missing after tools/criu/install.sh")
    return path


@pytest.fixture
def runc_cli(criu_bin: str, tmp_path: Path) -> Iterator[Runc]:
    runc = Runc(root=tmp_path / "runc-state", criu=criu_bin)
    yield runc
    # Leave no container behind, whatever the test did.
    for cid in runc.list_ids():
        runc.run("delete", "--force", cid, check=False)


@pytest.fixture
def busybox_container(runc_cli: Runc, tmp_path: Path) -> Iterator[BusyboxContainer]:
    """A running counter container (``.id``, ``.pid``, ``.counter()``), deleted afterwards."""
    with BusyboxContainer.launch(tmp_path / "bundles", runc_cli) as c:
        yield c


def build_wrapper_module(package: str, out: Path) -> Path:
    """`package` of the cmd/ckpt-runc module (`.`: the wrapper, `./cudarestore`: its GPU hook)
    built static into `out`, the way the Dockerfile builds it."""
    go = shutil.which("go")
    if go is None:
        pytest.fail(f"the Go toolchain is needed to build {package} of cmd/ckpt-runc")
    proc = subprocess.run(
        [go, "build", "-p", "2", "-trimpath", "-o", str(out), package],
        cwd=REPO_ROOT / "cmd" / "ckpt-runc",
        env={**os.environ, "CGO_ENABLED": "0"},
        capture_output=True, text=True, timeout=600, check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"go build of {package} in cmd/ckpt-runc failed:\n{proc.stderr}")
    return out
