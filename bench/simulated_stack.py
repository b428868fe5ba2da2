"""The whole of ckpt on one machine, with pods simulated: only the operator load benchmark
(bench/operator_load.py) uses it. It creates up to a hundred Checkpoints at once, which needs
as many running pods; a real kubelet on a 2-core machine cannot run that many, so here the
pods are API objects whose status this module writes. Every test and `make demo` run on the
real local cluster (harness/cluster) instead.

On a Kubernetes API (the local control plane, or any cluster reachable by kubeconfig) it
installs the CRD and the identities and RBAC exactly as `deploy/` renders them, then starts
the checkpoints API (SQLite), one node agent and the operator as real processes, each
authenticating as its own ServiceAccount. There is no kubelet: pods are API objects whose
status this module writes, pointing at real runc containers on this machine, and the agent's
pod object carries the agent's loopback address as its pod IP.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ckpt.apis.checkpoint import GROUP, PLURAL
from harness.containers import BusyboxContainer, Runc
from harness.controlplane import Cluster, free_port, write_kubeconfig
from harness.identities import AGENT_SERVER_NAME, agent_certificate, token_for
from harness.processes import ManagedProcess
from harness.tools import REPO_ROOT

SYSTEM_NAMESPACE = "ckpt-system"
OPERATOR_SA = "ckpt-operator"
AGENT_SA = "ckpt-agent"
DEFAULT_NODE = "ckpt-node-1"
AGENT_LABELS = {"app.kubernetes.io/name": "ckpt-agent"}
# The DaemonSets of deploy/base/agent.yaml by kind; the operator calls only pods they control.
AGENT_DAEMONSETS = {False: "ckpt-agent", True: "ckpt-agent-gpu"}
_IDENTITY_KINDS = {
    "Namespace", "CustomResourceDefinition", "ServiceAccount",
    "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
}


def install_identities(cluster: Cluster) -> None:
    """Applies the CRD, namespace, ServiceAccounts and RBAC that `deploy/` renders."""
    rendered = cluster.kubectl("kustomize", str(REPO_ROOT / "deploy")).stdout
    documents = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] in _IDENTITY_KINDS]
    cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(documents))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", f"crd/{PLURAL}.{GROUP}"
    )


class LocalStack:
    def __init__(
        self, cluster: Cluster, workdir: Path, runc: Runc, *, node: str = DEFAULT_NODE,
        poll_interval: float = 0.2,
    ) -> None:
        self.cluster = cluster
        self.workdir = workdir
        self.runc = runc
        self.node = node
        self.poll_interval = poll_interval
        self.archives = workdir / "archives"
        self.api: ManagedProcess | None = None
        self.agent: ManagedProcess | None = None
        self.operator: ManagedProcess | None = None
        self.api_url = ""
        self.api_token = ""
        self.api_database = f"sqlite:///{workdir / 'api.db'}"
        self._agent_pods: list[str] = []
        # Every process started, kept as soon as it runs: stop() must reach a process whose
        # start-up step after launching (registering its pod, say) failed.
        self._processes: list[ManagedProcess] = []
        self.operator_metrics_url = ""

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> LocalStack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.agent_cert, self.agent_key = agent_certificate(self.workdir / "tls")
        install_identities(self.cluster)
        self.start_api()
        self.agent = self.start_agent(self.node, name=f"ckpt-agent-{self.node}")
        self.start_operator()
        return self

    def stop(self) -> None:
        for process in reversed(self._processes):
            process.stop()
        # Agent pod objects point at this stack's ports: leave none for the next stack.
        for name in self._agent_pods:
            self._delete_pod(SYSTEM_NAMESPACE, name)

    def __enter__(self) -> LocalStack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- parts ---------------------------------------------------------------------------------

    def _launch(self, process: ManagedProcess) -> None:
        self._processes.append(process)
        process.start()

    def start_api(self) -> ManagedProcess:
        port = free_port()
        self.api_url = f"http://127.0.0.1:{port}"
        self.api = ManagedProcess(
            "api",
            ["api", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--database", self.api_database],
            # No scraper identity here either; `kubernetes` would need in-cluster credentials.
            env={"CKPT_API_METRICS_AUTH": "none"}, url=self.api_url,
            log_path=self.workdir / "api.log",
        )
        self._launch(self.api)
        self.api_token = subprocess.run(
            [sys.executable, "-m", "ckpt", "api", "token", "create", "--tenant", "local",
             "--role", "operator", "--database", self.api_database],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        return self.api

    def start_agent(
        self, node: str, *, name: str, gpu: bool = False, register: bool = True
    ) -> ManagedProcess:
        """An agent process for `node`, and (with `register`) its pod object, Ready."""
        port = free_port()
        token = self.cluster.service_account_token(SYSTEM_NAMESPACE, AGENT_SA)
        kubeconfig = self.cluster.kubeconfig_for_token(token, self.workdir / f"{name}.kubeconfig")
        state = self.workdir / name
        agent = ManagedProcess(
            name,
            ["agent", "serve"],
            env={
                "CKPT_AGENT_NODE_NAME": node,
                "CKPT_AGENT_HOST": "127.0.0.1",
                "CKPT_AGENT_PORT": str(port),
                "CKPT_AGENT_RUNTIME": "runc",
                "CKPT_AGENT_RUNC_ROOT": str(self.runc.root),
                "CKPT_AGENT_CRIU_BINARY": self.runc.criu or "",
                "CKPT_AGENT_STORE": str(self.archives),
                "CKPT_AGENT_WORK_DIR": str(state / "work"),
                "CKPT_AGENT_STATE_DIR": str(state / "jobs"),
                "CKPT_AGENT_KUBECONFIG": str(kubeconfig),
                "CKPT_AGENT_ALLOWED_IDENTITIES":
                    f"system:serviceaccount:{SYSTEM_NAMESPACE}:{OPERATOR_SA}",
                "CKPT_AGENT_TLS_CERT_FILE": str(self.agent_cert),
                "CKPT_AGENT_TLS_KEY_FILE": str(self.agent_key),
            },
            url=f"https://127.0.0.1:{port}",
            log_path=self.workdir / f"{name}.log",
            verify=self._agent_tls(),
        )
        self._launch(agent)
        if register:
            self.register_agent_pod(name, node, port, gpu=gpu)
        return agent

    def _agent_tls(self) -> ssl.SSLContext:
        """Trusts the agents' certificate under the name the operator checks (not the IP)."""
        context = ssl.create_default_context(cafile=str(self.agent_cert))
        context.check_hostname = False  # health checks dial 127.0.0.1; the cert names a DNS
        return context

    def _agent_daemonset(self, gpu: bool) -> dict[str, Any]:
        """The agent DaemonSet object (applied as-is; it selects no node here, so no
        controller would start pods for it) whose uid the agent pods' owner references carry,
        as the DaemonSet controller's pods would."""
        name = AGENT_DAEMONSETS[gpu]
        labels = {**AGENT_LABELS, "ckpt.dev/agent-kind": "gpu" if gpu else "cpu"}
        daemonset = {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": SYSTEM_NAMESPACE, "labels": labels},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": AGENT_SA,
                        "nodeSelector": {"ckpt.dev/harness-runs-agents-itself": "true"},
                        "containers": [{"name": "agent",
                                        "image": "ghcr.io/ckpt-dev/ckpt-agent:0.1.0"}],
                    },
                },
            },
        }
        self.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(daemonset))
        applied: dict[str, Any] = json.loads(self.cluster.kubectl(
            "-n", SYSTEM_NAMESPACE, "get", "daemonset", name, "-o", "json"
        ).stdout)
        return applied

    def register_agent_pod(self, name: str, node: str, port: int, *, gpu: bool = False) -> None:
        labels = {**AGENT_LABELS, "ckpt.dev/agent-kind": "gpu" if gpu else "cpu"}
        owner = self._agent_daemonset(gpu)["metadata"]
        self._delete_pod(SYSTEM_NAMESPACE, name)  # a pod's ports cannot be changed in place
        self._agent_pods.append(name)
        self._create_pod(
            SYSTEM_NAMESPACE, name, node,
            containers=[{"name": "agent", "image": "ghcr.io/ckpt-dev/ckpt-agent:0.1.0",
                         "ports": [{"name": "agent", "containerPort": port}]}],
            labels=labels,
            service_account=AGENT_SA,
            owner={"apiVersion": "apps/v1", "kind": "DaemonSet", "name": owner["name"],
                   "uid": owner["uid"], "controller": True, "blockOwnerDeletion": True},
        )
        self._set_pod_status(
            SYSTEM_NAMESPACE, name,
            {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
             "conditions": [{"type": "Ready", "status": "True"}]},
        )

    def start_operator(self) -> ManagedProcess:
        token = self.cluster.service_account_token(SYSTEM_NAMESPACE, OPERATOR_SA)
        # As deploy/ mounts it: a token for the agents' audience only, apart from the one
        # the operator uses with the apiserver.
        token_file = self.workdir / "operator.token"
        token_file.write_text(token_for(self.cluster, SYSTEM_NAMESPACE, OPERATOR_SA))
        token_file.chmod(0o600)
        kubeconfig = self.workdir / "operator.kubeconfig"
        write_kubeconfig(kubeconfig, self.cluster.server, self.cluster.ca_file, token, OPERATOR_SA)
        liveness, metrics = free_port(), free_port()
        self.operator_metrics_url = f"http://127.0.0.1:{metrics}/metrics"
        self.operator = ManagedProcess(
            "operator",
            ["operator", "run"],
            env={
                "KUBECONFIG": str(kubeconfig),
                "CKPT_OPERATOR_API_URL": self.api_url,
                "CKPT_OPERATOR_API_TOKEN": self.api_token,
                "CKPT_OPERATOR_AGENT_TOKEN_FILE": str(token_file),
                "CKPT_OPERATOR_AGENT_NAMESPACE": SYSTEM_NAMESPACE,
                "CKPT_OPERATOR_AGENT_SCHEME": "https",
                "CKPT_OPERATOR_AGENT_CA_FILE": str(self.agent_cert),
                "CKPT_OPERATOR_AGENT_SERVER_NAME": AGENT_SERVER_NAME,
                "CKPT_OPERATOR_LISTEN_HOST": "127.0.0.1",
                "CKPT_OPERATOR_LIVENESS_PORT": str(liveness),
                "CKPT_OPERATOR_METRICS_PORT": str(metrics),
                # The bench reads the operator's counters itself, without a scraper identity.
                "CKPT_OPERATOR_METRICS_AUTH": "none",
                "CKPT_OPERATOR_POLL_INTERVAL": str(self.poll_interval),
                "CKPT_OPERATOR_SYNC_INTERVAL": "5",
            },
            url=f"http://127.0.0.1:{liveness}",
            log_path=self.workdir / "operator.log",
        )
        self._launch(self.operator)
        return self.operator

    # -- workload pods -------------------------------------------------------------------------

    def register_pod(
        self,
        namespace: str,
        name: str,
        containers: Mapping[str, BusyboxContainer],
        *,
        node: str | None = None,
        gpus: int = 0,
        phase: str = "Running",
    ) -> dict[str, Any]:
        """A Pod object for real runc containers: scheduled to `node`, status Running with
        each container's runtime id, as a kubelet would report it."""
        self.cluster.ensure_namespace(namespace)
        resources = {"limits": {"nvidia.com/gpu": str(gpus)}} if gpus else {}
        pod = self._create_pod(
            namespace, name, node or self.node,
            containers=[{"name": c, "image": "busybox", "resources": resources}
                        for c in containers],
        )
        uid = json.loads(self.cluster.kubectl(
            "-n", namespace, "get", "pod", name, "-o", "json"
        ).stdout)["metadata"]["uid"]
        for container_name, box in containers.items():
            box.record_pod(namespace, name, uid, container_name)
        self._set_pod_status(namespace, name, {
            "phase": phase,
            "containerStatuses": [
                {"name": c, "containerID": f"containerd://{box.id}", "ready": True,
                 "restartCount": 0, "image": "busybox", "imageID": "",
                 "state": {"running": {}} if phase == "Running" else {"waiting": {}}}
                for c, box in containers.items()
            ],
        })
        return pod

    def _create_pod(
        self, namespace: str, name: str, node: str, *, containers: list[dict[str, Any]],
        labels: Mapping[str, str] | None = None,
        service_account: str | None = None,
        owner: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        pod: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
            "spec": {"nodeName": node, "containers": containers},
        }
        if service_account:
            pod["spec"]["serviceAccountName"] = service_account
        if owner:
            pod["metadata"]["ownerReferences"] = [dict(owner)]
        self.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(pod))
        return pod

    def _delete_pod(self, namespace: str, name: str) -> None:
        # No kubelet confirms a graceful deletion here: force it, or it never completes.
        self.cluster.kubectl(
            "-n", namespace, "delete", "pod", name, "--ignore-not-found",
            "--grace-period=0", "--force",
        )

    def _set_pod_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.cluster.kubectl(
            "-n", namespace, "patch", "pod", name, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": status}),
        )
