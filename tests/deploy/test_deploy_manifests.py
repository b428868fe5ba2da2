"""deploy/ as rendered by `kubectl kustomize`: the objects, their security and their wiring.

These need no cluster; test_deploy_cluster.py sends the same objects to a real apiserver.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from deploy_render import (
    AGENT_RULES,
    CREDENTIALS_NAMESPACE,
    METRICS_AUTH_RULES,
    METRICS_READER_URLS,
    NAMESPACE,
    OPERATOR_LIST_PODS_RULES,
    OPERATOR_NAMED_RULES,
    OPERATOR_NAMESPACE_RULES,
    OPERATOR_RULES,
    OPERATOR_STORAGE_RULES,
    REPO_ROOT,
    USER_NAMED_RULES,
    Manifest,
)

from ckpt.agent.settings import AgentSettings
from ckpt.api.settings import ApiSettings
from ckpt.operator.settings import OperatorSettings

Find = Callable[[str, str], Manifest]

EXPECTED_OBJECTS = {
    ("Namespace", "ckpt-system"),
    ("Namespace", "ckpt-credentials"),
    ("CustomResourceDefinition", "checkpoints.ckpt.dev"),
    ("CustomResourceDefinition", "storagelocations.ckpt.dev"),
    ("CustomResourceDefinition", "restores.ckpt.dev"),
    ("CustomResourceDefinition", "checkpointpolicies.ckpt.dev"),
    ("RuntimeClass", "ckpt"),
    ("ValidatingAdmissionPolicy", "ckpt-operator-creates-only-restored-pods"),
    ("ValidatingAdmissionPolicyBinding", "ckpt-operator-creates-only-restored-pods"),
    ("ValidatingAdmissionPolicy", "ckpt-restore-annotation-is-the-operators"),
    ("ValidatingAdmissionPolicyBinding", "ckpt-restore-annotation-is-the-operators"),
    ("ValidatingAdmissionPolicy", "ckpt-operator-writes-only-read-token-secrets"),
    ("ValidatingAdmissionPolicyBinding", "ckpt-operator-writes-only-read-token-secrets"),
    ("ServiceAccount", "ckpt-api"),
    ("PersistentVolumeClaim", "ckpt-api-data"),
    ("Deployment", "ckpt-api"),
    ("Service", "ckpt-api"),
    ("ServiceAccount", "ckpt-operator"),
    ("ClusterRole", "ckpt-operator"),
    ("ClusterRoleBinding", "ckpt-operator"),
    ("ClusterRole", "ckpt-user"),
    ("ClusterRole", "ckpt-operator-list-pods"),
    ("Role", "ckpt-operator-agents"),
    ("RoleBinding", "ckpt-operator-agents"),
    ("Role", "ckpt-operator-storage"),
    ("RoleBinding", "ckpt-operator-storage"),
    ("Deployment", "ckpt-operator"),
    ("ServiceAccount", "ckpt-agent"),
    ("ClusterRole", "ckpt-agent"),
    ("ClusterRoleBinding", "ckpt-agent"),
    ("DaemonSet", "ckpt-agent"),
    ("DaemonSet", "ckpt-agent-gpu"),
    ("NetworkPolicy", "ckpt-agent"),
    ("NetworkPolicy", "ckpt-operator"),
    ("ClusterRole", "ckpt-metrics-reader"),
    ("ClusterRole", "ckpt-metrics-auth"),
    ("ClusterRoleBinding", "ckpt-metrics-auth"),
}
CLUSTER_SCOPED = {
    "Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "RuntimeClass",
    "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
}
WORKLOADS = {"Deployment", "DaemonSet"}

# Host paths an agent may mount, and nothing else (see the comment atop deploy/base/agent.yaml).
AGENT_HOST_PATHS = {
    "/run/containerd/runc": "Directory",
    "/run/containerd/io.containerd.runtime.v2.task": "Directory",
    "/sys/fs/cgroup": "Directory",
    "/var/lib/ckpt/archives": "DirectoryOrCreate",
    "/var/lib/ckpt/agent": "DirectoryOrCreate",
    "/var/lib/kubelet/checkpoints": "DirectoryOrCreate",
    "/var/lib/ckpt/restores": "DirectoryOrCreate",
    # The install-ckpt-runc init container's only: the wrapper and containerd's drop-in.
    "/var/lib/ckpt": "DirectoryOrCreate",
    "/etc/containerd/conf.d": "DirectoryOrCreate",
}
# The GPU agent's only: the socket where the wrapper's GPU hook asks for a CUDA restore.
GPU_AGENT_HOST_PATHS = {"/var/lib/ckpt/run": "DirectoryOrCreate"}
INSTALL_ONLY_VOLUMES = {"ckpt-host", "containerd-conf-d"}


def project_version() -> str:
    with (REPO_ROOT / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def workloads(manifests: list[Manifest]) -> Iterator[Manifest]:
    return (m for m in manifests if m["kind"] in WORKLOADS)


def containers(workload: Manifest) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def expand(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


def expand_named(rules: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    return {
        (group, resource, verb, name)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
        for name in rule.get("resourceNames", [])
    }


def test_exactly_the_expected_objects(manifests: list[Manifest]) -> None:
    found = [(m["kind"], m["metadata"]["name"]) for m in manifests]
    assert len(found) == len(set(found)), "an object is rendered twice"
    # No Secret (the API token and the TLS Secrets are created by hand, see README.md
    # and deploy/README.md); one Role, for the agent pod watch: the operator runs
    # --standalone and needs no peering objects.
    assert set(found) == EXPECTED_OBJECTS


def test_namespaces_and_labels(manifests: list[Manifest]) -> None:
    for m in manifests:
        meta = m["metadata"]
        where = f"{m['kind']}/{meta['name']}"
        if m["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in meta, where
        elif m["metadata"]["name"] == "ckpt-operator-storage":
            assert meta.get("namespace") == CREDENTIALS_NAMESPACE, where
        else:
            assert meta.get("namespace") == NAMESPACE, where
        assert meta["labels"]["app.kubernetes.io/part-of"] == "ckpt", where
    for w in workloads(manifests):
        # The part-of label reaches the pods but not the (immutable) selector.
        assert w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"] == "ckpt"
        assert "app.kubernetes.io/part-of" not in w["spec"]["selector"]["matchLabels"]
        selector = w["spec"]["selector"]["matchLabels"]
        assert selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()


def test_namespace_admits_the_privileged_agents(find: Find) -> None:
    labels = find("Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"


def test_images_are_pinned_to_the_project_version(manifests: list[Manifest]) -> None:
    version = project_version()
    allowed = {f"ghcr.io/ckpt-dev/ckpt:{version}", f"ghcr.io/ckpt-dev/ckpt-agent:{version}"}
    for w in workloads(manifests):
        for c in containers(w):
            assert c["image"] in allowed, f"{w['metadata']['name']}: {c['image']}"


def test_every_container_has_requests_and_limits(manifests: list[Manifest]) -> None:
    for w in workloads(manifests):
        for c in containers(w):
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= c["resources"].get(kind, {}).keys(), (
                    f"{w['metadata']['name']}/{c['name']}: {kind}"
                )


@pytest.mark.parametrize("name", ["ckpt-api", "ckpt-operator"])
def test_api_and_operator_meet_the_restricted_pod_security_level(find: Find, name: str) -> None:
    deployment = find("Deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for key in ("hostPID", "hostNetwork", "hostIPC"):
        assert not pod.get(key), key
    assert all("hostPath" not in v for v in pod.get("volumes", []))
    for c in containers(deployment):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert not sc.get("privileged")
        assert "runAsUser" not in sc or sc["runAsUser"] != 0


@pytest.mark.parametrize("name", ["ckpt-api", "ckpt-operator"])
def test_single_replica_recreated_not_rolled(find: Find, name: str) -> None:
    spec = find("Deployment", name)["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}


def test_api_deployment(find: Find) -> None:
    deployment = find("Deployment", "ckpt-api")
    pod = deployment["spec"]["template"]["spec"]
    (api,) = pod["containers"]
    assert api["command"] == ["ckpt", "api", "serve", "--host", "0.0.0.0", "--port", "8443"]
    # One port, TLS only: a plain-HTTP probe would never pass.
    assert api["ports"] == [{"name": "https", "containerPort": 8443}]
    for probe in ("readinessProbe", "livenessProbe"):
        assert api[probe]["httpGet"] == {"scheme": "HTTPS", "path": "/healthz", "port": "https"}

    # The API's token is mounted in its own pod only, for the metrics reviews.
    assert pod["serviceAccountName"] == "ckpt-api"
    assert pod["automountServiceAccountToken"] is True
    assert find("ServiceAccount", "ckpt-api")["automountServiceAccountToken"] is False

    # SQLite lives on the claim: the URL's absolute path is under the claim's mount.
    url = env_of(api)["CKPT_API_DATABASE_URL"]["value"]
    assert url.startswith("sqlite:////")
    mounts = {m["name"]: m["mountPath"] for m in api["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert url.removeprefix("sqlite:///").startswith(mounts["data"] + "/")
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "ckpt-api-data"
    # fsGroup makes the claim writable by the non-root user.
    assert pod["securityContext"]["fsGroup"] == 65532
    pvc = find("PersistentVolumeClaim", "ckpt-api-data")
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]

    service = find("Service", "ckpt-api")
    assert service["spec"]["ports"] == [{"name": "https", "port": 8443, "targetPort": "https"}]
    assert service["spec"]["selector"].items() <= pod_labels(deployment).items()


def test_api_serves_tls_from_its_secret_and_metrics_to_authorized_scrapers(
    find: Find, monkeypatch: pytest.MonkeyPatch
) -> None:
    pod = find("Deployment", "ckpt-api")["spec"]["template"]["spec"]
    (api,) = pod["containers"]
    env = env_of(api)
    secret = next(v for v in pod["volumes"] if v["name"] == "api-tls")["secret"]
    assert secret == {"secretName": "ckpt-api-tls"}  # required: no plain fallback
    mount = next(m for m in api["volumeMounts"] if m["name"] == "api-tls")
    assert mount["readOnly"] is True
    assert env["CKPT_API_TLS_CERT_FILE"]["value"] == f"{mount['mountPath']}/tls.crt"
    assert env["CKPT_API_TLS_KEY_FILE"]["value"] == f"{mount['mountPath']}/tls.key"
    assert env["CKPT_API_METRICS_AUTH"]["value"] == "kubernetes"
    for name, entry in env.items():
        monkeypatch.setenv(name, entry.get("value", "x"))
    settings = ApiSettings()
    assert settings.tls_cert_file is not None and settings.metrics_auth == "kubernetes"


def pod_labels(workload: Manifest) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"]["labels"])


def test_api_env_names_are_settings_of_the_api(find: Find) -> None:
    (api,) = find("Deployment", "ckpt-api")["spec"]["template"]["spec"]["containers"]
    for name in env_of(api):
        assert name.startswith("CKPT_API_")
        field = name.removeprefix("CKPT_API_").lower()
        assert field in ApiSettings.model_fields, f"{name} is not an ApiSettings field"


def test_operator_deployment(find: Find) -> None:
    deployment = find("Deployment", "ckpt-operator")
    pod = deployment["spec"]["template"]["spec"]
    (operator,) = pod["containers"]
    assert pod["serviceAccountName"] == "ckpt-operator"
    # `ckpt operator run` runs kopf standalone and cluster-wide: one replica is safe only as
    # long as no second operator joins.
    assert operator["command"] == ["ckpt", "operator", "run"]
    assert "args" not in operator

    # The liveness probe asks kopf's own health endpoint, on the port the operator uses.
    defaults = OperatorSettings()
    ports = {p["name"]: p["containerPort"] for p in operator["ports"]}
    probe = operator["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    assert ports[probe["port"]] == defaults.liveness_port
    assert ports["metrics"] == defaults.metrics_port

    env = env_of(operator)
    assert env["CKPT_OPERATOR_API_URL"]["value"] == "https://ckpt-api.ckpt-system.svc:8443"
    # The token comes from the Secret through the kubelet: the operator needs no RBAC on it.
    assert env["CKPT_OPERATOR_API_TOKEN"]["valueFrom"] == {
        "secretKeyRef": {"name": "ckpt-api-token", "key": "token"}
    }
    for name in env:
        field = name.removeprefix("CKPT_OPERATOR_").lower()
        assert field in OperatorSettings.model_fields, f"{name} is not an OperatorSettings field"


def test_operator_finds_the_agents_by_their_labels_and_port(find: Find) -> None:
    settings = OperatorSettings()
    key, value = settings.agent_selector.split("=")
    for name in ("ckpt-agent", "ckpt-agent-gpu"):
        pod = find("DaemonSet", name)["spec"]["template"]
        assert pod["metadata"]["labels"][key] == value
        # The kind label narrows nothing for the operator (it goes by the owning DaemonSet),
        # but the DaemonSets' selectors use it.
        assert "ckpt.dev/agent-kind" in pod["metadata"]["labels"]
        (agent,) = pod["spec"]["containers"]
        assert {"name": "agent", "containerPort": settings.agent_port} in agent["ports"]


def agent_daemonsets(find: Find) -> dict[str, Manifest]:
    return {"cpu": find("DaemonSet", "ckpt-agent"), "gpu": find("DaemonSet", "ckpt-agent-gpu")}


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_agent_daemonset(find: Find, kind: str) -> None:
    daemonset = agent_daemonsets(find)[kind]
    labels = pod_labels(daemonset)
    # The operator routes by exactly these labels.
    assert labels["app.kubernetes.io/name"] == "ckpt-agent"
    assert labels["ckpt.dev/agent-kind"] == kind
    assert daemonset["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "ckpt-agent",
        "ckpt.dev/agent-kind": kind,
    }

    pod = daemonset["spec"]["template"]["spec"]
    (agent,) = pod["containers"]
    assert pod["serviceAccountName"] == "ckpt-agent"
    assert pod["hostPID"] is True
    assert not pod.get("hostNetwork")
    assert agent["command"] == ["ckpt", "agent", "serve"]
    assert agent["securityContext"]["privileged"] is True

    env = env_of(agent)
    assert env["CKPT_AGENT_NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["CKPT_AGENT_PORT"]["value"] == "8443"
    assert agent["ports"] == [{"name": "agent", "containerPort": 8443}]
    assert "hostPort" not in agent["ports"][0]
    # The agent port is TLS only: a plain-HTTP probe never passes and the pod never gets Ready.
    assert agent["readinessProbe"]["httpGet"] == {
        "scheme": "HTTPS",
        "path": "/healthz",
        "port": "agent",
    }
    # See agent.yaml: a liveness restart mid-dump could leave the target frozen.
    assert "livenessProbe" not in agent


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_agent_mounts_only_the_host_paths_it_needs(find: Find, kind: str) -> None:
    pod = agent_daemonsets(find)[kind]["spec"]["template"]["spec"]
    (agent,) = pod["containers"]
    host_paths = {v["name"]: v["hostPath"] for v in pod["volumes"] if "hostPath" in v}
    expected = AGENT_HOST_PATHS | (GPU_AGENT_HOST_PATHS if kind == "gpu" else {})
    assert {hp["path"]: hp["type"] for hp in host_paths.values()} == expected
    mounts = {m["name"]: m for m in agent["volumeMounts"]}
    for name, host_path in host_paths.items():
        if name in INSTALL_ONLY_VOLUMES:
            assert name not in mounts
            continue
        # Each host path appears at the same place inside, where runc and CRIU expect it.
        assert mounts[name]["mountPath"] == host_path["path"]
    bundles = next(n for n, hp in host_paths.items() if hp["path"].endswith("v2.task"))
    assert mounts[bundles]["mountPropagation"] == "HostToContainer"
    # Everything else the agent writes goes to an emptyDir (its root filesystem is read-only);
    # its one Secret is its TLS certificate.
    assert agent["securityContext"]["readOnlyRootFilesystem"] is True
    assert all(
        "hostPath" in v or "emptyDir" in v or v.get("secret", {}).get("secretName")
        == "ckpt-agent-tls"
        for v in pod["volumes"]
    )


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_agent_settings_accept_the_manifest_and_point_into_host_paths(
    find: Find, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (agent,) = agent_daemonsets(find)[kind]["spec"]["template"]["spec"]["containers"]
    for name, entry in env_of(agent).items():
        if not name.startswith("CKPT_AGENT_"):
            continue  # NVIDIA_*, and HOST_IP that CKPT_AGENT_KUBELET_URL refers to
        field = name.removeprefix("CKPT_AGENT_").lower()
        assert field in AgentSettings.model_fields, f"{name} is not an AgentSettings field"
        monkeypatch.setenv(name, entry.get("value", "node-1"))
    settings = AgentSettings()
    assert settings.port == 8443
    # Kubernetes expands $(HOST_IP), defined earlier in the list, to the node's address.
    names = list(env_of(agent))
    assert names.index("HOST_IP") < names.index("CKPT_AGENT_KUBELET_URL")
    assert env_of(agent)["HOST_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.hostIP"}}
    assert settings.kubelet_url == "https://$(HOST_IP):10250"
    mounted = [m["mountPath"] for m in agent["volumeMounts"]]
    for path in (settings.store, settings.state_dir, settings.work_dir, settings.runc_root):
        assert any(str(path).startswith(m) for m in mounted), f"{path} is not on a mounted volume"


def test_gpu_agent_installs_the_gpu_hook_and_serves_its_socket(find: Find) -> None:
    daemonsets = agent_daemonsets(find)
    gpu = daemonsets["gpu"]["spec"]["template"]["spec"]
    (install,) = gpu["initContainers"]
    script = install["args"][0]
    assert 'cp /usr/local/bin/ckpt-cuda-restore "$bin/.ckpt-cuda-restore.new"' in script
    assert 'mv -f "$bin/.ckpt-cuda-restore.new" "$bin/ckpt-cuda-restore"' in script
    (agent,) = gpu["containers"]
    socket = env_of(agent)["CKPT_AGENT_GPU_RESTORE_SOCKET"]["value"]
    # Where the hook looks by default: <its folder>/../run/gpu-restore.sock.
    assert socket == "/var/lib/ckpt/run/gpu-restore.sock"
    mounts = {m["mountPath"] for m in agent["volumeMounts"]}
    assert "/var/lib/ckpt/run" in mounts
    # A CPU agent never gets GPU restores (the operator sends them to GPU agents only).
    (cpu_agent,) = daemonsets["cpu"]["spec"]["template"]["spec"]["containers"]
    assert "CKPT_AGENT_GPU_RESTORE_SOCKET" not in env_of(cpu_agent)
    assert "ckpt-cuda-restore" not in daemonsets["cpu"]["spec"]["template"]["spec"][
        "initContainers"][0]["args"][0]


def test_gpu_agent_runs_only_on_gpu_nodes_with_the_nvidia_runtime(find: Find) -> None:
    daemonsets = agent_daemonsets(find)
    gpu = daemonsets["gpu"]["spec"]["template"]["spec"]
    assert gpu["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists"} in gpu["tolerations"]
    assert gpu["runtimeClassName"] == "nvidia"
    (agent,) = gpu["containers"]
    env = env_of(agent)
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"]["value"] == "compute,utility"
    # The agent must not take a GPU away from the workloads it checkpoints.
    for kind in ("requests", "limits"):
        assert "nvidia.com/gpu" not in agent["resources"][kind]

    # The CPU agent stays off GPU nodes: one privileged agent per node.
    cpu = daemonsets["cpu"]["spec"]["template"]["spec"]
    assert "runtimeClassName" not in cpu
    assert "tolerations" not in cpu
    (term,) = cpu["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert term["matchExpressions"] == [
        {"key": "nvidia.com/gpu.present", "operator": "NotIn", "values": ["true"]}
    ]


def test_rbac_rules_are_exactly_what_each_part_needs(manifests: list[Manifest], find: Find) -> None:
    operator = find("ClusterRole", "ckpt-operator")["rules"]
    assert expand([r for r in operator if "resourceNames" not in r]) == OPERATOR_RULES
    assert expand_named(operator) == OPERATOR_NAMED_RULES
    assert expand_named(find("ClusterRole", "ckpt-user")["rules"]) == USER_NAMED_RULES
    role = find("Role", "ckpt-operator-agents")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert expand(role["rules"]) == OPERATOR_NAMESPACE_RULES
    assert find("RoleBinding", "ckpt-operator-agents")["subjects"] == [
        {"kind": "ServiceAccount", "name": "ckpt-operator", "namespace": NAMESPACE}
    ]
    storage = find("Role", "ckpt-operator-storage")
    assert storage["metadata"]["namespace"] == CREDENTIALS_NAMESPACE
    assert expand(storage["rules"]) == OPERATOR_STORAGE_RULES
    binding = find("RoleBinding", "ckpt-operator-storage")
    assert binding["metadata"]["namespace"] == CREDENTIALS_NAMESPACE
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "ckpt-operator", "namespace": NAMESPACE}
    ]
    # Nothing runs where the credentials are: no other object of deploy/ goes there.
    assert {m["kind"] for m in manifests
            if m["metadata"].get("namespace") == CREDENTIALS_NAMESPACE} == {"Role", "RoleBinding"}
    assert expand(find("ClusterRole", "ckpt-agent")["rules"]) == AGENT_RULES
    # Bound by namespace admins where they enable CheckpointPolicies, never by deploy/.
    assert expand(find("ClusterRole", "ckpt-operator-list-pods")["rules"]) == (
        OPERATOR_LIST_PODS_RULES
    )
    assert not [m for m in manifests if m["kind"] in {"ClusterRoleBinding", "RoleBinding"}
                and m["roleRef"]["name"] == "ckpt-operator-list-pods"]
    for m in manifests:
        if m["kind"] in {"ClusterRole", "Role"}:
            for rule in m["rules"]:
                # Rules limited to named objects: only those checked above.
                if "resourceNames" in rule:
                    assert m["metadata"]["name"] in {"ckpt-operator", "ckpt-user"}, rule
                keys = ("nonResourceURLs", "verbs") if "nonResourceURLs" in rule else (
                    "apiGroups", "resources", "verbs")
                for key in keys:
                    assert "*" not in rule[key], f"{m['metadata']['name']}: wildcard {key}"
    # The API's and the operator's metrics reviews; the scrapers' role, bound by admins.
    assert expand(find("ClusterRole", "ckpt-metrics-auth")["rules"]) == METRICS_AUTH_RULES
    assert find("ClusterRoleBinding", "ckpt-metrics-auth")["subjects"] == [
        {"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}
        for name in ("ckpt-api", "ckpt-operator")
    ]
    [reader] = find("ClusterRole", "ckpt-metrics-reader")["rules"]
    assert set(reader) == {"nonResourceURLs", "verbs"}
    assert {(u, v) for u in reader["nonResourceURLs"] for v in reader["verbs"]} == (
        METRICS_READER_URLS
    )
    assert not [m for m in manifests if m["kind"] in {"ClusterRoleBinding", "RoleBinding"}
                and m["roleRef"]["name"] == "ckpt-metrics-reader"]
    for name in ("ckpt-operator", "ckpt-agent", "ckpt-metrics-auth"):
        binding = find("ClusterRoleBinding", name)
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": name,
        }
        if name != "ckpt-metrics-auth":
            assert binding["subjects"] == [
                {"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}
            ]


def test_postgresql_overlay_takes_the_url_from_the_secret(
    manifests: list[Manifest], postgresql_manifests: list[Manifest]
) -> None:
    objects = {(m["kind"], m["metadata"]["name"]) for m in postgresql_manifests}
    assert objects == EXPECTED_OBJECTS - {("PersistentVolumeClaim", "ckpt-api-data")}
    (deployment,) = [
        m
        for m in postgresql_manifests
        if m["kind"] == "Deployment" and m["metadata"]["name"] == "ckpt-api"
    ]
    pod = deployment["spec"]["template"]["spec"]
    (api,) = pod["containers"]
    assert env_of(api)["CKPT_API_DATABASE_URL"] == {
        "name": "CKPT_API_DATABASE_URL",
        "valueFrom": {"secretKeyRef": {"name": "ckpt-api-database", "key": "url"}},
    }
    assert all("persistentVolumeClaim" not in v for v in pod["volumes"])
    # Everything but the API's database settings is the same as the SQLite install.
    base = {(m["kind"], m["metadata"]["name"]): m for m in manifests}
    for m in postgresql_manifests:
        if (m["kind"], m["metadata"]["name"]) != ("Deployment", "ckpt-api"):
            assert m == base[(m["kind"], m["metadata"]["name"])]


def test_only_the_operator_may_reach_the_agents(find: Find) -> None:
    policy = find("NetworkPolicy", "ckpt-agent")["spec"]
    agent_labels = find("DaemonSet", "ckpt-agent")["spec"]["template"]["metadata"]["labels"]
    gpu_labels = find("DaemonSet", "ckpt-agent-gpu")["spec"]["template"]["metadata"]["labels"]
    selector = policy["podSelector"]["matchLabels"]
    assert selector.items() <= agent_labels.items() and selector.items() <= gpu_labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    operator_labels = find("Deployment", "ckpt-operator")["spec"]["template"]["metadata"]["labels"]
    [rule] = policy["ingress"]
    [source] = rule["from"]
    assert source["podSelector"]["matchLabels"].items() <= operator_labels.items()
    assert "namespaceSelector" not in source  # the operator's own namespace only
    assert rule["ports"] == [{"protocol": "TCP", "port": "agent"}]


# Where the agent must write, and why (the comment atop deploy/base/agent.yaml says the same).
AGENT_WRITABLE = {
    "/run/containerd/runc",  # runc updates each container's state.json
    "/sys/fs/cgroup",  # the freezer
    "/var/lib/ckpt/archives",  # archives
    "/var/lib/ckpt/agent",  # job records and CRIU's scratch
    "/var/lib/kubelet/checkpoints",  # the kubelet backend removes the tars it archived
    "/var/lib/ckpt/restores",  # staged restores
    "/var/lib/ckpt/run",  # the GPU hook's socket (GPU agent only)
}


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_agent_host_paths_are_read_only_unless_written(find: Find, kind: str) -> None:
    # Before: every host path read-write, /run/containerd (containerd.sock) included.
    pod = agent_daemonsets(find)[kind]["spec"]["template"]["spec"]
    (agent,) = pod["containers"]
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    for mount in agent["volumeMounts"]:
        path = host_paths.get(mount["name"])
        if path is not None:
            assert bool(mount.get("readOnly")) == (path not in AGENT_WRITABLE), path
    # containerd's socket (full control of every container) is not within any mount.
    assert all(not "/run/containerd/containerd.sock".startswith(p + "/")
               and p != "/run/containerd" for p in host_paths.values())


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_agent_serves_tls_and_accepts_only_the_agent_audience(find: Find, kind: str) -> None:
    pod = agent_daemonsets(find)[kind]["spec"]["template"]["spec"]
    (agent,) = pod["containers"]
    env = env_of(agent)
    secret = next(v for v in pod["volumes"] if v["name"] == "agent-tls")["secret"]
    assert secret["secretName"] == "ckpt-agent-tls"
    mount = next(m for m in agent["volumeMounts"] if m["name"] == "agent-tls")
    assert mount["readOnly"] is True
    assert env["CKPT_AGENT_TLS_CERT_FILE"]["value"] == f"{mount['mountPath']}/tls.crt"
    assert env["CKPT_AGENT_TLS_KEY_FILE"]["value"] == f"{mount['mountPath']}/tls.key"
    assert env["CKPT_AGENT_TOKEN_AUDIENCES"]["value"] == "ckpt-agent"
    # GPUs through the NVIDIA runtime, none claimed from the device plugin.
    assert "nvidia.com/gpu" not in json.dumps(agent["resources"])


def test_operator_calls_agents_with_a_projected_agent_token_over_verified_tls(
    find: Find,
) -> None:
    pod = find("Deployment", "ckpt-operator")["spec"]["template"]["spec"]
    (operator,) = pod["containers"]
    env = env_of(operator)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in operator["volumeMounts"]}
    [source] = volumes["agent-token"]["projected"]["sources"]
    token = source["serviceAccountToken"]
    assert token["audience"] == "ckpt-agent"
    assert token["expirationSeconds"] <= 3600
    assert env["CKPT_OPERATOR_AGENT_TOKEN_FILE"]["value"] == (
        f"{mounts['agent-token']['mountPath']}/{token['path']}"
    )
    # The agents' certificate, never their key.
    assert volumes["agent-tls"]["secret"]["items"] == [{"key": "tls.crt", "path": "tls.crt"}]
    assert env["CKPT_OPERATOR_AGENT_CA_FILE"]["value"] == (
        f"{mounts['agent-tls']['mountPath']}/tls.crt"
    )
    assert env["CKPT_OPERATOR_AGENT_NAMESPACE"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}
    }
    settings = OperatorSettings()
    assert settings.agent_scheme == "https"
    assert settings.agent_token_file == Path(env["CKPT_OPERATOR_AGENT_TOKEN_FILE"]["value"])


def test_operator_verifies_the_api_and_serves_metrics_over_tls(
    find: Find, monkeypatch: pytest.MonkeyPatch
) -> None:
    pod = find("Deployment", "ckpt-operator")["spec"]["template"]["spec"]
    (operator,) = pod["containers"]
    env = env_of(operator)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in operator["volumeMounts"]}
    # The API's certificate, never its key; the URL's host is the Service's name, which is
    # the name that certificate carries, so no other name is configured.
    assert volumes["api-tls"]["secret"] == {
        "secretName": "ckpt-api-tls", "items": [{"key": "tls.crt", "path": "tls.crt"}]
    }
    assert env["CKPT_OPERATOR_API_CA_FILE"]["value"] == f"{mounts['api-tls']['mountPath']}/tls.crt"
    url = httpx.URL(env["CKPT_OPERATOR_API_URL"]["value"])
    (port,) = find("Service", "ckpt-api")["spec"]["ports"]
    assert (url.scheme, url.host, url.port) == ("https", f"ckpt-api.{NAMESPACE}.svc", port["port"])
    assert "CKPT_OPERATOR_API_SERVER_NAME" not in env
    # Its metrics port: https with its own certificate and key, authorized scrapers only.
    assert volumes["operator-tls"]["secret"] == {"secretName": "ckpt-operator-tls"}
    assert mounts["operator-tls"]["readOnly"] is True
    folder = mounts["operator-tls"]["mountPath"]
    assert env["CKPT_OPERATOR_METRICS_TLS_CERT_FILE"]["value"] == f"{folder}/tls.crt"
    assert env["CKPT_OPERATOR_METRICS_TLS_KEY_FILE"]["value"] == f"{folder}/tls.key"
    assert env["CKPT_OPERATOR_METRICS_AUTH"]["value"] == "kubernetes"
    for name, entry in env.items():
        monkeypatch.setenv(name, entry.get("value", NAMESPACE))
    settings = OperatorSettings()
    assert settings.api_ca_file == Path(env["CKPT_OPERATOR_API_CA_FILE"]["value"])
    assert settings.metrics_auth == "kubernetes"


def test_operator_admits_traffic_only_to_its_metrics_port(find: Find) -> None:
    policy = find("NetworkPolicy", "ckpt-operator")["spec"]
    labels = find("Deployment", "ckpt-operator")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    assert policy["ingress"] == [{"ports": [{"protocol": "TCP", "port": "metrics"}]}]


@pytest.mark.parametrize(("kind", "next_runtime"), [("cpu", "runc"),
                                                    ("gpu", "nvidia-container-runtime")])
def test_agent_installs_the_wrapper_and_the_ckpt_runtime_handler(
    find: Find, kind: str, next_runtime: str
) -> None:
    pod = agent_daemonsets(find)[kind]["spec"]["template"]["spec"]
    (install,) = pod["initContainers"]
    assert install["image"] == pod["containers"][0]["image"]
    env = {e["name"]: e["value"] for e in install["env"]}
    assert env["CKPT_INSTALL_NEXT_RUNTIME"] == next_runtime
    # containerd is restarted only with consent.
    assert env["CKPT_INSTALL_RESTART_CONTAINERD"] == "false"
    assert {m["name"]: m["mountPath"] for m in install["volumeMounts"]} == {
        "ckpt-host": "/host/var/lib/ckpt", "containerd-conf-d": "/host/etc/containerd/conf.d",
    }
    script = install["args"][0]
    for fragment in (
        'runtime_type = "io.containerd.runc.v2"', 'pod_annotations = ["ckpt.dev/*"]',
        'BinaryName = "/var/lib/ckpt/bin/ckpt-runc"', "containerd.runtimes.ckpt",
        "staging_root = /var/lib/ckpt/restores",
    ):
        assert fragment in script
    (agent,) = pod["containers"]
    agent_env = {e["name"]: e.get("value") for e in agent["env"]}
    assert agent_env["CKPT_AGENT_RESTORES_DIR"] == "/var/lib/ckpt/restores"


def test_runtime_class_ckpt_names_the_handler(find: Find) -> None:
    assert find("RuntimeClass", "ckpt")["handler"] == "ckpt"
