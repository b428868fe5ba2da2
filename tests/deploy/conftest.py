"""Fixtures for the deploy/ tests: the kustomizations rendered by the real kubectl."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ckpt.devenv.controlplane import kubectl_binary

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
NAMESPACE = "ckpt-system"

Manifest = dict[str, Any]


def render(directory: Path) -> list[Manifest]:
    """`kubectl kustomize DIR`, parsed: exactly what `kubectl apply -k DIR` would send."""
    proc = subprocess.run(
        [kubectl_binary(), "kustomize", str(directory)],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert proc.returncode == 0, f"kubectl kustomize {directory} failed:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@pytest.fixture(scope="session")
def manifests() -> list[Manifest]:
    return render(DEPLOY)


@pytest.fixture(scope="session")
def postgresql_manifests() -> list[Manifest]:
    return render(DEPLOY / "postgresql")


@pytest.fixture(scope="session")
def find(manifests: list[Manifest]) -> Callable[[str, str], Manifest]:
    """The rendered object of this kind and name (fails the test if there is none)."""

    def _find(kind: str, name: str) -> Manifest:
        matches = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
        assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
        return matches[0]

    return _find
