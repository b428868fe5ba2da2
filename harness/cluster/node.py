"""One local node: its own containerd and kubelet in a private mount namespace.

The node's folders (under the cluster's work folder) are bind-mounted at the standard paths
inside a mount namespace of its own, so containerd, the kubelet, the shims and every hostPath
volume see `/run/containerd`, `/var/lib/kubelet`, `/var/lib/ckpt`, ... as on a real node, and
two nodes never share a host folder by accident. The namespace is held by a `sleep` process
made with `unshare --mount --propagation private`; containerd and the kubelet join it with
`nsenter`. Its mounts die with its last process, so nothing is left mounted on the host.

The nodes share the host's network namespace: each has a bridge of its own whose address
(198.18.<n>.1) is both the pods' gateway and the node's InternalIP, where its kubelet listens
on the standard port 10250; the host routes between the node subnets.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness.cluster import host
from harness.cluster.host import ProcessRecord

KUBELET_PORT = 10250

# Standard paths a node has of its own (bind-mounted from its folder). /usr/local/bin holds
# the ckpt-runc wrapper that containerd's `ckpt` handler runs.
NODE_PATHS = (
    "/run/containerd",
    "/run/ckpt-runc",
    "/run/netns",
    "/var/lib/containerd",
    "/var/lib/kubelet",
    "/var/lib/ckpt",
    "/var/lib/cni",
    "/var/log/pods",
    "/var/log/containers",
    "/etc/cni/net.d",
    "/opt/cni/bin",
    "/usr/local/bin",
)
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CKPT_RUNC = "/usr/local/bin/ckpt-runc"
# The label containerd's CRI plugin reads as "pinned" (ListImages reports pinned=true).
PINNED_LABEL = "io.cri-containerd.pinned=pinned"


class NodeError(RuntimeError):
    """A node could not start; the message says which part and shows its log."""


@dataclass(frozen=True)
class NodeBinaries:
    """Where a node's programs come from (each folder as the tools/ build scripts print it)."""

    kubernetes: Path  # kubelet
    containerd: Path  # containerd, containerd-shim-runc-v2, ctr
    crictl: Path
    cni: Path  # bridge, loopback, host-local, portmap
    criu: Path  # CRIU >= 4 (tools/criu/install.sh)
    ckpt_runc: Path | None  # the wrapper; without it the `ckpt` handler exists but fails


@dataclass(frozen=True)
class NodeSpec:
    index: int
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"ckpt-node-{self.index}"

    @property
    def address(self) -> str:
        return f"198.18.{self.index}.1"

    @property
    def pod_cidr(self) -> str:
        return f"198.18.{self.index}.0/24"

    @property
    def bridge(self) -> str:
        return f"ckpt-br{self.index}"

    @property
    def cgroup_root(self) -> str:
        return self.name


@dataclass(frozen=True)
class NodeCredentials:
    server: str
    ca_cert: Path
    client_cert: Path
    client_key: Path
    serving_cert: Path
    serving_key: Path
    cluster_dns: str
    sandbox_image: str


