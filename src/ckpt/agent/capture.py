"""What a checkpoint needs besides CRIU images to come back as a Pod.

- The Pod as a template (built by the operator, `ckpt.operator.podtemplate`), written into
  the archive as `pod.json`, so the Pod is created from what the checksum covers.
- Each container's writable layer (`capture_container`): the overlayfs upperdir of its rootfs,
  found in the mount table of the container's runtime (the shim that mounted the bundle's
  rootfs), never in what the container's own processes report, and accepted only under the
  runtime's snapshot folders (`SNAPSHOT_ROOTS`). Regular files, folders, symlinks and
  hard links go into a tar (modes, numeric owners, mtimes); whiteouts (character devices 0:0)
  and opaque folders become the `deleted` list (NUL-separated relative paths, removed before
  the diff is copied; an opaque folder is listed and then re-created from the diff). Without
  this a file written into the container's layer is gone after restore (verified: the
  restore probe's `/tmp/marker`).
- emptyDir contents (`capture_emptydirs`), found by the mount sources in the container's
  runc `config.json`.

Archive members (next to the CRIU images, described under `capture` in ckpt.json):
`capture/<container>/rootfs-diff.tar`, `capture/<container>/deleted`,
`capture/volumes/<volume>.tar`, and `pod.json` (the template).
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import stat
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

log = logging.getLogger(__name__)

CAPTURE_KEY = "capture"
CAPTURE_FORMAT = 1
POD_TEMPLATE_MEMBER = "pod.json"
EMPTY_DIR_MARK = "/volumes/kubernetes.io~empty-dir/"
OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")


# -- the writable layer -----------------------------------------------------------------------


def _unescape(text: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040 ...).
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 3 < len(text) and text[i + 1:i + 4].isdigit():
            out.append(chr(int(text[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def upperdir_from_mountinfo(mountinfo: str, mount_point: str = "/") -> Path | None:
    """The upperdir of the whole overlay mounted at `mount_point` in a mountinfo text, or None.

    The last such mount wins: it is the one on top, the one a process sees there."""
    found: Path | None = None
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        # The whole overlay (root `/`): a bind mount of a folder of some overlay (a
        # plain-folder rootfs on an overlay host) is not the container's own layer.
        if (not sep or len(fields) < 5 or _unescape(fields[4]) != mount_point
                or fields[3] != "/"):
            continue
        parts = right.split()
        if len(parts) < 3 or parts[0] != "overlay":
            continue
        for option in _split_options(parts[2]):
            if option.startswith("upperdir="):
                found = Path(_unescape(option.removeprefix("upperdir=")))
    return found


# Where the runtimes keep writable layers (containerd's overlayfs snapshotter, CRI-O's
# containers/storage). An upperdir elsewhere is not a layer the runtime made for this
# container: refused, never captured.
SNAPSHOT_ROOTS = (
    Path("/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots"),
    Path("/var/lib/containers/storage/overlay"),
)


def rootfs_of(bundle: Path, config: Mapping[str, Any]) -> str:
    """The bundle's rootfs as the runtime mounted it (config.json's root.path, relative to the
    bundle unless absolute)."""
    root = str((config.get("root") or {}).get("path") or "rootfs")
    return os.path.normpath(root if root.startswith("/") else str(bundle / root))


def _split_options(text: str) -> list[str]:
    # The kernel writes option values with `,`, `=`, space, tab, newline and backslash as
    # octal escapes (seq_show_option), so a bare comma always separates options.
    return text.split(",")


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(dir_fd: int) -> bool:
    for name in OPAQUE_XATTRS:
        try:
            if os.getxattr(dir_fd, name) == b"y":
                return True
        except OSError as exc:
            if exc.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                raise
    return False


class CaptureTooLarge(OSError):
    """The captured files exceed the agent's cap for one checkpoint."""


@dataclass
class DiffStats:
    files: int = 0
    deleted: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)


# Every component is opened relative to its parent's descriptor, with O_NOFOLLOW, and the
# opened descriptor (never the path) gives the type, the size and the content. A capture runs as
# root on the node while a container of the same pod that is not frozen (a native sidecar, a
# container left out of the Checkpoint) may swap any file or folder of a shared emptyDir, or
# of its own layer, for a symlink in a tight loop: anything resolved by path between a check
# and an open would follow that link to the agent's key, /proc/1/root or another tenant's
# files. O_NOFOLLOW refuses a symlink at the last component and every earlier component is a
# descriptor already held, so no link is ever followed, whatever the timing. O_NONBLOCK: a
# file swapped for a fifo must not hang the capture.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
MAX_DEPTH = 256


