"""The ckpt-runc wrapper with real runc and CRIU (tools/criu/install.sh provides CRIU)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.fixtures import criu_bin, runc_cli
from harness.tools import REPO_ROOT

__all__ = ["criu_bin", "runc_cli", "wrapper_bin"]


@pytest.fixture(scope="session")
def wrapper_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ckpt-runc built from cmd/ckpt-runc the way `make wrapper` builds it (static)."""
    go = shutil.which("go")
    if go is None:
        pytest.fail("the Go toolchain is needed to build cmd/ckpt-runc")
    out = tmp_path_factory.mktemp("wrapper") / "ckpt-runc"
    proc = subprocess.run(
        [go, "build", "-p", "2", "-trimpath", "-o", str(out), "."],
        cwd=REPO_ROOT / "cmd" / "ckpt-runc",
        env={**os.environ, "CGO_ENABLED": "0"},
        capture_output=True, text=True, timeout=600, check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"go build of cmd/ckpt-runc failed:\n{proc.stderr}")
    return out
