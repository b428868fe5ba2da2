"""What the end-to-end tests on a cluster with real nodes share: kubectl round trips, waits on
a resource's phase, counter Pods, Checkpoints and Restores, the agent pod of a node.

Every helper goes through `kubectl` of the cluster under test, so the same test runs on the
local cluster and on any `--kubeconfig` cluster. Waits poll the condition itself (never a
fixed sleep) and fail with the last status seen.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from harness.cluster.deploy import NAMESPACE
from harness.controlplane import Cluster

GROUP_VERSION = "ckpt.dev/v1alpha1"
AGENT_SELECTOR = "app.kubernetes.io/name=ckpt-agent"

# A counter kept in a shell variable only: a restored Pod that goes on from the checkpointed
# value proves the memory came back (no file holds it). /tmp/marker lands in the container's
# writable layer, which a restore must bring along.
COUNTER = (
    "echo written-by-the-original > /tmp/marker; i=0; "
    "while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"
)
TICK = re.compile(r"^tick (\d+)$", re.MULTILINE)


@contextmanager
def fresh_namespace(kube: Cluster, prefix: str = "e2e") -> Iterator[str]:
    """A fresh namespace with its default ServiceAccount, deleted (without waiting) after."""
    name = f"{prefix}-{secrets.token_hex(3)}"
    kube.kubectl("create", "namespace", name)
    wait_until(
        lambda: kube.kubectl("-n", name, "get", "sa", "default", check=False).returncode == 0,
        60, f"no default ServiceAccount in {name}",
    )
    try:
        yield name
    finally:
        kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


def wait_until(condition: Callable[[], object], timeout: float, message: str,
               interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} (after {timeout:.0f}s)")
        time.sleep(interval)


def apply(kube: Cluster, namespace: str, body: dict[str, Any]) -> None:
    kube.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(body))


def get(kube: Cluster, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    """The object, or None when it does not exist."""
    proc = kube.kubectl("-n", namespace, "get", kind, name, "-o", "json", check=False)
    if proc.returncode == 0:
        return dict(json.loads(proc.stdout))
    if "NotFound" in proc.stderr:
        return None
    raise AssertionError(f"kubectl get {kind} {name}: {proc.stderr.strip()}")


def items(kube: Cluster, namespace: str, kind: str, *selectors: str) -> list[dict[str, Any]]:
    found = json.loads(kube.kubectl("-n", namespace, "get", kind, *selectors, "-o",
                                    "json").stdout)
    return list(found["items"])


def wait_phase(kube: Cluster, namespace: str, kind: str, name: str, phases: set[str],
               timeout: float = 300) -> dict[str, Any]:
    """The status once its phase is one of `phases`."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = (get(kube, namespace, kind, name) or {}).get("status") or {}
        if status.get("phase") in phases:
            return status
        time.sleep(1)
    raise AssertionError(f"{kind} {name} not in {phases} after {timeout}s: {status}")


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions", [])}


def nodes(kube: Cluster) -> list[str]:
    found = json.loads(kube.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    return sorted(n["metadata"]["name"] for n in found)


def counter_pod(kube: Cluster, namespace: str, name: str, image: str,
                node: str | None = None, *, wait: bool = True) -> None:
    """A busybox counter Pod (COUNTER), Ready when this returns (unless wait=False)."""
    spec: dict[str, Any] = {
        "containers": [{
            "name": "counter", "image": image, "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", COUNTER],
        }],
    }
    if node:
        spec["nodeName"] = node
    apply(kube, namespace, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "counter"}}, "spec": spec,
    })
    if wait:
        kube.kubectl("-n", namespace, "wait", "--for=condition=Ready", f"pod/{name}",
                     "--timeout=120s")


def ticks(kube: Cluster, namespace: str, pod: str, container: str | None = None) -> list[int]:
    """The counter values a Pod's container printed, in order."""
    args = ["-n", namespace, "logs", pod] + (["-c", container] if container else [])
    return [int(n) for n in TICK.findall(kube.kubectl(*args).stdout)]


def wait_ticks(kube: Cluster, namespace: str, pod: str, at_least: int = 2) -> int:
    """Waits until the counter printed `at_least` values; returns the last one."""
    seen: list[int] = []

    def enough() -> bool:
        seen[:] = ticks(kube, namespace, pod)
        return len(seen) >= at_least

    wait_until(enough, 60, f"{pod} printed fewer than {at_least} ticks")
    return seen[-1]


def create_checkpoint(kube: Cluster, namespace: str, name: str, pod: str,
                      **spec: Any) -> None:
    apply(kube, namespace, {
        "apiVersion": GROUP_VERSION, "kind": "Checkpoint",
        "metadata": {"name": name}, "spec": {"podName": pod, **spec},
    })


def checkpoint_ready(kube: Cluster, namespace: str, name: str, pod: str,
                     timeout: float = 300, **spec: Any) -> dict[str, Any]:
    """Creates a Checkpoint of `pod` and returns its status once Ready (fails if Failed)."""
    create_checkpoint(kube, namespace, name, pod, **spec)
    status = wait_phase(kube, namespace, "checkpoint", name, {"Ready", "Failed"}, timeout)
    assert status["phase"] == "Ready", status
    return status


def create_restore(kube: Cluster, namespace: str, name: str, checkpoint: str,
                   **spec: str) -> None:
    apply(kube, namespace, {
        "apiVersion": GROUP_VERSION, "kind": "Restore",
        "metadata": {"name": name}, "spec": {"checkpointName": checkpoint, **spec},
    })


def agent_on(kube: Cluster, node: str) -> str:
    """The name of the ckpt agent pod (CPU DaemonSet) on `node`: controlled by the DaemonSet,
    not merely labelled like it (the security tests plant lookalikes)."""
    pods = [
        p for p in items(kube, NAMESPACE, "pods", "-l", AGENT_SELECTOR,
                         "--field-selector", f"spec.nodeName={node}")
        if p["metadata"].get("deletionTimestamp") is None
        and any(o.get("controller") and o["kind"] == "DaemonSet" and o["name"] == "ckpt-agent"
                for o in p["metadata"].get("ownerReferences", []))
    ]
    assert pods, f"no ckpt agent pod on {node}"
    return str(pods[0]["metadata"]["name"])


@contextmanager
def agents_configured(kube: Cluster, timeout: float = 300, **env: str) -> Iterator[None]:
    """The CPU agents (DaemonSet ckpt-agent) run with these extra environment variables, as
    deploy/README.md's "Adapting" sets them (`kubectl set env`), until the block ends; then
    with the values they had before (or none). Both ways wait for the rollout, so the agents
    restart twice: tests using this disturb every other test on the cluster."""
    daemonset = "daemonset/ckpt-agent"
    spec = json.loads(kube.kubectl("-n", NAMESPACE, "get", daemonset, "-o", "json").stdout)
    (agent,) = [c for c in spec["spec"]["template"]["spec"]["containers"] if c["name"] == "agent"]
    before = {e["name"]: e.get("value") for e in agent.get("env", []) if e["name"] in env}
    restore = [f"{k}={before[k]}" if before.get(k) is not None else f"{k}-" for k in env]

    def rolled_out(settings: list[str]) -> None:
        kube.kubectl("-n", NAMESPACE, "set", "env", daemonset, "-c", "agent", *settings)
        kube.kubectl("-n", NAMESPACE, "rollout", "status", daemonset,
                     f"--timeout={int(timeout)}s")

    try:
        rolled_out([f"{k}={v}" for k, v in env.items()])
        yield
    finally:
        rolled_out(restore)
