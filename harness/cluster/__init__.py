"""The real local Kubernetes cluster (`make cluster`): control plane, N containerd + kubelet
nodes, kube-proxy and CoreDNS on this machine, built from pinned Go modules, no Docker."""

from harness.cluster.cluster import (
    API_ADDRESS,
    DNS_SERVICE_IP,
    SERVICE_CIDR,
    ClusterError,
    LocalKubeCluster,
    NodeInfo,
)
from harness.cluster.images import BUSYBOX_IMAGE, COREDNS_IMAGE, PAUSE_IMAGE

__all__ = [
    "API_ADDRESS",
    "BUSYBOX_IMAGE",
    "COREDNS_IMAGE",
    "DNS_SERVICE_IP",
    "PAUSE_IMAGE",
    "SERVICE_CIDR",
    "ClusterError",
    "LocalKubeCluster",
    "NodeInfo",
]
