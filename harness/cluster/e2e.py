"""What the end-to-end tests on a cluster with real nodes share: kubectl round trips, waits on
a resource's phase, counter Pods, Checkpoints and Restores, the agent pod of a node.

Every helper goes through `kubectl` of the cluster under test, so the same test runs on the
local cluster and on any `--kubeconfig` cluster. Waits poll the condition itself (never a
fixed sleep) and fail with the last status seen.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ckpt.contract.checkpoints_client import Checkpoint, SyncCheckpointsClient
from harness.cluster.deploy import NAMESPACE, OPERATOR_API_SECRET, serving_certificate
from harness.cluster.object_store import FILE_LOCATION
from harness.controlplane import Cluster, kubectl_binary

GROUP_VERSION = "ckpt.dev/v1alpha1"
AGENT_SELECTOR = "app.kubernetes.io/name=ckpt-agent"
# Ports as deploy/base names them: the ckpt-api Service, the operator's metrics; both https,
# for the names their certificates carry (harness.cluster.deploy.SERVING_CERTIFICATES).
API_PORT = 8443
OPERATOR_METRICS_PORT = 9090
API_SERVER_NAME = f"ckpt-api.{NAMESPACE}.svc"
OPERATOR_SERVER_NAME = f"ckpt-operator.{NAMESPACE}.svc"
# The scraper an admin binds ClusterRole ckpt-metrics-reader to (deploy/README.md): a
# Prometheus ServiceAccount of a monitoring namespace.
SCRAPER_NAMESPACE, SCRAPER = "ckpt-e2e-monitoring", "prometheus"

# A counter kept in a shell variable only: a restored Pod that goes on from the checkpointed
# value proves the memory came back (no file holds it). /tmp/marker lands in the container's
# writable layer, which a restore must bring along.
COUNTER = (
    "echo written-by-the-original > /tmp/marker; i=0; "
    "while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"
)
TICK = re.compile(r"^tick (\d+)$", re.MULTILINE)
# Inside a ballast_counter_pod's container: written once its ballast is in memory.
BALLAST_FILE = "/tmp/ballast"  # noqa: S108 - a path in the workload's container


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


# Seconds a test Pod gets between SIGTERM and SIGKILL (its restored copies inherit it).
QUICK_STOP = 1


def counter_pod(kube: Cluster, namespace: str, name: str, image: str,
                node: str | None = None, *, wait: bool = True, script: str = COUNTER) -> None:
    """A busybox counter Pod (`script`, COUNTER by default) with one container `counter`,
    Ready when this returns (unless wait=False)."""
    spec: dict[str, Any] = {
        "containers": [{
            "name": "counter", "image": image, "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", script],
        }],
        # sh as PID 1 ignores SIGTERM: a delete would wait the default 30 s for nothing.
        "terminationGracePeriodSeconds": QUICK_STOP,
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


# -- ckpt's own services seen from the test host ------------------------------------------------


@contextmanager
def port_forward(kube: Cluster, namespace: str, target: str, port: int,
                 timeout: float = 30) -> Iterator[str]:
    """`kubectl port-forward` from a free port on 127.0.0.1 to `port` of `target`
    (svc/NAME, deployment/NAME, pod/NAME) while the block runs; yields its http:// URL.

    It works on any cluster the kubeconfig reaches (Service and pod addresses need not be
    routable from the test host). kubectl forwards to the one pod it picked at the start:
    open a new forward after that pod was replaced."""
    with tempfile.TemporaryFile(mode="w+") as said:
        proc = subprocess.Popen(
            [kubectl_binary(), "--kubeconfig", str(kube.kubeconfig), "-n", namespace,
             "port-forward", "--address", "127.0.0.1", target, f":{port}"],
            stdout=said, stderr=subprocess.STDOUT, text=True,
        )
        try:
            local: list[str] = []

            def forwarding() -> bool:
                said.seek(0)
                text = said.read()
                found = re.search(r"Forwarding from 127\.0\.0\.1:(\d+)", text)
                if found:
                    local.append(found.group(1))
                    return True
                if proc.poll() is not None:
                    raise AssertionError(f"kubectl port-forward {target}: {text.strip()}")
                return False

            wait_until(forwarding, timeout, f"kubectl port-forward {target} never forwarded",
                       interval=0.1)
            yield f"http://127.0.0.1:{local[0]}"
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def api_token(kube: Cluster) -> str:
    """The operator's token of the checkpoints API (deploy/README.md's Secret)."""
    encoded = kube.kubectl("-n", NAMESPACE, "get", "secret", OPERATOR_API_SECRET, "-o",
                           "jsonpath={.data.token}").stdout
    return base64.b64decode(encoded).decode().strip()


@dataclass(frozen=True)
class ApiEndpoint:
    """The checkpoints API through a port-forward: its https URL on 127.0.0.1, the
    certificate to trust (ckpt-api-tls's), and the name that certificate carries."""

    url: str
    ca_file: Path
    server_name: str = API_SERVER_NAME

    def cli_env(self, token: str | None = None) -> dict[str, str]:
        """What `ckpt list` / `kubectl ckpt ls` read to join with the API, verified; without
        `token` they use each namespace's own, from its Secret, as a namespace's users do."""
        env = {"CKPT_API_URL": self.url, "CKPT_API_CA": str(self.ca_file),
               "CKPT_API_SERVER_NAME": self.server_name}
        return env | ({"CKPT_API_TOKEN": token} if token else {})


@contextmanager
def api_endpoint(kube: Cluster) -> Iterator[ApiEndpoint]:
    with tempfile.TemporaryDirectory(prefix="ckpt-api-ca-") as folder, \
            port_forward(kube, NAMESPACE, "svc/ckpt-api", API_PORT) as url:
        ca_file = Path(folder) / "tls.crt"
        ca_file.write_text(serving_certificate(kube, "ckpt-api-tls"))
        yield ApiEndpoint(url.replace("http://", "https://", 1), ca_file)


@contextmanager
def checkpoints_api(kube: Cluster, namespace: str) -> Iterator[SyncCheckpointsClient]:
    """The checkpoints API as the operator reaches it for `namespace` (its token, acting for
    that namespace's tenant; the API's certificate verified), through a port-forward to the
    ckpt-api Service."""
    with api_endpoint(kube) as endpoint, SyncCheckpointsClient(
        endpoint.url, api_token(kube), ca_file=endpoint.ca_file,
        server_name=endpoint.server_name,
    ) as api:
        yield api.for_tenant(namespace)


def api_records(kube: Cluster, namespace: str, name: str) -> list[Checkpoint]:
    """The checkpoints API's records of the Checkpoint `namespace/name` (the operator names
    each record so)."""
    with checkpoints_api(kube, namespace) as api:
        return [record for record in api.list() if record.name == f"{namespace}/{name}"]


def scraper_token(kube: Cluster) -> str:
    """A short-lived token of the monitoring ServiceAccount bound to ckpt-metrics-reader as
    deploy/README.md tells admins to (made on first use): what Prometheus presents."""
    kube.ensure_namespace(SCRAPER_NAMESPACE)
    apply(kube, SCRAPER_NAMESPACE, {"apiVersion": "v1", "kind": "ServiceAccount",
                                    "metadata": {"name": SCRAPER}})
    kube.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": f"{SCRAPER_NAMESPACE}-ckpt-metrics"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "ckpt-metrics-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": SCRAPER,
                      "namespace": SCRAPER_NAMESPACE}],
    }))
    return kube.kubectl("-n", SCRAPER_NAMESPACE, "create", "token", SCRAPER,
                        "--duration=10m").stdout.strip()


