"""OCI archives made by harness.cluster.images: layout, digests, names, reproducibility."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

from harness.cluster.images import read_archive_names, write_oci_archive


def _rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "bin" / "tool").chmod(0o755)
    (root / "bin" / "alias").symlink_to("tool")
    (root / "etc").mkdir()
    (root / "etc" / "motd").write_text("hello\n")
    return root


def _blob(archive: tarfile.TarFile, digest: str) -> bytes:
    member = archive.extractfile("blobs/sha256/" + digest.split(":", 1)[1])
    assert member is not None
    data = member.read()
    assert f"sha256:{hashlib.sha256(data).hexdigest()}" == digest
    return data


def test_archive_is_an_oci_layout_whose_digests_match(tmp_path: Path) -> None:
    out = tmp_path / "image.tar"
    image = write_oci_archive(_rootfs(tmp_path), out, "ckpt.local/tool:1",
                              entrypoint=["/bin/tool"])

    assert read_archive_names(out) == ["ckpt.local/tool:1"]
    with tarfile.open(out) as archive:
        layout = json.load(archive.extractfile("oci-layout"))  # type: ignore[arg-type]
        assert layout == {"imageLayoutVersion": "1.0.0"}
        index = json.load(archive.extractfile("index.json"))  # type: ignore[arg-type]
        (descriptor,) = index["manifests"]
        assert descriptor["digest"] == image.manifest_digest
        assert descriptor["platform"] == {"architecture": "amd64", "os": "linux"}
        manifest = json.loads(_blob(archive, descriptor["digest"]))
        config = json.loads(_blob(archive, manifest["config"]["digest"]))
        (layer,) = manifest["layers"]
        layer_bytes = _blob(archive, layer["digest"])
        assert layer["size"] == len(layer_bytes)
        assert config["rootfs"]["diff_ids"] == [layer["digest"]]
        assert config["config"]["Entrypoint"] == ["/bin/tool"]

    layer_path = tmp_path / "layer.tar"
    layer_path.write_bytes(layer_bytes)
    with tarfile.open(layer_path) as layer_tar:
        members = {m.name: m for m in layer_tar.getmembers()}
    assert sorted(members) == ["bin", "bin/alias", "bin/tool", "etc", "etc/motd"]
    assert members["bin/alias"].issym() and members["bin/alias"].linkname == "tool"
    assert members["bin/tool"].mode & 0o777 == 0o755
    assert all(m.uid == 0 and m.gid == 0 and m.mtime == 0 for m in members.values())


def test_same_folder_gives_the_same_image(tmp_path: Path) -> None:
    root = _rootfs(tmp_path)
    first = write_oci_archive(root, tmp_path / "a.tar", "ckpt.local/tool:1", entrypoint=["/x"])
    (root / "etc" / "motd").touch()  # a new mtime must not change the image
    second = write_oci_archive(root, tmp_path / "b.tar", "ckpt.local/tool:1", entrypoint=["/x"])
    assert first.manifest_digest == second.manifest_digest
    (root / "etc" / "motd").write_text("changed\n")
    third = write_oci_archive(root, tmp_path / "c.tar", "ckpt.local/tool:1", entrypoint=["/x"])
    assert third.manifest_digest != first.manifest_digest
