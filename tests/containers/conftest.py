"""Real runc containers and CRIU (tools/criu/install.sh provides them)."""

from harness.fixtures import busybox_container, criu_bin, runc_cli

__all__ = ["busybox_container", "criu_bin", "runc_cli"]
