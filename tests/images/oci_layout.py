"""Read and check OCI image archives (`buildah push IMG oci-archive:FILE:NAME`) without a daemon.

An archive is an OCI image layout in a tar: `oci-layout`, `index.json` and content-addressed
blobs under `blobs/sha256/`. `OciImage` unpacks it, follows index -> manifest -> config and
layers, checks every digest and size on the way, and applies the layers to a folder the way a
runtime does, whiteouts included, so a test can run the image's programs with chroot.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import zstandard

MANIFEST_TYPES = {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
}
CONFIG_TYPES = {
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
}
REF_NAME = "org.opencontainers.image.ref.name"
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


class LayoutError(AssertionError):
    """The archive is not a valid OCI image layout (an assertion: tests report it as such)."""


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Descriptor:
        return cls(raw["mediaType"], raw["digest"], int(raw["size"]))


class OciImage:
    """One image of an OCI layout folder (an archive unpacked by `from_archive`)."""

    def __init__(self, layout: Path) -> None:
        self.layout = layout
        marker = json.loads((layout / "oci-layout").read_text())
        if marker.get("imageLayoutVersion") != "1.0.0":
            raise LayoutError(f"oci-layout: unexpected version {marker!r}")
        self.index: dict[str, Any] = json.loads((layout / "index.json").read_text())
        manifests = self.index.get("manifests", [])
        if len(manifests) != 1:
            raise LayoutError(f"index.json: expected one manifest, found {len(manifests)}")
        self.ref_name: str | None = manifests[0].get("annotations", {}).get(REF_NAME)
        manifest_desc = Descriptor.parse(manifests[0])
        if manifest_desc.media_type not in MANIFEST_TYPES:
            raise LayoutError(f"index.json: manifest media type {manifest_desc.media_type}")
        self.manifest: dict[str, Any] = json.loads(self.blob(manifest_desc))
        config_desc = Descriptor.parse(self.manifest["config"])
        if config_desc.media_type not in CONFIG_TYPES:
            raise LayoutError(f"manifest: config media type {config_desc.media_type}")
        self.config: dict[str, Any] = json.loads(self.blob(config_desc))
        self.layers = [Descriptor.parse(layer) for layer in self.manifest["layers"]]
        diff_ids = self.config.get("rootfs", {}).get("diff_ids", [])
        if len(diff_ids) != len(self.layers):
            raise LayoutError(f"{len(self.layers)} layers but {len(diff_ids)} diff_ids")
        self.diff_ids: list[str] = diff_ids

    @classmethod
    def from_archive(cls, archive: Path, dest: Path) -> OciImage:
        """Unpack an oci-archive tar into `dest` (a fresh folder) and read it."""
        dest.mkdir(parents=True, exist_ok=False)
        subprocess.run(["tar", "-xf", str(archive), "-C", str(dest)], check=True)
        return cls(dest)

    def blob_path(self, desc: Descriptor) -> Path:
        algorithm, _, hexdigest = desc.digest.partition(":")
        if algorithm != "sha256" or len(hexdigest) != 64:
            raise LayoutError(f"unsupported digest {desc.digest}")
        return self.layout / "blobs" / algorithm / hexdigest

    def blob(self, desc: Descriptor) -> bytes:
        """The blob's bytes, after checking them against the descriptor's digest and size."""
        data = self.blob_path(desc).read_bytes()
        if len(data) != desc.size:
            raise LayoutError(f"{desc.digest}: {len(data)} bytes, descriptor says {desc.size}")
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != desc.digest:
            raise LayoutError(f"{desc.digest}: content hashes to {actual}")
        return data

    def verify_layers(self) -> None:
        """Every layer blob matches its digest and size, and its uncompressed tar its diff_id."""
        for desc, diff_id in zip(self.layers, self.diff_ids, strict=True):
            path = self.blob_path(desc)
            if path.stat().st_size != desc.size:
                raise LayoutError(f"{desc.digest}: size differs from the descriptor")
            if _sha256_file(path) != desc.digest:
                raise LayoutError(f"{desc.digest}: content does not match")
            with self.open_layer(desc) as layer:
                uncompressed = hashlib.sha256()
                while chunk := layer.read(1 << 20):
                    uncompressed.update(chunk)
            if "sha256:" + uncompressed.hexdigest() != diff_id:
                raise LayoutError(f"{desc.digest}: uncompressed content is not {diff_id}")

    @contextmanager
    def open_layer(self, desc: Descriptor) -> Iterator[IO[bytes]]:
        """A binary stream of the layer's tar, decompressed if the media type says so."""
        with self.blob_path(desc).open("rb") as raw:
            if desc.media_type.endswith(("+gzip", ".gzip")):
                with gzip.GzipFile(fileobj=raw) as unzipped:
                    yield unzipped
            elif desc.media_type.endswith("+zstd"):
                with zstandard.ZstdDecompressor().stream_reader(raw) as unzstd:
                    yield cast(IO[bytes], unzstd)
            else:
                yield raw

    def layer_files(self) -> Iterator[tuple[str, tarfile.TarInfo, bytes | None]]:
        """(layer digest, member, content of regular files) for every member of every layer."""
        for desc in self.layers:
            with self.open_layer(desc) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    content = None
                    if member.isreg():
                        extracted = tar.extractfile(member)
                        content = extracted.read() if extracted else b""
                    yield desc.digest, member, content

    def unpack(self, rootfs: Path) -> None:
        """Apply the layers in order to `rootfs`, as a runtime's snapshotter would."""
        rootfs.mkdir(parents=True, exist_ok=True)
        # As a runtime's root: other users (the image's own, after chroot) must traverse it;
        # a test's temporary folder is created 0700.
        rootfs.chmod(0o755)
        for desc in self.layers:
            with self.open_layer(desc) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
                names = [member.name for member in tar]
            apply_whiteouts(rootfs, names)
            with self.open_layer(desc) as stream:
                # GNU tar keeps owners and modes (as root) and, unlike tarfile on Python 3.11.2,
                # refuses members that would land outside the folder. Whiteouts are markers,
                # not files: apply_whiteouts handled them.
                subprocess.run(
                    ["tar", "-x", "-p", "--numeric-owner", "-C", str(rootfs),
                     f"--exclude={WHITEOUT}*", "-f", "-"],
                    input=stream.read(),
                    check=True,
                )


def apply_whiteouts(rootfs: Path, names: list[str]) -> None:
    """Delete what a layer's whiteout entries hide of the layers below it (OCI image spec)."""
    for name in names:
        parent, _, base = name.rstrip("/").rpartition("/")
        if not base.startswith(WHITEOUT):
            continue
        folder = _inside(rootfs, parent)
        if base == OPAQUE:
            if folder.is_dir() and not folder.is_symlink():
                for child in folder.iterdir():
                    _remove(child)
        else:
            _remove(_inside(rootfs, f"{parent}/{base[len(WHITEOUT):]}"))


def _inside(rootfs: Path, relative: str) -> Path:
    """rootfs/relative, refusing a path whose folder leads out of rootfs through a symlink.

    Whiteouts delete things, so an absolute symlink among the folders above the target must
    not redirect the deletion to the machine's own files.
    """
    relative = relative.removeprefix("./")
    # Normalizing below "/" drops any ".." that would climb above the root.
    path = rootfs / os.path.normpath("/" + relative).lstrip("/")
    top = rootfs.resolve()
    if path != rootfs and not path.parent.resolve().is_relative_to(top):
        raise LayoutError(f"layer entry {relative!r} leads out of the root filesystem")
    return path


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()