class LocalNode:
    """Node `spec` with its files in `folder` and its logs (`<name>-kubelet.log`, ...) in
    `logs`, which outlives the node's folder for a look after a failed start."""

    def __init__(self, folder: Path, spec: NodeSpec, logs: Path) -> None:
        self.folder = folder
        self.spec = spec
        self.logs = logs

    # --- layout ---------------------------------------------------------------------

    def host_path(self, node_path: str) -> Path:
        """Where a node's standard path lives on the host (its bind-mount source)."""
        return self.folder / "root" / node_path.lstrip("/")

    @property
    def bin_dir(self) -> Path:
        return self.folder / "bin"

    def prepare(self, binaries: NodeBinaries, creds: NodeCredentials) -> None:
        """Writes the node's folders and configuration (idempotent)."""
        for path in NODE_PATHS:
            self.host_path(path).mkdir(parents=True, exist_ok=True)
        # The `local` PersistentVolume of deploy/local (the API's database) needs its folder.
        self.host_path("/var/lib/ckpt/api-data").mkdir(exist_ok=True)
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        etc = self.folder / "etc"
        etc.mkdir(exist_ok=True)
        for name in ("containerd-shim-runc-v2", "ctr"):
            _link(self.bin_dir / name, binaries.containerd / name)
        _link(self.bin_dir / "crictl", binaries.crictl / "crictl")
        # containerd's runc needs CRIU on its PATH for checkpoints (kubelet checkpoint API).
        # A script, not a link: the CRIU wrapper finds its private libraries from its own path.
        criu = self.bin_dir / "criu"
        criu.write_text(f"#!/bin/sh\nexec {shlex.quote(str(binaries.criu))} \"$@\"\n")
        criu.chmod(0o755)
        cni_bin = self.host_path("/opt/cni/bin")
        for plugin in ("bridge", "loopback", "host-local", "portmap"):
            _copy(binaries.cni / plugin, cni_bin / plugin)
        if binaries.ckpt_runc is not None:
            _copy(binaries.ckpt_runc, self.host_path(CKPT_RUNC))
        (etc / "containerd.toml").write_text(containerd_config(creds.sandbox_image))
        (self.host_path("/etc/cni/net.d") / "10-ckpt.conflist").write_text(
            json.dumps(cni_config(self.spec), indent=2)
        )
        (etc / "kubelet.yaml").write_text(yaml.safe_dump(kubelet_config(self.spec, creds)))
        (etc / "crictl.yaml").write_text(
            "runtime-endpoint: unix:///run/containerd/containerd.sock\n"
            "image-endpoint: unix:///run/containerd/containerd.sock\ntimeout: 30\n"
        )
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": {
                "server": creds.server, "certificate-authority": str(creds.ca_cert)}}],
            "users": [{"name": self.spec.name, "user": {
                "client-certificate": str(creds.client_cert),
                "client-key": str(creds.client_key)}}],
            "contexts": [{"name": "local", "context": {"cluster": "local",
                                                        "user": self.spec.name}}],
            "current-context": "local",
        }
        (etc / "kubelet.kubeconfig").write_text(yaml.safe_dump(kubeconfig))

    # --- lifecycle ------------------------------------------------------------------

    def start(self, binaries: NodeBinaries, timeout: float = 60.0) -> list[ProcessRecord]:
        """Starts the namespace holder, containerd and the kubelet; returns their records."""
        host.create_cgroup_root(self.spec.cgroup_root)
        host.ensure_bridge(self.spec.bridge, f"{self.spec.address}/24")
        ready = self.folder / "namespace-ready"
        ready.unlink(missing_ok=True)
        # Each bind mount is then made shared inside this namespace (it has no peer outside
        # it): hostPath volumes with HostToContainer propagation, as the agent's
        # /run/containerd, must be shared or slave, or containerd refuses to create the
        # container; and the agent then sees the container mounts that containerd makes later.
        mounts = "".join(
            f"mkdir -p {p} && mount --bind {shlex.quote(str(self.host_path(p)))} {p} && "
            f"mount --make-shared {p} && "
            for p in NODE_PATHS
        )
        script = f"{mounts}touch {shlex.quote(str(ready))} && exec sleep infinity"
        records = [self._spawn("namespace", ["unshare", "--mount", "--propagation", "private",
                                             "sh", "-c", script])]
        holder = records[0]
        _wait(lambda: ready.exists(), timeout, lambda: self._failure("namespace", holder))
        enter = ["nsenter", f"--target={holder.pid}", "--mount", "--"]
        env = f"PATH={self.bin_dir}:{binaries.containerd}:{SYSTEM_PATH}"
        records.append(self._spawn("containerd", [
            *enter, "env", env,
            str(binaries.containerd / "containerd"),
            "--config", str(self.folder / "etc" / "containerd.toml"),
        ]))
        socket = self.host_path("/run/containerd") / "containerd.sock"
        _wait(lambda: socket.exists(), timeout, lambda: self._failure("containerd", records[1]))
        records.append(self._spawn("kubelet", [
            *enter, "env", env,
            str(binaries.kubernetes / "kubelet"),
            "--config", str(self.folder / "etc" / "kubelet.yaml"),
            "--kubeconfig", str(self.folder / "etc" / "kubelet.kubeconfig"),
            "--hostname-override", self.spec.name,
            "--node-ip", self.spec.address,
            *(["--node-labels", ",".join(f"{k}={v}" for k, v in self.spec.labels.items())]
              if self.spec.labels else []),
            "--v", "1",
        ]))
        return records

    def enter(self, holder: ProcessRecord, *argv: str, timeout: float = 300,
              check: bool = True) -> subprocess.CompletedProcess[str]:
        """Runs `argv` in the node's mount namespace, its tools on PATH (ctr, crictl)."""
        env = f"PATH={self.bin_dir}:{SYSTEM_PATH}"
        proc = subprocess.run(
            ["nsenter", f"--target={holder.pid}", "--mount", "--", "env", env,
             f"CRI_CONFIG_FILE={self.folder / 'etc' / 'crictl.yaml'}", *argv],
            capture_output=True, text=True, timeout=timeout, check=False,
        )
        if check and proc.returncode != 0:
            raise NodeError(f"{self.spec.name}: {shlex.join(argv)} failed: {proc.stderr[-2000:]}")
        return proc

    def import_image(self, holder: ProcessRecord, archive: Path) -> str:
        """`ctr -n k8s.io images import` of an OCI archive, pinned; returns ctr's output.

        An imported image cannot be pulled again (there is no registry), so it carries the CRI
        plugin's pinned label: the kubelet's image garbage collection, including the one its
        eviction manager runs under disk pressure, skips pinned images. Unpinned, a CI run whose
        disk ran low lost the ckpt images and every ckpt pod ended in ImagePullBackOff."""
        return self.enter(holder, "ctr", "-n", "k8s.io", "images", "import",
                          "--all-platforms", "--label", PINNED_LABEL,
                          str(archive.resolve())).stdout

    def stop(self, records: dict[str, ProcessRecord]) -> None:
        """Stops the node and removes everything it made on the host (any step may be gone)."""
        if "kubelet" in records:
            host.stop_process(records["kubelet"])
        holder = records.get("namespace")
        containerd = records.get("containerd")
        if holder is not None and holder.alive() and containerd is not None and containerd.alive():
            # Pods removed through the CRI: the CNI plugins' DEL releases IPs, veths and the
            # portmap rules, and the shims end with their containers.
            self.enter(holder, "crictl", "rmp", "--all", "--force", timeout=120, check=False)
        if containerd is not None:
            host.stop_process(containerd)
        if holder is not None and holder.alive():
            namespace = host.mount_namespace(holder.pid)
            if namespace is not None:
                # Shims (and anything else) still in the node's namespace.
                host.kill_all(p for p in host.pids_in_mount_namespace(namespace)
                              if p != holder.pid)
        host.remove_cgroup_root(self.spec.cgroup_root)
        if holder is not None:
            host.stop_process(holder, grace=2)
        host.delete_bridge(self.spec.bridge)

    def _spawn(self, name: str, argv: list[str]) -> ProcessRecord:
        with (self.logs / f"{self.spec.name}-{name}.log").open("ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        return ProcessRecord.of(f"{self.spec.name}/{name}", proc.pid)

    def _failure(self, name: str, record: ProcessRecord) -> str | None:
        if record.alive():
            return None
        log = self.logs / f"{self.spec.name}-{name}.log"
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        return f"{self.spec.name}: {name} exited:\n{tail}"


def containerd_config(sandbox_image: str) -> str:
    """containerd 2.x configuration (version 3) for one node."""
    runtime = 'plugins."io.containerd.cri.v1.runtime"'
    return f"""version = 3
root = "/var/lib/containerd"
state = "/run/containerd"

[grpc]
  address = "/run/containerd/containerd.sock"

# The opt plugin would install into the host's /opt/containerd, shared by every node.
[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/containerd/opt"

# NRI's socket lives in the host's /var/run/nri, which two nodes would fight over.
[plugins."io.containerd.nri.v1.nri"]
  disable = true

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  # No registry here: the sandbox image is a local one, imported before any pod starts.
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{sandbox_image}"

[{runtime}]
  # This machine lacks CAP_SYS_RESOURCE, so nothing may lower oom_score_adj: containerd
  # would give sandboxes -998 and runc then fails with "can't get final child's PID from
  # pipe: EOF". Restricting keeps every container at or above containerd's own score.
  restrict_oom_score_adj = true
  [{runtime}.cni]
    bin_dirs = ["/opt/cni/bin"]
    conf_dir = "/etc/cni/net.d"
  [{runtime}.containerd]
    default_runtime_name = "runc"
    [{runtime}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{runtime}.containerd.runtimes.runc.options]
        SystemdCgroup = false
    # RuntimeClass `ckpt`: pods restored from a checkpoint. Pod annotations reach the
    # container's config.json only through this allowlist; the wrapper reads ours there.
    [{runtime}.containerd.runtimes.ckpt]
      runtime_type = "io.containerd.runc.v2"
      pod_annotations = ["ckpt.dev/*"]
      [{runtime}.containerd.runtimes.ckpt.options]
        BinaryName = "{CKPT_RUNC}"
        SystemdCgroup = false
"""


def cni_config(spec: NodeSpec) -> dict[str, object]:
    return {
        "cniVersion": "1.0.0",
        "name": spec.name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": spec.bridge,
                "isGateway": True,
                # No masquerade: pods only talk to each other, the nodes and the control
                # plane, all on this host; there is no network beyond it to reach.
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": spec.pod_cidr, "gateway": spec.address}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(spec: NodeSpec, creds: NodeCredentials) -> dict[str, object]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # Each kubelet on its own InternalIP, so all of them use the standard port.
        "address": spec.address,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        # Signed by the cluster CA for the node's InternalIP, so its clients can verify it.
        "tlsCertFile": str(creds.serving_cert),
        "tlsPrivateKeyFile": str(creds.serving_key),
        "healthzBindAddress": spec.address,
        "healthzPort": 10248,
        "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(creds.ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        # The host is cgroup v1 (hybrid): kubelet 1.35 refuses v1 unless told otherwise.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        # Two kubelets on one machine: each its own cgroup root (created beforehand in every
        # v1 hierarchy by host.create_cgroup_root).
        "cgroupRoot": f"/{spec.cgroup_root}",
        "cgroupsPerQOS": True,
        # No CAP_SYS_RESOURCE here: the kubelet cannot lower its own oom_score_adj.
        "oomScoreAdj": 0,
        "failSwapOn": False,
        "clusterDNS": [creds.cluster_dns],
        "clusterDomain": "cluster.local",
        "podCIDR": spec.pod_cidr,
        "serializeImagePulls": False,
        # Images are imported, never pulled: the kubelet must not garbage-collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        # Absolute floors, not percentages: the nodes share the host's disk with everything
        # else on it, so evicting pods frees little, and 2% of a large shared disk (5 GB of
        # 252 GB) evicted every ckpt pod of a CI run while gigabytes were still free.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "512Mi",
                         "imagefs.available": "512Mi"},
        "staticPodPath": "",
        "registerNode": True,
    }


def _link(link: Path, target: Path) -> None:
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)


def _copy(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copy2(source, tmp)
    tmp.replace(target)


def _wait(ready: Callable[[], bool], timeout: float, failure: Callable[[], str | None]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        message = failure()
        if message:
            raise NodeError(message)
        time.sleep(0.1)
    raise NodeError(failure() or "timed out")
