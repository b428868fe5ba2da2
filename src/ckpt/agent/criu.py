"""Locating CRIU, reading its version and running ``criu check``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

MIN_VERSION = (4, 0)


class CriuNotFound(Exception):
    """No usable CRIU binary."""


@dataclass(frozen=True)
class CriuInfo:
    path: str
    version: str  # e.g. "4.1.1"

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


def criu_check(path: str) -> tuple[bool, str]:
    """Run ``criu check``: (passed, its output)."""
    proc = subprocess.run([path, "check"], capture_output=True, text=True, timeout=60, check=False)
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


def find_criu(explicit: str | None = None) -> CriuInfo:
    """The first CRIU >= 4.0 among: ``explicit``, ``$CKPT_CRIU``, ``criu`` on PATH, the
    development wrapper made by tools/criu/install.sh. Debian 12's 3.17 fails to dump on
    recent kernels, so older versions are skipped."""
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
        seen.append(f"{path}: version {version} < 4.0")
    detail = "; ".join(seen) if seen else "none found"
    raise CriuNotFound(
        f"no CRIU >= 4.0 ({detail}); run tools/criu/install.sh or set CKPT_CRIU"
    )
