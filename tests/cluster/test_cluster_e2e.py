"""The cluster with real nodes: nodes Ready, DNS and Services, exec and logs, the kubelet
checkpoint API on a real Pod. Runs against the local cluster or any `--kubeconfig` cluster."""

from __future__ import annotations

import json
import secrets
import ssl
import time
from collections.abc import Iterator

import httpx
import pytest

from harness.cluster.fixtures import ClusterUnderTest
from harness.controlplane import Cluster

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def namespace(cluster_nodes: ClusterUnderTest) -> Iterator[str]:
    name = f"cluster-e2e-{secrets.token_hex(3)}"
    cluster_nodes.kube.kubectl("create", "namespace", name)
    _wait_default_service_account(cluster_nodes.kube, name)
    yield name
    cluster_nodes.kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _wait_default_service_account(kube: Cluster, namespace: str, timeout: float = 60) -> None:
    # ServiceAccount admission is on: pods are refused until the controller made `default`.
    deadline = time.monotonic() + timeout
    while kube.kubectl("-n", namespace, "get", "sa", "default", check=False).returncode != 0:
        assert time.monotonic() < deadline, "no default ServiceAccount"
        time.sleep(0.5)


def _nodes(kube: Cluster) -> list[dict]:  # type: ignore[type-arg]
    return list(json.loads(kube.kubectl("get", "nodes", "-o", "json").stdout)["items"])


def _ready(node: dict) -> bool:  # type: ignore[type-arg]
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in node["status"]["conditions"])


def _run_pod(
    cluster: ClusterUnderTest, namespace: str, name: str, command: str, *,
    node: str | None = None, labels: dict[str, str] | None = None, port: int | None = None,
) -> None:
    container: dict[str, object] = {
        "name": "main",
        "image": cluster.busybox_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", command],
    }
    if port is not None:
        container["ports"] = [{"containerPort": port}]
        container["readinessProbe"] = {"tcpSocket": {"port": port}, "periodSeconds": 1}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {
            "containers": [container],
            "terminationGracePeriodSeconds": 1,
            **({"nodeName": node} if node else {}),
        },
    }
    cluster.kube.kubectl("apply", "-f", "-", input=json.dumps(pod))
    cluster.kube.kubectl("-n", namespace, "wait", "--for=condition=Ready", f"pod/{name}",
                         "--timeout=120s")


def _node_names(cluster: ClusterUnderTest) -> list[str]:
    return sorted(n["metadata"]["name"] for n in _nodes(cluster.kube) if _ready(n))


def test_every_node_is_ready(cluster_nodes: ClusterUnderTest) -> None:
    nodes = _nodes(cluster_nodes.kube)
    assert nodes and all(_ready(n) for n in nodes), [n["metadata"]["name"] for n in nodes]
    if cluster_nodes.local is not None:
        expected = {info.name for info in cluster_nodes.local.nodes()}
        assert {n["metadata"]["name"] for n in nodes} == expected
        assert len(expected) >= 2
        for node in nodes:
            addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
            assert addresses["InternalIP"].startswith("198.18.")


@pytest.mark.local_cluster
def test_imported_images_are_pinned_against_garbage_collection(
    cluster_nodes: ClusterUnderTest,
) -> None:
    # Nothing here can be pulled again: an image the kubelet collected under disk pressure
    # leaves its pods in ImagePullBackOff for good.
    assert cluster_nodes.local is not None
    for info in cluster_nodes.local.nodes():
        listed = json.loads(cluster_nodes.local.on_node(info.name, "crictl", "images", "-o",
                                                        "json"))["images"]
        by_tag = {tag: image for image in listed for tag in image.get("repoTags") or []}
        busybox = cluster_nodes.busybox_image
        assert by_tag[busybox].get("pinned") is True, (info.name, by_tag[busybox])


