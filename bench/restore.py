"""Benchmark of Restore as a Pod on the local cluster: time from a Restore created to its Pod
Ready, against the same Pod's cold start and against plain `tar -x` + `runc restore` of the
same CRIU images.

Run (the local cluster running with ckpt deployed, `make cluster`; as root):

    PYTHONPATH=. .venv/bin/python bench/restore.py [--sizes 256 1024] [--reps 3]

For each size, each repetition on node ckpt-node-1:

* cold start: a busybox counter Pod that fills N MiB of memory (base64 text of random bytes
  in a shell variable, about 75% compressible, as bench/agent.py) and turns Ready by a
  readiness probe once it is filled; timed from `kubectl apply` to Ready seen by a watch;
* its Checkpoint (StorageLocation `node-local`: the archive is a file on the node, as the
  baseline's tar is);
* restore: a Restore on the same node, timed from `kubectl apply` to the restored Pod Ready
  seen by a watch; the Restore's status.timings split it (fetch, verify, extract: the agent's
  staging; restore: Pod created to its containers running);
* baseline: the same archive's CRIU images (unpacked beforehand, untimed) as a plain tar;
  timed: `tar -xf` of it and `runc restore --detach` with the restored container's own
  bundle (its config.json with another cgroup, its rootfs), run in the node's mount
  namespace with the node's runc and CRIU, as the wrapper runs them.

The page cache is dropped for the archive and the tar before each timed read
(posix_fadvise DONTNEED), so neither side reads from memory the other warmed.
It prints medians and ratios as a Markdown table, saves bench/results/restore.json and draws
bench/plots/restore.svg (the phases against the baseline; bench/plots.py).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.results import Recorder, samples_json
from bench.stats import median, ratio, run_footer
from ckpt.storage import archive
from harness.cluster import e2e
from harness.cluster.cluster import LocalKubeCluster
from harness.cluster.images import BUSYBOX_IMAGE
from harness.cluster.object_store import FILE_LOCATION
from harness.controlplane import Cluster, kubectl_binary

REPO_ROOT = Path(__file__).resolve().parents[1]
NODE = "ckpt-node-1"
READY = '{.status.conditions[?(@.type=="Ready")].status}{"\\n"}'


@dataclass
class Sample:
    cold: float
    restore: float  # Restore created -> Pod Ready
    fetch: float
    verify: float
    extract: float
    pod: float  # status.timings.restore: Pod created -> containers running
    base_tar: float
    base_runc: float
    archive_mib: float
    tar_mib: float

    @property
    def base(self) -> float:
        return self.base_tar + self.base_runc

    @property
    def staging(self) -> float:
        return self.fetch + self.verify + self.extract


@dataclass
class Row:
    mib: int
    samples: list[Sample] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return median(float(getattr(s, attr)) for s in self.samples)

    def to_json(self) -> dict[str, Any]:
        return {"mib": self.mib, **samples_json(self.samples, ["base", "staging"])}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Row:
        return cls(data["mib"], [Sample(**s) for s in data["samples"]])


def watch_ready(kube: Cluster, namespace: str, target: list[str], timeout: float) -> float:
    """perf_counter() when a watch on `target` (["pod/NAME"] or ["pods", "-l", SEL]) first
    shows Ready=True."""
    cmd = [kubectl_binary(), "--kubeconfig", str(kube.kubeconfig), "-n", namespace, "get",
           *target, "--watch", "-o", f"jsonpath={READY}"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.strip() == "True":
                    return time.perf_counter()
        finally:
            timer.cancel()
            proc.kill()
    raise RuntimeError(f"{target} not Ready within {timeout}s")


def _ballast_counter(mib: int) -> str:
    """e2e.COUNTER plus `mib` MiB of touched memory in a second shell process; its size lands
    in e2e.BALLAST_FILE once filled."""
    raw = mib * 1024 * 1024 * 3 // 4  # 3 random bytes -> 4 base64 characters
    return (
        f"( b=$(head -c {raw} /dev/urandom | base64 -w 0); echo ${{#b}} > {e2e.BALLAST_FILE}; "
        f"while true; do sleep 3600; done ) & {e2e.COUNTER}"
    )


def _pod(name: str, mib: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "nodeName": NODE,
            "containers": [{
                "name": "counter", "image": BUSYBOX_IMAGE, "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", _ballast_counter(mib)],
                "readinessProbe": {"exec": {"command": ["test", "-s", e2e.BALLAST_FILE]},
                                   "periodSeconds": 1},
            }],
        },
    }


def _fadvise_dontneed(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


class Node:
    """ckpt-node-1 of the local cluster seen from the host: its files and its mount
    namespace (that of its containerd)."""

    def __init__(self, local: LocalKubeCluster, name: str) -> None:
        self.root = local.workdir / "nodes" / name / "root"
        state = local.state() or {}
        procs = state.get("processes") or []
        assert isinstance(procs, list)
        self.pid = next(int(p["pid"]) for p in procs if p["name"] == f"{name}/containerd")
        self.path = os.environ.get("PATH", "")
        env = (Path(f"/proc/{self.pid}/environ").read_bytes().split(b"\0"))
        for item in env:
            if item.startswith(b"PATH="):
                self.path = item[5:].decode()

    def host(self, node_path: str) -> Path:
        return self.root / node_path.lstrip("/")

    def run(self, script: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["nsenter", "-t", str(self.pid), "-m", "--", "sh", "-c", script],
            env={**os.environ, "PATH": self.path}, text=True, **kwargs,
        )


def _baseline(node: Node, archive_path: Path, container_id: str, scratch: Path,
              rep: str) -> tuple[float, float, float]:
    """(tar -x seconds, runc restore seconds, tar MiB) for the archive's images restored with
    the running restored container's bundle."""
    unpacked = scratch / "unpacked"
    with archive_path.open("rb") as f:
        meta = archive.extract_archive(f, unpacked)
    (entry,) = meta.containers
    images = unpacked / entry.images
    tar_path = scratch / "images.tar"
    subprocess.run(["tar", "-cf", str(tar_path), "-C", str(images), "."], check=True)
    shutil.rmtree(unpacked)
    _fadvise_dontneed(tar_path)

    task = f"/run/containerd/io.containerd.runtime.v2.task/k8s.io/{container_id}"
    config = json.loads(node.host(f"{task}/config.json").read_text())
    config["root"]["path"] = f"{task}/rootfs"
    config["root"]["readonly"] = False
    config["linux"]["cgroupsPath"] = f"/ckpt-bench/{rep}"
    # The wrapper's CRIU configuration (tcp-close) lived in the staged folder, gone now.
    config.get("annotations", {}).pop("org.criu.config", None)
    bundle = scratch / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(config))
    dest, work, state = scratch / "images", scratch / "work", scratch / "runc"
    for d in (dest, work, state):
        d.mkdir()
    cid = f"bench-{rep}"
    out = scratch / "stdout"
    timing = scratch / "timing"
    script = (
        f"t0=$(date +%s%N); tar -xf {tar_path} -C {dest} && t1=$(date +%s%N) && "
        f"runc --root {state} restore --detach --bundle {bundle} --image-path {dest} "
        f"--work-path {work} {cid} && t2=$(date +%s%N) && echo $t0 $t1 $t2 > {timing}"
    )
    try:
        with out.open("w") as o:
            node.run(script, stdin=subprocess.DEVNULL, stdout=o, stderr=o, check=True,
                     timeout=600)
        t0, t1, t2 = (int(x) for x in timing.read_text().split())
        alive = node.run(f"runc --root {state} state {cid}", capture_output=True, check=True)
        assert json.loads(alive.stdout)["status"] == "running", alive.stdout
    except subprocess.CalledProcessError:
        print(out.read_text(), file=sys.stderr)
        raise
    finally:
        node.run(f"runc --root {state} delete --force {cid}", capture_output=True)
        node.run("rmdir /sys/fs/cgroup/ckpt-bench/* /sys/fs/cgroup/ckpt-bench",
                 capture_output=True)
    tar_mib = tar_path.stat().st_size / (1 << 20)
    return (t1 - t0) / 1e9, (t2 - t1) / 1e9, tar_mib


