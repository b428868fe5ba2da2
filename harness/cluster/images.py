"""Plain OCI image archives from a folder, for the local cluster's own small images.

The local cluster has no registry, so the images it needs besides ckpt's own (the pause
sandbox, CoreDNS, a busybox workload image) are written here as OCI image layout archives
(`oci-layout`, `index.json`, `blobs/sha256/...`) and imported into every node with
`ctr -n k8s.io images import`. One uncompressed layer per image; the layer tar is
reproducible (sorted entries, owner root, mtime 0), so the same folder always gives the same
digests.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
EPOCH = "1970-01-01T00:00:00Z"

# Names of the local images. A registry-like domain keeps containerd from normalising them
# into docker.io/library/..., so the pod specs and the imported names are the same string.
PAUSE_IMAGE = "ckpt.local/pause:1.0"
BUSYBOX_IMAGE = "ckpt.local/busybox:1.35"
COREDNS_IMAGE = "ckpt.local/coredns:1.15.0"


@dataclass(frozen=True)
class ImageArchive:
    """An OCI archive on disk and the image name it carries."""

    path: Path
    name: str
    manifest_digest: str


def write_oci_archive(
    rootfs: Path,
    out: Path,
    name: str,
    *,
    entrypoint: Sequence[str],
    cmd: Sequence[str] = (),
    env: Sequence[str] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",),
    workdir: str = "/",
    architecture: str = "amd64",
) -> ImageArchive:
    """Packs `rootfs` as a one-layer image named `name` into the OCI archive `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="oci-", dir=out.parent) as scratch:
        layer_path = Path(scratch) / "layer.tar"
        _write_layer(rootfs, layer_path)
        layer_digest, layer_size = _file_digest(layer_path)
        config = {
            "architecture": architecture,
            "os": "linux",
            "config": {
                "Entrypoint": list(entrypoint),
                "Cmd": list(cmd),
                "Env": list(env),
                "WorkingDir": workdir,
            },
            # An uncompressed layer's diff id is its own digest.
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            "history": [{"created_by": "harness.cluster.images", "created": EPOCH}],
            "created": EPOCH,
        }
        config_blob = _canonical(config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": _descriptor(CONFIG_MEDIA_TYPE, config_blob),
            "layers": [
                {"mediaType": LAYER_MEDIA_TYPE, "digest": layer_digest, "size": layer_size}
            ],
        }
        manifest_blob = _canonical(manifest)
        manifest_descriptor = _descriptor(MANIFEST_MEDIA_TYPE, manifest_blob)
        manifest_descriptor["platform"] = {"architecture": architecture, "os": "linux"}
        # containerd names an imported image after these annotations: the first is what
        # `ctr images import` reads, the second what the OCI spec defines.
        manifest_descriptor["annotations"] = {
            "io.containerd.image.name": name,
            "org.opencontainers.image.ref.name": name,
        }
        index = {
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": [manifest_descriptor],
        }
        partial = out.with_name(out.name + ".partial")
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as archive:
            _add_bytes(archive, "oci-layout", _canonical({"imageLayoutVersion": "1.0.0"}))
            _add_bytes(archive, "index.json", _canonical(index))
            _add_blob_bytes(archive, config_blob)
            _add_blob_bytes(archive, manifest_blob)
            info = archive.gettarinfo(str(layer_path), arcname=_blob_name(layer_digest))
            _normalise(info)
            with layer_path.open("rb") as stream:
                archive.addfile(info, stream)
        os.replace(partial, out)
    return ImageArchive(out, name, str(manifest_descriptor["digest"]))


def read_archive_names(path: Path) -> list[str]:
    """The image names an OCI archive's index.json declares (how tests check an archive)."""
    with tarfile.open(path) as archive:
        member = archive.extractfile("index.json")
        if member is None:
            raise ValueError(f"{path}: index.json is not a file")
        index = json.load(member)
    names = []
    for manifest in index.get("manifests", []):
        annotations = manifest.get("annotations", {})
        name = annotations.get("io.containerd.image.name") or annotations.get(
            "org.opencontainers.image.ref.name"
        )
        if name:
            names.append(name)
    return names


def busybox_rootfs(target: Path, busybox: Path | None = None) -> Path:
    """A root filesystem of a static busybox with every applet linked in /bin.

    Debian's busybox-static (tools/system-deps.sh installs it) needs no shared libraries,
    so the binary alone is a working image.
    """
    binary = busybox or Path(shutil.which("busybox") or "/bin/busybox")
    if not binary.exists():
        raise FileNotFoundError("busybox not found: install Debian's busybox-static")
    applets = subprocess.run(
        [str(binary), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for folder in ("bin", "etc", "tmp", "root", "proc", "sys", "dev"):
        (target / folder).mkdir(parents=True, exist_ok=True)
    (target / "tmp").chmod(0o1777)
    shutil.copy2(binary, target / "bin" / "busybox")
    for applet in applets:
        link = target / "bin" / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    (target / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
    )
    (target / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    return target


def single_binary_rootfs(target: Path, binary: Path, name: str) -> Path:
    """A root filesystem holding one static binary at /`name` (pause, CoreDNS)."""
    for folder in ("etc", "tmp", "proc", "sys", "dev"):
        (target / folder).mkdir(parents=True, exist_ok=True)
    (target / "tmp").chmod(0o1777)
    shutil.copy2(binary, target / name)
    (target / name).chmod(0o755)
    return target


def _write_layer(rootfs: Path, layer: Path) -> None:
    entries: list[Path] = []
    for folder, dirs, files in os.walk(rootfs, followlinks=False):
        dirs.sort()
        base = Path(folder)
        entries.extend(base / d for d in dirs)
        entries.extend(base / f for f in sorted(files))
    with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in entries:
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(rootfs)))
            _normalise(info)
            if info.isfile():
                with path.open("rb") as stream:
                    tar.addfile(info, stream)
            else:
                tar.addfile(info)


def _normalise(info: tarfile.TarInfo) -> None:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0
    info.pax_headers = {}


def _file_digest(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return f"sha256:{digest.hexdigest()}", size


def _canonical(document: object) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _descriptor(media_type: str, blob: bytes) -> dict[str, object]:
    return {
        "mediaType": media_type,
        "digest": f"sha256:{hashlib.sha256(blob).hexdigest()}",
        "size": len(blob),
    }


def _blob_name(digest: str) -> str:
    algorithm, hexdigest = digest.split(":", 1)
    return f"blobs/{algorithm}/{hexdigest}"


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    _normalise(info)
    archive.addfile(info, io.BytesIO(data))


def _add_blob_bytes(archive: tarfile.TarFile, data: bytes) -> None:
    _add_bytes(archive, _blob_name(f"sha256:{hashlib.sha256(data).hexdigest()}"), data)