def test_dns_and_a_service_across_nodes(cluster_nodes: ClusterUnderTest, namespace: str) -> None:
    names = _node_names(cluster_nodes)
    server_node, client_node = names[0], names[-1]
    _run_pod(cluster_nodes, namespace, "web", "mkdir -p /www && echo hello-from-web > "
             "/www/index.html && exec httpd -f -p 8080 -h /www", node=server_node,
             labels={"app": "web"}, port=8080)
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    cluster_nodes.kube.kubectl("apply", "-f", "-", input=json.dumps(service))
    cluster_ip = cluster_nodes.kube.kubectl(
        "-n", namespace, "get", "service", "web", "-o", "jsonpath={.spec.clusterIP}").stdout
    _run_pod(cluster_nodes, namespace, "client", "exec sleep 3600", node=client_node)

    def in_client(*argv: str) -> str:
        return cluster_nodes.kube.kubectl("-n", namespace, "exec", "client", "--", *argv).stdout

    kubernetes_ip = cluster_nodes.kube.kubectl(
        "-n", "default", "get", "service", "kubernetes", "-o", "jsonpath={.spec.clusterIP}"
    ).stdout
    assert kubernetes_ip in in_client("nslookup", "kubernetes.default.svc.cluster.local")
    # The short name through the pod's search path, as any client in the namespace uses it.
    assert cluster_ip in in_client("nslookup", f"web.{namespace}.svc.cluster.local")
    # Debian's static busybox crashes in glibc's resolver (wget), so HTTP goes through nc,
    # to the address the name resolved to: the Service, via kube-proxy, to the other node.
    deadline = time.monotonic() + 30
    while True:
        fetched = cluster_nodes.kube.kubectl(
            "-n", namespace, "exec", "client", "--", "sh", "-c",
            f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {cluster_ip} 80", check=False)
        if "hello-from-web" in fetched.stdout or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert fetched.stdout.splitlines()[-1] == "hello-from-web", (fetched.stdout, fetched.stderr)


def test_logs_and_exec(cluster_nodes: ClusterUnderTest, namespace: str) -> None:
    _run_pod(cluster_nodes, namespace, "talker",
             "i=0; while true; do echo line-$i; i=$((i+1)); sleep 0.2; done")
    deadline = time.monotonic() + 30
    while "line-3" not in (logs := cluster_nodes.kube.kubectl(
            "-n", namespace, "logs", "talker").stdout):
        assert time.monotonic() < deadline, logs
        time.sleep(0.5)
    assert logs.splitlines()[0] == "line-0"
    out = cluster_nodes.kube.kubectl("-n", namespace, "exec", "talker", "--",
                                     "sh", "-c", "echo $((6*7)) from $(hostname)").stdout
    assert out.strip() == "42 from talker"


def test_kubelet_checkpoint_api_on_a_real_pod(
    cluster_nodes: ClusterUnderTest, namespace: str
) -> None:
    """POST https://<InternalIP>:<kubelet port>/checkpoint/<ns>/<pod>/<container> with a
    ServiceAccount token allowed nodes/checkpoint: how the agent's kubelet backend calls it."""
    kube = cluster_nodes.kube
    _run_pod(cluster_nodes, namespace, "counter",
             # Written by rename, so a reader never sees a half-written (empty) file.
             "i=0; while true; do i=$((i+1)); echo $i > /tmp/c; mv /tmp/c /tmp/count; "
             "sleep 0.1; done")
    role = f"{namespace}-checkpointer"
    kube.kubectl("create", "clusterrole", role, "--verb=create,get",
                 "--resource=nodes/checkpoint,nodes/proxy")
    try:
        kube.kubectl("create", "clusterrolebinding", role, f"--clusterrole={role}",
                     f"--serviceaccount={namespace}:checkpointer")
        token = kube.service_account_token(namespace, "checkpointer")
        pod = json.loads(kube.kubectl("-n", namespace, "get", "pod", "counter",
                                      "-o", "json").stdout)
        node = json.loads(kube.kubectl("get", "node", pod["spec"]["nodeName"],
                                       "-o", "json").stdout)
        address = next(a["address"] for a in node["status"]["addresses"]
                       if a["type"] == "InternalIP")
        port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        # The local cluster's kubelets serve a certificate of its CA; elsewhere (kind) they
        # serve a self-signed one that nothing can verify.
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(kube.ca_file))
            if cluster_nodes.local is not None else False
        )
        response = httpx.post(
            f"https://{address}:{port}/checkpoint/{namespace}/counter/main",
            headers={"Authorization": f"Bearer {token}"}, verify=verify, timeout=120,
        )
    finally:
        kube.kubectl("delete", "clusterrolebinding", role, check=False)
        kube.kubectl("delete", "clusterrole", role, check=False)
    assert response.status_code == 200, response.text
    (archive,) = response.json()["items"]
    assert archive.startswith("/var/lib/kubelet/checkpoints/")
    assert archive.endswith(".tar")
    # leave-running is the kubelet API's behaviour: the counter goes on after the dump.
    first = kube.kubectl("-n", namespace, "exec", "counter", "--", "cat", "/tmp/count").stdout
    time.sleep(0.5)
    second = kube.kubectl("-n", namespace, "exec", "counter", "--", "cat", "/tmp/count").stdout
    assert int(second) > int(first)
    if cluster_nodes.local is not None:
        # On the node's own folder, not the host's /var/lib/kubelet.
        on_host = cluster_nodes.local.workdir / "nodes" / node["metadata"]["name"] / "root" / (
            archive.lstrip("/"))
        assert on_host.stat().st_size > 0
