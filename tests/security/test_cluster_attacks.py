"""Attacks from inside the cluster against ckpt as deployed (issue 13, findings 1, 5, 6, 10):
real Pods run by the kubelet, the operator and agent pods of deploy/, the cluster's own RBAC.

Each test names what ckpt did before, which its assertions fail on:
* impostor agents: the operator took any pod with the agent label, in any namespace, for an
  agent, preferred the first by name, and sent it its ServiceAccount token over plain HTTP;
* the agent: it read and parsed a whole unauthenticated body before answering 401 (150 MB
  took it from 70 to 531 MB of RSS; the test reads the agent's peak RSS), and obeyed any
  token of the operator's ServiceAccount, which carried the apiserver's default audience;
* RBAC: the operator listed and watched every pod in the cluster and wrote Events anywhere;
* NetworkPolicy: shipped, but nothing showed it selects the pods it is meant for.

The local cluster's bridge CNI does not enforce NetworkPolicy (no policy controller runs), so
a tenant pod reaches the agent port here; the agent's own authentication is what these tests
attack. The policies themselves are checked for what they select, not for enforcement.
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import subprocess
import uuid
from typing import Any

import httpx
import pytest

from ckpt.operator.settings import OperatorSettings
from harness.cluster import e2e
from harness.cluster.deploy import NAMESPACE
from harness.cluster.fixtures import ClusterUnderTest
from harness.controlplane import Cluster, KubectlError

# The module's first test may start the cluster and install ckpt from its images.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

AGENT_PORT = 8443
OPERATOR = f"system:serviceaccount:{NAMESPACE}:ckpt-operator"
AGENT = f"system:serviceaccount:{NAMESPACE}:ckpt-agent"
API = f"system:serviceaccount:{NAMESPACE}:ckpt-api"
MiB = 1024 * 1024
TENANT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
AGENT_AUDIENCE_TOKEN = "/var/run/secrets/agent-audience/token"

# An impostor agent: accepts on the agent port and logs every connection and how many bytes
# it was sent (a TLS ClientHello, a request, a token: anything counts), one line each.
LISTENER = f"""
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", {AGENT_PORT}))
s.listen(16)
print("listening", flush=True)
while True:
    c, addr = s.accept()
    print("connection from", addr[0], flush=True)
    c.settimeout(5)
    n = 0
    try:
        while (d := c.recv(65536)):
            n += len(d)
    except OSError:
        pass
    print("received", n, "bytes", flush=True)
    c.close()
"""

# Run by a tenant pod's python3 against an agent: `call` sends one small request with a
# token (or none; "@FILE": the token in FILE) and a JSON body (default {}), and prints
# status and body; `flood` declares and streams SIZE bytes without
# a token and stops as soon as the agent answers (it must answer before reading the body).
ATTACKER = """
import json, socket, ssl, sys, time
mode, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE  # the attacker does not care who the agent is
def connect():
    return ctx.wrap_socket(socket.create_connection((ip, port), timeout=30))
def status_of(answer):
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
if mode == "call":
    method, path, token = sys.argv[4], sys.argv[5], sys.argv[6] if len(sys.argv) > 6 else ""
    if token.startswith("@"):
        token = open(token[1:]).read().strip()
    body = (sys.argv[7] if len(sys.argv) > 7 else "{}").encode() if method == "POST" else b""
    head = [f"{method} {path} HTTP/1.1", f"Host: {ip}", "Connection: close",
            "Content-Type: application/json", f"Content-Length: {len(body)}"]
    if token:
        head.append(f"Authorization: Bearer {token}")
    with connect() as s:
        s.sendall(("\\r\\n".join(head) + "\\r\\n\\r\\n").encode() + body)
        answer = b""
        while (d := s.recv(65536)):
            answer += d
    head, _, rest = answer.partition(b"\\r\\n\\r\\n")
    print(json.dumps({"status": status_of(answer), "body": rest.decode(errors="replace")}))
elif mode == "flood":
    size = int(sys.argv[4])
    head = ["POST /v1/checkpoints HTTP/1.1", f"Host: {ip}", "Content-Type: application/json",
            f"Content-Length: {size}", "", ""]
    chunk = b'{"a":"' + b"x" * (1024 * 1024 - 8) + b'",'
    s = connect()
    s.sendall("\\r\\n".join(head).encode())
    s.setblocking(False)
    # Like a client that does not care for the answer: it goes on sending until the agent
    # closes the connection (or 10 s after the answer, should the agent just stop reading).
    sent, answer, closed, answered = 0, b"", False, None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not closed:
        try:
            d = s.recv(65536)
            closed = not d
            answer += d
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            pass
        except (OSError, ssl.SSLError):
            closed = True
        if answered is None and b"\\r\\n\\r\\n" in answer:
            answered = time.monotonic()
        if answered is not None and (sent >= size or time.monotonic() - answered > 10):
            break
        if sent < size and not closed:
            try:
                sent += s.send(chunk[: min(len(chunk), size - sent)])
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                time.sleep(0.01)
            except (OSError, ssl.SSLError):
                closed = True
        else:
            time.sleep(0.01)
    head, _, rest = answer.partition(b"\\r\\n\\r\\n")
    length = [int(line.split(b":")[1]) for line in head.lower().split(b"\\r\\n")
              if line.startswith(b"content-length:")]
    s.setblocking(True)
    s.settimeout(10)
    try:
        while length and len(rest) < length[0] and (d := s.recv(65536)):
            rest += d
    except (OSError, ssl.SSLError):
        pass
    answer = head + b"\\r\\n\\r\\n" + rest
    print(json.dumps({"status": status_of(answer), "sent": sent, "closed": closed,
                      "answer": answer[:2000].decode(errors="replace")}))
