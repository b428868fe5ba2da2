"""Restore as a Pod for Pods that are more than one counter: two containers sharing an
emptyDir, checkpointed and brought back as one new Pod on the real cluster.

Both containers count in shell variables only, so each restored container going on from its
own checkpointed value proves its memory came back. One of them also keeps a file in the
emptyDir open (`exec 3>>`) and appends every tick to it: CRIU reopens that file at restore, so
the emptyDir's contents must be in the new Pod's volume before the process comes back, and the
file then holds one unbroken run of ticks (the original's up to the checkpoint, the restored
process's after). A seed file written once at start (never again: the restored shell does not
rerun its first line) must be there too, with its token.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import pytest

from harness.cluster import e2e
from harness.cluster.fixtures import ClusterUnderTest
from harness.controlplane import Cluster

# The module's first test may start the cluster and install ckpt: minutes on a cold machine.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

# Counts in a shell variable and appends each tick through one descriptor held open on a file
# in the emptyDir mounted at /data.
WRITER = (
    "echo $SEED > /data/seed; exec 3>>/data/log; i=0; "
    "while true; do i=$((i+1)); echo tick $i; echo tick $i >&3; sleep 0.2; done"
)


def _two_container_pod(name: str, image: str, node: str, seed: str) -> dict[str, Any]:
    data = {"name": "data", "mountPath": "/data"}
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": e2e.QUICK_STOP,
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [
                {"name": "counter", "image": image, "imagePullPolicy": "IfNotPresent",
                 "command": ["sh", "-c", e2e.COUNTER], "volumeMounts": [data]},
                {"name": "writer", "image": image, "imagePullPolicy": "IfNotPresent",
                 "command": ["sh", "-c", WRITER], "env": [{"name": "SEED", "value": seed}],
                 "volumeMounts": [data]},
            ],
        },
    }


def _consecutive(values: list[int]) -> bool:
    return values == list(range(values[0], values[0] + len(values)))


def test_two_containers_and_an_emptydir_restored_as_one_pod(
    ckpt_cluster: Cluster, cluster_nodes: ClusterUnderTest, cluster_namespace: str
) -> None:
    kube, namespace = ckpt_cluster, cluster_namespace
    node = e2e.nodes(kube)[0]
    seed = secrets.token_hex(8)
    e2e.apply(kube, namespace, _two_container_pod("pair", cluster_nodes.busybox_image, node, seed))
    kube.kubectl("-n", namespace, "wait", "--for=condition=Ready", "pod/pair", "--timeout=120s")
    for container in ("counter", "writer"):
        e2e.wait_until(lambda c=container: len(e2e.ticks(kube, namespace, "pair", c)) >= 5,
                       60, f"{container} is not counting")
    before = {c: e2e.ticks(kube, namespace, "pair", c)[-1] for c in ("counter", "writer")}
    e2e.checkpoint_ready(kube, namespace, "pair-1", "pair")

    e2e.create_restore(kube, namespace, "pair-back", "pair-1", podName="pair-back",
                       nodeName=node)
    status = e2e.wait_phase(kube, namespace, "restore", "pair-back", {"Running", "Failed"})
    assert status["phase"] == "Running", status
    kube.kubectl("-n", namespace, "wait", "--for=condition=Ready", "pod/pair-back",
                 "--timeout=60s")
    pod = e2e.get(kube, namespace, "pod", "pair-back")
    assert pod is not None
    assert pod["spec"]["runtimeClassName"] == "ckpt"
    assert pod["spec"]["volumes"][0]["emptyDir"] is not None
    statuses = {c["name"]: c for c in pod["status"]["containerStatuses"]}
    assert set(statuses) == {"counter", "writer"}
    assert all(c["restartCount"] == 0 and c["ready"] for c in statuses.values()), statuses

    # Each container goes on from its own checkpointed counter (memory, not a file).
    e2e.wait_until(lambda: all(len(e2e.ticks(kube, namespace, "pair-back", c)) >= 3
                               for c in statuses), 60, "a restored container is not counting")
    for container, at_checkpoint in before.items():
        ticks = e2e.ticks(kube, namespace, "pair-back", container)
        assert ticks[0] >= at_checkpoint > 1, (container, ticks[:5], at_checkpoint)
        assert _consecutive(ticks), (container, ticks)
    # The counter's writable-layer file came along as well.
    marker = kube.kubectl("-n", namespace, "exec", "pair-back", "-c", "counter", "--",
                          "cat", "/tmp/marker")
    assert marker.stdout.strip() == "written-by-the-original"

    # The emptyDir: the seed written once by the original, seen from both containers, and the
    # log the restored writer still appends to through its restored descriptor, one unbroken
    # run from 1 (the original's ticks) past the checkpoint (the restored process's).
    for container in ("counter", "writer"):
        got = kube.kubectl("-n", namespace, "exec", "pair-back", "-c", container, "--",
                           "cat", "/data/seed")
        assert got.stdout.strip() == seed, container
    time.sleep(1)
    logged = kube.kubectl("-n", namespace, "exec", "pair-back", "-c", "writer", "--",
                          "cat", "/data/log").stdout
    values = [int(n) for n in e2e.TICK.findall(logged)]
    restored_first = e2e.ticks(kube, namespace, "pair-back", "writer")[0]
    assert values[0] == 1, values[:5]
    assert _consecutive(values), values
    assert values[-1] > restored_first >= before["writer"], (values[-1], restored_first)

    kube.kubectl("-n", namespace, "delete", "pod", "pair-back", "--wait=true", "--timeout=60s")
    assert e2e.get(kube, namespace, "pod", "pair-back") is None
