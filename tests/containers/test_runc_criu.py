"""A real runc container checkpointed by real CRIU and restored: its counter continues."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from harness.containers import BusyboxContainer, pid_alive

# Needs runc and CRIU, as root.
pytestmark = pytest.mark.e2e


def test_criu_is_4_or_newer(criu_bin: str) -> None:
    out = subprocess.run([criu_bin, "--version"], capture_output=True, text=True, check=True)
    major = int(out.stdout.split("Version:")[1].strip().split(".")[0])
    assert major >= 4


def test_container_runs_and_counts(busybox_container: BusyboxContainer) -> None:
    c = busybox_container
    assert c.status() == "running"
    assert pid_alive(c.pid)
    first = c.wait_counter(2)
    assert c.wait_counter(first + 3) >= first + 3


def test_checkpoint_stop_restore_continues(
    busybox_container: BusyboxContainer, tmp_path: Path
) -> None:
    c = busybox_container
    c.wait_counter(5)
    pid = c.pid
    images = tmp_path / "images"
    c.checkpoint(images)  # not leave-running: runc stops and removes the container

    # Really stopped: no container, no process, and the counter stands still.
    assert c.status() is None
    assert not pid_alive(pid)
    stopped_at = c.counter()
    time.sleep(1.0)
    assert c.counter() == stopped_at

    restored = c.restore_as(images)
    try:
        assert restored.status() == "running"
        # The in-memory counter continues from where it stopped: the first values written
        # after the restore follow the dumped one (a restart would begin again at 1).
        value = restored.wait_counter(stopped_at + 1, timeout=10)
        assert stopped_at < value <= stopped_at + 5
        assert restored.wait_counter(stopped_at + 5, timeout=10) >= stopped_at + 5
    finally:
        restored.delete()
