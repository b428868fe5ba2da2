"""Real busybox containers under runc, for tests, ``make demo`` and benchmarks.

A container here is a runc bundle (a busybox-static rootfs with its applet links and a
``config.json`` written by this module) run detached under a private runc state root
(``runc --root DIR``), so nothing touches the host's containerd or CRI-O state.

The default program is a counter: every 0.1 s it writes an increasing number to
``/state/counter`` inside the container's rootfs, which the host reads through the bundle.
Its stdio is the container's own ``/dev/null``: CRIU can dump stdio that is a pipe or a file
inside the container, but a host file behind fd 1 fails the dump ("Can't lookup mount ... for
fd"), so the shell replaces the stdio runc hands it before anything else.

An optional memory ballast of N MiB lives in a second shell process of the container: a shell
variable filled with base64 text of random bytes, so the pages are really touched, private to
the process, and must be dumped by CRIU (about 75% compressible, like real heaps are not).

Typical use::

    with BusyboxContainer.launch(workdir, runc=Runc(root=workdir / "runc")) as c:
        c.wait_counter(5)
        print(c.id, c.pid, c.counter())

``Pod`` runs several such containers side by side (one per name), the way a pod's app
containers run on a node.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import struct
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

COUNTER_FILE = "state/counter"  # relative to the rootfs
BALLAST_READY_FILE = "state/ballast-ready"


class ContainerError(Exception):
    """A runc command failed or a container did not behave as expected."""


# ---------------------------------------------------------------------------- runc CLI


@dataclass
class Runc:
    """The runc command line bound to one state root (and optionally one CRIU binary)."""

    root: Path
    binary: str = "runc"
    # runc runs `criu` from PATH unless given `--criu PATH` (a global option).
    criu: str | None = None

    def argv(self, *args: str) -> list[str]:
        argv = [self.binary, "--root", str(self.root)]
        if self.criu:
            argv += ["--criu", self.criu]
        return [*argv, *args]

    def run(
        self, *args: str, check: bool = True, timeout: float = 120, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        self.root.mkdir(parents=True, exist_ok=True)
        # stdin/stdout/stderr of `runc run -d` become the container's initial stdio; never
        # hand it a host file (see the module docstring).
        proc = subprocess.run(
            self.argv(*args),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            check=False,
        )
        if check and proc.returncode != 0:
            raise ContainerError(
                f"{' '.join(self.argv(*args))} failed ({proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()}"
            )
        return proc

    def version(self) -> tuple[int, int, int]:
        """runc's version, e.g. (1, 1, 5)."""
        return parse_runc_version(self.run("--version").stdout)

    def cgroups_mode(self) -> str:
        """The ``--manage-cgroups-mode`` for dumps that restore into another container.

        ``ignore`` (runc >= 1.2): CRIU neither records nor recreates the dumped container's
        cgroups, so the restore lands in the new container's. runc 1.1 (Debian 12 and 13)
        lacks it; its default ``soft`` mode works because runc itself points CRIU at the new
        container's cgroups on restore.
        """
        return "ignore" if self.version() >= (1, 2, 0) else "soft"

    def state(self, container_id: str) -> dict[str, Any] | None:
        """``runc state`` as a dict, or None if the container does not exist."""
        proc = self.run("state", container_id, check=False)
        if proc.returncode != 0:
            return None
        state: dict[str, Any] = json.loads(proc.stdout)
        return state

    def list_ids(self) -> list[str]:
        proc = self.run("list", "--format", "json", check=False)
        if proc.returncode != 0 or not proc.stdout.strip() or proc.stdout.strip() == "null":
            return []
        return [c["id"] for c in json.loads(proc.stdout)]


def parse_runc_version(text: str) -> tuple[int, int, int]:
    """(major, minor, patch) from ``runc --version`` output ("runc version 1.1.5+ds1")."""
    m = re.search(r"runc version (\d+)\.(\d+)\.(\d+)", text)
    if not m:
        raise ContainerError(f"cannot read the runc version from {text!r}")
    return int(m[1]), int(m[2]), int(m[3])


# ---------------------------------------------------------------------------- bundle


