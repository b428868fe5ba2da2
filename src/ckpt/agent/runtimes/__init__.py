"""Runtime backends: runc, kubelet, process (see base.Runtime)."""

from ckpt.agent.runtimes.base import (
    ContainerNotFound,
    ContainerNotRunning,
    ContainerRef,
    ContainerRuntimeError,
    DumpedContainer,
    NotThePodsContainer,
    ResolvedContainer,
    Runtime,
    frozen,
)

__all__ = [
    "ContainerNotFound",
    "ContainerNotRunning",
    "ContainerRef",
    "ContainerRuntimeError",
    "DumpedContainer",
    "NotThePodsContainer",
    "ResolvedContainer",
    "Runtime",
    "frozen",
]
