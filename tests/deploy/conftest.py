"""Fixtures for the deploy/ tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from deploy_render import DEPLOY, Manifest, render


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
