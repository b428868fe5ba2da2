"""`make demo`: ckpt on a real local cluster, on embedded defaults.

It brings up the local cluster (`harness.cluster`: kubelet + containerd nodes, ckpt installed
from deploy/ with its own images), or reuses the one `make cluster` left running. A busybox
counter Pod runs on the first node and prints `tick N` from a shell variable (no file holds the
count). The demo checkpoints it with `ckpt checkpoint`, deletes the original Pod, restores the
checkpoint with `ckpt restore` as a new Pod (on the other node when the archive is in a
location both nodes reach, else on the same node), shows both with `kubectl get pods -o wide`
and the restored Pod's log going on from the checkpointed tick, prints a summary, and stops the
cluster if it started it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from harness.cluster.cluster import LocalKubeCluster
from harness.cluster.deploy import deploy_ckpt
from harness.cluster.images import BUSYBOX_IMAGE
from harness.controlplane import Cluster

NAMESPACE = "demo"
POD = "counter"
CHECKPOINT = "counter-1"
RESTORED = "counter-restored"
COUNTER = "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.5; done"
TICK = re.compile(r"^tick (\d+)$", re.MULTILINE)

console = Console()


class DemoFailed(RuntimeError):
    pass


def step(title: str) -> None:
    console.rule(f"[bold]{title}")


def ckpt(cluster: LocalKubeCluster, *args: str) -> None:
    """Runs the `ckpt` CLI as a user would, with the cluster's kubeconfig."""
    console.print(f"[dim]$ ckpt {' '.join(args)}[/dim]")
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    if subprocess.run([sys.executable, "-m", "ckpt", *args], env=env, check=False).returncode:
        raise DemoFailed(f"`ckpt {' '.join(args)}` failed (its output is above)")


def show(kube: Cluster, *args: str) -> str:
    console.print(f"[dim]$ kubectl {' '.join(args)}[/dim]")
    out = kube.kubectl(*args).stdout
    console.print(out.rstrip())
    return out


def ticks(kube: Cluster, pod: str) -> list[int]:
    logs = kube.kubectl("-n", NAMESPACE, "logs", pod, check=False).stdout
    return [int(n) for n in TICK.findall(logs)]


def get(kube: Cluster, kind: str, name: str) -> dict[str, Any]:
    out = kube.kubectl("-n", NAMESPACE, "get", kind, name, "-o", "json").stdout
    return dict(json.loads(out))


def target_node(kube: Cluster, source: str, nodes: list[str], status: dict[str, Any]) -> str:
    """The other node when the archive is in object storage (both nodes reach it); a file
    location is on the source node's disk, so the restore stays there."""
    location = status.get("storageLocation")
    if location:
        spec = json.loads(kube.kubectl("get", "storagelocation", location, "-o", "json").stdout)
        if spec.get("spec", {}).get("type") == "s3":
            return next(n for n in nodes if n != source)
    console.print(f"[yellow]the archive is in a node-local location: restoring on {source}")
    return source


def demo(cluster: LocalKubeCluster) -> None:
    kube = cluster.cluster()
    nodes = sorted(n.name for n in cluster.nodes())
    source = nodes[0]
    show(kube, "get", "nodes", "-o", "wide")
    show(kube, "-n", "ckpt-system", "get", "pods", "-o", "wide")

    step(f"A counter Pod on {source}")
    kube.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true",
                 "--timeout=120s")
    kube.kubectl("create", "namespace", NAMESPACE)
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": POD, "namespace": NAMESPACE, "labels": {"app": "counter"}},
        "spec": {"nodeName": source, "containers": [{
            "name": "counter", "image": BUSYBOX_IMAGE, "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", COUNTER],
        }]},
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(pod))
    kube.kubectl("-n", NAMESPACE, "wait", "--for=condition=Ready", f"pod/{POD}",
                 "--timeout=120s")
    time.sleep(3)
    console.print(f"counter so far: {ticks(kube, POD)[-3:]}")

    step("Checkpoint it")
    ckpt(cluster, "checkpoint", POD, "-n", NAMESPACE, "--name", CHECKPOINT)
    checkpoint = get(kube, "checkpoint", CHECKPOINT).get("status", {})
    show(kube, "-n", NAMESPACE, "get", "checkpoints")
    at_checkpoint = ticks(kube, POD)[-1]
    show(kube, "-n", NAMESPACE, "get", "pods", "-o", "wide")

    step("Delete the original Pod, restore the checkpoint as a new Pod")
    kube.kubectl("-n", NAMESPACE, "delete", "pod", POD, "--wait=true", "--timeout=60s")
    node = target_node(kube, source, nodes, checkpoint)
    ckpt(cluster, "restore", CHECKPOINT, "-n", NAMESPACE, "--node", node,
         "--pod-name", RESTORED)
    kube.kubectl("-n", NAMESPACE, "wait", "--for=condition=Ready", f"pod/{RESTORED}",
                 "--timeout=120s")
    time.sleep(3)
    show(kube, "-n", NAMESPACE, "get", "pods,checkpoints,restores", "-o", "wide")
    seen = ticks(kube, RESTORED)
    console.print(f"[dim]$ kubectl -n {NAMESPACE} logs {RESTORED}[/dim]  -> ticks {seen[:3]} … "
                  f"{seen[-3:]}")
    # A fresh start prints tick 1: the restored process must go on from its memory.
    if not seen or seen[0] <= 1 or seen != list(range(seen[0], seen[0] + len(seen))):
        raise DemoFailed(f"the restored counter did not continue: {seen}")

    restore = json.loads(kube.kubectl("-n", NAMESPACE, "get", "restores", "-o",
                                      "json").stdout)["items"][0]["status"]
    table = Table(title="ckpt demo", show_header=False)
    table.add_row("checkpoint", f"{CHECKPOINT} of {NAMESPACE}/{POD} on {source}")
    table.add_row("archive", f"{checkpoint.get('restorePath')} "
                             f"({checkpoint.get('sizeBytes', 0) / 2**20:.1f} MiB)")
    table.add_row("checksum", str(checkpoint.get("checksum")))
    table.add_row("checkpoint timings (ms)", json.dumps(checkpoint.get("timings", {})))
    table.add_row("restored as", f"Pod {RESTORED} on {node}, runtimeClass ckpt")
    table.add_row("restore timings (ms)", json.dumps(restore.get("timings", {})))
    table.add_row("counter", f"the original had printed tick {at_checkpoint} when the checkpoint "
                             f"was Ready; the new Pod went on at tick {seen[0]} (a fresh start "
                             "prints tick 1)")
    console.print(table)


def main() -> None:
    cluster = LocalKubeCluster()
    started_here = not cluster.running()
    status = 0
    try:
        step("Local cluster (kubelet + containerd nodes), ckpt from deploy/")
        cluster.up(nodes=2, log=lambda message: console.print(f"[dim]cluster: {message}"))
        deploy_ckpt(cluster, log=lambda message: console.print(f"[dim]deploy: {message}"))
        demo(cluster)
        console.print("[bold green]demo complete")
    except DemoFailed as exc:
        console.print(f"[bold red]demo failed:[/bold red] {exc}")
        console.print(f"component logs: {cluster.logs}; "
                      "`kubectl -n ckpt-system logs` for the operator and agents")
        status = 1
    finally:
        if started_here:
            cluster.down(log=lambda message: console.print(f"[dim]cluster: {message}"))
    sys.exit(status)


if __name__ == "__main__":
    main()
