"""The built wheel ships ckpt only: no development harness, and no module that imports a test
package (pytest, hypothesis, schemathesis, looptime)."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEST_PACKAGES = {"pytest", "_pytest", "hypothesis", "schemathesis", "looptime", "harness", "tests"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Build from a copy of the committed tree, so that setuptools' build/ and egg-info never
    # land in the repository (and a non-root user can build it). safe.directory: git refuses
    # a repository owned by another user ("dubious ownership"), as the checkout is for a
    # non-root user running the fast tier; archive only reads it.
    src = tmp_path_factory.mktemp("src")
    subprocess.run(
        ["git", "-c", f"safe.directory={ROOT}", "-C", str(ROOT),
         "archive", "--format=tar", "-o", str(src / "repo.tar"), "HEAD"],
        check=True,
    )
    subprocess.run(["tar", "-xf", "repo.tar"], cwd=src, check=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--quiet", "--wheel-dir", str(out), str(src)],
        check=True,
    )
    (built,) = out.glob("ckpt-*.whl")
    return built


def imported_roots(source: str) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_imported_roots_sees_plain_and_nested_imports() -> None:
    source = "import os\nfrom pytest import fixture\ndef f():\n    import harness.stack\n"
    assert imported_roots(source) == {"os", "pytest", "harness"}


def test_the_wheel_holds_only_ckpt_and_imports_no_test_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        top = {name.split("/")[0] for name in names if not name.endswith("/")}
        assert {t for t in top if not t.endswith(".dist-info")} == {"ckpt"}
        modules = [n for n in names if n.endswith(".py")]
        assert "ckpt/operator/reconcile.py" in modules
        offenders = {
            name: sorted(imported_roots(archive.read(name).decode()) & TEST_PACKAGES)
            for name in modules
        }
    assert {name: bad for name, bad in offenders.items() if bad} == {}
