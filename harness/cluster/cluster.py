"""A real local Kubernetes cluster on this machine, without Docker.

Control plane: etcd and kube-apiserver (harness.controlplane, in its "with nodes" mode),
kube-controller-manager, kube-scheduler, one kube-proxy in iptables mode for the host (the
nodes share its network namespace), CoreDNS as a Deployment. Nodes: `ckpt-node-1` ...
(harness.cluster.node), each its own containerd and kubelet. Everything is built from pinned
Go modules by the tools/ scripts.

Addresses come from 198.18.0.0/15, reserved for benchmarks and never routed:

| what | address |
|---|---|
| apiserver (on `lo`) | 198.18.0.1 |
| node n: bridge, InternalIP, kubelet | 198.18.n.1, pods 198.18.n.0/24 |
| services | 198.19.0.0/16 (`kubernetes` 198.19.0.1, DNS 198.19.0.10) |

The cluster outlives the process that started it (`make cluster`): every process, and what
the host looked like before (sysctls, iptables chains), is recorded in `state.json` in the work
folder, so `down()` from another process undoes all of it. `down()` also works without a state
file, from the names alone (bridges `ckpt-br*`, cgroups `ckpt-node-*`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.cluster import host
from harness.cluster.coredns import coredns_manifests
from harness.cluster.host import ProcessRecord
from harness.cluster.images import (
    BUSYBOX_IMAGE,
    COREDNS_IMAGE,
    PAUSE_IMAGE,
    busybox_rootfs,
    single_binary_rootfs,
    write_oci_archive,
)
from harness.cluster.node import (
    NODE_PATHS,
    LocalNode,
    NodeBinaries,
    NodeCredentials,
    NodeSpec,
)
from harness.cluster.object_store import FOLDER as OBJECT_STORE_FOLDER
from harness.cluster.object_store import LOG as OBJECT_STORE_LOG
from harness.cluster.object_store import PROCESS as OBJECT_STORE_PROCESS
from harness.cluster.object_store import ObjectStore, start_object_store
from harness.cluster.pki import LocalPki
from harness.controlplane import (
    Cluster,
    LocalControlPlane,
    NodesOptions,
    free_port,
    kubectl_binary,
)
from harness.s3 import STOP_GRACE, weed_binary
from harness.tools import REPO_ROOT, controlplane_binaries, criu_binary, run_tool

DEFAULT_WORKDIR = REPO_ROOT / ".cache" / "cluster"
API_ADDRESS = "198.18.0.1"
CLUSTER_CIDR = "198.18.0.0/16"
SERVICE_CIDR = "198.19.0.0/16"
KUBERNETES_SERVICE_IP = "198.19.0.1"
DNS_SERVICE_IP = "198.19.0.10"
ADMIN_USER = "ckpt-admin"
KUBERNETES_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                       "kube-proxy", "kubelet")
# The .cache/ folders whose binaries only the cluster runs (for leftovers()). Not
# controlplane: the envtest-style control plane of other tests runs the same etcd and
# kube-apiserver; the cluster's own are found by their command lines (its work folder).
CLUSTER_TOOLS = ("containerd", "cri-tools", "cni", "coredns", "pause", "ckpt-runc")


class ClusterError(RuntimeError):
    """The local cluster could not start; the message says which part and why."""


@dataclass(frozen=True)
class NodeInfo:
    name: str
    address: str
    kubelet_port: int


class LocalKubeCluster:
    """Starts, reuses and stops the local cluster whose files live in `workdir`."""

    def __init__(self, workdir: Path = DEFAULT_WORKDIR) -> None:
        self.workdir = workdir
        self.state_file = workdir / "state.json"
        self.kubeconfig = workdir / "kubeconfig"

    # --- queries ------------------------------------------------------------------------

    def state(self) -> dict[str, object] | None:
        try:
            return dict(json.loads(self.state_file.read_text()))
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        """True when every recorded process is alive and the apiserver answers."""
        state = self.state()
        if not state or not state.get("complete"):
            return False
        if not all(record.alive() for record in self._records(state)):
            return False
        return self._kubectl("get", "--raw", "/readyz", check=False).returncode == 0

    def cluster(self) -> Cluster:
        state = self.state()
        if not state:
            raise ClusterError("no local cluster: run `make cluster`")
        return Cluster(
            kubeconfig=self.kubeconfig,
            server=str(state["server"]),
            ca_file=self.workdir / "pki" / "ca.crt",
            admin_token=str(state["admin_token"]),
            _workdir=self.workdir,
        )

    def nodes(self) -> list[NodeInfo]:
        state = self.state() or {}
        return [
            NodeInfo(spec.name, spec.address, 10250)
            for spec in _node_specs(state.get("nodes", []))  # type: ignore[arg-type]
        ]

    # --- up -------------------------------------------------------------------------------

    def up(
        self,
        nodes: int = 2,
        labels: dict[int, dict[str, str]] | None = None,
        timeout: float = 300.0,
        log: Callable[[str], None] = lambda message: None,
    ) -> Cluster:
        """Starts the cluster, or returns the running one (whatever its node count)."""
        if self.running():
            log(f"reusing the running cluster ({self.kubeconfig})")
            return self.cluster()
        self.down(log=log)
        shutil.rmtree(self.logs, ignore_errors=True)
        self.logs.mkdir(parents=True)
        started = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        warning = host.low_disk_warning(self.workdir)
        if warning:
            log(f"warning: {warning}")
        binaries = self._build(log)
        specs = [NodeSpec(i, (labels or {}).get(i, {})) for i in range(1, nodes + 1)]
        state: dict[str, object] = {
            "complete": False,
            "nodes": [{"index": s.index, "labels": s.labels} for s in specs],
            "processes": [],
            "baseline": {"sysctls": host.read_sysctls(), "chains": host.iptables_chains(),
                         "veths": host.veths()},
            "address": f"{API_ADDRESS}/32",
            "binaries": {name: str(path) for name, path in binaries.items()},
        }
        self._save(state)
        try:
            self._start(state, specs, binaries, timeout, log)
        except BaseException:
            log(f"start failed; logs: {self.logs}; `make cluster-down` stops what did start")
            raise
        state["complete"] = True
        self._save(state)
        log(f"cluster up in {time.monotonic() - started:.0f}s")
        return self.cluster()

    def _build(self, log: Callable[[str], None]) -> dict[str, Path]:
        log("building or finding binaries (cached in .cache/)")
        paths = {
            "kubernetes": controlplane_binaries(*KUBERNETES_BINARIES),
            "containerd": Path(run_tool("containerd/build.sh")),
            "crictl": Path(run_tool("cri-tools/build.sh")),
            "cni": Path(run_tool("cni/build.sh")),
            "coredns": Path(run_tool("coredns/build.sh")),
            "pause": Path(run_tool("pause/build.sh")),
            "criu": Path(criu_binary()),
            "weed": Path(weed_binary()),
        }
        wrapper = ckpt_runc_binary()
        if wrapper is not None:
            paths["ckpt_runc"] = wrapper
        return paths

    def _start(
        self,
        state: dict[str, object],
        specs: list[NodeSpec],
        binaries: dict[str, Path],
        timeout: float,
        log: Callable[[str], None],
    ) -> None:
        pki = LocalPki(self.workdir / "pki")
        ca = pki.ensure_ca()
        serving = pki.issue(
            "apiserver", "kube-apiserver", server=True,
            dns_names=["kubernetes", "kubernetes.default", "kubernetes.default.svc",
                       "kubernetes.default.svc.cluster.local", "localhost"],
            ip_addresses=[API_ADDRESS, KUBERNETES_SERVICE_IP, "127.0.0.1"],
        )
        kubelet_client = pki.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client",
                                   ["system:masters"])
        sa = pki.service_account_key()

        # Host: the apiserver's address, forwarding between the node bridges, and bridged
        # traffic through iptables (kube-proxy's DNAT for pods on the same bridge).
        host.ensure_local_address(f"{API_ADDRESS}/32")
        host.write_sysctl("net/ipv4/ip_forward", "1")
        host.write_sysctl("net/bridge/bridge-nf-call-iptables", "1")

        log("starting etcd and kube-apiserver")
        control = LocalControlPlane(
            self.workdir / "controlplane", binaries["kubernetes"],
            nodes=NodesOptions(
                address=API_ADDRESS, service_cidr=SERVICE_CIDR, ca_cert=ca.cert,
                serving_cert=serving.cert, serving_key=serving.key,
                kubelet_client_cert=kubelet_client.cert, kubelet_client_key=kubelet_client.key,
                service_account_key=sa.key, service_account_pub=sa.cert,
            ),
        )
        try:
            api = control.start(timeout=timeout)
        finally:
            for name, pid in control.pids.items():
                self._record(state, ProcessRecord.of(name, pid))
        state["server"] = api.server
        state["admin_token"] = api.admin_token
        shutil.copy(api.kubeconfig, self.kubeconfig)
        self._save(state)

        kube = binaries["kubernetes"]
        components = self.workdir / "components"
        components.mkdir(exist_ok=True)

        def kubeconfig(name: str, common_name: str, orgs: tuple[str, ...] = ()) -> Path:
            pair = pki.issue(name, common_name, orgs)
            path = components / f"{name}.kubeconfig"
            _write_cert_kubeconfig(path, api.server, ca.cert, pair.cert, pair.key, name)
            return path

        log("starting kube-controller-manager, kube-scheduler, kube-proxy")
        self._spawn(state, "kube-controller-manager", [
            str(kube / "kube-controller-manager"),
            "--kubeconfig", str(kubeconfig("controller-manager",
                                           "system:kube-controller-manager")),
            "--bind-address", "127.0.0.1", "--secure-port", str(free_port()),
            "--leader-elect=false",
            "--use-service-account-credentials",
            "--service-account-private-key-file", str(sa.key),
            # Published as the kube-root-ca.crt ConfigMap that every pod's token volume holds.
            "--root-ca-file", str(ca.cert),
            "--cluster-signing-cert-file", str(ca.cert),
            "--cluster-signing-key-file", str(ca.key),
            "--cluster-cidr", CLUSTER_CIDR,
            # Each node's pod subnet is fixed by its index (its bridge and CNI config are
            # written before its kubelet registers), so nothing is allocated here.
            "--allocate-node-cidrs=false",
            "--service-cluster-ip-range", SERVICE_CIDR,
            "--v", "1",
        ])
        self._spawn(state, "kube-scheduler", [
            str(kube / "kube-scheduler"),
            "--kubeconfig", str(kubeconfig("scheduler", "system:kube-scheduler")),
            "--bind-address", "127.0.0.1", "--secure-port", str(free_port()),
            "--leader-elect=false",
            "--v", "1",
        ])
        proxy_config = components / "kube-proxy.yaml"
        proxy_config.write_text(yaml.safe_dump({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "clientConnection": {"kubeconfig": str(kubeconfig("kube-proxy",
                                                              "system:kube-proxy"))},
            "clusterCIDR": CLUSTER_CIDR,
            # One kube-proxy serves every node (they share this network namespace); it
            # needs a node name for its topology hints: the first node's.
            "hostnameOverride": specs[0].name,
            "healthzBindAddress": f"127.0.0.1:{free_port()}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            # No CAP_SYS_RESOURCE on this machine, and conntrack sysctls are the host's.
            "oomScoreAdj": 0,
            "conntrack": {"maxPerCore": 0, "min": 0},
        }))
        self._spawn(state, "kube-proxy", [
            str(kube / "kube-proxy"), "--config", str(proxy_config), "--v", "1",
        ])

        node_binaries = NodeBinaries(
            kubernetes=kube, containerd=binaries["containerd"], crictl=binaries["crictl"],
            cni=binaries["cni"], criu=binaries["criu"], ckpt_runc=binaries.get("ckpt_runc"),
        )
        images = self._local_images(binaries)
        for spec in specs:
            log(f"starting {spec.name} ({spec.address}, pods {spec.pod_cidr})")
            node = self._node(spec)
            node_cert = pki.issue(f"node-{spec.index}", f"system:node:{spec.name}",
                                  ["system:nodes"])
            serving_cert = pki.issue(f"node-{spec.index}-serving", f"system:node:{spec.name}",
                                     ["system:nodes"], dns_names=[spec.name],
                                     ip_addresses=[spec.address], server=True)
            node.prepare(node_binaries, NodeCredentials(
                server=api.server, ca_cert=ca.cert, client_cert=node_cert.cert,
                client_key=node_cert.key, serving_cert=serving_cert.cert,
                serving_key=serving_cert.key, cluster_dns=DNS_SERVICE_IP,
                sandbox_image=PAUSE_IMAGE,
            ))
            records = node.start(node_binaries)
            for record in records:
                self._record(state, record)
            holder = records[0]
            for archive in images:
                node.import_image(holder, archive)

        log("waiting for the nodes to be Ready")
        self._wait_nodes([s.name for s in specs], timeout)
        log("starting CoreDNS")
        self._kubectl("apply", "-f", "-", input=coredns_manifests(COREDNS_IMAGE, DNS_SERVICE_IP))
        self._kubectl("-n", "kube-system", "rollout", "status", "deployment/coredns",
                      f"--timeout={int(timeout)}s", timeout=timeout + 10)
        self._ensure_object_store(state, log)

    # --- the object store ---------------------------------------------------------------------

    def ensure_object_store(
        self, log: Callable[[str], None] = lambda message: None
    ) -> ObjectStore:
        """The cluster's S3 server (harness.cluster.object_store): the one recorded in the
        state while it runs, else started now and recorded (a cluster started before the
        object store was part of it gets one without a restart)."""
        state = self.state()
        if not state or not state.get("complete"):
            raise ClusterError("no running local cluster: run `make cluster`")
        return self._ensure_object_store(state, log)

    def _ensure_object_store(
        self, state: dict[str, object], log: Callable[[str], None]
    ) -> ObjectStore:
        records = {r.name: r for r in self._records(state)}
        old = records.get(OBJECT_STORE_PROCESS)
        known = state.get("object_store")
        if old is not None and old.alive() and isinstance(known, dict):
            return ObjectStore.from_json(known)
        if old is not None:  # gone (or its endpoint unknown): replaced, data kept
            host.stop_process(old)
            state["processes"] = [p for p in state.get("processes", [])  # type: ignore[attr-defined]
                                  if p["name"] != OBJECT_STORE_PROCESS]
        weed = dict(state.get("binaries", {})).get("weed")  # type: ignore[call-overload]
        log(f"starting the object store (SeaweedFS on {API_ADDRESS})")
        self.logs.mkdir(parents=True, exist_ok=True)
        store, pid = start_object_store(self.workdir / OBJECT_STORE_FOLDER,
                                        self.logs / OBJECT_STORE_LOG,
                                        str(weed or weed_binary()), API_ADDRESS)
        state["object_store"] = store.to_json()
        self._record(state, ProcessRecord.of(OBJECT_STORE_PROCESS, pid))
        return store

    def _local_images(self, binaries: dict[str, Path]) -> list[Path]:
        folder = self.workdir / "images"
        scratch = folder / "rootfs"
        shutil.rmtree(scratch, ignore_errors=True)
        archives = [
            write_oci_archive(
                single_binary_rootfs(scratch / "pause", binaries["pause"] / "pause", "pause"),
                folder / "pause.tar", PAUSE_IMAGE, entrypoint=["/pause"]).path,
            write_oci_archive(
                single_binary_rootfs(scratch / "coredns", binaries["coredns"] / "coredns",
                                     "coredns"),
                folder / "coredns.tar", COREDNS_IMAGE, entrypoint=["/coredns"]).path,
            write_oci_archive(
                busybox_rootfs(scratch / "busybox"), folder / "busybox.tar", BUSYBOX_IMAGE,
                entrypoint=[], cmd=["sh"]).path,
        ]
        shutil.rmtree(scratch, ignore_errors=True)
        return archives

    def _wait_nodes(self, names: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            proc = self._kubectl("get", "nodes", "-o", "json", check=False)
            if proc.returncode == 0:
                ready = {
                    item["metadata"]["name"]
                    for item in json.loads(proc.stdout)["items"]
                    if any(c["type"] == "Ready" and c["status"] == "True"
                           for c in item["status"].get("conditions", []))
                }
                if set(names) <= ready:
                    return
                last = f"ready: {sorted(ready)}"
            time.sleep(1)
        raise ClusterError(f"nodes not Ready after {timeout:.0f}s ({last}); "
                           f"kubelet logs: {self.logs}/*-kubelet.log")

    def _check_alive(self) -> None:
        state = self.state() or {}
        for record in self._records(state):
            if not record.alive():
                raise ClusterError(f"{record.name} exited; its log is under {self.logs}")

    # --- images -----------------------------------------------------------------------------

    def load_image(self, archive: Path) -> list[str]:
        """Imports an OCI archive into every running node; returns the nodes it went to."""
        loaded = []
        for node, holder in self._running_nodes():
            node.import_image(holder, archive)
            loaded.append(node.spec.name)
        return loaded

    def on_node(self, name: str, *argv: str) -> str:
        """Runs `argv` inside node `name` (its mount namespace, its ctr and crictl on PATH);
        returns its stdout."""
        for node, holder in self._running_nodes():
            if node.spec.name == name:
                return node.enter(holder, *argv).stdout
        raise ClusterError(f"no node {name!r} in the local cluster")

    def _running_nodes(self) -> list[tuple[LocalNode, ProcessRecord]]:
        """Each node with the process holding its namespaces, or ClusterError if none runs."""
        state = self.state()
        if not state or not self.running():
            raise ClusterError("no running local cluster: run `make cluster`")
        records = {r.name: r for r in self._records(state)}
        return [(self._node(spec), records[f"{spec.name}/namespace"])
                for spec in _node_specs(state["nodes"])]  # type: ignore[arg-type]

    # --- down -------------------------------------------------------------------------------

    def down(self, log: Callable[[str], None] = lambda message: None) -> None:
        """Stops everything and undoes every host change; safe to call at any point."""
        state = self.state() or {}
        records = {r.name: r for r in self._records(state)}
        specs = _node_specs(state.get("nodes", []))  # type: ignore[arg-type]
        known = {s.index for s in specs}
        # Leftovers of a cluster whose state file is gone: found by their names.
        for index in _leftover_node_indexes():
            if index not in known:
                specs.append(NodeSpec(index))
        if records or specs:
            log("stopping the cluster")
        for name in ("kube-scheduler", "kube-controller-manager"):
            if name in records:
                host.stop_process(records[name])
        for spec in specs:
            node = self._node(spec)
            node.stop({k.split("/", 1)[1]: r for k, r in records.items()
                       if k.startswith(f"{spec.name}/")})
        if OBJECT_STORE_PROCESS in records:
            host.stop_process(records[OBJECT_STORE_PROCESS], grace=STOP_GRACE)
        if "kube-proxy" in records:
            host.stop_process(records["kube-proxy"])
            kube = dict(state.get("binaries", {})).get("kubernetes")  # type: ignore[call-overload]
            if kube:
                self._kube_proxy_cleanup(Path(kube) / "kube-proxy")
        for name in ("kube-apiserver", "etcd"):
            if name in records:
                host.stop_process(records[name])
        baseline: dict[str, Any] = dict(state.get("baseline", {}))  # type: ignore[call-overload]
        host.remove_new_chains(dict(baseline.get("chains", {})))
        for key, value in dict(baseline.get("sysctls", {})).items():
            host.write_sysctl(key, str(value))
        host.remove_local_address(str(state.get("address", f"{API_ADDRESS}/32")))
        leftover = _mounts_under(self.workdir)
        if leftover:
            raise ClusterError(f"mounts left under {self.workdir}: {leftover[:5]}")
        self.logs.mkdir(parents=True, exist_ok=True)
        for control_log in (self.workdir / "controlplane").glob("*.log"):
            shutil.move(control_log, self.logs / control_log.name)
        for folder in ("nodes", "controlplane", "components", "pki", "images",
                       OBJECT_STORE_FOLDER):
            shutil.rmtree(self.workdir / folder, ignore_errors=True)
        self.kubeconfig.unlink(missing_ok=True)
        self.state_file.unlink(missing_ok=True)

    def leftovers(self, baseline: dict[str, object]) -> list[str]:
        """What a stopped cluster left on the host, compared with `baseline` (the state's
        baseline taken before it started): empty when `down()` did its job."""
        found = []
        cache = str((self.workdir.parent).resolve())
        workdir = str(self.workdir.resolve())
        for pid in _all_pids():
            try:
                exe = os.readlink(f"/proc/{pid}/exe")
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if any(exe.startswith(f"{cache}/{tool}/") for tool in CLUSTER_TOOLS) or (
                workdir.encode() in cmdline
            ):
                found.append(f"process {pid}: {cmdline.decode(errors='replace')[:200]}")
        found += [f"mount {m}" for m in _mounts_under(self.workdir)]
        node_paths = set(NODE_PATHS)
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            if line.split()[4] in node_paths:
                found.append(f"mount {line.split()[4]} (in the host's namespace)")
        found += [f"bridge {index}" for index in _leftover_bridges()]
        found += [f"cgroup ckpt-node-{index}" for index in _leftover_cgroups()]
        old_veths = set(baseline.get("veths", []))  # type: ignore[call-overload]
        found += [f"veth {name}" for name in host.veths() if name not in old_veths]
        old_chains = dict(baseline.get("chains", {}))  # type: ignore[call-overload]
        for key, chains in host.iptables_chains().items():
            old = old_chains.get(key, [])
            found += [f"iptables chain {key}:{c}" for c in chains if c not in old]
        addresses = host.run(["ip", "-o", "-4", "addr", "show", "dev", "lo"])
        if f" {API_ADDRESS}/32 " in addresses:
            found.append(f"address {API_ADDRESS}/32 on lo")
        return found

    @staticmethod
    def _kube_proxy_cleanup(kube_proxy: Path) -> None:
        if kube_proxy.exists():
            # Removes the rules and chains kube-proxy made; remove_new_chains catches the rest.
            subprocess.run([str(kube_proxy), "--cleanup"], capture_output=True, timeout=60,
                           check=False)

    # --- helpers ----------------------------------------------------------------------------

    @property
    def logs(self) -> Path:
        """Every component's log; kept by down() and emptied by the next up()."""
        return self.workdir / "logs"

    def _node(self, spec: NodeSpec) -> LocalNode:
        return LocalNode(self.workdir / "nodes" / spec.name, spec, self.logs)

    def _spawn(self, state: dict[str, object], name: str, argv: list[str]) -> None:
        with (self.logs / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self._record(state, ProcessRecord.of(name, proc.pid))

    def _record(self, state: dict[str, object], record: ProcessRecord) -> None:
        processes = list(state.get("processes", []))  # type: ignore[call-overload]
        processes.append(record.to_json())
        state["processes"] = processes
        self._save(state)

    def _save(self, state: dict[str, object]) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_file)

    @staticmethod
    def _records(state: dict[str, object]) -> list[ProcessRecord]:
        return [ProcessRecord.from_json(p)
                for p in state.get("processes", [])]  # type: ignore[attr-defined]

    def _kubectl(self, *args: str, input: str | None = None, check: bool = True,
                 timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [kubectl_binary(), "--kubeconfig", str(self.kubeconfig), *args],
            input=input, capture_output=True, text=True, timeout=timeout, check=False,
        )
        if check and proc.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc


