"""The Pod template a Checkpoint keeps for its Restores."""

from __future__ import annotations

from ckpt.operator.podtemplate import image_digests, pod_template

DIGEST = "docker.io/library/busybox@sha256:" + "ab" * 32


def _pod() -> dict:
    return {
        "metadata": {
            "name": "web-7d9f-abcde", "namespace": "demo", "uid": "u-1", "resourceVersion": "9",
            "ownerReferences": [{"kind": "ReplicaSet", "name": "web-7d9f"}],
            "labels": {"app": "web", "pod-template-hash": "7d9f"},
            "annotations": {
                "team": "a", "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "ckpt.dev/restore": "old-restore",
            },
        },
        "spec": {
            "nodeName": "node-1", "priority": 0, "preemptionPolicy": "PreemptLowerPriority",
            "serviceAccountName": "default", "restartPolicy": "Always",
            "volumes": [
                {"name": "cache", "emptyDir": {}},
                {"name": "kube-api-access-x1", "projected": {"sources": []}},
            ],
            "containers": [
                {"name": "app", "image": "busybox:1.36", "volumeMounts": [
                    {"name": "cache", "mountPath": "/cache"},
                    {"name": "kube-api-access-x1", "mountPath": "/var/run/secrets/k8s"},
                ]},
                {"name": "side", "image": "local/side:dev", "volumeMounts": [
                    {"name": "kube-api-access-x1", "mountPath": "/var/run/secrets/k8s"},
                ]},
            ],
        },
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "app", "imageID": DIGEST},
            # Imported without a registry: an image id no node could pull by.
            {"name": "side", "imageID": "sha256:" + "cd" * 32},
        ]},
    }


def test_template_drops_what_belongs_to_the_old_pod() -> None:
    pod = _pod()
    template = pod_template(pod)
    assert template == {
        "metadata": {"labels": {"app": "web"}, "annotations": {"team": "a"}},
        "spec": {
            "serviceAccountName": "default", "restartPolicy": "Always",
            "volumes": [{"name": "cache", "emptyDir": {}}],
            "containers": [
                {"name": "app", "image": DIGEST,
                 "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]},
                {"name": "side", "image": "local/side:dev"},
            ],
        },
    }
    # The pod read from the apiserver is left as it was.
    assert pod["spec"]["nodeName"] == "node-1"
    assert len(pod["spec"]["containers"][1]["volumeMounts"]) == 1


def test_digests_only_where_pullable() -> None:
    assert image_digests(_pod()) == {"app": DIGEST}
    assert image_digests({"status": {"containerStatuses": [
        {"name": "a", "imageID": "docker-pullable://" + DIGEST}
    ]}}) == {"a": DIGEST}
