"""The images built from the Dockerfile by tools/images/build.sh (buildah, no Docker engine).

These check the OCI archives that the local cluster imports into its nodes: valid layouts under
the names deploy/ uses, the configuration the manifests rely on (user, entrypoint), no copy of
this machine's CA bundle in any layer (it is a build secret), and that the programs run inside
the unpacked root filesystems. Needs root (chroot), buildah and mmdebstrap; the first build
takes minutes, later ones reuse the cache keyed by the inputs.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from oci_layout import OciImage

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(3600)]

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD = REPO_ROOT / "tools" / "images" / "build.sh"
HOST_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Debian's own copies of the public CAs (ca-certificates): a certificate of the host bundle
# that is not among them was added locally (a TLS-inspecting egress's CA, for one).
PUBLIC_CAS = Path("/usr/share/ca-certificates")
CKPT_NAME = "ghcr.io/ckpt-dev/ckpt:0.1.0"
AGENT_NAME = "ghcr.io/ckpt-dev/ckpt-agent:0.1.0"
PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\s+(.+?)\s+-----END CERTIFICATE-----", re.S)


@pytest.fixture(scope="module")
def images_dir() -> Path:
    """The folder of archives: built now, or found in the cache (the script's last line)."""
    proc = subprocess.run([str(BUILD)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def ckpt_image(images_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> OciImage:
    return OciImage.from_archive(images_dir / "ckpt.tar", tmp_path_factory.mktemp("ckpt") / "oci")


@pytest.fixture(scope="module")
def agent_image(images_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> OciImage:
    return OciImage.from_archive(
        images_dir / "ckpt-agent.tar", tmp_path_factory.mktemp("agent") / "oci"
    )


@pytest.fixture(scope="module")
def ckpt_rootfs(ckpt_image: OciImage, tmp_path_factory: pytest.TempPathFactory) -> Path:
    rootfs = tmp_path_factory.mktemp("ckpt-rootfs")
    ckpt_image.unpack(rootfs)
    return rootfs


@pytest.fixture(scope="module")
def agent_rootfs(agent_image: OciImage, tmp_path_factory: pytest.TempPathFactory) -> Path:
    rootfs = tmp_path_factory.mktemp("agent-rootfs")
    agent_image.unpack(rootfs)
    return rootfs


def run_in(rootfs: Path, image: OciImage, *argv: str, user: str | None = None) -> str:
    """Run a program inside the unpacked image with its environment (and user), like a runtime
    would minus the namespaces; returns stdout+stderr and fails the test on a non-zero exit."""
    env = image.config["config"].get("Env", [])
    userspec = [f"--userspec={user}"] if user else []
    proc = subprocess.run(
        ["chroot", *userspec, str(rootfs), "/usr/bin/env", "-i", *env, *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, f"{argv}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
    return proc.stdout + proc.stderr


def added_certificates() -> list[bytes]:
    """Base64 lines that identify each certificate of the host bundle Debian does not ship."""
    public = {
        b"".join(m.group(1).split())
        for crt in PUBLIC_CAS.rglob("*.crt")
        for m in PEM.finditer(crt.read_bytes())
    }
    markers = []
    for match in PEM.finditer(HOST_BUNDLE.read_bytes()):
        lines = match.group(1).split()
        if b"".join(lines) not in public:
            # A full line from the middle: the subject/issuer/key part unique to this CA.
            markers.append(lines[len(lines) // 2])
    return markers


def test_archives_are_valid_oci_layouts_named_as_deploy_uses(
    ckpt_image: OciImage, agent_image: OciImage
) -> None:
    for image, name in ((ckpt_image, CKPT_NAME), (agent_image, AGENT_NAME)):
        image.verify_layers()
        assert image.ref_name == name
        assert image.config["os"] == "linux"
        assert image.config["architecture"] == "amd64"
        assert image.layers, "an image without layers"


def test_ckpt_image_runs_as_the_non_root_user_with_the_ckpt_entrypoint(
    ckpt_image: OciImage,
) -> None:
    config = ckpt_image.config["config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["ckpt"]
    assert config["Cmd"] == ["api", "serve", "--host", "0.0.0.0", "--port", "8080"]
    assert config["WorkingDir"] == "/tmp"
    assert "8080/tcp" in config["ExposedPorts"]
    assert any(e.startswith("PATH=/opt/ckpt/bin:") for e in config["Env"])


def test_agent_image_runs_as_root_with_the_agent_command(agent_image: OciImage) -> None:
    config = agent_image.config["config"]
    assert config.get("User", "") in ("", "0", "root", "0:0")
    assert config["Entrypoint"] == ["ckpt"]
    assert config["Cmd"] == ["agent", "serve"]
    assert "8443/tcp" in config["ExposedPorts"]


def test_no_layer_carries_this_machines_ca_bundle(
    ckpt_image: OciImage, agent_image: OciImage
) -> None:
    bundle = HOST_BUNDLE.read_bytes()
    bundle_digest = hashlib.sha256(bundle).digest()
    markers = added_certificates()
    for image in (ckpt_image, agent_image):
        for layer, member, content in image.layer_files():
            # buildah leaves the secret's empty mount point folder; nothing may be in it.
            in_secrets = member.name.removeprefix("./").startswith("run/secrets/")
            assert not in_secrets, f"{layer}: {member.name}"
            if content is None:
                continue
            where = f"{layer}: {member.name}"
            if len(content) == len(bundle):
                assert hashlib.sha256(content).digest() != bundle_digest, where
            for marker in markers:
                assert marker not in content, f"{where} holds a certificate added on this host"


def test_ckpt_runs_inside_the_ckpt_image_as_its_user(
    ckpt_image: OciImage, ckpt_rootfs: Path
) -> None:
    user = ckpt_image.config["config"]["User"]
    out = run_in(ckpt_rootfs, ckpt_image, "ckpt", "--help", user=user)
    for command in ("api", "operator"):
        assert command in out
    run_in(ckpt_rootfs, ckpt_image, "ckpt", "api", "--help", user=user)
    # The postgres extra: the API accepts a PostgreSQL URL in this image.
    run_in(ckpt_rootfs, ckpt_image, "python3", "-c", "import psycopg", user=user)
    assert "ckpt:x:65532:65532:" in (ckpt_rootfs / "etc/passwd").read_text()


def test_agent_image_has_criu_4_runc_iptables_and_the_wrapper(
    agent_image: OciImage, agent_rootfs: Path
) -> None:
    out = run_in(agent_rootfs, agent_image, "criu", "--version")
    version = re.search(r"Version:\s*(\d+)\.(\d+)", out)
    assert version, out
    assert int(version.group(1)) >= 4, out
    assert "runc version" in run_in(agent_rootfs, agent_image, "runc", "--version")
    assert "iptables" in run_in(agent_rootfs, agent_image, "iptables-restore", "--version")
    assert "agent" in run_in(agent_rootfs, agent_image, "ckpt", "--help")
    run_in(agent_rootfs, agent_image, "ckpt", "agent", "--help")


@pytest.mark.parametrize("name", ["ckpt-runc", "ckpt-cuda-restore"])
def test_wrapper_and_its_gpu_hook_are_static_executables(agent_rootfs: Path, name: str) -> None:
    binary = agent_rootfs / "usr/local/bin" / name
    assert binary.is_file()
    assert binary.stat().st_mode & 0o111 == 0o111
    headers = list(program_headers(binary.read_bytes()))
    assert headers, "no program headers"
    # A dynamically linked ELF names its loader in a PT_INTERP header; nodes may lack it.
    pt_interp = 3
    assert pt_interp not in headers, f"{name} is dynamically linked"


def program_headers(elf: bytes) -> Iterator[int]:
    """p_type of every program header of a 64-bit little-endian ELF."""
    assert elf[:4] == b"\x7fELF", "not an ELF file"
    assert elf[4] == 2 and elf[5] == 1, "not a 64-bit little-endian ELF"
    phoff = int.from_bytes(elf[0x20:0x28], "little")
    phentsize = int.from_bytes(elf[0x36:0x38], "little")
    phnum = int.from_bytes(elf[0x38:0x3A], "little")
    for i in range(phnum):
        start = phoff + i * phentsize
        yield int.from_bytes(elf[start : start + 4], "little")