def _one(kube: Cluster, node: Node, namespace: str, mib: int, rep: int,
         scratch: Path) -> Sample:
    name = f"c{mib}-{rep}"
    t0 = time.perf_counter()
    e2e.apply(kube, namespace, _pod(name, mib))
    cold = watch_ready(kube, namespace, [f"pod/{name}"], 600) - t0
    status = e2e.checkpoint_ready(kube, namespace, f"{name}-ck", name, timeout=900,
                                  storage=FILE_LOCATION, retainPolicy="Delete")
    archive_path = node.host(status["restorePath"].removeprefix("file://"))
    # One copy of the memory at a time on the node.
    kube.kubectl("-n", namespace, "delete", "pod", name, "--wait=true", "--timeout=120s")
    _fadvise_dontneed(archive_path)

    t0 = time.perf_counter()
    e2e.create_restore(kube, namespace, f"{name}-rs", f"{name}-ck", podName=f"{name}-back",
                       nodeName=NODE)
    ready = watch_ready(kube, namespace, ["pods", "-l", f"ckpt.dev/restore-name={name}-rs"],
                         600)
    restore = ready - t0
    rs = e2e.wait_phase(kube, namespace, "restore", f"{name}-rs", {"Running", "Failed"})
    assert rs["phase"] == "Running", rs
    timings = rs["timings"]
    pod = e2e.get(kube, namespace, "pod", f"{name}-back")
    assert pod is not None
    container_id = pod["status"]["containerStatuses"][0]["containerID"].split("://")[1]

    _fadvise_dontneed(archive_path)
    base_tar, base_runc, tar_mib = _baseline(node, archive_path, container_id, scratch,
                                             f"{mib}-{rep}-{secrets.token_hex(2)}")
    sample = Sample(
        cold=cold, restore=restore, fetch=timings["fetch"] / 1000,
        verify=timings["verify"] / 1000, extract=timings["extract"] / 1000,
        pod=timings["restore"] / 1000, base_tar=base_tar, base_runc=base_runc,
        archive_mib=archive_path.stat().st_size / (1 << 20), tar_mib=tar_mib,
    )
    kube.kubectl("-n", namespace, "delete", "pod", f"{name}-back", "--wait=true",
                 "--timeout=120s")
    kube.kubectl("-n", namespace, "delete", f"restore/{name}-rs", f"checkpoint/{name}-ck",
                 "--timeout=120s")
    return sample


