"""Benchmark of archives in S3: the agent's archive stream against a plain upload.

Run: PYTHONPATH=. .venv/bin/python bench/storage.py [--mib 1024] [--reps 3] [--workdir DIR]

A folder of CRIU-like images (one pages file of the given size, base64 text of random bytes
like the agent bench's ballast, so about 75% compressible; plus small images) is written once.
A SeaweedFS S3 server runs on loopback (harness.s3). Per repetition, in the same run and with
the same library (obstore) and part size:

* baseline upload: each image file put as it is (multipart, uncompressed, no hash);
* pipeline: ``archive.write_archive`` into the location's multipart writer (tar -> zstd level
  1 on all cores -> sha256 -> S3), without and with age encryption (one X25519 recipient);
* baseline download: each object fetched back into a file;
* pipeline restore: the agent's staging of a Restore, ``staging.stage_archive`` (fetch,
  decrypt when encrypted, decompress and unpack with caps while hashing, in one pass; refused
  on a mismatch; laid out for the ckpt-runc wrapper).

It prints medians and ratios against the baseline as a Markdown table, saves
bench/results/storage.json and draws bench/plots/storage.svg (throughput against the plain
objects; bench/plots.py).
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import obstore
import pyrage
from pydantic import SecretStr

from bench.results import Recorder
from bench.stats import median, ratio
from ckpt.agent.pipeline import container_entry
from ckpt.agent.runtimes.base import ContainerRef, DumpedContainer, ResolvedContainer
from ckpt.agent.staging import stage_archive
from ckpt.apis.storagelocation import Destination, LocationType
from ckpt.contract.agent import StageRequest
from ckpt.storage import archive, objects
from harness.s3 import SeaweedS3

MiB = 1 << 20


def make_images(folder: Path, mib: int) -> DumpedContainer:
    folder.mkdir(parents=True)
    with (folder / "pages-1.img").open("wb") as f:
        for _ in range(mib):
            # 768 KiB of random bytes as 1 MiB of base64 text.
            f.write(base64.b64encode(os.urandom(3 * MiB // 4)))
    for name, size in (("inventory.img", 64), ("core-1.img", 4096), ("mm-1.img", 8192),
                       ("pagemap-1.img", 65536), ("files.img", 2048)):
        (folder / name).write_bytes(os.urandom(size))
    ref = ContainerRef(name="app", container_id="bench", namespace="bench", pod="bench")
    return DumpedContainer(container=ResolvedContainer(ref=ref, pid=1), images_dir=folder)


def destination(s3: SeaweedS3, bucket: str, recipients: list[str]) -> Destination:
    return Destination.model_validate({
        "location": "bench", "type": LocationType.s3, "bucket": bucket, "prefix": "bench",
        "endpoint": s3.endpoint, "region": s3.region, "path_style": True,
        "credentials": {"access_key_id": s3.access_key, "secret_access_key": s3.secret_key},
        "recipients": recipients,
    })


def baseline_upload(dest: Destination, images: Path, rep: int) -> tuple[float, int]:
    store = objects.open_location(dest)._store  # type: ignore[attr-defined]
    t = time.monotonic()
    total = 0
    for path in sorted(images.iterdir()):
        obstore.put(store, f"bench/plain/{rep}/{path.name}", path,
                    chunk_size=objects.PART_SIZE, max_concurrency=objects.MAX_CONCURRENCY)
        total += path.stat().st_size
    return time.monotonic() - t, total


def baseline_download(dest: Destination, images: Path, rep: int, out: Path) -> float:
    store = objects.open_location(dest)._store  # type: ignore[attr-defined]
    out.mkdir(parents=True)
    t = time.monotonic()
    for path in sorted(images.iterdir()):
        result = obstore.get(store, f"bench/plain/{rep}/{path.name}")
        with (out / path.name).open("wb") as f:
            for chunk in result.stream(min_chunk_size=objects.READ_CHUNK):
                f.write(chunk)
    return time.monotonic() - t


def pipeline_upload(dest: Destination, dumped: DumpedContainer, cid: str) -> tuple[float, str, int]:
    store = objects.open_location(dest)
    key = dest.key_for("bench", cid)
    meta = archive.ArchiveMetadata(checkpoint_id=cid, namespace="bench", pod="bench",
                                   runtime="runc", containers=[container_entry(dumped)])
    t = time.monotonic()
    with store.open_write(key) as w:
        digest, size = archive.write_archive(w, [dumped], meta, recipients=dest.recipients)
        w.commit()
    return time.monotonic() - t, digest, size


def pipeline_restore(dest: Destination, cid: str, digest: str, restores: Path) -> float:
    url = objects.open_location(dest).url(dest.key_for("bench", cid))
    request = StageRequest(restore_id=cid, namespace="bench", pod_name="bench", source=url,
                           checksum=f"sha256:{digest}", location=dest)
    t = time.monotonic()
    staged = stage_archive(request, restores, archive_root=restores.parent / "archives")
    elapsed = time.monotonic() - t
    shutil.rmtree(staged.path)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    recorder = Recorder("storage", {"mib": args.mib, "reps": args.reps})
    work = Path(tempfile.mkdtemp(prefix="ckpt-bench-s3-", dir=args.workdir))
    ident = pyrage.x25519.Identity.generate()
    rows: dict[str, list[float]] = {k: [] for k in (
        "up_base", "up_plain", "up_enc", "down_base", "down_plain", "down_enc")}
    sizes: dict[str, int] = {}
    try:
        dumped = make_images(work / "images", args.mib)
        with SeaweedS3(work / "s3") as s3:
            s3.create_bucket("bench")
            plain = destination(s3, "bench", [])
            enc = destination(s3, "bench", [str(ident.to_public())])
            enc_restore = enc.model_copy(update={"identities": [SecretStr(str(ident))]})
            for rep in range(args.reps):
                t, sizes["base"] = baseline_upload(plain, dumped.images_dir, rep)  # type: ignore[arg-type]
                rows["up_base"].append(t)
                t, d_plain, sizes["plain"] = pipeline_upload(plain, dumped, f"p{rep}")
                rows["up_plain"].append(t)
                t, d_enc, sizes["enc"] = pipeline_upload(enc, dumped, f"e{rep}")
                rows["up_enc"].append(t)
                rows["down_base"].append(baseline_download(
                    plain, dumped.images_dir, rep, work / f"down{rep}"))  # type: ignore[arg-type]
                shutil.rmtree(work / f"down{rep}")
                rows["down_plain"].append(pipeline_restore(plain, f"p{rep}", d_plain, work / "r"))
                rows["down_enc"].append(pipeline_restore(enc_restore, f"e{rep}", d_enc,
                                                         work / "r"))
                print(f"rep {rep}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in rows.items()),
                      file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: median(v) for k, v in rows.items()}
    print("| images | plain upload (s) | archive (s) | ratio | archive + age (s) | ratio "
          "| plain download (s) | restore (s) | ratio | restore + age (s) | ratio |"
          " uploaded plain / archive (MiB) |")
    print("|---:" * 12 + "|")
    print(
        f"| {args.mib} MiB | {med['up_base']:.2f} | {med['up_plain']:.2f} "
        f"| {ratio(med['up_plain'], med['up_base'], bold=True)} | {med['up_enc']:.2f} "
        f"| {ratio(med['up_enc'], med['up_base'], bold=True)} | {med['down_base']:.2f} "
        f"| {med['down_plain']:.2f} | {ratio(med['down_plain'], med['down_base'], bold=True)} "
        f"| {med['down_enc']:.2f} | {ratio(med['down_enc'], med['down_base'], bold=True)} "
        f"| {sizes['base'] // MiB} / {sizes['plain'] // MiB} |"
    )
    print("\n" + recorder.footer())
    recorder.save([{"mib": args.mib, "median": med, "samples": rows,
                    "uploaded_mib": {k: v / MiB for k, v in sizes.items()}}])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