def operator_metrics(kube: Cluster, token: str | None = None) -> httpx.Response:
    """GET /metrics of the operator as Prometheus scrapes it: https, its certificate
    (ckpt-operator-tls) verified, a bearer token: the scraper's, or `token` ("" for none)."""
    token = scraper_token(kube) if token is None else token
    with tempfile.TemporaryDirectory(prefix="ckpt-operator-ca-") as folder, \
            port_forward(kube, NAMESPACE, "deployment/ckpt-operator",
                         OPERATOR_METRICS_PORT) as url:
        ca_file = Path(folder) / "tls.crt"
        ca_file.write_text(serving_certificate(kube, "ckpt-operator-tls"))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        verify = ssl.create_default_context(cafile=str(ca_file))
        with httpx.Client(verify=verify, timeout=10) as http:
            return http.get(f"{url.replace('http://', 'https://', 1)}/metrics",
                            headers=headers, extensions={"sni_hostname": OPERATOR_SERVER_NAME})


def operator_metric(kube: Cluster, sample: str) -> float | None:
    """A sample's value on the operator's /metrics (Prometheus text), None when absent."""
    response = operator_metrics(kube)
    response.raise_for_status()
    text = response.text
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return None


def event_reasons(kube: Cluster, namespace: str, kind: str, name: str,
                  until: str = "Ready", timeout: float = 30) -> set[str]:
    """Reasons of the Events about a resource, once one with reason `until` has arrived
    (kopf posts Events in the background); after `timeout`, those there are."""
    selector = f"involvedObject.kind={kind},involvedObject.name={name}"
    seen: set[str] = set()

    def arrived() -> bool:
        seen.clear()
        seen.update(kube.kubectl("-n", namespace, "get", "events", "--field-selector", selector,
                                 "-o", "jsonpath={.items[*].reason}").stdout.split())
        return until in seen

    with suppress(AssertionError):
        wait_until(arrived, timeout, f"no {until} Event about {kind} {name}")
    return seen


