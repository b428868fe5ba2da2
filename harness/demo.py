"""`make demo`: the whole of ckpt on this machine, on embedded defaults.

A local control plane (etcd + kube-apiserver), the checkpoints API on SQLite, one node agent
and the operator run as real processes; a busybox counter runs in a real runc container and
is registered as a pod. The demo checkpoints it with the CLI, stops it, restores the archive
as a new container, shows the counter going on from where it was, prints a summary and stops
everything it started.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harness.containers import BusyboxContainer, Runc
from harness.controlplane import Cluster, LocalControlPlane
from harness.stack import LocalStack
from harness.tools import criu_binary

NAMESPACE = "demo"
POD = "counter"
CHECKPOINT = "counter-1"
RESTORED = "counter-restored"

console = Console()


class DemoFailed(Exception):
    """A step of the demo did not work; the message says which."""


def ckpt(cluster: Cluster, stack: LocalStack, *args: str) -> None:
    """Runs the `ckpt` CLI as a user would, against the local control plane."""
    console.print(f"[dim]$ ckpt {' '.join(args)}[/dim]")
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "CKPT_API_URL": stack.api_url,
        "CKPT_API_TOKEN": stack.api_token,
    }
    if subprocess.run([sys.executable, "-m", "ckpt", *args], env=env, check=False).returncode:
        raise DemoFailed(f"`ckpt {' '.join(args)}` failed (its output is above)")


def step(title: str) -> None:
    console.rule(f"[bold cyan]{title}")


def run(workdir: Path) -> None:
    step("Starting the local stack")
    with console.status("control plane (etcd + kube-apiserver)"):
        control_plane = LocalControlPlane(workdir / "controlplane")
        cluster = control_plane.start()
    try:
        console.print(f"kube-apiserver at {cluster.server}")
        with console.status("CRIU >= 4 (tools/criu/install.sh)"):
            runc = Runc(root=workdir / "runc", criu=criu_binary())
        with console.status("checkpoints API (SQLite), node agent, operator"):
            stack = LocalStack(cluster, workdir / "stack", runc).start()
        try:
            demo(cluster, stack, runc, workdir)
        except DemoFailed:
            for process in (stack.operator, stack.agent, stack.api):
                if process is not None:
                    console.rule(f"[red]last lines of the {process.name} log")
                    console.print(process.log_tail(3000), markup=False, highlight=False)
            raise
        finally:
            stack.stop()
            for container_id in runc.list_ids():
                runc.run("delete", "--force", container_id, check=False)
    finally:
        control_plane.stop()
    console.print("[green]demo finished; everything it started is stopped[/green]")


def demo(cluster: Cluster, stack: LocalStack, runc: Runc, workdir: Path) -> None:
    console.print(
        f"API {stack.api_url} · agent on node {stack.node} · operator "
        f"(ServiceAccount ckpt-system/ckpt-operator, RBAC from deploy/)"
    )
    step("A workload: a counter in a runc container, registered as pod demo/counter")
    box = BusyboxContainer.create(workdir / "bundles", runc)
    box.start()
    box.wait_ready()
    stack.register_pod(NAMESPACE, POD, {"app": box})
    at_checkpoint = box.wait_counter(10)
    console.print(f"container {box.id} (pid {box.pid}), counter at {at_checkpoint}")

    step("Checkpoint it")
    ckpt(cluster, stack, "checkpoint", POD, "-n", NAMESPACE, "--name", CHECKPOINT)
    ckpt(cluster, stack, "list", "-n", NAMESPACE)
    console.print("[dim]$ kubectl get checkpoints -n demo[/dim]")
    console.print(cluster.kubectl("get", "checkpoints", "-n", NAMESPACE).stdout.rstrip())

    step("Stop the original, restore the archive as a new container")
    before = box.counter()
    box.delete()
    console.print(f"original container stopped and removed; its counter was at {before}")
    time.sleep(1)
    ckpt(cluster, stack, "restore", CHECKPOINT, "-n", NAMESPACE, "--container-id", RESTORED)
    restored = BusyboxContainer(runc=runc, id=RESTORED, bundle=box.bundle, owns_bundle=False)
    seen = [restored.counter()]
    for _ in range(4):
        time.sleep(0.5)
        seen.append(restored.counter())
    console.print(f"restored container {RESTORED}: counter {' → '.join(map(str, seen))}")
    # A fresh start would count from 1: the restored process must go on from its memory.
    if seen[0] < at_checkpoint or seen[-1] <= seen[0]:
        raise DemoFailed(f"the restored counter did not continue ({seen})")
    console.print("[green]the counter continued from its checkpointed memory[/green]")

    step("Summary")
    resource = cluster.kubectl(
        "get", "checkpoint", CHECKPOINT, "-n", NAMESPACE, "-o",
        "jsonpath={.status.checkpointId} {.status.sizeBytes} {.status.size} "
        "{.status.timings.freeze} {.status.timings.dump} {.status.timings.store} "
        "{.status.timings.total} {.status.apiStatus}",
    ).stdout.split()
    checkpoint_id, size_bytes, size, freeze, dump, store, total, api_status = resource
    table = Table(show_header=False, box=None)
    for key, value in [
        ("checkpoint id", checkpoint_id),
        ("API status", api_status),
        ("archive", f"{size} ({size_bytes} bytes, tar + zstd, sha256)"),
        ("timings (ms)", f"freeze {freeze} · dump {dump} · store {store} · total {total}"),
        ("restored as", f"{RESTORED}, counter {seen[0]} → {seen[-1]}"),
    ]:
        table.add_row(f"[bold]{key}", value)
    console.print(table)


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("the demo runs containers with runc and CRIU: run it as root")
    workdir = Path(tempfile.mkdtemp(prefix="ckpt-demo-"))
    try:
        run(workdir)
    except DemoFailed as failure:
        console.print(f"[red]demo failed:[/red] {failure}")
        raise SystemExit(1) from None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
