"""Builds plugins/kubectl-ckpt.tar.gz, the archive plugins/ckpt.yaml installs through krew, from
the launcher plugins/kubectl-ckpt, and prints its sha256 for the manifest.

The archive is byte-for-byte reproducible from the launcher on one machine (fixed owner, mode
and times, no name or time in the gzip header): rebuild it after changing the launcher and copy
the printed sha256 into ckpt.yaml (tests/unit/test_krew_manifest.py checks that they agree).

    python plugins/krew_archive.py
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
LAUNCHER = HERE / "kubectl-ckpt"
ARCHIVE = HERE / "kubectl-ckpt.tar.gz"


def build(launcher: Path = LAUNCHER) -> bytes:
    content = launcher.read_bytes()
    entry = tarfile.TarInfo(launcher.name)
    entry.size = len(content)
    entry.mode = 0o755
    entry.mtime = 0
    entry.uid = entry.gid = 0
    entry.uname = entry.gname = "root"
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(entry, io.BytesIO(content))
    packed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, mtime=0) as gz:
        gz.write(tar_bytes.getvalue())
    return packed.getvalue()


def main() -> None:
    archive = build()
    ARCHIVE.write_bytes(archive)
    print(f"{ARCHIVE.relative_to(HERE.parent)}  sha256: {hashlib.sha256(archive).hexdigest()}")


if __name__ == "__main__":
    main()