def ckpt_runc_binary() -> Path | None:
    """The ckpt-runc wrapper built from cmd/ckpt-runc (cached), or None if it does not build.

    Without it the `ckpt` runtime handler still exists; only restores into pods fail."""
    module = REPO_ROOT / "cmd" / "ckpt-runc"
    if not (module / "go.mod").exists():
        return None
    proc = subprocess.run(
        ["bash", "-c", 'source "$1/tools/lib/gobuild.sh" && gobuild ckpt-runc "$2" ckpt-runc=.',
         "gobuild", str(REPO_ROOT), str(module)],
        capture_output=True, text=True, timeout=900, check=False,
    )
    if proc.returncode != 0:
        return None
    return Path(proc.stdout.strip().splitlines()[-1]) / "ckpt-runc"


def _node_specs(nodes: list[dict[str, object]]) -> list[NodeSpec]:
    return [NodeSpec(int(str(n["index"])), dict(n.get("labels", {})))  # type: ignore[call-overload]
            for n in nodes]


def _leftover_node_indexes() -> set[int]:
    return _leftover_bridges() | _leftover_cgroups()


def _leftover_bridges() -> set[int]:
    indexes = set()
    with contextlib.suppress(OSError):
        for link in Path("/sys/class/net").iterdir():
            match = re.fullmatch(r"ckpt-br(\d+)", link.name)
            if match:
                indexes.add(int(match.group(1)))
    return indexes


def _leftover_cgroups() -> set[int]:
    indexes = set()
    for hierarchy in host.cgroup_hierarchies():
        for folder in hierarchy.glob("ckpt-node-*"):
            match = re.fullmatch(r"ckpt-node-(\d+)", folder.name)
            if match:
                indexes.add(int(match.group(1)))
    return indexes


def _all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _mounts_under(folder: Path) -> list[str]:
    prefix = str(folder.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = line.split()[4]
        if mount_point.startswith(prefix):
            found.append(mount_point)
    return found


def _write_cert_kubeconfig(path: Path, server: str, ca: Path, cert: Path, key: Path,
                           user: str) -> None:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server,
                                                   "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(cert),
                                          "client-key": str(key)}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
        "current-context": "local",
    }
    path.write_text(yaml.safe_dump(document))
    path.chmod(0o600)

