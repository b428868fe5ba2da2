"""What the local cluster changes on the host, and how each change is undone.

The nodes share the host's network namespace and cgroup hierarchies, so a cluster leaves
traces there: processes, bridges and veths, iptables chains (kube-proxy's and the kubelets'
`KUBE-*`, the portmap plugin's `CNI-*`), cgroups, an address on `lo`, sysctls. Everything here
is idempotent and safe to call on a host where the thing is already gone.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

CGROUP_V1 = Path("/sys/fs/cgroup")
# The chains the cluster's components create: kube-proxy and the kubelets (KUBE-), the CNI
# portmap plugin (CNI-). Only these prefixes are ever removed, and only chains that did not
# exist before the cluster started, so other users of iptables on the host are left alone.
CHAIN_PREFIXES = ("KUBE-", "CNI-")
IPTABLES_TABLES = ("filter", "nat", "mangle", "raw")
# Sysctls the cluster needs (forwarding between node bridges) or that kube-proxy and the
# bridge plugin set; their previous values are put back by `cluster-down`.
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
)


class HostError(RuntimeError):
    """A host command failed; the message holds the command and its output."""


def run(argv: list[str], *, check: bool = True, timeout: float = 60) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
    if check and proc.returncode != 0:
        raise HostError(f"{shlex.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


# --- processes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessRecord:
    """A process the cluster started, identified by pid AND start time (pids get reused)."""

    name: str
    pid: int
    start_time: int

    @classmethod
    def of(cls, name: str, pid: int) -> ProcessRecord:
        return cls(name, pid, process_start_time(pid) or 0)

    def alive(self) -> bool:
        return process_start_time(self.pid) == self.start_time

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "pid": self.pid, "start_time": self.start_time}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> ProcessRecord:
        return cls(str(data["name"]), int(str(data["pid"])), int(str(data["start_time"])))


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks), or None if there is no such pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; fields follow the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def stop_process(record: ProcessRecord, grace: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; a no-op if the process is already gone."""
    if not record.alive():
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(record.pid)
        if not record.alive():
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGKILL)
    for _ in range(50):
        _reap(record.pid)
        if not record.alive():
            return
        time.sleep(0.1)


