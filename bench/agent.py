"""Benchmark of the node agent's checkpoint pipeline against plain `runc checkpoint` + `tar`.

Run: .venv/bin/python bench/agent.py [--sizes 256 1024 2048] [--reps 3] [--workdir DIR]

For each size, one busybox counter container holds that many MiB of touched memory (the
devenv launcher's ballast: base64 text of random bytes, about 75% compressible). Each
repetition measures, in the same run and on the same container:

* baseline: `runc checkpoint --leave-running` into a directory, then `tar -cf` of it;
* pipeline: `ckpt.agent.pipeline.run_checkpoint` (freeze, CRIU dump, tar -> zstd -> sha256
  -> file store with temporary name + fsync + rename), as the agent runs it;
* restore: baseline `tar -xf` + `runc restore`, against the path a Restore takes: the agent's
  staging (`ckpt.agent.staging.stage_archive`: fetch, sha256 verification, zstd decompression
  and extraction into the layout the ckpt-runc wrapper reads) + `runc restore` of the staged
  images, as the wrapper runs it, each into a fresh container.

It prints medians and the pipeline/baseline ratio as a Markdown table, saves
bench/results/agent.json and draws bench/plots/agent.svg (throughput against the baseline;
bench/plots.py). Needs root, runc and CRIU >= 4 (tools/criu/install.sh).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.results import Recorder, samples_json
from bench.stats import median, ratio
from ckpt.agent import pipeline
from ckpt.agent.context import build_context
from ckpt.agent.settings import AgentSettings
from ckpt.agent.staging import stage_archive
from ckpt.contract.agent import CheckpointRequest, ContainerTarget, StageRequest
from harness.containers import BusyboxContainer, Runc

REPO_ROOT = Path(__file__).resolve().parents[1]
NAMESPACE, POD, CONTAINER = "bench", "ballast", "app"
POD_UID = str(uuid.uuid4())


@dataclass
class Sample:
    base_dump: float
    base_tar: float
    base_bytes: int
    pipe_total: float
    pipe_dump: float
    pipe_store: float
    pipe_bytes: int
    base_restore: float
    pipe_restore: float
    pipe_restore_stage: float  # fetch + verify + decompress + extract, laid out for the wrapper
    pipe_restore_runc: float

    @property
    def base_total(self) -> float:
        return self.base_dump + self.base_tar


@dataclass
class Row:
    mib: int
    samples: list[Sample] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return median(float(getattr(s, attr)) for s in self.samples)

    def to_json(self) -> dict[str, Any]:
        return {"mib": self.mib, **samples_json(self.samples, ["base_total"])}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Row:
        return cls(data["mib"], [Sample(**s) for s in data["samples"]])


def _criu() -> str:
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "tools" / "criu" / "install.sh")],
        capture_output=True, text=True, check=True,
    )
    return proc.stdout.strip().splitlines()[-1]


def _drop(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _fresh_bundle(container: BusyboxContainer, dest: Path) -> Path:
    _drop(dest)
    shutil.copytree(container.bundle, dest, symlinks=True)
    return dest


def _baseline(container: BusyboxContainer, runc: Runc, scratch: Path, rep: int) -> tuple:
    images, tar_path = scratch / "base-images", scratch / "base.tar"
    images.mkdir()
    t0 = time.perf_counter()
    container.checkpoint(images, leave_running=True, timeout=900)
    t1 = time.perf_counter()
    subprocess.run(["tar", "-cf", str(tar_path), "-C", str(images), "."], check=True)
    # The pipeline fsyncs its archive before the rename; the baseline must pay the same.
    with tar_path.open("rb+") as f:
        os.fsync(f.fileno())
    t2 = time.perf_counter()
    size = tar_path.stat().st_size
    _drop(images)

    restored_images = scratch / "base-restore"
    restored_images.mkdir()
    bundle = _fresh_bundle(container, scratch / "base-bundle")
    cid = f"bench-base-{rep}"
    t3 = time.perf_counter()
    subprocess.run(["tar", "-xf", str(tar_path), "-C", str(restored_images)], check=True)
    runc.run(
        "restore", "-d", "--image-path", str(restored_images), "--bundle", str(bundle),
        "--manage-cgroups-mode", runc.cgroups_mode(), cid, timeout=900,
    )
    t4 = time.perf_counter()
    runc.run("delete", "--force", cid, check=False)
    for p in (restored_images, tar_path, bundle):
        _drop(p)
    return t1 - t0, t2 - t1, size, t4 - t3


async def _pipeline(
    container: BusyboxContainer, ctx: pipeline.PipelineContext, runc: Runc, scratch: Path,
    restores: Path, mib: int, rep: int,
) -> tuple:
    request = CheckpointRequest(
        checkpoint_id=f"bench-{mib}-{rep}", namespace=NAMESPACE, pod=POD, pod_uid=POD_UID,
        containers=[ContainerTarget(name=CONTAINER, container_id=container.id)],
    )
    t0 = time.perf_counter()
    result = await pipeline.run_checkpoint(request, ctx, lambda phase, n: None)
    t1 = time.perf_counter()

    bundle = _fresh_bundle(container, scratch / "pipe-bundle")
    cid = f"bench-pipe-{rep}"
    stage = StageRequest(
        restore_id=f"bench-{mib}-{rep}", namespace=NAMESPACE, pod_name=f"{POD}-restored",
        source=result.restore_path, checksum=result.checksum,
    )
    t2 = time.perf_counter()
    # In a worker thread, as the agent's stagings run it.
    staged = await asyncio.to_thread(stage_archive, stage, restores, archive_root=ctx.store.root)
    t3 = time.perf_counter()
    images = Path(staged.path) / "containers" / CONTAINER / "images"
    runc.run(
        "restore", "-d", "--image-path", str(images), "--bundle", str(bundle),
        "--manage-cgroups-mode", runc.cgroups_mode(), cid, timeout=900,
    )
    t4 = time.perf_counter()
    runc.run("delete", "--force", cid, check=False)
    ctx.store.delete(result.restore_path)
    for p in (Path(staged.path), bundle):
        _drop(p)
    return (
        t1 - t0, result.timings.dump / 1000, result.timings.store / 1000, result.size_bytes,
        t4 - t2, t3 - t2, t4 - t3,
    )


async def run(sizes: list[int], reps: int, workdir: Path) -> list[Row]:
    criu = _criu()
    runc = Runc(root=workdir / "runc", criu=criu)
    settings = AgentSettings(
        node_name="bench", runc_root=runc.root, criu_binary=criu,
        store=str(workdir / "archives"), work_dir=workdir / "work",
        state_dir=workdir / "state", restores_dir=workdir / "restores",
    )
    ctx = build_context(settings)
    scratch = workdir / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    restores = settings.restores_dir
    rows = []
    for mib in sizes:
        row = Row(mib)
        with BusyboxContainer.launch(workdir / "bundles", runc, ballast_mib=mib) as container:
            # The agent dumps only a container whose runtime records name the requested pod.
            container.record_pod(NAMESPACE, POD, POD_UID, CONTAINER)
            for rep in range(reps):
                # Alternate the order so neither side always runs on a warmer page cache.
                if rep % 2 == 0:
                    b = _baseline(container, runc, scratch, rep)
                    p = await _pipeline(container, ctx, runc, scratch, restores, mib, rep)
                else:
                    p = await _pipeline(container, ctx, runc, scratch, restores, mib, rep)
                    b = _baseline(container, runc, scratch, rep)
                row.samples.append(Sample(*b[:3], *p[:4], b[3], *p[4:]))
                print(f"  {mib} MiB rep {rep}: {row.samples[-1]}", file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| touched memory | baseline dump + tar (s) | pipeline (s) | ratio | pipeline dump / "
        "store (s) | throughput (MiB/s) | tar size (MiB) | archive size (MiB) | "
        "restore baseline (s) | restore: staging + runc restore (s) | ratio | staging / "
        "runc restore (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        base, pipe = r.median("base_total"), r.median("pipe_total")
        rb, rp = r.median("base_restore"), r.median("pipe_restore")
        lines.append(
            f"| {r.mib} MiB | {base:.2f} | {pipe:.2f} | {ratio(pipe, base)} | "
            f"{r.median('pipe_dump'):.2f} / {r.median('pipe_store'):.2f} | "
            f"{r.mib / pipe:.0f} | {r.median('base_bytes') / 2**20:.0f} | "
            f"{r.median('pipe_bytes') / 2**20:.0f} | {rb:.2f} | {rp:.2f} | {ratio(rp, rb)} | "
            f"{r.median('pipe_restore_stage'):.2f} / {r.median('pipe_restore_runc'):.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 2048])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    recorder = Recorder("agent", {"sizes": args.sizes, "reps": args.reps})
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so containers and files are removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ckpt-bench-agent-"))
    try:
        rows = asyncio.run(run(args.sizes, args.reps, workdir))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"{args.reps} repetitions, medians; {os.cpu_count()} CPUs")
    print(table(rows))
    print("\n" + recorder.footer())
    recorder.save([r.to_json() for r in rows])


if __name__ == "__main__":
    main()
