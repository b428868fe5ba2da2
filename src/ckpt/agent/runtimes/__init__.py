"""Runtime backends: runc, kubelet, process (see base.Runtime)."""

from ckpt.agent.runtimes.base import (
    ContainerNotFound,
    ContainerNotRunning,
    ContainerRef,
    DumpedContainer,
    NotThePodsContainer,
    ResolvedContainer,
    Runtime,
    RuntimeError_,
    frozen,
)

__all__ = [
    "ContainerNotFound",
    "ContainerNotRunning",
    "ContainerRef",
    "DumpedContainer",
    "NotThePodsContainer",
    "ResolvedContainer",
    "Runtime",
    "RuntimeError_",
    "frozen",
]