def find_busybox() -> Path:
    """A statically linked busybox (busybox-static): the rootfs has no libraries."""
    candidates = [os.environ.get("CKPT_BUSYBOX", ""), "/bin/busybox", "/usr/bin/busybox"]
    for c in candidates:
        if c and Path(c).is_file() and _is_static_elf(Path(c)):
            return Path(c)
    raise ContainerError("no static busybox found: install busybox-static (tools/criu/install.sh)")


def _is_static_elf(path: Path) -> bool:
    """True if the ELF file has no PT_INTERP program header (needs no dynamic loader)."""
    with path.open("rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only
            return False
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    pt_interp = 3
    return all(
        struct.unpack_from("<I", table, i * phentsize)[0] != pt_interp for i in range(phnum)
    )


def make_rootfs(rootfs: Path, busybox: Path | None = None) -> None:
    """A minimal rootfs: /bin/busybox, one symlink per applet, and the usual empty folders."""
    busybox = busybox or find_busybox()
    for d in ("bin", "dev", "proc", "sys", "tmp", "state", "etc", "root"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, rootfs / "bin" / "busybox")
    applets = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for name in applets:
        link = rootfs / "bin" / name
        if name != "busybox" and not link.exists():
            link.symlink_to("busybox")
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\n")
    (rootfs / "tmp").chmod(0o1777)


def counter_script(interval: float = 0.1, ballast_mib: int = 0) -> str:
    """The shell program of a counter container (see the module docstring)."""
    lines = [
        # Replace runc's stdio with the container's own /dev/null before anything else.
        "exec </dev/null >/dev/null 2>&1",
    ]
    if ballast_mib > 0:
        # 3 random bytes -> 4 base64 characters: N MiB of text needs 3/4 N MiB of input.
        raw = ballast_mib * 1024 * 1024 * 3 // 4
        lines.append(
            f"( b=$(head -c {raw} /dev/urandom | base64 -w 0);"
            f" echo ${{#b}} > /{BALLAST_READY_FILE}; while true; do sleep 3600; done ) &"
        )
    # Written aside and renamed: a dump taken between the truncation and the write of a
    # plain `echo > file` would leave an empty counter behind for good.
    lines.append(
        f"i=0; while true; do i=$((i+1)); echo $i > /{COUNTER_FILE}.new;"
        f" mv /{COUNTER_FILE}.new /{COUNTER_FILE}; sleep {interval}; done"
    )
    return "\n".join(lines)


# What containerd's CRI plugin records in every container's OCI config, and the node agent
# checks before it touches a container (ckpt.agent.runtimes.runc.check_pod_ownership). Bare
# test containers belong to pod default/counter (no uid, as requests without one name it);
# `BusyboxContainer.record_pod` rewrites them for a real Pod object.
DEFAULT_POD_ANNOTATIONS = {
    "io.kubernetes.cri.container-type": "container",
    "io.kubernetes.cri.sandbox-namespace": "default",
    "io.kubernetes.cri.sandbox-name": "counter",
}


def pod_annotations(namespace: str, pod: str, uid: str, container: str) -> dict[str, str]:
    return {
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.sandbox-namespace": namespace,
        "io.kubernetes.cri.sandbox-name": pod,
        "io.kubernetes.cri.sandbox-uid": uid,
        "io.kubernetes.cri.container-name": container,
    }


def oci_config(
    args: Sequence[str], hostname: str = "busybox", env: Sequence[str] = ()
) -> dict[str, Any]:
    """An OCI runtime config for a plain, unprivileged-looking busybox container.

    It has its own pid, mount, ipc, uts and network namespaces (the network namespace has
    only ``lo``; CRIU locks it with iptables during the dump). No cgroupsPath is set, so runc
    puts each container in a cgroup named after its id and a restored container gets its own.
    """
    caps = [
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
        "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
    ]
    return {
        "ociVersion": "1.0.2",
        "annotations": dict(DEFAULT_POD_ANNOTATIONS),
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(args),
            "env": ["PATH=/bin", "HOME=/root", *env],
            "cwd": "/",
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": False},
        "hostname": hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
            },
            {
                "destination": "/dev/shm",  # noqa: S108 - a path inside the container
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [
                {"type": t} for t in ("pid", "network", "ipc", "uts", "mount")
            ],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
        },
    }


