"""ckpt-runc driven exactly as containerd's runc shim drives it, with real runc and CRIU.

A busybox counter container is checkpointed with runc and CRIU, staged in the layout the
node agent writes (cmd/ckpt-runc/README.md), and brought back by calling the wrapper with
the shim's arguments: `create` (with a bundle whose config.json carries the CRI and
ckpt.dev annotations) and then `start`. The new bundle has a fresh rootfs without the
original's counter file, so a counter that goes on past the checkpointed value comes from
the restored process's memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from harness.containers import BusyboxContainer, Runc, counter_script, make_bundle, new_id

pytestmark = pytest.mark.e2e

RESTORE_ID = "5d2c9a1e-7c4b-4f0e-9a51-2f3c1b0d9e77"
NAMESPACE = "demo"
POD = "counter-restored"


def annotations(container_type: str = "container", **extra: str) -> dict[str, str]:
    """What containerd's CRI plugin writes, plus the Pod's allowlisted ckpt.dev one."""
    return {
        "io.kubernetes.cri.container-type": container_type,
        "io.kubernetes.cri.container-name": "app",
        "io.kubernetes.cri.sandbox-name": POD,
        "io.kubernetes.cri.sandbox-namespace": NAMESPACE,
        "io.kubernetes.cri.sandbox-uid": "0b7f3c55-1d1e-4c61-9d43-6a7e3f0c2b10",
        **extra,
    }


class Shim:
    """Calls the wrapper the way the runc shim (go-runc) does, with its own log file."""

    def __init__(self, wrapper: Path, runc: Runc, workdir: Path, criu: str) -> None:
        self.wrapper = wrapper
        self.runc = runc
        self.log = workdir / "runtime.log"
        self.staging = workdir / "restores"
        self.state = workdir / "ckpt-runc-state"
        self.env = {
            **os.environ,
            "CKPT_RUNC_CONFIG": str(workdir / "no-config-file"),
            "CKPT_RUNC_RUNTIME": runc.binary,
            "CKPT_RUNC_STAGING_ROOT": str(self.staging),
            "CKPT_RUNC_STATE_DIR": str(self.state),
            # The shim passes no --criu; on a node, criu is on containerd's PATH.
            "CKPT_RUNC_CRIU": criu,
        }
        self.calls = 0

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        argv = [
            str(self.wrapper), "--root", str(self.runc.root), "--log", str(self.log),
            "--log-format", "json", *args,
        ]
        # stdin/stdout/stderr stand for the container's stdio, which the shim hands over and
        # reads from files here, not pipes: a created (not yet started) container holds
        # them open, and waiting for a pipe's end would wait for the container's.
        self.calls += 1
        out = self.log.with_name(f"stdio-{self.calls}.out")
        with out.open("w+") as stdio:
            proc = subprocess.run(
                argv, env=self.env, stdin=subprocess.DEVNULL, stdout=stdio, stderr=stdio,
                timeout=timeout, check=False,
            )
            stdio.seek(0)
            text = stdio.read()
        return subprocess.CompletedProcess(argv, proc.returncode, text, text)

    def logged_errors(self) -> list[str]:
        if not self.log.exists():
            return []
        entries = [json.loads(line) for line in self.log.read_text().splitlines() if line]
        return [e["msg"] for e in entries if e.get("level") == "error"]


def write_config(bundle: Path, annotations: dict[str, str]) -> None:
    config: dict[str, Any] = json.loads((bundle / "config.json").read_text())
    config["annotations"] = annotations
    (bundle / "config.json").write_text(json.dumps(config, indent=2))


def test_staged_container_is_restored_by_create_and_start_is_a_no_op(
    wrapper_bin: Path, runc_cli: Runc, criu_bin: str, tmp_path: Path
) -> None:
    shim = Shim(wrapper_bin, runc_cli, tmp_path, criu_bin)
    stage = shim.staging / RESTORE_ID
    ctr = stage / "containers" / "app"

    # 1. The original container, checkpointed (stopped) into the staged layout.
    original = BusyboxContainer.create(tmp_path / "bundles", runc_cli)
    try:
        original.start()
        original.wait_counter(10)
        original.checkpoint(ctr / "images")
        checkpointed = original.counter()
    finally:
        original.close()
    assert checkpointed >= 10

    # 2. What the agent stages besides the images: the writable layer's changes.
    diff = ctr / "rootfs-diff"
    (diff / "tmp").mkdir(parents=True)
    (diff / "tmp").chmod(0o1777)
    (diff / "tmp" / "marker").write_text("written by the original container\n")
    (diff / "tmp" / "marker").chmod(0o640)
    os.utime(diff / "tmp" / "marker", (1_700_000_000, 1_700_000_000))
    (ctr / "deleted").write_bytes(b"etc/obsolete\0")
    (stage / "restore.json").write_text(json.dumps({
        "version": 1, "restoreId": RESTORE_ID, "namespace": NAMESPACE, "podName": POD,
        "tcpClose": True,
        "containers": {"app": {
            "images": "containers/app/images",
            "rootfsDiff": "containers/app/rootfs-diff",
            "deleted": "containers/app/deleted",
        }},
    }))

    # 3. The new Pod's container: a fresh bundle (no counter file), annotated by containerd.
    bundle = make_bundle(tmp_path / "new-bundle", ["/bin/sh", "-c", counter_script()])
    (bundle / "rootfs" / "etc" / "obsolete").write_text("to be deleted\n")
    write_config(bundle, annotations(**{"ckpt.dev/restore": RESTORE_ID}))
    cid = new_id("ckpt-wrapped")
    pid_file = tmp_path / "init.pid"

    created = shim("create", "--bundle", str(bundle), "--pid-file", str(pid_file), cid)
    assert created.returncode == 0, (created.stderr, shim.logged_errors())
    state = runc_cli.state(cid)
    assert state is not None and state["status"] == "running"
    assert int(pid_file.read_text()) == state["pid"]

    started = shim("start", cid)
    assert started.returncode == 0, started.stderr
    assert runc_cli.state(cid)["status"] == "running"  # type: ignore[index]

    # The counter continues from memory: the new rootfs had no counter file at all.
    restored = BusyboxContainer(runc=runc_cli, id=cid, bundle=bundle, owns_bundle=False)
    value = restored.wait_counter(checkpointed + 5, timeout=30)
    assert value >= checkpointed + 5

    # The filesystem changes reached the new rootfs.
    rootfs = bundle / "rootfs"
    marker = rootfs / "tmp" / "marker"
    assert marker.read_text() == "written by the original container\n"
    assert marker.stat().st_mode & 0o7777 == 0o640
    assert marker.stat().st_mtime == 1_700_000_000
    assert not (rootfs / "etc" / "obsolete").exists()

    # The wrapper's record of the restored container, which makes `start` a no-op.
    assert (shim.state / cid).is_file()
    # CRIU's log stays for diagnosis; it shows that tcp-close reached CRIU through the
    # org.criu.config file (runc has no --tcp-close option).
    criu_log = (next(ctr.glob("work-*")) / "restore.log").read_text()
    assert "Will drop all TCP connections on restore" in criu_log
    assert shim.logged_errors() == []

    # kill and delete go through to runc; delete clears the record.
    assert shim("kill", cid, "KILL").returncode == 0
    deadline = time.monotonic() + 10
    while (runc_cli.state(cid) or {}).get("status") != "stopped":
        assert time.monotonic() < deadline, runc_cli.state(cid)
        time.sleep(0.1)
    deleted = shim("delete", "--force", cid)
    assert deleted.returncode == 0, deleted.stderr
    assert runc_cli.state(cid) is None
    assert not (shim.state / cid).exists()


def test_plain_container_passes_through_and_a_mismatched_pod_is_refused(
    wrapper_bin: Path, runc_cli: Runc, criu_bin: str, tmp_path: Path
) -> None:
    shim = Shim(wrapper_bin, runc_cli, tmp_path, criu_bin)

    # A container of an ordinary Pod under the runtime class: runc create + start.
    bundle = make_bundle(tmp_path / "plain", ["/bin/sh", "-c", counter_script()])
    write_config(bundle, annotations())
    cid = new_id("ckpt-plain")
    plain = shim("create", "--bundle", str(bundle), "--pid-file", str(tmp_path / "p.pid"), cid)
    assert plain.returncode == 0, plain.stderr
    assert runc_cli.state(cid)["status"] == "created"  # type: ignore[index]
    assert shim("start", cid).returncode == 0
    BusyboxContainer(runc=runc_cli, id=cid, bundle=bundle, owns_bundle=False).wait_counter(3)
    assert shim("delete", "--force", cid).returncode == 0

    # A restore staged for another Pod: refused, nothing created, the reason in the log.
    stage = shim.staging / RESTORE_ID
    (stage / "containers" / "app" / "images").mkdir(parents=True)
    (stage / "restore.json").write_text(json.dumps({
        "version": 1, "restoreId": RESTORE_ID, "namespace": "other", "podName": POD,
        "containers": {"app": {"images": "containers/app/images"}},
    }))
    write_config(bundle, annotations(**{"ckpt.dev/restore": RESTORE_ID}))
    refused = shim("create", "--bundle", str(bundle), "--pid-file", str(tmp_path / "q.pid"), "x1")
    assert refused.returncode != 0
    assert runc_cli.state("x1") is None
    assert any("refusing it to pod demo/counter-restored" in m for m in shim.logged_errors())
