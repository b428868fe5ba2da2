"""Locating CRIU, reading its version and what ``criu check`` says of the kernel, and turning
a failed dump's log into the one line that says why."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

# Linux 6.16 restricted SO_PASSCRED/SO_PASSSEC to unix, netlink and bluetooth sockets; CRIU
# 4.1 asks them of every socket, so it cannot dump a process holding a TCP socket on current
# kernels ("sockets: Can't get 1:16 opt: Operation not supported"). 4.2 fixed that.
MIN_VERSION = (4, 2)
MIN_VERSION_TEXT = ".".join(map(str, MIN_VERSION))

# Kernel features `criu check --feature NAME` probes, reported at start-up and in /v1/info:
# uffd/uffd-noncoop make lazy restore possible, mem_dirty_track incremental dumps (pre-dump),
# timens restores monotonic clocks, network_lock_nftables locks without iptables.
FEATURES = ("uffd", "uffd-noncoop", "mem_dirty_track", "timens", "pidfd_store",
            "network_lock_nftables")


class CriuNotFound(Exception):
    """No usable CRIU binary."""


@dataclass(frozen=True)
class CriuInfo:
    path: str
    version: str  # e.g. "4.2.1"
    # feature -> supported, from `criu check --feature` (empty until probed).
    features: dict[str, bool] = field(default_factory=dict)

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return tuple(int(p) for p in self.version.split(".") if p.isdigit())


def _repo_wrapper() -> Path:
    # In a development checkout tools/criu/install.sh leaves its wrapper under
    # .cache/criu/bin at the repository root (src/ckpt/agent/criu.py -> parents[3]).
    return Path(__file__).resolve().parents[3] / ".cache" / "criu" / "bin" / "criu"


def candidates(explicit: str | None = None) -> list[str]:
    found: list[str] = []
    for c in (explicit, os.environ.get("CKPT_CRIU"), shutil.which("criu"), str(_repo_wrapper())):
        if c and c not in found and Path(c).is_file() and os.access(c, os.X_OK):
            found.append(c)
    return found


def criu_version(path: str) -> str:
    """The version ``criu --version`` prints (``Version: 4.1.1``)."""
    proc = subprocess.run(
        [path, "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    m = re.search(r"Version:\s*([0-9][0-9.]*)", proc.stdout)
    if proc.returncode != 0 or not m:
        raise CriuNotFound(f"{path} --version failed: {(proc.stderr or proc.stdout).strip()}")
    return m[1]


def kernel_features(path: str, names: tuple[str, ...] = FEATURES) -> dict[str, bool]:
    """Each feature's answer from ``criu check --feature NAME`` (exit 0: supported)."""
    found: dict[str, bool] = {}
    for name in names:
        try:
            proc = subprocess.run([path, "check", "--feature", name], capture_output=True,
                                  timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            found[name] = False
            continue
        found[name] = proc.returncode == 0
    return found


def find_criu(explicit: str | None = None) -> CriuInfo:
    """The first CRIU >= 4.2 among: ``explicit``, ``$CKPT_CRIU``, ``criu`` on PATH, the
    development wrapper made by tools/criu/install.sh (see MIN_VERSION for why 4.2)."""
    seen: list[str] = []
    for path in candidates(explicit):
        try:
            version = criu_version(path)
        except (CriuNotFound, OSError, subprocess.TimeoutExpired) as exc:
            seen.append(f"{path}: {exc}")
            continue
        info = CriuInfo(path=path, version=version)
        if info.version_tuple[:2] >= MIN_VERSION:
            return info
        seen.append(f"{path}: version {version} < {MIN_VERSION_TEXT}")
    detail = "; ".join(seen) if seen else "none found"
    raise CriuNotFound(
        f"no CRIU >= {MIN_VERSION_TEXT} ({detail}); run tools/criu/install.sh or set CKPT_CRIU"
    )


# `(00.012345) Error (criu/sockets.c:123): sockets: Can't get 1:16 opt: ...`: the elapsed
# time and CRIU's source location say nothing to a user.
_ERROR_LINE = re.compile(r"^\(\s*[0-9.]+\)\s+Error\s+\([^)]*\):\s*(?P<message>.+)$")
# Errors CRIU logs and then carries on from, and its closing summary: never the cause. Without
# CAP_SYS_RESOURCE (this project's test machines) every run logs the rlimit one first.
_NOT_THE_CAUSE = re.compile(r"^(rlimit: Can't setup RLIMIT_NOFILE|(Dumping|Restoring) FAILED)")
# What a user can do about CRIU's own words, where those alone do not say it.
_HINTS = (
    (re.compile(r"Can't get rlimit \d+: Operation not permitted"),
     "the node agent lacks CAP_SYS_RESOURCE, which CRIU needs to dump processes that run as "
     "another user than root"),
    (re.compile(r"anon_inode:\[io_uring\]"),
     "CRIU cannot dump io_uring instances; with seccompProfile RuntimeDefault the runtime "
     "refuses io_uring and libuv (Node.js) uses epoll"),
)
_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[\w.@+-]+/)*[\w.@+-]+")


def failure_reason(log_text: str, *, host_paths: tuple[str, ...] = ()) -> str | None:
    """The first error CRIU names in its log, as one line a namespace's users may read.

    The first error is the cause (those after it are CRIU unwinding), leaving out the errors
    CRIU goes on from and its summary line (``_NOT_THE_CAUSE``). Paths under
    ``host_paths`` (the agent's work folders, the runtime's state root) say where things are
    on the node, which is none of a tenant's business: they become ``<node path>``. Paths of
    the container's own files stay (``/dev/nvidia0``, ``/tmp/sock`` say what to change).
    """
    roots = tuple(r.rstrip("/") for r in host_paths if r and r != "/")

    def redact(path: re.Match[str]) -> str:
        text = path[0]
        hidden = any(text == r or text.startswith(r + "/") for r in roots)
        return "<node path>" if hidden else text

    for line in log_text.splitlines():
        m = _ERROR_LINE.match(line.strip())
        if not m or _NOT_THE_CAUSE.match(m["message"]):
            continue
        message = m["message"].strip()
        reason = _ABSOLUTE_PATH.sub(redact, message)[:300]
        hints = [hint for pattern, hint in _HINTS if pattern.search(message)]
        return f"{reason} ({'; '.join(hints)})" if hints else reason
    return None
