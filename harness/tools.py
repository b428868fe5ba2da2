"""The scripts in tools/ that provide the local environment's binaries, run from Python.

Each script is idempotent and caches its result under .cache/, printing the path it
provides as its last line of output.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


class ToolError(RuntimeError):
    """A tools/ script failed; the message holds the tail of its error output."""


def run_tool(script: str, *args: str, timeout: float = 1800) -> str:
    """Runs tools/<script> with `args` and returns the last line it printed."""
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "tools" / script), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    if proc.returncode != 0:
        raise ToolError(f"tools/{script} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout.strip().splitlines()[-1]


def criu_binary() -> str:
    """CRIU >= 4.2: the system's if it passes `criu check`, else Debian forky's, privately."""
    return run_tool("criu/install.sh")


def controlplane_binaries(*names: str) -> Path:
    """The folder with kube-apiserver and etcd, or with the binaries `names` (build.sh's
    arguments; the local cluster asks for all six). CKPT_CONTROLPLANE_BIN overrides the build."""
    override = os.environ.get("CKPT_CONTROLPLANE_BIN")
    if override:
        return Path(override)
    return Path(run_tool("controlplane/build.sh", *(names or ("etcd", "kube-apiserver"))))
