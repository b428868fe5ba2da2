"""plugins/ckpt.yaml, the krew manifest of `kubectl ckpt`: it passes the checks krew applies
to a manifest (sigs.k8s.io/krew, internal/index/validation: ValidatePlugin), its archive is
the one it names by sha256 and holds the launcher it says, and that launcher runs the plugin
from the Python named by CKPT_PYTHON, or says how to install ckpt when that Python lacks it."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import re
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "plugins"
MANIFEST = PLUGINS / "ckpt.yaml"
ARCHIVE = PLUGINS / "kubectl-ckpt.tar.gz"


def _manifest() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(MANIFEST.read_text())
    return document


def test_the_manifest_passes_krews_validation() -> None:
    manifest = _manifest()
    name = MANIFEST.stem
    assert manifest["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert manifest["kind"] == "Plugin"
    assert re.fullmatch(r"[\w-]+", name) and manifest["metadata"]["name"] == name
    spec = manifest["spec"]
    assert spec["shortDescription"] and not re.search(r"[\r\n]", spec["shortDescription"])
    # krew's versions are semver with a v; this one is the package's.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert spec["version"] == f"v{project['version']}"
    assert spec["platforms"]
    for platform in spec["platforms"]:
        assert platform["uri"]
        assert re.fullmatch(r"[a-f0-9]{64}", platform["sha256"])
        assert platform["bin"] == "kubectl-ckpt"
        files = platform.get("files")
        assert files is None or (files and all(op["from"] and op["to"] for op in files))
        selector = platform["selector"]
        keys = [*selector.get("matchLabels", {}), *(
            expression["key"] for expression in selector.get("matchExpressions", [])
        )]
        assert keys and set(keys) <= {"os", "arch"}
    # What installs the binary is said where a krew user reads it.
    for text in (spec["description"], spec["caveats"]):
        assert "pip install" in text


def test_the_archive_is_the_one_the_manifest_names_and_holds_the_launcher() -> None:
    (platform,) = _manifest()["spec"]["platforms"]
    archive = ARCHIVE.read_bytes()
    assert hashlib.sha256(archive).hexdigest() == platform["sha256"]
    assert (MANIFEST.parent / platform["uri"]) == ARCHIVE
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        (member,) = tar.getmembers()
        assert member.name == platform["files"][0]["from"] == platform["bin"]
        assert member.mode == 0o755 and member.isfile()
        packed = tar.extractfile(member)
        assert packed is not None
        assert packed.read() == (PLUGINS / "kubectl-ckpt").read_bytes()
    # plugins/krew_archive.py makes the same tar stream (the gzip bytes depend on zlib).
    spec = importlib.util.spec_from_file_location("krew_archive", PLUGINS / "krew_archive.py")
    assert spec is not None and spec.loader is not None
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    import gzip

    assert gzip.decompress(builder.build()) == gzip.decompress(archive)


def test_the_launcher_runs_the_plugin_or_says_how_to_install_it(tmp_path: Path) -> None:
    launcher = PLUGINS / "kubectl-ckpt"
    env = {**os.environ, "CKPT_PYTHON": sys.executable}
    helped = subprocess.run([launcher, "--help"], env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert helped.returncode == 0, helped.stderr
    assert "Usage: kubectl ckpt" in helped.stdout
    refused = subprocess.run([launcher, "ls", "--bogus"], env=env, capture_output=True,
                             text=True, timeout=60, check=False)
    assert refused.returncode == 1 and refused.stderr.startswith("error: No such option")

    # A Python without ckpt: this one, without its site-packages.
    bare = tmp_path / "python"
    bare.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    bare.chmod(0o755)
    missing = subprocess.run([launcher, "ls"], env={**env, "CKPT_PYTHON": str(bare)},
                             capture_output=True, text=True, timeout=60, check=False)
    assert missing.returncode == 1
    assert "error: ckpt is not installed for" in missing.stderr
    assert "pip install" in missing.stderr and "CKPT_PYTHON" in missing.stderr
    assert "Traceback" not in missing.stderr
