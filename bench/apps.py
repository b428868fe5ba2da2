"""Benchmark of the application matrix on the local cluster: for each real application of
tests/apps (harness.cluster.apps), its memory, what its checkpoint costs (freeze, dump,
store; archive size), Restore → Ready, and its own cold start to the same state.

Run (the local cluster running with ckpt deployed, `make cluster`; as root):

    PYTHONPATH=. .venv/bin/python bench/apps.py [--apps python redis ...] [--reps 3]

Each repetition on node ckpt-node-1, in a fresh namespace:

* cold start: the application's Pod from `kubectl apply` to Ready (its readiness probe: the
  port answers), seen by a watch, then its `prepare` steps (what it holds before the
  checkpoint) through a client Pod; a JVM builds its heap map and PostgreSQL runs initdb
  before they answer, as they would after any restart;
* memory: the resident memory of every process of its container;
* its Checkpoint (StorageLocation `node-local`), the status timings: freeze, dump, store,
  total, and the archive's size;
* restore: a Restore on the same node, from `kubectl apply` to the restored Pod Ready seen by
  a watch, and its state read back (the same check as the tests) before it counts.

It prints medians and ratios (Restore → Ready / cold start) as a Markdown table, saves
bench/results/apps.json and draws bench/plots/apps.svg (bench/plots.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from bench.restore import NODE, watch_ready
from bench.results import Recorder, samples_json
from bench.stats import median, ratio, run_footer
from harness.cluster import apps, e2e
from harness.cluster.cluster import LocalKubeCluster
from harness.cluster.object_store import FILE_LOCATION
from harness.controlplane import Cluster


@dataclass
class Sample:
    cold: float
    memory_mib: float
    freeze: float
    dump: float
    store: float
    checkpoint: float
    archive_mib: float
    restore: float


@dataclass
class Row:
    app: str
    samples: list[Sample] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return median(float(getattr(s, attr)) for s in self.samples)

    def to_json(self) -> dict[str, Any]:
        return {"app": self.app, **samples_json(self.samples)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Row:
        return cls(data["app"], [Sample(**s) for s in data["samples"]])


def _one(kube: Cluster, namespace: str, app: apps.App, client: str, rep: int) -> Sample:
    pod = f"{app.name}-{rep}"
    start = time.perf_counter()
    e2e.apply(kube, namespace, app.pod(pod, NODE, labels={"bench": pod}))
    watch_ready(kube, namespace, [f"pod/{pod}"], 300)
    host = apps.pod_ip(kube, namespace, pod)
    apps.prepare(kube, namespace, client, app, host)
    cold = time.perf_counter() - start
    before = apps.state(kube, namespace, client, app, host)
    memory = apps.memory_kib(kube, namespace, pod) / 1024

    status: dict[str, Any] = e2e.checkpoint_ready(kube, namespace, pod, pod,
                                                  storage=FILE_LOCATION)
    timings = status["timings"]
    restored = f"{pod}-back"
    start = time.perf_counter()
    e2e.create_restore(kube, namespace, pod, pod, podName=restored, nodeName=NODE)
    # By the Restore's label: the Pod does not exist yet, and a watch by name would fail.
    ready = watch_ready(kube, namespace, ["pods", "-l", f"ckpt.dev/restore-name={pod}"], 300)
    restore = ready - start
    app.check(before, apps.state(kube, namespace, client, app,
                                 apps.pod_ip(kube, namespace, restored)))
    for name in (pod, restored):
        kube.kubectl("-n", namespace, "delete", "pod", name, "--wait=true", "--timeout=60s")
    kube.kubectl("-n", namespace, "delete", "restore", pod, "--timeout=60s")
    kube.kubectl("-n", namespace, "delete", "checkpoint", pod, "--timeout=60s")
    return Sample(
        cold=cold, memory_mib=memory,
        freeze=timings.get("freeze", 0) / 1000, dump=timings.get("dump", 0) / 1000,
        store=timings.get("store", 0) / 1000, checkpoint=timings.get("total", 0) / 1000,
        archive_mib=int(status["sizeBytes"]) / (1 << 20), restore=restore,
    )


def run(names: list[str], reps: int) -> list[Row]:
    local = LocalKubeCluster()
    if not local.running():
        raise SystemExit("no local cluster running: make cluster")
    for archive in sorted(apps.build_images().glob("*.tar")):
        local.load_image(archive)
    kube = local.cluster()
    rows = []
    with e2e.fresh_namespace(kube, "bench-apps") as namespace:
        for name in names:
            app = apps.APPS[name]
            client = apps.client_pod(kube, namespace, app, NODE)
            row = Row(name)
            for rep in range(reps):
                sample = _one(kube, namespace, app, client, rep)
                row.samples.append(sample)
                print(f"{name} rep {rep}: {sample}", file=sys.stderr, flush=True)
            kube.kubectl("-n", namespace, "delete", "pod", client, "--wait=true")
            rows.append(row)
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| application | memory (MiB) | checkpoint (s): freeze / dump / store = total "
        "| archive (MiB) | Restore → Ready (s) | cold start to the same state (s) "
        "| Restore / cold start |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.app} | {r.median('memory_mib'):.0f} "
            f"| {r.median('freeze'):.2f} / {r.median('dump'):.2f} / {r.median('store'):.2f} "
            f"= {r.median('checkpoint'):.2f} | {r.median('archive_mib'):.1f} "
            f"| {r.median('restore'):.2f} | {r.median('cold'):.2f} "
            f"| {ratio(r.median('restore'), r.median('cold'), True)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", nargs="+", default=list(apps.APPS), choices=list(apps.APPS))
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    started = time.monotonic()
    recorder = Recorder("apps", {"apps": args.apps, "reps": args.reps})
    rows = run(args.apps, args.reps)
    print(table(rows))
    print("\n" + run_footer(len(rows), "applications", args.reps, started))
    recorder.save([r.to_json() for r in rows])


if __name__ == "__main__":
    main()