class _Walk:
    """One tree written into a tar by descriptors (see above), with a byte budget."""

    def __init__(self, tar: tarfile.TarFile, stats: DiffStats, budget: CaptureBudget,
                 *, layer: bool) -> None:
        self.tar = tar
        self.stats = stats
        self.budget = budget
        self.layer = layer  # an overlay upperdir: whiteouts and opaque folders mean deletions
        self.deleted: list[str] = []
        self.links: dict[tuple[int, int], str] = {}

    def tree(self, root: Path) -> None:
        fd = os.open(root, _DIR_FLAGS)
        try:
            self._folder(fd, "", 0)
        finally:
            os.close(fd)

    def _folder(self, dir_fd: int, prefix: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            # One descriptor and one Python frame per level: a tree built to exhaust either
            # fails its own checkpoint, clearly, and nothing else.
            raise OSError(errno.ELOOP, f"folders nested deeper than {MAX_DEPTH} at {prefix!r}")
        with os.scandir(dir_fd) as listing:
            names = sorted(entry.name for entry in listing)
        for name in names:
            rel = f"{prefix}{name}"
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed since the listing (only a running container does that)
            if self.layer and _is_whiteout(st):
                self.deleted.append(rel)
            elif stat.S_ISDIR(st.st_mode):
                self._subfolder(dir_fd, name, rel, depth + 1)
            elif stat.S_ISREG(st.st_mode):
                self._file(dir_fd, name, rel)
            elif stat.S_ISLNK(st.st_mode):
                self._symlink(dir_fd, name, rel, st)
            else:
                # Sockets, fifos and device nodes are recreated by their programs.
                self.stats.skipped.append(rel)

    def _subfolder(self, dir_fd: int, name: str, rel: str, depth: int) -> None:
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            self._changed(rel, exc)
            return
        try:
            if self.layer and _is_opaque(fd):
                self.deleted.append(rel)
            self._add(rel, os.fstat(fd), tarfile.DIRTYPE)
            self._folder(fd, f"{rel}/", depth)
        finally:
            os.close(fd)

    def _file(self, dir_fd: int, name: str, rel: str) -> None:
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            self._changed(rel, exc)
            return
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                self._changed(rel, None)
                return
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in self.links:
                self._add(rel, st, tarfile.LNKTYPE, linkname=self.links[key])
                return
            self.links[key] = rel
            self.budget.take(st.st_size, rel)
            self._add(rel, st, tarfile.REGTYPE, content=f)
            self.stats.bytes += st.st_size

    def _symlink(self, dir_fd: int, name: str, rel: str, st: os.stat_result) -> None:
        try:
            target = os.readlink(name, dir_fd=dir_fd)
        except OSError as exc:  # EINVAL: no longer a link
            self._changed(rel, exc)
            return
        # The target is content: resolved inside the restored container, never here.
        self._add(rel, st, tarfile.SYMTYPE, linkname=target)

    def _add(self, rel: str, st: os.stat_result, kind: bytes, *, linkname: str = "",
             content: io.BufferedReader | None = None) -> None:
        info = tarfile.TarInfo(rel)
        info.type = kind
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.mtime = int(st.st_mtime)
        info.linkname = linkname
        info.size = st.st_size if content is not None else 0
        # tarfile reads exactly `size` bytes and fails if the file shrank under it.
        self.tar.addfile(info, content)
        self.stats.files += 1

    def _changed(self, rel: str, exc: OSError | None) -> None:
        # Changed type between the listing and the open (a swap, or a normal rename by a
        # running container): left out, and said, never followed.
        log.info("capture: %s changed while it was read (%s); left out", rel,
                 exc.strerror if exc is not None else "no longer a regular file")
        self.stats.skipped.append(rel)


@dataclass
class CaptureBudget:
    """Bytes of file content one checkpoint may still capture (None: no cap)."""

    left: int | None

    def take(self, size: int, rel: str) -> None:
        if self.left is None:
            return
        self.left -= size
        if self.left < 0:
            raise CaptureTooLarge(
                errno.EFBIG,
                f"the pod's writable files exceed the capture limit at {rel!r}; raise the "
                "agent's CKPT_AGENT_CAPTURE_MAX_BYTES or keep large data on a persistent volume",
            )


def write_layer_diff(
    upper: Path, tar_path: Path, deleted_path: Path, *, budget: CaptureBudget | None = None
) -> DiffStats:
    """Writes an upperdir as a tar of changes plus the NUL-separated deleted paths."""
    stats = DiffStats()
    with tarfile.open(tar_path, mode="w", format=tarfile.PAX_FORMAT) as tar:
        walk = _Walk(tar, stats, budget or CaptureBudget(None), layer=True)
        walk.tree(upper)
    deleted_path.write_bytes(b"".join(p.encode() + b"\0" for p in walk.deleted))
    stats.deleted = len(walk.deleted)
    if stats.skipped:
        log.info("layer diff of %s: skipped %s", upper, stats.skipped[:20])
    return stats


def tar_tree(root: Path, tar_path: Path, *, budget: CaptureBudget | None = None) -> int:
    """Writes a folder's contents (an emptyDir) as a tar; returns the number of entries."""
    stats = DiffStats()
    with tarfile.open(tar_path, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _Walk(tar, stats, budget or CaptureBudget(None), layer=False).tree(root)
    return stats.files


def diff_member_ok(member: tarfile.TarInfo) -> bool:
    """Whether a member of a captured tree is one capture writes, under a safe name."""
    if not _safe(member.name):
        return False
    if member.islnk():
        return _safe(member.linkname)
    # Symlink targets are kept as they are: they are resolved inside the new container.
    return member.isfile() or member.isdir() or member.issym()


def _safe(name: str) -> bool:
    p = PurePosixPath(name)
    return bool(name) and not p.is_absolute() and ".." not in p.parts


# -- per container and per pod ------------------------------------------------------------------


def host_path(host_root: Path, path: Path) -> Path:
    """A path of the host's mount namespace as this process reaches it."""
    return host_root / str(path).lstrip("/")


def runtime_root(pid: int | None, host_root: Path, proc: Path = Path("/proc")) -> Path:
    """The root of the mount namespace that the container's runtime sees, where its overlay
    upperdir and emptyDir paths (as mountinfo and config.json name them) resolve.

    That is the namespace of the container init's parent (the runtime shim, which containerd
    or CRI-O start in their own namespace), not necessarily PID 1's: a node whose containerd
    and kubelet run in a private mount namespace (the local cluster's nodes, some appliance
    distributions) mounts /var/lib/containerd there only, and through /proc/1/root the
    upperdir is missing and the layer would be captured empty. `host_root` when the parent
    cannot be read."""
    parent = _parent(pid, proc) if pid is not None else None
    return proc / str(parent) / "root" if parent is not None else host_root


def _parent(pid: int, proc: Path) -> int | None:
    """The parent of `pid` when it is neither init nor the kernel, else None."""
    try:
        status = (proc / str(pid) / "status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("PPid:"):
            ppid = line.split(":", 1)[1].strip()
            return int(ppid) if ppid.isdigit() and int(ppid) > 1 else None
    return None


def capture_container(
    name: str, pid: int | None, dest: Path, *, host_root: Path, proc: Path = Path("/proc"),
    bundle: Path | None = None, snapshot_roots: tuple[Path, ...] = SNAPSHOT_ROOTS,
    budget: CaptureBudget | None = None,
) -> dict[str, Any]:
    """Captures one container's writable layer into `dest`; returns its ckpt.json facts.

    The layer is the upperdir of the overlay the runtime mounted at the bundle's rootfs, read
    from the runtime's mount table (`runtime_mountinfo`). The container's own mountinfo would
    do on an honest container, but a process that can make mount or user namespaces there can
    make it name any folder of the node; the runtime's table is out of its reach."""
    if pid is None or bundle is None:
        # The kubelet backend does not expose the init pid; the process backend has no
        # bundle: nothing to read the layer from.
        return {"rootfsDiff": None, "deleted": None, "note": "runtime exposes no rootfs"}
    try:
        config = json.loads((bundle / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(errno.ENOENT, f"container {name}: no readable OCI config",
                                str(bundle)) from exc
    upper = upperdir_from_mountinfo(runtime_mountinfo(pid, proc), rootfs_of(bundle, config))
    if upper is None:
        return {"rootfsDiff": None, "deleted": None, "note": "rootfs is not an overlay mount"}
    if not any(upper.is_relative_to(r) and ".." not in upper.parts for r in snapshot_roots):
        raise PermissionError(
            errno.EPERM, f"container {name}: its writable layer is not under the runtime's "
            "snapshot folders", str(upper),
        )
    layer = host_path(host_root, upper)
    if not layer.is_dir():
        # Walking a missing folder yields nothing: the archive would silently hold an empty
        # diff and the restored Pod a different filesystem. Refuse instead.
        raise FileNotFoundError(
            errno.ENOENT, f"container {name}: its overlay upperdir is not reachable", str(layer)
        )
    dest.mkdir(parents=True, exist_ok=True)
    stats = write_layer_diff(layer, dest / "rootfs-diff.tar", dest / "deleted", budget=budget)
    return {
        "rootfsDiff": f"capture/{name}/rootfs-diff.tar",
        "deleted": f"capture/{name}/deleted",
        "files": stats.files,
        "deletedPaths": stats.deleted,
        "skipped": stats.skipped[:100],
    }


def runtime_mountinfo(pid: int, proc: Path = Path("/proc")) -> str:
    """The mount table of the container's runtime: that of its init's parent (the shim that
    mounted the rootfs; a process cannot choose its parent), else PID 1's. Paths in it are
    as the runtime sees them, like the bundle's."""
    parent = _parent(pid, proc)
    return (proc / str(parent or 1) / "mountinfo").read_text()


def emptydir_sources(bundle: Path | None) -> dict[str, Path]:
    """emptyDir volume name -> host folder, from a runc bundle's config.json mounts."""
    if bundle is None:
        return {}
    try:
        config = json.loads((bundle / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    out: dict[str, Path] = {}
    for mount in config.get("mounts") or []:
        source = str(mount.get("source") or "")
        _, mark, volume = source.partition(EMPTY_DIR_MARK)
        if mark and volume and "/" not in volume:
            out[volume] = Path(source)
    return out


def capture_emptydirs(
    sources: Iterable[tuple[str, Path]], dest: Path, *, host_root: Path,
    budget: CaptureBudget | None = None,
) -> dict[str, str]:
    """Tars each emptyDir once (containers may share one); returns volume -> member name."""
    members: dict[str, str] = {}
    for volume, source in sources:
        if volume in members:
            continue
        dest.mkdir(parents=True, exist_ok=True)
        tar_tree(host_path(host_root, source), dest / f"{volume}.tar", budget=budget)
        members[volume] = f"capture/volumes/{volume}.tar"
    return members


def write_pod_template(template: Mapping[str, Any], dest: Path) -> Path:
    path = dest / POD_TEMPLATE_MEMBER
    path.write_text(json.dumps(template, indent=2, sort_keys=True))
    return path


def members_of(capture_dir: Path) -> list[tuple[str, Path]]:
    """(archive name, file) of everything captured under `capture_dir`, in a stable order."""
    out: list[tuple[str, Path]] = []
    template = capture_dir / POD_TEMPLATE_MEMBER
    if template.exists():
        out.append((POD_TEMPLATE_MEMBER, template))
    files = capture_dir / "capture"
    if files.is_dir():
        for path in sorted(files.rglob("*")):
            if path.is_file():
                out.append((path.relative_to(capture_dir).as_posix(), path))
    return out


@dataclass(frozen=True)
class CapturedContainer:
    name: str
    pid: int | None
    bundle: Path | None


def capture_pod(
    template: Mapping[str, Any] | None,
    containers: Iterable[CapturedContainer],
    dest: Path,
    *,
    host_root: Path,
    proc: Path = Path("/proc"),
    max_bytes: int | None = None,
    snapshot_roots: tuple[Path, ...] = SNAPSHOT_ROOTS,
) -> dict[str, Any]:
    """Captures the pod's template, layers and emptyDirs into `dest` (blocking); returns the
    `capture` section of ckpt.json. Call it while the containers are frozen, before the dump:
    a dump without --leave-running ends them, and their layers go with them. `max_bytes` caps
    the file content of the whole pod (CaptureTooLarge beyond it)."""
    budget = CaptureBudget(max_bytes)
    dest.mkdir(parents=True, exist_ok=True)
    section: dict[str, Any] = {"format": CAPTURE_FORMAT, "containers": {}, "emptyDirs": {}}
    sources: list[tuple[str, Path]] = []
    volumes_root = host_root
    for c in containers:
        root = runtime_root(c.pid, host_root, proc)
        section["containers"][c.name] = capture_container(
            c.name, c.pid, dest / "capture" / c.name, host_root=root, proc=proc,
            bundle=c.bundle, snapshot_roots=snapshot_roots, budget=budget,
        )
        found = sorted(emptydir_sources(c.bundle).items())
        if found and c.pid is not None:
            # The kubelet's emptyDir folders live in the same namespace as the runtime's.
            volumes_root = root
        sources.extend(found)
    section["emptyDirs"] = capture_emptydirs(
        sources, dest / "capture" / "volumes", host_root=volumes_root, budget=budget
    )
    if template is not None:
        write_pod_template(template, dest)
        section["podTemplate"] = POD_TEMPLATE_MEMBER
    return section
