"""The node's platform string, as Kubernetes and OCI images spell it."""

from __future__ import annotations

import platform

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64le", "s390x": "s390x"}


def platform_string() -> str:
    """e.g. ``linux/amd64``: restores need the same CPU architecture."""
    machine = platform.machine()
    return f"{platform.system().lower()}/{_ARCH.get(machine, machine)}"
