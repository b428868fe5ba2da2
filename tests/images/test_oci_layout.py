"""The OCI layout reader the image tests rely on, on small layouts written here (no root)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from oci_layout import LayoutError, OciImage, apply_whiteouts

LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"


def layer_tar(entries: dict[str, bytes | None]) -> bytes:
    """A layer: name -> content (None: a folder)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content in entries.items():
            info = tarfile.TarInfo(name)
            if content is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.size = len(content)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def write_blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def write_layout(layout: Path, layers: list[bytes], gzip_first: bool = True) -> None:
    descriptors = []
    for position, tar in enumerate(layers):
        compressed = gzip_first and position == 0
        blob = gzip.compress(tar) if compressed else tar
        descriptors.append({"mediaType": LAYER_GZIP if compressed else LAYER_TAR,
                            **write_blob(layout, blob)})
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"User": "65532:65532", "Entrypoint": ["ckpt"]},
        "rootfs": {"type": "layers",
                   "diff_ids": [f"sha256:{hashlib.sha256(t).hexdigest()}" for t in layers]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   **write_blob(layout, json.dumps(config).encode())},
        "layers": descriptors,
    }
    index = {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            **write_blob(layout, json.dumps(manifest).encode()),
            "annotations": {"org.opencontainers.image.ref.name": "example.org/img:1"},
        }],
    }
    (layout / "index.json").write_text(json.dumps(index))
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    lower = layer_tar({
        "etc": None,
        "etc/keep": b"keep",
        "etc/gone": b"gone",
        "var": None,
        "var/cache": None,
        "var/cache/old": b"old",
    })
    upper = layer_tar({
        "etc/.wh.gone": b"",
        "var/cache/.wh..wh..opq": b"",
        "var/cache/new": b"new",
        "etc/added": b"added",
    })
    path = tmp_path / "layout"
    path.mkdir()
    write_layout(path, [lower, upper])
    return path


def test_reads_index_manifest_config_and_layers(layout: Path) -> None:
    image = OciImage(layout)
    image.verify_layers()
    assert image.ref_name == "example.org/img:1"
    assert image.config["config"]["User"] == "65532:65532"
    assert [d.media_type for d in image.layers] == [LAYER_GZIP, LAYER_TAR]
    names = {member.name for _, member, _ in image.layer_files()}
    assert {"etc/keep", "etc/.wh.gone", "var/cache/new"} <= names


def test_unpack_applies_whiteouts_and_opaque_folders(layout: Path, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    OciImage(layout).unpack(rootfs)
    assert (rootfs / "etc/keep").read_bytes() == b"keep"
    assert (rootfs / "etc/added").read_bytes() == b"added"
    assert not (rootfs / "etc/gone").exists()
    assert not (rootfs / "etc/.wh.gone").exists()
    assert sorted(p.name for p in (rootfs / "var/cache").iterdir()) == ["new"]


def test_a_tampered_blob_is_refused(layout: Path) -> None:
    image = OciImage(layout)
    blob = image.blob_path(image.layers[1])
    data = bytearray(blob.read_bytes())
    data[600] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(LayoutError, match="content does not match"):
        image.verify_layers()


def test_a_tampered_config_is_refused(layout: Path) -> None:
    index = json.loads((layout / "index.json").read_text())
    manifest_blob = layout / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]
    config_digest = json.loads(manifest_blob.read_text())["config"]["digest"].split(":")[1]
    config = layout / "blobs/sha256" / config_digest
    config.write_text(config.read_text().replace("65532", "00000"))
    with pytest.raises(LayoutError, match="content hashes to"):
        OciImage(layout)


def test_whiteouts_never_follow_a_symlink_out_of_the_root(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("host file")
    rootfs.mkdir()
    (rootfs / "escape").symlink_to(outside)
    with pytest.raises(LayoutError, match="leads out of the root"):
        apply_whiteouts(rootfs, ["escape/.wh.precious"])
    assert (outside / "precious").read_text() == "host file"
    # ".." cannot climb out either: it stays at the root.
    (rootfs / "top").write_text("x")
    apply_whiteouts(rootfs, ["../../.wh.top"])
    assert not (rootfs / "top").exists()
    assert (outside / "precious").exists()