def wait_condition(kube: Cluster, namespace: str, kind: str, name: str, type_: str,
                   reason: str, timeout: float = 120) -> dict[str, Any]:
    """The resource's status once its condition `type_` has reason `reason`."""
    status: dict[str, Any] = {}

    def there() -> bool:
        status.clear()
        status.update((get(kube, namespace, kind, name) or {}).get("status") or {})
        return conditions(status).get(type_, {}).get("reason") == reason

    try:
        wait_until(there, timeout, "")
    except AssertionError:
        raise AssertionError(f"{kind} {name}: condition {type_} never had reason {reason} "
                             f"(after {timeout:.0f}s); status: {status}") from None
    return status


def on_node(kube: Cluster, node: str, *command: str) -> subprocess.CompletedProcess[str]:
    """Runs `command` in the agent container on `node` (it sees the node's archive folder
    at the node's own path); check=False, the caller reads returncode."""
    return kube.kubectl("-n", NAMESPACE, "exec", agent_on(kube, node), "-c", "agent", "--",
                        *command, check=False)


def archive_on_node(kube: Cluster, node: str, restore_path: str) -> bool:
    """Whether the node-local archive at `restore_path` (file://...) exists on `node`."""
    assert restore_path.startswith("file://"), (
        f"{restore_path} is not node-local: the local cluster's default StorageLocation is S3 "
        "(local-s3); a Checkpoint whose archive should stay on its node names a file "
        "location in spec.storage (file_location() gives one)")
    return on_node(kube, node, "test", "-f", restore_path.removeprefix("file://")).returncode == 0


def ballast_counter_pod(kube: Cluster, namespace: str, name: str, image: str, mib: int,
                        node: str | None = None) -> None:
    """A COUNTER Pod that also holds `mib` MiB of memory a dump must copy (a shell variable of
    base64 text from /dev/urandom, in a second process), so that its dump takes seconds.
    Ready when this returns: the ballast is filled (its size written to /tmp/ballast)."""
    raw = mib * 1024 * 1024 * 3 // 4  # 3 random bytes -> 4 base64 characters
    script = (
        f"( b=$(head -c {raw} /dev/urandom | base64 -w 0); echo ${{#b}} > {BALLAST_FILE}; "
        f"while true; do sleep 3600; done ) & {COUNTER}"
    )
    counter_pod(kube, namespace, name, image, node, script=script)
    wait_until(
        lambda: kube.kubectl("-n", namespace, "exec", name, "--", "test", "-s", BALLAST_FILE,
                             check=False).returncode == 0,
        120, f"the ballast of {name} never filled",
    )


