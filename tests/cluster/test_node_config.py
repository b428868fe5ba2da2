"""A local node's generated configuration: what a kubelet + containerd node needs on a cgroup v1
host without CAP_SYS_RESOURCE (containerd must not raise oom_score_adj, the kubelet must accept
cgroup v1 with the cgroupfs driver and its own cgroup root), its own bridge and subnet, and the
runtime handler `ckpt` that restores Pods through the ckpt-runc wrapper."""

from __future__ import annotations

import tomllib
from pathlib import Path

from harness.cluster.node import (
    CKPT_RUNC,
    NodeCredentials,
    NodeSpec,
    cni_config,
    containerd_config,
    kubelet_config,
)


def _creds() -> NodeCredentials:
    return NodeCredentials(
        server="https://198.18.0.1:6443", ca_cert=Path("ca.crt"), client_cert=Path("n.crt"),
        client_key=Path("n.key"), serving_cert=Path("s.crt"), serving_key=Path("s.key"),
        cluster_dns="198.19.0.10", sandbox_image="ckpt.local/pause:1",
    )


def test_nodes_get_their_own_names_addresses_and_subnets() -> None:
    one, two = NodeSpec(1), NodeSpec(2)
    assert (one.name, one.address, one.pod_cidr, one.bridge) == (
        "ckpt-node-1", "198.18.1.1", "198.18.1.0/24", "ckpt-br1")
    assert len({one.bridge, two.bridge}) == len({one.cgroup_root, two.cgroup_root}) == 2


def test_containerd_runtime_handlers_and_oom_restriction() -> None:
    config = tomllib.loads(containerd_config("ckpt.local/pause:1"))
    runtime = config["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True
    handlers = runtime["containerd"]["runtimes"]
    assert runtime["containerd"]["default_runtime_name"] == "runc"
    assert handlers["runc"]["runtime_type"] == "io.containerd.runc.v2"
    assert handlers["ckpt"]["runtime_type"] == "io.containerd.runc.v2"
    assert handlers["ckpt"]["pod_annotations"] == ["ckpt.dev/*"]
    assert handlers["ckpt"]["options"]["BinaryName"] == CKPT_RUNC
    images = config["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == "ckpt.local/pause:1"
    assert config["plugins"]["io.containerd.nri.v1.nri"]["disable"] is True


def test_kubelet_settings_for_this_machine() -> None:
    config = kubelet_config(NodeSpec(2), _creds())
    assert config["address"] == config["healthzBindAddress"] == "198.18.2.1"
    assert config["port"] == 10250
    assert config["failCgroupV1"] is False
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["cgroupRoot"] == "/ckpt-node-2"
    assert config["clusterDNS"] == ["198.19.0.10"]
    assert config["authentication"]["anonymous"] == {"enabled": False}  # type: ignore[index]
    assert config["authorization"] == {"mode": "Webhook"}


def test_cni_bridge_per_node_with_its_gateway() -> None:
    config = cni_config(NodeSpec(3))
    bridge, portmap = config["plugins"]  # type: ignore[misc]
    assert bridge["bridge"] == "ckpt-br3"
    assert bridge["ipam"]["ranges"] == [[{"subnet": "198.18.3.0/24", "gateway": "198.18.3.1"}]]
    assert portmap["type"] == "portmap"
