"""What a checkpoint needs besides CRIU images to come back as a Pod.

- The Pod as a template (built by the operator, `ckpt.operator.podtemplate`), written into
  the archive as `pod.json`, so the Pod is created from what the checksum covers.
- Each container's writable layer (`capture_container`): the overlayfs upperdir of its rootfs,
  found in the container init's `/proc/<pid>/mountinfo`. Regular files, folders, symlinks and
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


def upperdir_from_mountinfo(mountinfo: str) -> Path | None:
    """The upperdir of the overlay mounted at `/` in a mountinfo text, or None."""
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        # Mount point `/`, and the whole overlay (root `/`): a bind mount of a folder of some
        # overlay (a plain-folder rootfs on an overlay host) is not the container's own layer.
        if not sep or len(fields) < 5 or _unescape(fields[4]) != "/" or fields[3] != "/":
            continue
        parts = right.split()
        if len(parts) < 3 or parts[0] != "overlay":
            continue
        for option in _split_options(parts[2]):
            if option.startswith("upperdir="):
                return Path(_unescape(option.removeprefix("upperdir=")))
    return None


def _split_options(text: str) -> list[str]:
    # The kernel writes option values with `,`, `=`, space, tab, newline and backslash as
    # octal escapes (seq_show_option), so a bare comma always separates options.
    return text.split(",")


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: Path) -> bool:
    for name in OPAQUE_XATTRS:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError as exc:
            if exc.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                raise
    return False


@dataclass
class DiffStats:
    files: int = 0
    deleted: int = 0
    skipped: list[str] = field(default_factory=list)


def write_layer_diff(upper: Path, tar_path: Path, deleted_path: Path) -> DiffStats:
    """Writes an upperdir as a tar of changes plus the NUL-separated deleted paths."""
    stats = DiffStats()
    deleted: list[str] = []
    with tarfile.open(tar_path, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(upper):
            dirnames.sort()
            base = Path(dirpath)
            for name in sorted(dirnames) + sorted(filenames):
                path = base / name
                rel = path.relative_to(upper).as_posix()
                st = path.lstat()
                if _is_whiteout(st):
                    deleted.append(rel)
                    continue
                if stat.S_ISDIR(st.st_mode):
                    if _is_opaque(path):
                        deleted.append(rel)
                elif not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                    # Sockets, fifos and device nodes are recreated by their programs.
                    stats.skipped.append(rel)
                    continue
                tar.add(str(path), arcname=rel, recursive=False)
                stats.files += 1
    deleted_path.write_bytes(b"".join(p.encode() + b"\0" for p in deleted))
    stats.deleted = len(deleted)
    if stats.skipped:
        log.info("layer diff of %s: skipped special files %s", upper, stats.skipped[:20])
    return stats


def tar_tree(root: Path, tar_path: Path) -> int:
    """Writes a folder's contents (an emptyDir) as a tar; returns the number of entries."""
    count = 0
    with tarfile.open(tar_path, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            base = Path(dirpath)
            for name in sorted(dirnames) + sorted(filenames):
                path = base / name
                st = path.lstat()
                if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)
                        or stat.S_ISLNK(st.st_mode)):
                    continue
                tar.add(str(path), arcname=path.relative_to(root).as_posix(), recursive=False)
                count += 1
    return count


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
    if pid is None:
        return host_root
    try:
        status = (proc / str(pid) / "status").read_text()
    except OSError:
        return host_root
    for line in status.splitlines():
        if line.startswith("PPid:"):
            ppid = line.split(":", 1)[1].strip()
            if ppid.isdigit() and int(ppid) > 1:
                return proc / ppid / "root"
            break
    return host_root


def capture_container(
    name: str, pid: int | None, dest: Path, *, host_root: Path, proc: Path = Path("/proc")
) -> dict[str, Any]:
    """Captures one container's writable layer into `dest`; returns its ckpt.json facts."""
    if pid is None:
        # The kubelet backend does not expose the init pid: nothing to read the layer from.
        return {"rootfsDiff": None, "deleted": None, "note": "runtime exposes no pid"}
    mountinfo = (proc / str(pid) / "mountinfo").read_text()
    upper = upperdir_from_mountinfo(mountinfo)
    if upper is None:
        return {"rootfsDiff": None, "deleted": None, "note": "rootfs is not an overlay mount"}
    layer = host_path(host_root, upper)
    if not layer.is_dir():
        # Walking a missing folder yields nothing: the archive would silently hold an empty
        # diff and the restored Pod a different filesystem. Refuse instead.
        raise FileNotFoundError(
            errno.ENOENT, f"container {name}: its overlay upperdir is not reachable", str(layer)
        )
    dest.mkdir(parents=True, exist_ok=True)
    stats = write_layer_diff(layer, dest / "rootfs-diff.tar", dest / "deleted")
    return {
        "rootfsDiff": f"capture/{name}/rootfs-diff.tar",
        "deleted": f"capture/{name}/deleted",
        "files": stats.files,
        "deletedPaths": stats.deleted,
        "skipped": stats.skipped[:100],
    }


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
    sources: Iterable[tuple[str, Path]], dest: Path, *, host_root: Path
) -> dict[str, str]:
    """Tars each emptyDir once (containers may share one); returns volume -> member name."""
    members: dict[str, str] = {}
    for volume, source in sources:
        if volume in members:
            continue
        dest.mkdir(parents=True, exist_ok=True)
        tar_tree(host_path(host_root, source), dest / f"{volume}.tar")
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
) -> dict[str, Any]:
    """Captures the pod's template, layers and emptyDirs into `dest` (blocking); returns the
    `capture` section of ckpt.json. Call it while the containers are frozen, before the dump:
    a dump without --leave-running ends them, and their layers go with them."""
    dest.mkdir(parents=True, exist_ok=True)
    section: dict[str, Any] = {"format": CAPTURE_FORMAT, "containers": {}, "emptyDirs": {}}
    sources: list[tuple[str, Path]] = []
    volumes_root = host_root
    for c in containers:
        root = runtime_root(c.pid, host_root, proc)
        section["containers"][c.name] = capture_container(
            c.name, c.pid, dest / "capture" / c.name, host_root=root, proc=proc
        )
        found = sorted(emptydir_sources(c.bundle).items())
        if found and c.pid is not None:
            # The kubelet's emptyDir folders live in the same namespace as the runtime's.
            volumes_root = root
        sources.extend(found)
    section["emptyDirs"] = capture_emptydirs(
        sources, dest / "capture" / "volumes", host_root=volumes_root
    )
    if template is not None:
        write_pod_template(template, dest)
        section["podTemplate"] = POD_TEMPLATE_MEMBER
    return section