def _reap(pid: int) -> None:
    # When this very process started the child, it must also collect it or it stays a zombie.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def mount_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def pids_in_mount_namespace(namespace: str) -> list[int]:
    """Every process whose mount namespace is `namespace` (e.g. a node's containerd shims)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and mount_namespace(int(entry.name)) == namespace:
            found.append(int(entry.name))
    return found


def kill_all(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


# --- cgroups (v1 hierarchies, plus the v2 one of a hybrid host) ------------------------------


def cgroup_hierarchies() -> list[Path]:
    """Each mounted v1 controller hierarchy, and the unified one on a hybrid host."""
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    roots = []
    for line in mounts:
        _, target, fstype, *_ = line.split()
        if fstype in ("cgroup", "cgroup2") and target.startswith(str(CGROUP_V1)):
            roots.append(Path(target))
    return roots


def create_cgroup_root(name: str) -> None:
    """Creates /<name> in every hierarchy; in cpuset, copies the parent's cpus and mems first
    (a new cpuset cgroup is empty and no task may join it until both are set)."""
    for hierarchy in cgroup_hierarchies():
        path = hierarchy / name
        path.mkdir(exist_ok=True)
        for setting in ("cpuset.cpus", "cpuset.mems"):
            parent = hierarchy / setting
            if parent.exists() and not (path / setting).read_text().strip():
                (path / setting).write_text(parent.read_text())


def cgroup_pids(name: str) -> set[int]:
    pids: set[int] = set()
    for hierarchy in cgroup_hierarchies():
        root = hierarchy / name
        if not root.exists():
            continue
        for procs in root.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in procs.read_text().split())
    return pids


def remove_cgroup_root(name: str, timeout: float = 20.0) -> None:
    """Kills every process left in /<name> and removes the whole subtree, deepest first."""
    deadline = time.monotonic() + timeout
    while True:
        pids = cgroup_pids(name)
        # A frozen cgroup (a dump cut short) would keep its tasks from dying: thaw it.
        for hierarchy in cgroup_hierarchies():
            for state in (hierarchy / name).rglob("freezer.state"):
                with contextlib.suppress(OSError):
                    state.write_text("THAWED")
        kill_all(pids)
        leftovers = []
        for hierarchy in cgroup_hierarchies():
            root = hierarchy / name
            if not root.exists():
                continue
            folders = sorted(
                (p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                reverse=True,
            )
            for folder in [*folders, root]:
                try:
                    folder.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    leftovers.append(folder)
        if not leftovers:
            return
        if time.monotonic() > deadline:
            raise HostError(f"cgroups left behind: {', '.join(map(str, leftovers[:5]))}")
        time.sleep(0.2)


def cgroup_exists(name: str) -> bool:
    return any((hierarchy / name).exists() for hierarchy in cgroup_hierarchies())


# --- network ----------------------------------------------------------------------------


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def ensure_bridge(name: str, address_cidr: str) -> None:
    """A bridge with `address_cidr` (the node's pod gateway and InternalIP), up."""
    if not link_exists(name):
        run(["ip", "link", "add", name, "type", "bridge"])
    current = run(["ip", "-o", "-4", "addr", "show", "dev", name])
    if f" {address_cidr} " not in current:
        run(["ip", "addr", "add", address_cidr, "dev", name])
    run(["ip", "link", "set", name, "up"])


def delete_bridge(name: str) -> None:
    """Deletes the veths still attached to bridge `name` (pods CNI never tore down), then it."""
    if not link_exists(name):
        return
    brif = Path(f"/sys/class/net/{name}/brif")
    for port in sorted(brif.iterdir()) if brif.exists() else []:
        run(["ip", "link", "delete", port.name], check=False)
    run(["ip", "link", "delete", name], check=False)


def veths() -> list[str]:
    """The names of the host's veth interfaces."""
    listing = run(["ip", "-o", "link", "show", "type", "veth"], check=False)
    # "12: vethabc@if3: <...>": the name is the second field, before any "@".
    return sorted(line.split(":")[1].strip().split("@")[0] for line in listing.splitlines())


def ensure_local_address(address_cidr: str) -> None:
    current = run(["ip", "-o", "-4", "addr", "show", "dev", "lo"])
    if f" {address_cidr} " not in current:
        run(["ip", "addr", "add", address_cidr, "dev", "lo"])


def remove_local_address(address_cidr: str) -> None:
    run(["ip", "addr", "del", address_cidr, "dev", "lo"], check=False)


def read_sysctls() -> dict[str, str]:
    values = {}
    for key in SYSCTLS:
        path = Path("/proc/sys") / key
        if path.exists():
            values[key] = path.read_text().strip()
    return values


def write_sysctl(key: str, value: str) -> None:
    with contextlib.suppress(OSError):
        (Path("/proc/sys") / key).write_text(value)


# --- iptables -----------------------------------------------------------------------------


def iptables_chains() -> dict[str, list[str]]:
    """{"iptables:nat": [chains], ...} for the chains with our prefixes that exist now."""
    found: dict[str, list[str]] = {}
    for binary in ("iptables", "ip6tables"):
        for table in IPTABLES_TABLES:
            dump = run([f"{binary}-save", "-t", table], check=False)
            chains = [
                line[1:].split()[0]
                for line in dump.splitlines()
                if line.startswith(":") and line[1:].startswith(CHAIN_PREFIXES)
            ]
            if chains:
                found[f"{binary}:{table}"] = chains
    return found


def remove_new_chains(baseline: dict[str, list[str]]) -> list[str]:
    """Removes our-prefix chains absent from `baseline`, and every rule that jumps to them.

    Returns the chains removed ("iptables:nat:KUBE-SERVICES", ...)."""
    removed = []
    for binary in ("iptables", "ip6tables"):
        for table in IPTABLES_TABLES:
            key = f"{binary}:{table}"
            dump = run([f"{binary}-save", "-t", table], check=False)
            old = set(baseline.get(key, []))
            doomed = {
                line[1:].split()[0]
                for line in dump.splitlines()
                if line.startswith(":") and line[1:].startswith(CHAIN_PREFIXES)
            } - old
            if not doomed:
                continue
            # First the rules of the surviving chains that jump into a doomed chain...
            for line in dump.splitlines():
                if not line.startswith("-A "):
                    continue
                words = shlex.split(line)
                chain, target = words[1], _jump_target(words)
                if chain not in doomed and target in doomed:
                    run([binary, "-w", "-t", table, "-D", *words[1:]], check=False)
            # ...then the doomed chains themselves: flush all before deleting any, since
            # they may jump to each other.
            for chain in sorted(doomed):
                run([binary, "-w", "-t", table, "-F", chain], check=False)
            for chain in sorted(doomed):
                run([binary, "-w", "-t", table, "-X", chain], check=False)
                removed.append(f"{key}:{chain}")
    return removed


def _jump_target(words: list[str]) -> str | None:
    for flag in ("-j", "-g"):
        if flag in words:
            index = words.index(flag)
            if index + 1 < len(words):
                return words[index + 1]
    return None


# What a first `make cluster` took on this machine at its peak (`df` sampled every 5 s through
# `.ci/run`: 51.9 GB free before, 40.8 GB at the lowest, during the image build): buildah's
# vfs storage, the image archives, and each node's containerd content and snapshots.
CLUSTER_DISK_PEAK = 11 * 1024**3


def low_disk_warning(folder: Path, needed: int = CLUSTER_DISK_PEAK) -> str | None:
    """A warning when the disk holding `folder` has less than `needed` bytes free: the nodes
    share it, and their kubelets evict every pod once it is nearly full."""
    free = shutil.disk_usage(folder).free
    if free >= needed:
        return None
    return (f"only {free / 1024**3:.1f} GiB free on the disk of {folder} (a first build and "
            f"the cluster take about {needed / 1024**3:.0f} GiB at their peak): pods may be "
            "evicted or images fail to build; free some space first")
