"""The Dockerfile, read as text: lint and the contracts of its stages.

No Docker engine here; tools/images/build.sh builds it with buildah and tests/images/ checks
the built images.
"""

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
    assert {"builder", "wrapper", "runtime", "api", "operator", "agent"} <= stages().keys()


def run_lines(stage: str) -> list[str]:
    return [line for line in stages()[stage] if line.startswith("RUN")]


def test_base_images_are_build_arguments_with_public_defaults() -> None:
    text = DOCKERFILE.read_text()
    for default in (
        "ARG PYTHON_IMAGE=python:3.11-slim-bookworm",
        "ARG AGENT_BASE_IMAGE=debian:trixie-slim",
        "ARG GO_IMAGE=golang:1.24-bookworm",
    ):
        assert default in text
    froms = {stage: lines[0] for stage, lines in stages().items()}
    assert froms["builder"] == froms["runtime"] == "FROM ${PYTHON_IMAGE}"
    assert froms["wrapper"] == "FROM ${GO_IMAGE}"
    # Only images named by an ARG or another stage: nothing else is pulled.
    for stage, line in froms.items():
        base = line.split()[1]
        assert base.startswith("${") or base in stages(), f"{stage}: {line}"


def test_wrapper_is_built_static_offline_and_lands_in_the_agent_image() -> None:
    build = " ".join(run_lines("wrapper"))
    for part in ("CGO_ENABLED=0", "GOTOOLCHAIN=local", "GOPROXY=off", "go build", "-trimpath"):
        assert part in build
    assert "-o /out/ckpt-cuda-restore ./cudarestore" in build
    assert ("COPY --from=wrapper /out/ckpt-runc /out/ckpt-cuda-restore /usr/local/bin/"
            in stages()["agent"])


def test_downloads_may_trust_a_ca_given_only_as_a_build_secret() -> None:
    """pip steps that reach an index mount the optional secret `ca` for their own RUN only;
    nothing bakes a CA in. (Installing the local wheel with --no-deps downloads nothing.)"""
    downloads = 0
    for stage in ("builder", "runtime", "agent"):
        for line in run_lines(stage):
            if "pip wheel" in line or ("pip install" in line and "--no-deps" not in line):
                downloads += 1
                assert "--mount=type=secret,id=ca,required=false" in line, line
                assert "PIP_CERT=/run/secrets/ca" in line, line
    assert downloads == 3  # the wheel's build backend, then each image's dependencies
    for stage, lines in stages().items():
        for line in lines:
            keyword = line.split()[0]
            assert not (keyword == "ENV" and re.search(r"PIP_CERT|SSL_CERT|CA_BUNDLE", line)), line
            assert not (keyword in ("COPY", "ADD") and re.search(r"\.(crt|pem)\b", line)), line
            assert "ca-certificates.crt" not in line, f"{stage}: {line}"


def test_python_stages_install_dependencies_before_the_wheel_and_copy_from_the_builder() -> None:
    """A change to src/ must not redo the dependency layer, and must reach the image: buildah's
    layer cache misses a changed stage behind RUN --mount=type=bind,from=..., so nothing of
    the builder is bind-mounted, only copied (COPY --from is keyed by content)."""
    for stage, requirements in (("runtime", "api.txt"), ("agent", "agent.txt")):
        lines = stages()[stage]
        assert not any("--mount=type=bind,from=" in line for line in lines), stage
        copy_reqs = lines.index(
            f"COPY --from=builder /requirements/{requirements} /tmp/requirements.txt"
        )
        install_reqs = next(
            i for i, line in enumerate(lines) if "pip install --no-cache-dir -r" in line
        )
        copy_wheel = lines.index("COPY --from=builder /dist/ /tmp/dist/")
        install_wheel = next(i for i, line in enumerate(lines) if "--no-deps" in line)
        assert copy_reqs < install_reqs < copy_wheel < install_wheel, stage
        assert "pip check" in lines[install_wheel]
        assert "ckpt --help" in lines[install_wheel]


def test_only_python3_is_invoked() -> None:
    """Debian's own python has no `python` command; the official images have both."""
    for stage in stages():
        for line in run_lines(stage):
            assert not re.search(r"(^|[\s;&|(])python(\s|$)", line), line


def test_api_and_operator_run_as_the_non_root_user_of_the_manifests() -> None:
    runtime = stages()["runtime"]
    assert "USER 65532:65532" in runtime
    assert stages()["runtime"][0] == "FROM ${PYTHON_IMAGE}"
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in DOCKERFILE.read_text()
    for target in ("api", "operator"):
        assert stages()[target][0] == "FROM runtime"
        assert not any(line.startswith("USER") for line in stages()[target])


def test_agent_has_criu_4_2_runc_and_iptables_and_runs_as_root() -> None:
    agent = stages()["agent"]
    assert agent[0] == "FROM ${AGENT_BASE_IMAGE}"
    assert "ARG AGENT_BASE_IMAGE=debian:trixie-slim" in DOCKERFILE.read_text()
    install = next(line for line in agent if "apt-get install" in line)
    for package in ("runc", "iptables", "python3", "python3-venv"):
        assert re.search(rf"\s{re.escape(package)}(\s|$)", install), package
    # CRIU from the suite that has 4.2 (forky), everything else from the base's own.
    assert "ARG CRIU_SUITE=forky" in agent
    assert re.search(r'apt-get install [^&]*-t "\$\{CRIU_SUITE\}" criu(\s|$)', install), install
    # The build fails on a CRIU older than 4.2 instead of the first checkpoint failing.
    assert any("criu --version" in line and "v[1] == 4 && v[2] >= 2" in line for line in agent)
    # Every dump through runc drops connections not yet accepted (skip-in-flight).
    assert any("/etc/criu/runc.conf" in line and "skip-in-flight" in line for line in agent)
    assert not any(line.startswith("USER") for line in agent)
    assert "EXPOSE 8443" in agent


def test_build_context_holds_only_what_the_wheel_and_the_wrapper_need() -> None:
    ignore = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    rules = [line for line in ignore if line and not line.startswith("#")]
    assert rules[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!src/", "!cmd/ckpt-runc/"} <= set(rules)

    def copied(stage: str) -> set[str]:
        return {
            source
            for line in stages()[stage]
            if line.startswith("COPY") and "--from" not in line
            for source in line.split()[1:-1]
        }

    assert copied("builder") == {"pyproject.toml", "README.md", "src"}
    assert copied("wrapper") == {"cmd/ckpt-runc"}
    for stage in ("runtime", "api", "operator", "agent"):
        assert not copied(stage), stage