def run(sizes: list[int], reps: int) -> list[Row]:
    local = LocalKubeCluster()
    if not local.running():
        raise SystemExit("no local cluster running: make cluster")
    kube = local.cluster()
    node = Node(local, NODE)
    rows = []
    with e2e.fresh_namespace(kube, "bench-restore") as namespace:
        for mib in sizes:
            row = Row(mib)
            for rep in range(reps):
                with tempfile.TemporaryDirectory(dir=REPO_ROOT / ".cache",
                                                 prefix="bench-restore-") as tmp:
                    sample = _one(kube, node, namespace, mib, rep, Path(tmp))
                row.samples.append(sample)
                print(f"{mib} MiB rep {rep}: {sample}", file=sys.stderr, flush=True)
            rows.append(row)
    return rows


def table(rows: list[Row]) -> str:
    head = (
        "| touched memory | cold start (s) | Restore → Ready (s) | fetch / verify / extract (s) "
        "| Pod created → running (s) | tar -x + runc restore (s) | Restore / baseline "
        "| staging / tar -x | Restore / cold start | archive (MiB) | tar (MiB) |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r.mib} MiB | {r.median('cold'):.2f} | {r.median('restore'):.2f} "
            f"| {r.median('fetch'):.2f} / {r.median('verify'):.2f} / "
            f"{r.median('extract'):.2f} | {r.median('pod'):.2f} "
            f"| {r.median('base_tar'):.2f} + {r.median('base_runc'):.2f} = "
            f"{r.median('base'):.2f} | {ratio(r.median('restore'), r.median('base'), True)} "
            f"| {ratio(r.median('staging'), r.median('base_tar'))} "
            f"| {ratio(r.median('restore'), r.median('cold'))} "
            f"| {r.median('archive_mib'):.0f} | {r.median('tar_mib'):.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    started = time.monotonic()
    recorder = Recorder("restore", {"sizes": args.sizes, "reps": args.reps})
    rows = run(args.sizes, args.reps)
    print(table(rows))
    print("\n" + run_footer(len(rows), "sizes", args.reps, started))
    recorder.save([r.to_json() for r in rows])


if __name__ == "__main__":
    main()
