"""The freezer of a process's cgroup, read and thawed directly (cgroup v1 and v2).

`runc` reports a container "paused" only when its freezer is fully FROZEN. CRIU killed in the
middle of freezing leaves the freezer in FREEZING (v1): runc then says "running" while every
task sits frozen, and `runc resume` refuses ("container not paused"). Recovery therefore looks
at the freezer itself.
"""

from __future__ import annotations

from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def freezer_file(pid: int, proc: Path = Path("/proc"), root: Path = CGROUP_ROOT) -> Path | None:
    """The file that freezes `pid`'s cgroup: v1 `freezer.state`, else v2 `cgroup.freeze`."""
    unified: str | None = None
    for line in (proc / str(pid) / "cgroup").read_text().splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if "freezer" in controllers.split(","):
            return root / "freezer" / path.lstrip("/") / "freezer.state"
        if hierarchy == "0" and controllers == "":
            unified = path
    if unified is None:
        return None
    # Hybrid hosts mount the v2 hierarchy at .../unified; pure v2 hosts at the root.
    base = root / "unified" if (root / "unified" / "cgroup.controllers").exists() else root
    return base / unified.lstrip("/") / "cgroup.freeze"


def is_frozen(file: Path) -> bool:
    """Frozen or on the way there (v1 FREEZING counts: its tasks do not run)."""
    value = file.read_text().strip()
    return value in ("FROZEN", "FREEZING") if file.name == "freezer.state" else value == "1"


def thaw(file: Path) -> None:
    file.write_text("THAWED" if file.name == "freezer.state" else "0")
