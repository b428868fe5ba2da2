"""The local cluster warns before it starts on a disk too full for it (its kubelets would
evict every pod later, which is how a CI run failed)."""

from __future__ import annotations

import shutil
from pathlib import Path

from harness.cluster.host import low_disk_warning


def test_warns_with_the_free_space_and_the_need_when_the_disk_is_short(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    warning = low_disk_warning(tmp_path, needed=free + 2 * 1024**4)
    assert warning is not None
    assert warning.startswith(f"only {free / 1024**3:.1f} GiB free on the disk of {tmp_path}")
    assert "free some space first" in warning


def test_says_nothing_when_there_is_room(tmp_path: Path) -> None:
    assert low_disk_warning(tmp_path, needed=1024) is None
