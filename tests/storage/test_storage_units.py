"""Pure parts of the storage work: age streaming, the archive's verify-then-unpack path and its
caps, typed metadata, node-local (file) locations, location models and the operator's
resolution of locations. No root, no S3 server."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pyrage
import pytest
import zstandard
from pydantic import SecretStr, ValidationError

from ckpt.agent.pipeline import container_entry
from ckpt.agent.runtimes.base import ContainerRef, DumpedContainer, ResolvedContainer
from ckpt.apis.checkpoint import CheckpointSpec
from ckpt.apis.storagelocation import Destination, LocationType, StorageLocationSpec
from ckpt.operator.locations import LocationError, Locations, check
from ckpt.storage import archive, crypto
from ckpt.storage.objects import FileLocationStore, StorageError

# CRIU's common image magic (0x54564319, little-endian), as every *.img file starts with it.
CRIU_IMG_MAGIC = (0x54564319).to_bytes(4, "little")


def _images(tmp: Path, size: int = 3 << 20) -> DumpedContainer:
    images = tmp / "images"
    images.mkdir()
    # Incompressible pages plus a recognisable marker, like CRIU's pages-*.img.
    (images / "pages-1.img").write_bytes(CRIU_IMG_MAGIC + os.urandom(size))
    (images / "inventory.img").write_bytes(CRIU_IMG_MAGIC + b"\x00" * 64)
    ref = ContainerRef(name="app", container_id="c0ffee", namespace="ns", pod="p")
    return DumpedContainer(container=ResolvedContainer(ref=ref, pid=4242), images_dir=images)


def _metadata(d: DumpedContainer) -> archive.ArchiveMetadata:
    return archive.ArchiveMetadata(
        checkpoint_id="ck1", namespace="ns", pod="p", runtime="runc",
        containers=[container_entry(d)],
    )


def _write(d: DumpedContainer, recipients: list[str] | None = None) -> tuple[bytes, str, int]:
    out = io.BytesIO()
    digest, size = archive.write_archive(out, [d], _metadata(d), recipients=recipients or [])
    return out.getvalue(), digest, size


# ------------------------------------------------------------------------------- encryption


def test_encrypted_archive_is_age_ciphertext_and_round_trips(tmp_path: Path) -> None:
    ident = pyrage.x25519.Identity.generate()
    d = _images(tmp_path)
    stored, digest, size = _write(d, [str(ident.to_public())])

    # The checksum is of the stored bytes (the ciphertext), so it can be checked first.
    assert digest == hashlib.sha256(stored).hexdigest() and size == len(stored)
    assert stored.startswith(crypto.AGE_MAGIC)
    assert CRIU_IMG_MAGIC not in stored and b"ckpt.json" not in stored
    assert archive.ZSTD_MAGIC not in stored[:64]  # nor the plaintext's zstd frame

    scratch = archive.make_scratch(tmp_path / "work", "job")
    assert (scratch.stat().st_mode & 0o777) == 0o700
    verified = archive.extract_verified(
        io.BytesIO(stored), scratch / "root", digest, identities=[ident]
    )
    meta = verified.metadata
    assert verified.size == len(stored)
    assert meta.containers[0].name == "app" and meta.format == archive.FORMAT_VERSION
    restored = scratch / "root" / "containers" / "app" / "pages-1.img"
    assert restored.read_bytes() == (d.images_dir / "pages-1.img").read_bytes()  # type: ignore[operator]


def test_encrypted_archive_without_or_with_wrong_identity_is_refused(tmp_path: Path) -> None:
    ident = pyrage.x25519.Identity.generate()
    stored, _, _ = _write(_images(tmp_path), [str(ident.to_public())])
    for identities, expected in (([], "no identity"), ([pyrage.x25519.Identity.generate()],
                                                       "none of the location's identities")):
        dest = tmp_path / f"out-{len(identities)}"
        with pytest.raises(archive.ArchiveError, match=expected):
            archive.extract_archive(io.BytesIO(stored), dest, identities=identities)
        assert not dest.exists() or not any(dest.iterdir())


def test_modified_or_truncated_ciphertext_is_refused_by_age(tmp_path: Path) -> None:
    ident = pyrage.x25519.Identity.generate()
    stored, _, _ = _write(_images(tmp_path), [str(ident.to_public())])
    flipped = bytearray(stored)
    flipped[len(flipped) // 2] ^= 0x01
    for bad in (bytes(flipped), stored[: len(stored) - 1000]):
        dest = tmp_path / f"out-{len(bad)}"
        with pytest.raises(archive.ArchiveError, match="damaged, truncated or was modified"):
            archive.extract_archive(io.BytesIO(bad), dest, identities=[ident])
        assert not any(dest.iterdir()), "something was unpacked from a bad ciphertext"


def test_identity_secret_parsing_never_echoes_key_material() -> None:
    good = pyrage.x25519.Identity.generate()
    assert len(crypto.parse_identities([f"# comment\n{good}\n"])) == 1
    secret_looking = "AGE-SECRET-KEY-1NOTAREALKEY"
    with pytest.raises(crypto.CryptoError) as info:
        crypto.parse_identities([secret_looking])
    assert secret_looking not in str(info.value)


# ------------------------------------------------------- unpack while hashing, capped


@pytest.mark.parametrize("where", ["zstd frame", "last byte", "appended"])
def test_mismatch_leaves_nothing_and_names_no_hash_or_path(tmp_path: Path, where: str) -> None:
    stored, digest, _ = _write(_images(tmp_path))
    tampered = bytearray(stored)
    if where == "zstd frame":
        tampered[len(tampered) // 2] ^= 0xFF  # zstd's own checksum fails first
    elif where == "last byte":
        tampered[-1] ^= 0xFF
    else:
        tampered += b"\0" * 4096  # after the end of the tar and of the zstd frame
    scratch = archive.make_scratch(tmp_path / "work", "job")
    with pytest.raises(archive.ChecksumError) as info:
        archive.extract_verified(io.BytesIO(bytes(tampered)), scratch / "root", digest)
    actual = hashlib.sha256(bytes(tampered)).hexdigest()
    assert actual not in str(info.value) and str(tmp_path) not in str(info.value)
    assert list(scratch.iterdir()) == [], "files of a mismatching archive were left"


def test_a_damaged_archive_with_its_recorded_checksum_is_a_bad_archive(tmp_path: Path) -> None:
    stored, _, _ = _write(_images(tmp_path))
    damaged = bytearray(stored)
    damaged[len(damaged) // 2] ^= 0xFF
    digest = hashlib.sha256(bytes(damaged)).hexdigest()  # recorded after the damage
    dest = tmp_path / "root"
    with pytest.raises(archive.ArchiveError, match="zstd") as info:
        archive.extract_verified(io.BytesIO(bytes(damaged)), dest, digest)
    assert not isinstance(info.value, archive.ChecksumError)
    assert not dest.exists()


def test_refuses_a_source_larger_than_allowed(tmp_path: Path) -> None:
    stored, digest, _ = _write(_images(tmp_path))
    dest = tmp_path / "root"
    limits = archive.ExtractLimits(max_bytes=1000)
    with pytest.raises(archive.LimitExceeded):
        archive.extract_verified(io.BytesIO(stored), dest, digest, limits=limits)
    assert not dest.exists()


def test_the_unpacked_files_and_their_modes_survive_the_one_pass(tmp_path: Path) -> None:
    d = _images(tmp_path)
    assert d.images_dir is not None
    (d.images_dir / "inventory.img").chmod(0o600)
    stored, digest, _ = _write(d)
    dest = tmp_path / "root"
    archive.extract_verified(io.BytesIO(stored), dest, digest)
    for src in d.images_dir.iterdir():
        out = dest / "containers" / "app" / src.name
        assert out.read_bytes() == src.read_bytes()
        assert out.stat().st_mode & 0o7777 == src.stat().st_mode & 0o777


def _bomb(tmp_path: Path, size: int) -> bytes:
    """A valid ckpt archive whose single member is `size` zero bytes: a few KB compressed."""
    raw = io.BytesIO()
    meta = archive.ArchiveMetadata(
        checkpoint_id="b", namespace="ns", pod="p", runtime="runc",
        containers=[archive.ContainerEntry(name="c", container_id="x", images="containers/c")],
    ).model_dump_json().encode()
    with tarfile.open(fileobj=raw, mode="w|") as tar:
        info = tarfile.TarInfo("ckpt.json")
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))
        info = tarfile.TarInfo("containers/c/pages-1.img")
        info.size = size
        tar.addfile(info, _Zeros(size))
    return zstandard.ZstdCompressor(level=19).compress(raw.getvalue())


class _Zeros(io.RawIOBase):
    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


def test_decompression_bomb_is_stopped_at_the_cap(tmp_path: Path) -> None:
    bomb = _bomb(tmp_path, 64 << 20)
    assert len(bomb) < 64 << 10  # 64 MiB of zeros in a few KB
    dest = tmp_path / "out"
    limits = archive.ExtractLimits(max_bytes=8 << 20, max_member_bytes=8 << 20)
    with pytest.raises(archive.LimitExceeded):
        archive.extract_archive(io.BytesIO(bomb), dest, limits=limits)
    assert not any(dest.iterdir()), "a capped member left bytes on disk"


def test_metadata_is_typed_versioned_and_bounded() -> None:
    with pytest.raises(archive.ArchiveError, match="unsupported archive format 99"):
        archive.parse_metadata(json.dumps({"format": 99}).encode())
    with pytest.raises(archive.ArchiveError, match="larger than"):
        archive.parse_metadata(b" " * (archive.METADATA_MAX_BYTES + 1))
    with pytest.raises(archive.ArchiveError, match="invalid field"):
        archive.parse_metadata(json.dumps({"format": 1, "checkpoint_id": ""}).encode())


# ----------------------------------------------------------------------- node-local locations


def _file_store(tmp_path: Path, prefix: str = "") -> FileLocationStore:
    dest = Destination(location="local", type=LocationType.file, prefix=prefix)
    return FileLocationStore(dest, tmp_path / "archives")


def test_file_location_per_namespace_0700_and_atomic(tmp_path: Path) -> None:
    store = _file_store(tmp_path, "team")
    key = store.dest.key_for("ns1", "ck1")
    assert key == "team/ns1/ck1.tar.zst"
    with store.open_write(key) as w:
        w.write(b"half")
        # Before commit only a temporary name exists.
        folder = tmp_path / "archives" / "team" / "ns1"
        assert [p.name for p in folder.iterdir() if not p.name.startswith(".")] == []
        w.commit()
    assert (folder / "ck1.tar.zst").read_bytes() == b"half"
    for p in (tmp_path / "archives" / "team", folder):
        assert p.stat().st_mode & 0o777 == 0o700
    assert (folder / "ck1.tar.zst").stat().st_mode & 0o777 == 0o600
    assert [o.key for o in store.list("ns1")] == [key]
    with store.open_read(key) as f:
        assert f.read() == b"half"
    assert store.delete(key) and not store.delete(key)


def test_file_location_aborted_write_leaves_nothing(tmp_path: Path) -> None:
    store = _file_store(tmp_path)
    key = store.dest.key_for("ns", "ck")
    with pytest.raises(RuntimeError), store.open_write(key) as w:
        w.write(b"x" * 100)
        raise RuntimeError("dump failed")
    assert list((tmp_path / "archives" / "ns").iterdir()) == []


def test_file_location_never_follows_symlinks(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root = tmp_path / "archives"
    root.mkdir()
    (root / "ns").symlink_to(elsewhere)  # a namespace folder swapped for a link
    store = _file_store(tmp_path)
    with pytest.raises(StorageError) as info:
        store.open_write(store.dest.key_for("ns", "ck"))
    assert str(tmp_path) not in str(info.value)
    assert list(elsewhere.iterdir()) == []
    (root / "ns").unlink()
    (root / "ns").mkdir()
    (root / "ns" / "ck.tar.zst").symlink_to(tmp_path / "secret")
    (tmp_path / "secret").write_text("host file")
    with pytest.raises(StorageError):
        store.open_read("ns/ck.tar.zst")


def test_file_location_refuses_paths_outside_it(tmp_path: Path) -> None:
    store = _file_store(tmp_path, "team")
    for url in ("file:///etc/shadow", "s3://bucket/team/ns/ck.tar.zst",
                (tmp_path / "archives" / "team" / ".." / "x").as_uri()):
        with pytest.raises(StorageError):
            store.key_of(url)
    inside = store.url("team/ns/ck.tar.zst")
    assert store.key_of(inside) == "team/ns/ck.tar.zst"


# ------------------------------------------------------------------------------ the models


def test_checkpoint_storage_is_a_name_never_a_path() -> None:
    base = {"podName": "p"}
    assert CheckpointSpec.from_resource({**base, "storage": "s3-main"}).storage == "s3-main"
    for bad in ("/var/lib/ckpt", "file:///tmp/x", "s3://b/k", "../x", "A_B"):
        with pytest.raises(ValidationError):
            CheckpointSpec.from_resource({**base, "storage": bad})


def test_location_spec_rules() -> None:
    with pytest.raises(ValidationError, match="needs a bucket"):
        StorageLocationSpec.model_validate_json(json.dumps({"type": "s3"}))
    with pytest.raises(ValidationError):
        StorageLocationSpec.model_validate_json(
            json.dumps({"type": "s3", "bucket": "b1b", "prefix": "../up"})
        )
    with pytest.raises(ValidationError):
        StorageLocationSpec.model_validate_json(json.dumps(
            {"type": "s3", "bucket": "bkt", "encryption": {"recipients": ["not-a-key"]}})
        )
    ok = StorageLocationSpec.model_validate_json(json.dumps(
        {"type": "s3", "bucket": "bkt", "prefix": "a/b", "pathStyle": True})
    )
    assert ok.path_style


def test_destination_masks_secrets_and_compares_without_them() -> None:
    a = Destination(
        location="x", type=LocationType.s3, bucket="bkt",
        credentials={"access_key_id": "AKIDSECRET", "secret_access_key": "SKSECRET"},
    )
    dumped = a.model_dump_json()
    assert "AKIDSECRET" not in dumped and "SKSECRET" not in dumped and "AKIDSECRET" not in repr(a)
    reloaded = Destination.model_validate_json(dumped)
    assert reloaded == a  # a job record (masked) still matches the retried request
    assert a.key_for("ns", "ck") == "ns/ck.tar.zst"
    enc = a.model_copy(update={"recipients": [str(pyrage.x25519.Identity.generate().to_public())]})
    assert enc.key_for("ns", "ck") == "ns/ck.tar.zst.age"
    with pytest.raises(ValueError):
        a.key_for("../etc", "ck")


# ------------------------------------------------------------------ the operator's resolution


def _locations(items: dict[str, dict[str, Any]], secrets: dict[str, dict[str, str]]) -> Locations:
    async def get(name: str) -> dict[str, Any] | None:
        return items.get(name)

    async def list_all() -> list[dict[str, Any]]:
        return list(items.values())

    async def read_secret(name: str) -> dict[str, str] | None:
        return secrets.get(name)

    return Locations(get, list_all, read_secret)


def _loc(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": spec}


def test_operator_resolves_default_named_and_credentials() -> None:
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    items = {
        "main": _loc("main", type="s3", bucket="bkt", default=True,
                     credentialsSecretRef={"name": "s3-keys"},
                     encryption={"recipients": [recipient],
                                 "identitySecretRef": {"name": "age-key"}}),
        "local": _loc("local", type="file"),
    }
    secrets = {"s3-keys": {"accessKeyId": "AK", "secretAccessKey": "SK"},
               "age-key": {"identity": "AGE-SECRET-KEY-1XYZ"}}
    locs = _locations(items, secrets)
    dest = asyncio.run(locs.destination(None))
    assert dest.location == "main" and dest.recipients == [recipient]
    assert dest.credentials is not None
    assert dest.credentials.secret_access_key == SecretStr("SK")
    assert dest.identities == [], "a checkpoint request never carries the private key"
    with_key = asyncio.run(locs.destination("main", with_identities=True))
    assert [i.get_secret_value() for i in with_key.identities] == ["AGE-SECRET-KEY-1XYZ"]
    assert asyncio.run(locs.destination("local")).type is LocationType.file


def test_operator_location_errors_are_clear() -> None:
    locs = _locations({"a": _loc("a", type="file", default=True),
                       "b": _loc("b", type="file", default=True),
                       "s": _loc("s", type="s3", bucket="bkt",
                                 credentialsSecretRef={"name": "gone"})}, {})
    cases = [(None, "AmbiguousDefaultStorageLocation"), ("nope", "StorageLocationNotFound"),
             ("s", "StorageCredentialsMissing")]
    for name, reason in cases:
        with pytest.raises(LocationError) as info:
            asyncio.run(locs.destination(name))
        assert info.value.reason == reason
    status = asyncio.run(check(locs, "s", {"type": "s3", "bucket": "bkt",
                                           "credentialsSecretRef": {"name": "gone"}}))
    assert status.phase == "Unavailable"
    assert status.conditions[0].reason == "StorageCredentialsMissing"
    assert asyncio.run(check(locs, "a", {"type": "file"})).phase == "Available"
