"""The ckpt-runc wrapper with real runc and CRIU (tools/criu/install.sh provides CRIU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.fixtures import build_wrapper_module, criu_bin, runc_cli

__all__ = ["criu_bin", "runc_cli", "wrapper_bin"]


@pytest.fixture(scope="session")
def wrapper_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ckpt-runc built from cmd/ckpt-runc the way `make wrapper` builds it (static)."""
    return build_wrapper_module(".", tmp_path_factory.mktemp("wrapper") / "ckpt-runc")