def make_bundle(
    bundle: Path,
    args: Sequence[str],
    *,
    hostname: str = "busybox",
    busybox: Path | None = None,
) -> Path:
    """Write ``bundle/rootfs`` and ``bundle/config.json``; returns the bundle path."""
    bundle.mkdir(parents=True, exist_ok=True)
    make_rootfs(bundle / "rootfs", busybox)
    (bundle / "config.json").write_text(json.dumps(oci_config(args, hostname), indent=2))
    return bundle


def new_id(prefix: str = "ckpt-test") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


# ---------------------------------------------------------------------------- containers


@dataclass
class BusyboxContainer:
    """One runc container running a busybox program from its own bundle."""

    runc: Runc
    id: str
    bundle: Path
    # Whether ``close`` removes the bundle (a restored container shares its origin's).
    owns_bundle: bool = True
    ballast_mib: int = 0

    @classmethod
    def create(
        cls,
        workdir: Path,
        runc: Runc,
        *,
        container_id: str | None = None,
        ballast_mib: int = 0,
        interval: float = 0.1,
        args: Sequence[str] | None = None,
    ) -> BusyboxContainer:
        """Make a bundle under ``workdir/<id>`` (not started yet)."""
        cid = container_id or new_id()
        argv = list(args) if args else ["/bin/sh", "-c", counter_script(interval, ballast_mib)]
        bundle = make_bundle(workdir / cid, argv, hostname=cid[:63])
        return cls(runc=runc, id=cid, bundle=bundle, ballast_mib=ballast_mib)

    @classmethod
    @contextlib.contextmanager
    def launch(
        cls,
        workdir: Path,
        runc: Runc,
        *,
        container_id: str | None = None,
        ballast_mib: int = 0,
        interval: float = 0.1,
        ready_timeout: float = 120,
    ) -> Iterator[BusyboxContainer]:
        """Create, start and wait for a counter container; delete it (and its bundle) after."""
        c = cls.create(
            workdir, runc, container_id=container_id, ballast_mib=ballast_mib, interval=interval
        )
        try:
            c.start()
            c.wait_ready(ready_timeout)
            yield c
        finally:
            c.close()

    # -- lifecycle -------------------------------------------------------------------------

    def record_pod(self, namespace: str, pod: str, uid: str, container: str) -> None:
        """Make the runtime's records name this pod, as containerd does for a Pod's
        containers (the agent reads them from the bundle's config.json)."""
        config_path = self.bundle / "config.json"
        config = json.loads(config_path.read_text())
        config["annotations"] = pod_annotations(namespace, pod, uid, container)
        config_path.write_text(json.dumps(config, indent=2))

    def start(self) -> None:
        """``runc run -d``: create and start, detached."""
        self.runc.run("run", "-d", "--bundle", str(self.bundle), self.id)

    def wait_ready(self, timeout: float = 120) -> None:
        """Wait for the counter to tick and, with a ballast, for the ballast to be filled."""
        self.wait_counter(1, timeout)
        if self.ballast_mib:
            ready = self.rootfs / BALLAST_READY_FILE
            deadline = time.monotonic() + timeout
            while not (ready.exists() and ready.read_text().strip()):
                if time.monotonic() > deadline:
                    raise ContainerError(f"{self.id}: ballast not ready after {timeout}s")
                time.sleep(0.1)

    def pause(self) -> None:
        self.runc.run("pause", self.id)

    def resume(self) -> None:
        self.runc.run("resume", self.id)

    def kill(self, signal: str = "KILL") -> None:
        self.runc.run("kill", self.id, signal, check=False)

    def delete(self) -> None:
        """Remove the container (force: kills it if running); no error if already gone."""
        if self.runc.state(self.id) is None:
            return
        self.runc.run("delete", "--force", self.id, check=False)
        deadline = time.monotonic() + 10
        while self.runc.state(self.id) is not None:
            if time.monotonic() > deadline:
                raise ContainerError(f"{self.id}: still present after runc delete --force")
            time.sleep(0.1)

    def close(self) -> None:
        """Delete the container and, if this object owns it, the bundle."""
        self.delete()
        if self.owns_bundle:
            shutil.rmtree(self.bundle, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- checkpoint / restore with plain runc (tests and baselines) ------------------------

    def checkpoint(
        self,
        image_dir: Path,
        *,
        leave_running: bool = False,
        extra: Sequence[str] = (),
        timeout: float = 300,
    ) -> None:
        """``runc checkpoint`` into ``image_dir`` (cgroups mode: see ``Runc.cgroups_mode``)."""
        mode = self.runc.cgroups_mode()
        args = ["checkpoint", "--image-path", str(image_dir), "--manage-cgroups-mode", mode]
        if leave_running:
            args.append("--leave-running")
        self.runc.run(*args, *extra, self.id, timeout=timeout)

    def restore_as(
        self, image_dir: Path, new_id: str | None = None, *, timeout: float = 300
    ) -> BusyboxContainer:
        """``runc restore -d`` the images as a new container sharing this bundle."""
        cid = new_id or f"{self.id}-r{secrets.token_hex(2)}"
        self.runc.run(
            "restore", "-d", "--image-path", str(image_dir), "--bundle", str(self.bundle),
            "--manage-cgroups-mode", self.runc.cgroups_mode(), cid, timeout=timeout,
        )
        return BusyboxContainer(
            runc=self.runc, id=cid, bundle=self.bundle, owns_bundle=False,
            ballast_mib=self.ballast_mib,
        )

    # -- observation ----------------------------------------------------------------------

    @property
    def rootfs(self) -> Path:
        return self.bundle / "rootfs"

    def status(self) -> str | None:
        """runc's status ("running", "paused", "stopped", ...), or None if it does not exist."""
        state = self.runc.state(self.id)
        return None if state is None else str(state["status"])

    @property
    def pid(self) -> int:
        """Host pid of the container's init process."""
        state = self.runc.state(self.id)
        if state is None or not state.get("pid"):
            raise ContainerError(f"{self.id}: no such running container")
        return int(state["pid"])

    def counter(self) -> int:
        """The counter's last value (0 if it has not written one yet)."""
        try:
            # Renamed into place whole (see `counter_script`): never seen half written.
            return int((self.rootfs / COUNTER_FILE).read_text().strip() or 0)
        except FileNotFoundError:
            return 0

    def wait_counter(self, at_least: int, timeout: float = 30) -> int:
        """Wait until the counter reaches ``at_least``; returns its value."""
        deadline = time.monotonic() + timeout
        while (value := self.counter()) < at_least:
            if time.monotonic() > deadline:
                raise ContainerError(
                    f"{self.id}: counter at {value}, wanted {at_least} within {timeout}s"
                )
            time.sleep(0.05)
        return value


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class Pod:
    """Several counter containers started together, like the app containers of one pod.

    Each has its own bundle and namespaces (no shared pause container: CRIU would then need
    the pod's network namespace as an external resource, which these tests do not exercise).
    """

    containers: dict[str, BusyboxContainer] = field(default_factory=dict)

    @classmethod
    @contextlib.contextmanager
    def launch(
        cls,
        workdir: Path,
        runc: Runc,
        names: Sequence[str] = ("app", "sidecar"),
        *,
        ballast_mib: int = 0,
        ready_timeout: float = 120,
    ) -> Iterator[Pod]:
        pod = cls()
        prefix = new_id("ckpt-pod")
        try:
            for name in names:
                c = BusyboxContainer.create(
                    workdir, runc, container_id=f"{prefix}-{name}", ballast_mib=ballast_mib
                )
                pod.containers[name] = c
                c.start()
            for c in pod.containers.values():
                c.wait_ready(ready_timeout)
            yield pod
        finally:
            pod.close()

    def __getitem__(self, name: str) -> BusyboxContainer:
        return self.containers[name]

    def close(self) -> None:
        for c in self.containers.values():
            c.close()


class Launcher:
    """Starts counter containers under one runc root and, on `close`, removes every
    container under that root (restored ones included) and the bundles it made."""

    def __init__(self, workdir: Path, runc: Runc) -> None:
        self.workdir = workdir
        self.runc = runc
        self.started: list[BusyboxContainer] = []

    def start(self, ballast_mib: int = 0) -> BusyboxContainer:
        c = BusyboxContainer.create(self.workdir, self.runc, ballast_mib=ballast_mib)
        self.started.append(c)
        c.start()
        c.wait_ready()
        return c

    def close(self) -> None:
        for cid in self.runc.list_ids():
            self.runc.run("delete", "--force", cid, check=False)
        for c in self.started:
            c.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
