"""Real runc + real CRIU for the agent core; a pipeline context over a temporary store."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_support import Progress

from ckpt.agent.criu import CriuInfo, criu_version
from ckpt.agent.gpu import GpuDriver
from ckpt.agent.pipeline import PipelineContext
from ckpt.agent.runtimes.process import ProcessRuntime
from ckpt.agent.runtimes.runc import RuncRuntime
from ckpt.agent.store import FileStore
from harness.containers import Runc
from harness.fixtures import busybox_container, criu_bin, runc_cli

__all__ = ["busybox_container", "criu_bin", "ctx", "runc_cli"]


@pytest.fixture
def progress() -> Progress:
    return Progress()


@pytest.fixture
def ctx(criu_bin: str, runc_cli: Runc, tmp_path: Path) -> PipelineContext:
    runc = RuncRuntime(runc_cli.root, criu=criu_bin)
    return PipelineContext(
        runtimes={"runc": runc, "process": ProcessRuntime(criu_bin)},
        default_runtime="runc",
        store=FileStore(tmp_path / "store"),
        work_dir=tmp_path / "work",
        node_name="test-node",
        criu=CriuInfo(path=criu_bin, version=criu_version(criu_bin)),
        gpu=GpuDriver.load(),
    )