"""

# Run inside an agent pod (hostPID: /proc is the node's) on the agent server process, the
# `ckpt agent serve` that shares this container's mount namespace (the other nodes' agents are
# visible through hostPID too). "reset": clears its peak RSS (clear_refs 5), prints its RSS;
# "peak": prints its peak RSS since then (VmHWM). A peak, not the RSS after the fact: a body
# read and freed again (Python hands large buffers back) leaves the RSS where it was.
AGENT_MEMORY = """
import os, sys
mine = os.readlink("/proc/self/ns/mnt")
found = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
        if b"agent" in argv and b"serve" in argv and os.readlink(f"/proc/{pid}/ns/mnt") == mine:
            found.append(pid)
    except OSError:
        pass
assert len(found) == 1, found
if sys.argv[1] == "reset":
    with open(f"/proc/{found[0]}/clear_refs", "w") as f:
        f.write("5")
field = {"reset": "VmRSS:", "peak": "VmHWM:"}[sys.argv[1]]
line = next(line for line in open(f"/proc/{found[0]}/status") if line.startswith(field))
print(int(line.split()[1]) * 1024)
"""


@pytest.fixture(scope="module")
def kube(ckpt_cluster: Cluster) -> Cluster:
    return ckpt_cluster


@pytest.fixture(scope="module")
def ckpt_image(kube: Cluster) -> str:
    """The image the deployed operator runs (ckpt's own, with python3): what the impostors
    and the attacker run, as a tenant could."""
    operator = e2e.get(kube, NAMESPACE, "deployment", "ckpt-operator")
    assert operator, "ckpt-operator not deployed"
    return str(operator["spec"]["template"]["spec"]["containers"][0]["image"])


def _labels_of_agents(kube: Cluster) -> dict[str, str]:
    """The pod template labels of the deployed CPU agent DaemonSet."""
    daemonset = e2e.get(kube, NAMESPACE, "daemonset", "ckpt-agent")
    assert daemonset, "ckpt-agent DaemonSet not deployed"
    return dict(daemonset["spec"]["template"]["metadata"]["labels"])


def _python_pod(kube: Cluster, namespace: str, name: str, script: str, image: str, *,
                labels: dict[str, str] | None = None, node: str | None = None,
                extra_spec: dict[str, Any] | None = None,
                extra_container: dict[str, Any] | None = None,
                owner: dict[str, Any] | None = None) -> None:
    """A non-root pod of the ckpt image (`image`) running `script` with python3 (Ready once
    started)."""
    metadata: dict[str, Any] = {"name": name, "labels": labels or {}}
    if owner:
        metadata["ownerReferences"] = [owner]
    spec: dict[str, Any] = {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "main", "image": image, "imagePullPolicy": "IfNotPresent",
            "command": ["python3", "-u", "-c", script],
            "ports": [{"name": "agent", "containerPort": AGENT_PORT}],
            "securityContext": {"allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]}},
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                          "limits": {"memory": "256Mi"}},
            **(extra_container or {}),
        }],
        "terminationGracePeriodSeconds": 0,
        **(extra_spec or {}),
    }
    if node:
        spec["nodeName"] = node
    e2e.apply(kube, namespace, {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
                                "spec": spec})


def _ready(kube: Cluster, namespace: str, *names: str) -> None:
    kube.kubectl("-n", namespace, "wait", "--for=condition=Ready", "--timeout=120s",
                 *(f"pod/{n}" for n in names))


def _pod_ip(kube: Cluster, namespace: str, name: str) -> str:
    pod = e2e.get(kube, namespace, "pod", name)
    assert pod and pod["status"].get("podIP"), pod
    return str(pod["status"]["podIP"])


def _log(kube: Cluster, namespace: str, name: str) -> str:
    return kube.kubectl("-n", namespace, "logs", name).stdout


def _connections(log: str) -> list[str]:
    return [line for line in log.splitlines() if not line.startswith("listening")]


def test_impostor_agents_get_no_connection_while_checkpoints_on_their_node_go_ready(
    kube: Cluster, cluster_nodes: ClusterUnderTest, cluster_namespace: str, ckpt_image: str
) -> None:
    tenant = cluster_namespace
    node = e2e.nodes(kube)[0]
    labels = _labels_of_agents(kube)
    # In the tenant's namespace: the agent DaemonSet's labels and port, on the target's node,
    # Ready, and named to sort before the real agent. In ckpt-system: the same labels and the
    # agent ServiceAccount, but controlled by a ConfigMap, not the DaemonSet (a controller
    # owner also keeps the DaemonSet from adopting it; the ConfigMap keeps the garbage
    # collector from removing it).
    lookalike = f"aaa-lookalike-{secrets.token_hex(3)}"
    kube.kubectl("-n", NAMESPACE, "create", "configmap", lookalike)
    try:
        owner = e2e.get(kube, NAMESPACE, "configmap", lookalike)
        assert owner
        _python_pod(kube, tenant, "aaa-agent", LISTENER, ckpt_image, labels=labels, node=node)
        _python_pod(kube, NAMESPACE, lookalike, LISTENER, ckpt_image, labels=labels, node=node,
                    extra_spec={"serviceAccountName": "ckpt-agent",
                                "automountServiceAccountToken": False},
                    owner={"apiVersion": "v1", "kind": "ConfigMap", "name": lookalike,
                           "uid": owner["metadata"]["uid"], "controller": True})
        e2e.counter_pod(kube, tenant, "victim", cluster_nodes.busybox_image, node)
        _ready(kube, tenant, "aaa-agent")
        _ready(kube, NAMESPACE, lookalike)
        impostors = [(tenant, "aaa-agent"), (NAMESPACE, lookalike)]
        assert all(_log(kube, ns, n).startswith("listening") for ns, n in impostors)

        # Bounded: an operator that called an impostor would wait for it until the deadline.
        e2e.create_checkpoint(kube, tenant, "victim-1", "victim", timeoutSeconds=120)
        status = e2e.wait_phase(kube, tenant, "checkpoint", "victim-1", {"Ready", "Failed"})
        seen = {name: _connections(_log(kube, ns, name)) for ns, name in impostors}
        assert seen == {"aaa-agent": [], lookalike: []}
        assert status["phase"] == "Ready", status
        assert status["agent"] == f"{NAMESPACE}/{e2e.agent_on(kube, node)}", status

        # The listeners do log what reaches them: the tenant's impostor probes both.
        probe = ("import socket, sys\n"
                 "for ip in sys.argv[1:]:\n"
                 f"    socket.create_connection((ip, {AGENT_PORT}), timeout=10)"
                 ".sendall(b'probe')\n")
        kube.kubectl("-n", tenant, "exec", "aaa-agent", "--", "python3", "-c", probe,
                     _pod_ip(kube, tenant, "aaa-agent"), _pod_ip(kube, NAMESPACE, lookalike))
        e2e.wait_until(
            lambda: all("received 5 bytes" in _log(kube, ns, n) for ns, n in impostors),
            30, "the impostors' listeners did not log the probe",
        )
    finally:
        kube.kubectl("-n", NAMESPACE, "delete", "pod", lookalike, "--ignore-not-found",
                     "--grace-period=0", "--force", check=False)
        kube.kubectl("-n", NAMESPACE, "delete", "configmap", lookalike, "--ignore-not-found",
                     check=False)


@pytest.fixture
def attacker(kube: Cluster, cluster_namespace: str, ckpt_image: str) -> str:
    """A tenant pod (non-root, the ckpt image's python3) with its namespace's default
    ServiceAccount token at the usual path, and a token of the same account for the agents'
    audience (any pod may have the kubelet project one) at AGENT_AUDIENCE_TOKEN."""
    _python_pod(
        kube, cluster_namespace, "attacker", "import time; time.sleep(10**9)", ckpt_image,
        extra_spec={"volumes": [{"name": "agent-audience", "projected": {"sources": [
            {"serviceAccountToken": {"audience": "ckpt-agent", "path": "token",
                                     "expirationSeconds": 600}}]}}]},
        extra_container={"volumeMounts": [{"name": "agent-audience", "readOnly": True,
                                           "mountPath": AGENT_AUDIENCE_TOKEN.rsplit("/", 1)[0]}]},
    )
    _ready(kube, cluster_namespace, "attacker")
    return "attacker"


def _attack(kube: Cluster, namespace: str, *args: str) -> dict[str, Any]:
    out = kube.kubectl("-n", namespace, "exec", "attacker", "--", "python3", "-c", ATTACKER,
                       *args).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def _agent_memory(kube: Cluster, agent: str, what: str) -> int:
    return int(kube.kubectl("-n", NAMESPACE, "exec", agent, "-c", "agent", "--", "python3",
                            "-c", AGENT_MEMORY, what).stdout.strip())


def _wrong_token_answers(kube: Cluster, namespace: str, ip: str,
                         port: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The answers of the agent at ip:port, to the attacker pod of `namespace`, that are not
    the refusal each token must get (empty when all are refused as they should be)."""
    # The operator's ServiceAccount token for the apiserver's default audience: before, the
    # token every agent obeyed; now worthless to an agent.
    operator_default = kube.kubectl("-n", NAMESPACE, "create", "token", "ckpt-operator",
                                    "--duration=10m").stdout.strip()
    cases = {
        "no token": ("", 401, "unauthenticated"),
        "tenant's ServiceAccount token": ("@" + TENANT_TOKEN, 401, "unauthenticated"),
        "operator's default-audience token": (operator_default, 401, "unauthenticated"),
        # The right audience, the wrong identity: authenticated, then refused.
        "tenant's token for the agent audience": ("@" + AGENT_AUDIENCE_TOKEN, 403, "forbidden"),
    }
    wrong = {}
    for what, (token, status, code) in cases.items():
        for method, path in (("POST", "/v1/checkpoints"), ("GET", "/metrics")):
            answer = _attack(kube, namespace, "call", ip, port, method, path, token)
            if answer["status"] != status or f'"code":"{code}"' not in answer["body"]:
                wrong[(what, path)] = answer
    return wrong


def test_agent_refuses_every_token_but_the_operators_agent_token_and_unread_bodies(
    kube: Cluster, cluster_namespace: str, attacker: str
) -> None:
    # The last node: other tests' checkpoints mostly go to the first, and their work would
    # show in this agent's memory.
    node = e2e.nodes(kube)[-1]
    agent = e2e.agent_on(kube, node)
    ip = _pod_ip(kube, NAMESPACE, agent)
    port = str(AGENT_PORT)
    # The tenant reaches the agent port (no NetworkPolicy enforcement on the local cluster):
    # the answers below are the agent's own. A cluster whose CNI enforces deploy/'s policy
    # stops the attacker earlier, at the network: that is the defence there, and the agent's
    # own answers cannot be seen from a tenant pod.
    try:
        health = _attack(kube, cluster_namespace, "call", ip, port, "GET", "/healthz")
    except KubectlError as exc:
        if "TimeoutError" not in exc.stderr and "timed out" not in exc.stderr:
            raise
        kube.kubectl("-n", NAMESPACE, "get", "networkpolicy", "ckpt-agent")
        return
    assert health["status"] == 200, health

    assert _wrong_token_answers(kube, cluster_namespace, ip, port) == {}

    # An unauthenticated 100 MB body: 401 before it is read, and the agent's memory flat.
    before = _agent_memory(kube, agent, "reset")
    flood = _attack(kube, cluster_namespace, "flood", ip, port, str(100 * MiB))
    peak = _agent_memory(kube, agent, "peak")
    assert flood["status"] == 401, flood
    assert '"code":"unauthenticated"' in flood["answer"]
    # It closed the connection instead of taking the body in.
    assert flood["closed"] and flood["sent"] < 100 * MiB, flood
    assert peak - before < 20 * MiB, f"agent RSS grew by {(peak - before) / MiB:.0f} MiB"
    assert _attack(kube, cluster_namespace, "call", ip, port, "GET", "/healthz")["status"] == 200


def _can_i(kube: Cluster, who: str, verb: str, resource: str, *flags: str) -> bool:
    proc = kube.kubectl("auth", "can-i", verb, resource, *flags, check=False, impersonate=who)
    assert proc.stdout.strip() in {"yes", "no"}, proc.stdout + proc.stderr
    return proc.stdout.strip() == "yes"


def test_rbac_of_the_deployed_service_accounts_on_the_cluster(
    kube: Cluster, cluster_namespace: str
) -> None:
    """What each deployed ServiceAccount may do in this cluster, with every binding it has
    here (not only deploy/'s), in a real tenant namespace; then the same with their tokens."""
    tenant = cluster_namespace
    tenant_sa = f"system:serviceaccount:{tenant}:default"
    checkpoint_status = ("checkpoints.ckpt.dev", "--subresource=status", "-n", tenant)
    expected: dict[str, list[tuple[bool, tuple[str, ...]]]] = {
        OPERATOR: [
            (True, ("get", "pods", "-n", tenant)),
            (True, ("get", "pods", "-n", "kube-system")),
            (True, ("watch", "pods", "-n", NAMESPACE)),
            (True, ("patch", *checkpoint_status)),
            (True, ("create", "pods", "-n", tenant)),
            (True, ("create", "events", "-n", tenant)),
            # The StorageLocations' Secrets, in a namespace of their own.
            (True, ("get", "secrets", "-n", "ckpt-credentials")),
            (False, ("get", "secrets", "-n", NAMESPACE)),
            # Before: list and watch of every pod, Events patched anywhere.
            (False, ("list", "pods", "-A")),
            (False, ("watch", "pods", "-n", tenant)),
            (False, ("list", "pods", "-n", "kube-system")),
            (False, ("patch", "events", "-n", tenant)),
            (False, ("list", "secrets", "-A")),
            (False, ("get", "secrets", "-n", "kube-system")),
            (False, ("get", "secrets", "-n", tenant)),
            # Each namespace's read-only API token: written, by name where RBAC can name it,
            # never read (admission holds the create to that name).
            (True, ("create", "secrets", "-n", tenant)),
            (True, ("update", "secrets/ckpt-api-read-token", "-n", tenant)),
            (False, ("get", "secrets/ckpt-api-read-token", "-n", tenant)),
            (False, ("update", "secrets", "-n", tenant)),
            (False, ("create", "pods", "--subresource=exec", "-n", tenant)),
            (False, ("delete", "pods", "-n", tenant)),
            (False, ("create", "serviceaccounts", "--subresource=token", "-n", NAMESPACE)),
            # Who scrapes its /metrics, and whether RBAC allows it (ckpt-metrics-auth).
            (True, ("create", "tokenreviews.authentication.k8s.io")),
            (True, ("create", "subjectaccessreviews.authorization.k8s.io")),
            (False, ("get", "/metrics")),
            (False, ("create", "nodes", "--subresource=checkpoint")),
        ],
        AGENT: [
            (True, ("create", "tokenreviews.authentication.k8s.io")),
            (True, ("create", "nodes", "--subresource=checkpoint")),
            (False, ("get", "pods", "-n", tenant)),
            (False, ("get", "secrets", "-n", NAMESPACE)),  # ckpt-agent-tls comes as a volume
            (False, ("get", "nodes")),
            (False, ("get", "nodes", "--subresource=proxy")),
            (False, ("create", "pods", "--subresource=exec", "-n", tenant)),
            (False, ("get", "checkpoints.ckpt.dev", "-n", tenant)),
            (False, ("create", "events", "-n", tenant)),
        ],
        API: [
            (False, ("get", "secrets", "-n", NAMESPACE)),
            (False, ("list", "pods", "-A")),
            (False, ("list", "checkpoints.ckpt.dev", "-A")),
            # Its one use of the apiserver: the reviews of its /metrics scrapers.
            (True, ("create", "tokenreviews.authentication.k8s.io")),
            (True, ("create", "subjectaccessreviews.authorization.k8s.io")),
            (False, ("get", "/metrics")),
        ],
        # A tenant's pods run as this: it cannot forge what `ckpt restore` and the operator
        # read from a Checkpoint's status, nor reach ckpt's own secrets or pods.
        tenant_sa: [
            (False, ("patch", *checkpoint_status)),
            (False, ("update", *checkpoint_status)),
            (False, ("create", "checkpoints.ckpt.dev", "-n", tenant)),
            (False, ("create", "storagelocations.ckpt.dev")),
            (False, ("get", "secrets", "-n", NAMESPACE)),
            (False, ("create", "pods", "--subresource=exec", "-n", NAMESPACE)),
            (False, ("create", "serviceaccounts", "--subresource=token", "-n", NAMESPACE)),
            (False, ("create", "tokenreviews.authentication.k8s.io")),
            (False, ("get", "/metrics")),
        ],
    }
    wrong = [f"{who} {' '.join(case)}: expected {'yes' if may else 'no'}"
             for who, cases in expected.items() for may, case in cases
             if _can_i(kube, who, *case) != may]
    assert wrong == []

    # Every binding in the cluster that names one of ckpt's ServiceAccounts (or a group they
    # are in) is one deploy/ made: nothing else widens them here. Kubernetes' own defaults
    # (label kubernetes.io/bootstrapping=rbac-defaults, e.g. every ServiceAccount may read the
    # token issuer's discovery document) are left out.
    groups = {"system:authenticated", "system:serviceaccounts",
              f"system:serviceaccounts:{NAMESPACE}"}
    bindings = json.loads(kube.kubectl("get", "clusterrolebindings,rolebindings", "-A",
                                       "-o", "json").stdout)["items"]
    ours = sorted(
        (b["kind"], b["metadata"].get("namespace", ""), b["metadata"]["name"],
         b["roleRef"]["name"])
        for b in bindings for s in b.get("subjects") or []
        if (b["metadata"].get("labels") or {}).get("kubernetes.io/bootstrapping")
        != "rbac-defaults"
        if (s["kind"] == "ServiceAccount" and s.get("namespace") == NAMESPACE
            and s["name"].startswith("ckpt-")) or (s["kind"] == "Group" and s["name"] in groups)
    )
    assert ours == [
        ("ClusterRoleBinding", "", "ckpt-agent", "ckpt-agent"),
        # Its two subjects, the API and the operator.
        ("ClusterRoleBinding", "", "ckpt-metrics-auth", "ckpt-metrics-auth"),
        ("ClusterRoleBinding", "", "ckpt-metrics-auth", "ckpt-metrics-auth"),
        ("ClusterRoleBinding", "", "ckpt-operator", "ckpt-operator"),
        ("RoleBinding", "ckpt-credentials", "ckpt-operator-storage", "ckpt-operator-storage"),
        ("RoleBinding", NAMESPACE, "ckpt-operator-agents", "ckpt-operator-agents"),
    ]

    # With the operator's own token (not impersonation): one pod elsewhere by name, yes; the
    # pods of the cluster or of another namespace as a list, no.
    from kubernetes import client

    coredns = e2e.items(kube, "kube-system", "pods")[0]["metadata"]["name"]
    token = kube.kubectl("-n", NAMESPACE, "create", "token", "ckpt-operator",
                         "--duration=10m").stdout.strip()
    with kube.api_client(token=token) as api:
        core = client.CoreV1Api(api)
        assert core.read_namespaced_pod(coredns, "kube-system").metadata.name == coredns
        refused = []
        for call in (core.list_pod_for_all_namespaces,
                     lambda: core.list_namespaced_pod("kube-system"),
                     lambda: core.list_namespaced_secret(NAMESPACE),
                     lambda: core.read_namespaced_secret("ckpt-agent-tls", "kube-system")):
            try:
                call()
            except client.ApiException as exc:
                refused.append(exc.status)
        assert refused == [403, 403, 403, 403]


def test_agent_refuses_a_forged_container_id_even_with_the_operators_token(
    kube: Cluster, cluster_nodes: ClusterUnderTest, cluster_namespace: str, attacker: str
) -> None:
    """With a stolen operator token for the agents' audience (the worst case), a request for
    the attacker's own pod naming the container id of another namespace's pod on that node:
    the agent checks containerd's own records of the container (its CRI annotations) and
    refuses, telling nothing about the victim, which keeps running. Before: runc resolved the
    id alone and dumped the victim."""
    node = e2e.nodes(kube)[-1]
    agent = e2e.agent_on(kube, node)
    ip, port = _pod_ip(kube, NAMESPACE, agent), str(AGENT_PORT)
    token = kube.kubectl("-n", NAMESPACE, "create", "token", "ckpt-operator",
                         "--audience=ckpt-agent", "--duration=10m").stdout.strip()
    me = e2e.get(kube, cluster_namespace, "pod", attacker)
    assert me
    with e2e.fresh_namespace(kube, "victims") as victims:
        e2e.counter_pod(kube, victims, "db", cluster_nodes.busybox_image, node)
        victim = e2e.get(kube, victims, "pod", "db")
        assert victim
        container_id = victim["status"]["containerStatuses"][0]["containerID"].split("://")[1]
        job_id = f"forged-{secrets.token_hex(4)}"
        body = {"checkpoint_id": job_id, "namespace": cluster_namespace, "pod": attacker,
                "pod_uid": me["metadata"]["uid"],
                "containers": [{"name": "main", "container_id": container_id}]}
        answer = _attack(kube, cluster_namespace, "call", ip, port, "POST", "/v1/checkpoints",
                         token, json.dumps(body))
        assert answer["status"] == 202, answer
        job: dict[str, Any] = {}

        def finished() -> bool:
            job.update(json.loads(_attack(kube, cluster_namespace, "call", ip, port, "GET",
                                          f"/v1/checkpoints/{job_id}", token)["body"]))
            return job.get("state") != "running"

        e2e.wait_until(finished, 60, f"agent job {job_id} still running")
        assert job["state"] == "failed", job
        assert (f"is not container 'main' of pod {cluster_namespace}/{attacker}"
                in job["error"]), job
        assert victims not in json.dumps(job) and victim["metadata"]["uid"] not in json.dumps(job)
        last = e2e.wait_ticks(kube, victims, "db")
        e2e.wait_until(lambda: e2e.ticks(kube, victims, "db")[-1] > last, 30,
                       "the victim stopped counting")


def _controller(pod: dict[str, Any]) -> tuple[str, str]:
    owner = next((o for o in pod["metadata"].get("ownerReferences", []) if o.get("controller")),
                 {"kind": "", "name": ""})
    return owner["kind"], owner["name"]


def _named_ports(pod: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for c in pod["spec"]["containers"]
            for p in c.get("ports", []) if "name" in p}


def test_network_policies_select_the_deployed_pods(kube: Cluster) -> None:
    """The policies as applied, against the pods that run. Enforcement is not tested: the
    local cluster's bridge CNI has no NetworkPolicy controller (a tenant pod reaches the
    agent port, as the test above shows)."""
    policies = {p["metadata"]["name"]: p["spec"]
                for p in e2e.items(kube, NAMESPACE, "networkpolicy")}
    assert set(policies) == {"ckpt-agent", "ckpt-operator"}
    pods = [p for p in e2e.items(kube, NAMESPACE, "pods")
            if p["metadata"].get("deletionTimestamp") is None]

    def selected(spec: dict[str, Any]) -> list[dict[str, Any]]:
        assert set(spec) == {"matchLabels"}, spec  # what the manifests use
        return [p for p in pods
                if spec["matchLabels"].items() <= (p["metadata"].get("labels") or {}).items()]

    def names(found: list[dict[str, Any]]) -> set[str]:
        return {p["metadata"]["name"] for p in found}

    agents = [p for p in pods if _controller(p) in {("DaemonSet", "ckpt-agent"),
                                                    ("DaemonSet", "ckpt-agent-gpu")}]
    operators = [p for p in pods if _controller(p)[0] == "ReplicaSet"
                 and _controller(p)[1].startswith("ckpt-operator-")]
    assert len(agents) == len(e2e.nodes(kube)) and operators

    # Agents: every agent pod and nothing else; ingress only from the operator's pods of
    # this namespace (a podSelector without namespaceSelector), only to the agent port.
    agent_policy = policies["ckpt-agent"]
    assert names(selected(agent_policy["podSelector"])) == names(agents)
    assert agent_policy["policyTypes"] == ["Ingress"]
    [rule] = agent_policy["ingress"]
    [peer] = rule["from"]
    assert set(peer) == {"podSelector"}, peer
    assert names(selected(peer["podSelector"])) == names(operators)
    assert rule["ports"] == [{"protocol": "TCP", "port": "agent"}]
    serving = {int(e["value"]) for p in agents for c in p["spec"]["containers"]
               for e in c.get("env", []) if e["name"] == "CKPT_AGENT_PORT"}
    assert {_named_ports(p).get("agent") for p in agents} == serving == {AGENT_PORT}

    # The operator: its pods only; ingress from anywhere, to its metrics port only (not the
    # kopf health port, which only the node's kubelet probes).
    operator_policy = policies["ckpt-operator"]
    assert names(selected(operator_policy["podSelector"])) == names(operators)
    assert operator_policy["policyTypes"] == ["Ingress"]
    assert operator_policy["ingress"] == [{"ports": [{"protocol": "TCP", "port": "metrics"}]}]
    assert all("metrics" in _named_ports(p) for p in operators)
    # The port the operator serves metrics on: its setting, or the setting's default.
    default = OperatorSettings.model_fields["metrics_port"].default
    metrics = {int(next((e["value"] for e in c.get("env", [])
                         if e["name"] == "CKPT_OPERATOR_METRICS_PORT"), default))
               for p in operators for c in p["spec"]["containers"]}
    assert metrics == {_named_ports(p)["metrics"] for p in operators}


USER = "mallory"


def test_a_forged_checkpoint_status_restores_and_deletes_nothing_of_another_namespace(
    kube: Cluster, cluster_nodes: ClusterUnderTest, cluster_namespace: str
) -> None:
    """Issue 21, finding 2. A namespace user with what README tells admins to grant tenants
    (Kubernetes' `edit` and ckpt's `ckpt-user`) plus the right to write their Checkpoints'
    status (any role that may patch `checkpoints/status` there) rewrites their own Ready
    Checkpoint's status to name another namespace's API record, archive, checksum and node,
    then restores it and deletes it (retainPolicy: Delete).

    Before: the operator checked only that the API record named in the status was ready with
    that checksum, so the Restore created a Pod in the tenant's namespace from the victim's
    memory, and the deletion deprecated the victim's record and deleted its archive. Now the
    API record must name the tenant's namespace, Checkpoint uid and pod (written by the
    operator when it recorded the checkpoint), and the archive key that namespace's prefix.
    Since namespaces are API tenants, the operator looks the record up in the tenant's own
    namespace, where the victim's record does not exist: the Restore fails with
    CheckpointNotRecorded and creates no Pod, the deletion touches nothing of the victim's and
    says why in a Warning Event (CheckpointNotBound). The same status naming a record of the
    tenant's own namespace fails BindingMismatch (tests/unit/test_restore_flow.py)."""
    tenant = cluster_namespace
    node = e2e.nodes(kube)[0]
    busybox = cluster_nodes.busybox_image
    for role in ("edit", "ckpt-user"):
        kube.kubectl("-n", tenant, "create", "rolebinding", f"{USER}-{role}",
                     f"--clusterrole={role}", f"--user={USER}")
    kube.kubectl("-n", tenant, "create", "role", "checkpoint-status-writer",
                 "--verb=get,patch", "--resource=checkpoints.ckpt.dev/status")
    kube.kubectl("-n", tenant, "create", "rolebinding", f"{USER}-status",
                 "--role=checkpoint-status-writer", f"--user={USER}")

    with e2e.fresh_namespace(kube, "victims") as victims, e2e.file_location(kube) as location:
        # The victim's checkpoint, node-local so that its file can be looked at on the node.
        e2e.counter_pod(kube, victims, "db", busybox, node)
        victim = e2e.checkpoint_ready(kube, victims, "db-1", "db", storage=location)

        # The tenant's own Ready checkpoint, on the same node and location.
        e2e.counter_pod(kube, tenant, "mine", busybox, node)
        kube.kubectl("-n", tenant, "create", "-f", "-", impersonate=USER, input=json.dumps({
            "apiVersion": e2e.GROUP_VERSION, "kind": "Checkpoint",
            "metadata": {"name": "mine-1"},
            "spec": {"podName": "mine", "storage": location, "retainPolicy": "Delete"},
        }))
        own = e2e.wait_phase(kube, tenant, "checkpoint", "mine-1", {"Ready", "Failed"})
        assert own["phase"] == "Ready", own

        forged = {k: victim[k] for k in ("checkpointId", "restorePath", "checksum", "nodeName",
                                         "storageLocation", "gpu", "platform", "sizeBytes")}
        kube.kubectl("-n", tenant, "patch", "checkpoint", "mine-1", "--subresource=status",
                     "--type=merge", "-p", json.dumps({"status": forged}), impersonate=USER)
        seen = (e2e.get(kube, tenant, "checkpoint", "mine-1") or {}).get("status") or {}
        assert seen["restorePath"] == victim["restorePath"], "the status was not forged"

        kube.kubectl("-n", tenant, "create", "-f", "-", impersonate=USER, input=json.dumps({
            "apiVersion": e2e.GROUP_VERSION, "kind": "Restore",
            "metadata": {"name": "steal"}, "spec": {"checkpointName": "mine-1"},
        }))
        restore = e2e.wait_phase(kube, tenant, "restore", "steal", {"Running", "Failed"})
        assert restore["phase"] == "Failed", restore
        running = e2e.conditions(restore)["Running"]
        assert running["reason"] == "CheckpointNotRecorded", restore
        assert "is not in the API" in running["message"], restore
        assert victims not in json.dumps(restore), "the refusal names the victim's namespace"
        assert e2e.restored_pods(kube, tenant, "steal") == []
        steal = e2e.get(kube, tenant, "restore", "steal")
        assert steal and not e2e.staged(kube, node, steal["metadata"]["uid"])

        # Deleting the forged Checkpoint (retainPolicy: Delete) is not refused, and deletes
        # nothing of the victim's.
        kube.kubectl("-n", tenant, "delete", "checkpoint", "mine-1", "--timeout=120s",
                     impersonate=USER)
        reasons = e2e.event_reasons(kube, tenant, "Checkpoint", "mine-1",
                                    until="CheckpointNotBound", timeout=60)
        assert "CheckpointNotBound" in reasons and "Released" not in reasons, reasons
        assert e2e.archive_on_node(kube, node, victim["restorePath"])
        e2e.verified_archive(kube, node, victim)
        with e2e.checkpoints_api(kube, victims) as api:
            [record] = api.list([victim["checkpointId"]])
        assert record.status.value == "ready", record
        # The victim's Checkpoint still says what it did.
        still = (e2e.get(kube, victims, "checkpoint", "db-1") or {}).get("status") or {}
        assert (still.get("phase"), still.get("restorePath")) == ("Ready", victim["restorePath"])


def _as_user(kube: Cluster, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    return kube.kubectl("-n", namespace, *args, check=False, impersonate=USER)


def test_a_namespace_token_reads_only_its_namespaces_records_and_changes_none(
    kube: Cluster, cluster_nodes: ClusterUnderTest, cluster_namespace: str
) -> None:
    """Security finding: one API tenant for the whole cluster. A namespace user with only
    ckpt's `ckpt-user` role takes the checkpoints API token their namespace holds for them
    and goes after another namespace's records.

    Before: the operator recorded every namespace under one tenant, and `ckpt list` needed
    that tenant's token, so whoever was given it listed, deprecated and forged the records of
    every namespace. Now each namespace is a tenant of its own and its users get a read-only
    token of it (the Secret ckpt-api-read-token, the one Secret `ckpt-user` may read): the
    other namespace's records are absent to it, every write is refused, naming the other
    namespace's tenant is refused, and the operator's own token is out of reach."""
    tenant = cluster_namespace
    node = e2e.nodes(kube)[0]
    busybox = cluster_nodes.busybox_image
    kube.kubectl("-n", tenant, "create", "rolebinding", f"{USER}-ckpt-user-only",
                 "--clusterrole=ckpt-user", f"--user={USER}")

    with e2e.fresh_namespace(kube, "victims") as victims:
        e2e.counter_pod(kube, victims, "db", busybox, node)
        victim = e2e.checkpoint_ready(kube, victims, "db-1", "db")
        e2e.counter_pod(kube, tenant, "mine", busybox, node)
        own = e2e.checkpoint_ready(kube, tenant, "mine-1", "mine")

        # The user's Kubernetes rights: their namespace's token Secret, and no other Secret.
        found: list[dict[str, Any]] = []

        def written() -> bool:
            got = _as_user(kube, tenant, "get", "secret", "ckpt-api-read-token", "-o", "json")
            if got.returncode == 0:
                found.append(json.loads(got.stdout))
            return bool(found)

        e2e.wait_until(written, 60, "the operator wrote no ckpt-api-read-token for the user")
        assert found[0]["type"] == "ckpt.dev/api-read-token", found[0]
        token = base64.b64decode(found[0]["data"]["token"]).decode()
        for namespace, name in [(victims, "ckpt-api-read-token"),
                                (NAMESPACE, "ckpt-api-token"), (tenant, "default-token")]:
            refused = _as_user(kube, namespace, "get", "secret", name)
            assert refused.returncode != 0 and "forbidden" in refused.stderr.lower(), (
                namespace, name, refused.stderr)
        assert "forbidden" in _as_user(kube, tenant, "get", "secrets").stderr.lower()

        mine, theirs = own["checkpointId"], victim["checkpointId"]
        with e2e.api_endpoint(kube) as endpoint, httpx.Client(
            base_url=endpoint.url, headers={"Authorization": f"Bearer {token}"}, timeout=30,
            verify=ssl.create_default_context(cafile=str(endpoint.ca_file)),
        ) as http:

            def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
                return http.request(method, path, **kwargs,
                                    extensions={"sni_hostname": endpoint.server_name})

            listed = call("GET", "/v2/checkpoints").json()
            assert [r["id"] for r in listed] == [mine], listed
            assert call("GET", "/v2/checkpoints", params={"ids": theirs}).json() == []
            # Writes are refused alike for the victim's record, the user's own and one that
            # does not exist: the answer tells nothing of the victim's.
            for checkpoint_id in (theirs, mine, str(uuid.uuid4())):
                for method, path, body in [
                    ("PATCH", "/v2/checkpoints/deprecate/{}", None),
                    ("PUT", "/v2/checkpoints/info/{}", {"gpu": "none", "platform": "x"}),
                    ("POST", "/v2/checkpoints/uploaded/{}", {"restore_path": "/evil"}),
                ]:
                    answer = call(method, path.format(checkpoint_id), json=body)
                    assert (answer.status_code, answer.json()["code"]) == (403, "read_only")
            forged = call("POST", "/v2/checkpoints", params={"name": f"{victims}/forged"})
            assert forged.status_code == 403, forged.text
            # Naming the victim's tenant, as the operator's token does, is refused.
            named = call("GET", "/v2/checkpoints", headers={"X-Ckpt-Tenant": victims})
            assert (named.status_code, named.json()["code"]) == (403, "forbidden")
            minted = call("POST", f"/ckpt/v1/namespaces/{victims}/reader-tokens")
            assert minted.status_code == 403, minted.text

        # The victim's record is as it was, in the victim's tenant alone.
        with e2e.checkpoints_api(kube, victims) as api:
            [record] = api.list()
        assert (str(record.id), record.status.value) == (theirs, "ready"), record


# Run by the attacker pod's python3: one GET of PATH at HOST:PORT, in plain text ("plain")
# or over TLS without checking the certificate ("tls": the attacker does not care who
# answers), with a bearer token ("@FILE": the token in FILE) or none; prints whether it
# connected, the HTTP status (0: no HTTP answer), the body and the error, as JSON.
PROBE = """
import json, socket, ssl, sys
mode, host, port, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
token = sys.argv[5] if len(sys.argv) > 5 else ""
if token.startswith("@"):
    token = open(token[1:]).read().strip()
head = [f"GET {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
if token:
    head.append(f"Authorization: Bearer {token}")
result = {"connected": False, "error": ""}
answer = b""
try:
    s = socket.create_connection((host, port), timeout=10)
    result["connected"] = True
    if mode == "tls":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(s)
    with s:
        s.settimeout(10)
        s.sendall(("\\r\\n".join(head) + "\\r\\n\\r\\n").encode())
        while (d := s.recv(65536)):
            answer += d
except (OSError, ssl.SSLError) as exc:
    result["error"] = f"{type(exc).__name__}: {exc}"
result["status"] = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else 0
result["body"] = answer.partition(b"\\r\\n\\r\\n")[2][:1000000].decode(errors="replace")
print(json.dumps(result))
"""


def _probe(kube: Cluster, namespace: str, *args: str) -> dict[str, Any]:
    out = kube.kubectl("-n", namespace, "exec", "attacker", "--", "python3", "-c", PROBE,
                       *args).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def test_the_api_speaks_only_tls_and_metrics_answer_only_scrapers_rbac_allows(
    kube: Cluster, cluster_namespace: str, attacker: str
) -> None:
    """Security finding: plain HTTP and open metrics. From an ordinary pod of a tenant
    namespace (its own ServiceAccount token at hand, nothing else).

    Before: the checkpoints API answered plain HTTP on 8080 (tenant tokens crossed the pod
    network in clear text, readable by anyone on the path), and the API's /metrics and the
    operator's metrics port answered every pod. Now the API's only port speaks TLS (a
    plain-text request gets no HTTP answer; nothing listens on 8080), and both /metrics
    answer 401 without a token, 401 with a token the apiserver does not know, 403 with a
    token RBAC grants no `get` on /metrics (the pod's own), and only the identity bound to
    ckpt-metrics-reader gets them. The agents' /metrics (their own authentication) are
    attacked in test_agent_refuses_every_token_but_the_operators_agent_token_...)."""
    tenant = cluster_namespace
    service = e2e.get(kube, NAMESPACE, "service", "ckpt-api")
    assert service, "ckpt-api Service not deployed"
    [api_port] = service["spec"]["ports"]
    assert api_port["name"] == "https", api_port
    api = (service["spec"]["clusterIP"], str(api_port["port"]))
    [api_pod] = [p for p in e2e.items(kube, NAMESPACE, "pods", "-l",
                                      "app.kubernetes.io/name=ckpt-api")
                 if p["metadata"].get("deletionTimestamp") is None]
    [operator_pod] = [p for p in e2e.items(kube, NAMESPACE, "pods", "-l",
                                           "app.kubernetes.io/name=ckpt-operator")
                      if p["metadata"].get("deletionTimestamp") is None]
    operator = (operator_pod["status"]["podIP"], str(_named_ports(operator_pod)["metrics"]))

    # The API is reachable from the tenant pod, over TLS: what follows is its own answer.
    health = _probe(kube, tenant, "tls", *api, "/healthz")
    assert health["status"] == 200, health

    # Plain HTTP, with a token as a careless client would send it: no HTTP answer at all.
    plain = _probe(kube, tenant, "plain", *api, "/v2/checkpoints", "@" + TENANT_TOKEN)
    assert plain["connected"] and plain["status"] == 0, plain
    # The old plain-HTTP port is closed on the API's pod.
    old = _probe(kube, tenant, "plain", api_pod["status"]["podIP"], "8080", "/v2/checkpoints")
    assert not old["connected"] and "ConnectionRefused" in old["error"], old

    scraper = e2e.scraper_token(kube)
    for what, (ip, port), series in (("API", api, "ckpt_api_requests"),
                                     ("operator", operator, "ckpt_operator_")):
        # The metrics port of each speaks TLS only, too.
        plain = _probe(kube, tenant, "plain", ip, port, "/metrics")
        assert plain["connected"] and plain["status"] == 0, (what, plain)
        for token, status in (("", 401), ("not-a-token", 401), ("@" + TENANT_TOKEN, 403)):
            answer = _probe(kube, tenant, "tls", ip, port, "/metrics", token)
            assert answer["status"] == status, (what, token, answer)
            assert series not in answer["body"], (what, token)
        # The identity an admin bound to ckpt-metrics-reader (deploy/README.md) reads them,
        # from wherever it scrapes.
        allowed = _probe(kube, tenant, "tls", ip, port, "/metrics", scraper)
        assert allowed["status"] == 200 and series in allowed["body"], (what, allowed)

    # As Prometheus does it: the certificate verified against ckpt-operator-tls for the
    # name it carries (not the pod IP), with the scraper's token; without one, refused.
    assert e2e.operator_metrics(kube).status_code == 200
    assert e2e.operator_metrics(kube, token="").status_code == 401