@contextmanager
def file_location(kube: Cluster) -> Iterator[str]:
    """The name of a `file` StorageLocation (archives in each node's agent folder) for tests
    that look at an archive on its node, as a Checkpoint names it in spec.storage: the local
    cluster's `node-local`, else one made here and removed after (ckpt as deployed elsewhere
    may have none). The local cluster's default location is S3 (harness.cluster.object_store)."""
    found = kube.kubectl("get", "storagelocation", FILE_LOCATION, "-o",
                         "jsonpath={.spec.type}", check=False)
    if found.returncode == 0 and found.stdout.strip() == "file":
        yield FILE_LOCATION
        return
    name = f"e2e-file-{secrets.token_hex(3)}"
    kube.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": GROUP_VERSION, "kind": "StorageLocation",
        "metadata": {"name": name}, "spec": {"type": "file"},
    }))
    try:
        yield name
    finally:
        kube.kubectl("delete", "storagelocation", name, "--ignore-not-found", check=False)



# -- watching a phase, the agents' staged restores --------------------------------------------

STAGING_ROOT = "/var/lib/ckpt/restores"  # the agents' staging folder (deploy/base/agent.yaml)


def watch_phase(kube: Cluster, namespace: str, kind: str, name: str, phases: set[str],
                timeout: float = 300) -> str:
    """Follows the resource with a watch (no polling gap: a phase that lasts a second is
    seen) and returns the first phase in `phases` it shows."""
    cmd = [kubectl_binary(), "--kubeconfig", str(kube.kubeconfig), "-n", namespace, "get",
           kind, name, "--watch", "-o", 'jsonpath={.status.phase}{"\\n"}']
    seen: list[str] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                seen.append(line.strip())
                if seen[-1] in phases:
                    return seen[-1]
        finally:
            timer.cancel()
            proc.kill()
    raise AssertionError(f"{kind} {name} never in {phases} (seen {seen})")


def staged(kube: Cluster, node: str, restore_uid: str, entry: str = "") -> bool:
    """Whether `node` holds the staged restore's folder (or `entry` in it, e.g. stage.json,
    written last, once staging is complete)."""
    path = f"{STAGING_ROOT}/{restore_uid}" + (f"/{entry}" if entry else "")
    return on_node(kube, node, "test", "-e", path).returncode == 0


def restored_pods(kube: Cluster, namespace: str, restore: str) -> list[dict[str, Any]]:
    """The Pods a Restore created (its label ckpt.dev/restore-name)."""
    return items(kube, namespace, "pods", "-l", f"ckpt.dev/restore-name={restore}")


# Run by the agent image's Python inside the node's agent pod (which mounts the node's archive
# folder at the same path): the archive's checksum checked, its metadata, its member names and
# the names inside each writable layer ckpt captured (capture/<container>/rootfs-diff.tar; a
# kubelet checkpoint's own rootfs-diff.tar is in the kubelet's format), as JSON on stdout.
_ARCHIVE_REPORT = """
import json, sys, tarfile, zstandard
from ckpt.storage import archive
path = sys.argv[1]
with open(path, "rb") as f:
    size = archive.verify_checksum(f, sys.argv[2])
with open(path, "rb") as f:
    meta = archive.read_metadata(f)
names, diff = [], {}
with open(path, "rb") as f:
    plain = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)
    with tarfile.open(fileobj=plain, mode="r|") as tar:
        for m in tar:
            names.append(m.name)
            if m.name.startswith("capture/") and m.name.endswith("/rootfs-diff.tar"):
                inner = tarfile.open(fileobj=tar.extractfile(m), mode="r|")
                diff[m.name] = [i.name for i in inner]
print(json.dumps({"size": size, "meta": meta.model_dump(mode="json"), "names": names,
                  "diff": diff}))
"""


def verified_archive(kube: Cluster, node: str, status: dict[str, Any]) -> dict[str, Any]:
    """A Checkpoint's node-local archive checked inside `node`'s agent pod against its status
    (checksum and size): {"meta": ckpt.json, "names": members, "diff": {member: names}}."""
    restore_path = str(status["restorePath"])
    assert restore_path.startswith("file://"), f"not a node-local archive: {restore_path}"
    report = json.loads(kube.kubectl(
        "-n", NAMESPACE, "exec", agent_on(kube, node), "-c", "agent", "--",
        "python3", "-c", _ARCHIVE_REPORT, restore_path.removeprefix("file://"),
        str(status["checksum"]).removeprefix("sha256:"),
    ).stdout)
    assert report["size"] == status["sizeBytes"], (report["size"], status["sizeBytes"])
    return dict(report)
