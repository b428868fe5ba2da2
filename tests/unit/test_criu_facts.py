"""CRIU facts: the line of a log that becomes a failure reason, the version floor, the kernel
features an agent reports."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from ckpt.agent.criu import CriuNotFound, failure_reason, find_criu, kernel_features
from ckpt.agent.metrics import AgentMetrics

LOG = (
    "(00.000011) Version: 4.1.1 (gitid 0)\n"
    "(00.004210) Warn  (criu/kerndat.c:1290): Can't keep kdat cache on non-tempfs\n"
    "(00.050925) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: "
    "Operation not permitted\n"
    "(00.051337) Error (criu/sockets.c:510): sockets: Can't get 1:16 opt: Operation not "
    "supported\n"
    "(00.051340) Error (criu/sockets.c:520): sockets: Can't get 1:34 opt: Operation not "
    "supported\n"
    "(00.051990) Error (criu/cr-dump.c:2111): Dumping FAILED.\n"
)


def test_the_first_error_that_stopped_criu_is_the_reason_without_time_or_location() -> None:
    assert failure_reason(LOG) == "sockets: Can't get 1:16 opt: Operation not supported"


def test_no_error_line_gives_no_reason() -> None:
    assert failure_reason("(00.1) Warn  (criu/x.c:1): only a warning\n") is None
    assert failure_reason("(00.1) Error (criu/cr-dump.c:1): Dumping FAILED.\n") is None
    assert failure_reason("") is None


def test_node_paths_are_hidden_and_the_containers_own_paths_stay() -> None:
    log = ("(00.2) Error (criu/files-reg.c:1): Can't lookup mount=42 for fd=1 "
           "path=/var/lib/ckpt/jobs/ckpt-1/images/app/x and /dev/nvidia0\n")
    reason = failure_reason(log, host_paths=("/var/lib/ckpt/jobs",))
    assert reason == "Can't lookup mount=42 for fd=1 path=<node path> and /dev/nvidia0"


@pytest.mark.parametrize(("line", "hint"), [
    ("parasite: Can't get rlimit 0: Operation not permitted", "lacks CAP_SYS_RESOURCE"),
    ("files: Unknown shit 600 (anon_inode:[io_uring])", "seccompProfile RuntimeDefault"),
])
def test_reasons_a_user_cannot_act_on_alone_get_a_hint(line: str, hint: str) -> None:
    reason = failure_reason(f"(00.3) Error (criu/x.c:1): {line}\n")
    assert reason is not None and reason.startswith(line) and hint in reason


def test_a_long_reason_is_cut() -> None:
    reason = failure_reason("(0.1) Error (a.c:1): " + "x" * 1000)
    assert reason is not None and len(reason) == 300


def fake_criu(folder: Path, version: str) -> str:
    path = folder / f"criu-{version}"
    path.write_text(f"#!/bin/sh\necho 'Version: {version}'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_criu_older_than_4_2_is_refused_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CKPT_CRIU", raising=False)
    monkeypatch.setattr("ckpt.agent.criu._repo_wrapper", lambda: tmp_path / "absent")
    with pytest.raises(CriuNotFound, match=r"version 4\.1\.1 < 4\.2"):
        find_criu(fake_criu(tmp_path, "4.1.1"))
    assert find_criu(fake_criu(tmp_path, "4.2.1")).version == "4.2.1"


def test_kernel_features_and_their_metrics(tmp_path: Path) -> None:
    criu = tmp_path / "criu"
    criu.write_text('#!/bin/sh\n[ "$3" = uffd ]\n')  # `criu check --feature NAME`
    criu.chmod(0o755)
    features = kernel_features(str(criu), ("uffd", "mem_dirty_track"))
    assert features == {"uffd": True, "mem_dirty_track": False}

    metrics = AgentMetrics()
    metrics.describe_criu("4.2.1", features)
    text = generate_latest(metrics.registry).decode()
    assert 'ckpt_agent_criu_info{version="4.2.1"} 1.0' in text
    assert 'ckpt_agent_criu_kernel_feature{feature="uffd"} 1.0' in text
    assert 'ckpt_agent_criu_kernel_feature{feature="mem_dirty_track"} 0.0' in text
