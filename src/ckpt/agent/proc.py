"""Async subprocesses that never outlive a cancelled job."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Completed:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        out = (self.stderr or self.stdout).strip()
        return f"{' '.join(self.argv)} exited {self.returncode}: {out[-2000:]}"


async def run(
    argv: Sequence[str],
    *,
    limit_s: float | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    finish_on_cancel: bool = False,
) -> Completed:
    """Run a command with stdin and stdout/stderr captured; kill its process group if the
    caller is cancelled or ``limit_s`` passes (runc's CRIU child goes with it).

    ``finish_on_cancel``: a cancelled caller waits for the command to end instead (still
    bounded by ``limit_s``), then sees the cancellation. For CRIU dumps: CRIU killed while
    its parasite code sits inside the target's processes leaves them broken (they die, or
    stay stopped), so a dump is never interrupted, only discarded afterwards.

    stdin is /dev/null and stdout/stderr are pipes: runc hands these to a container it starts
    or restores detached, and a host file there would break a later dump (CRIU: "Can't lookup
    mount ... for fd").
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    communicating = asyncio.ensure_future(asyncio.wait_for(proc.communicate(), limit_s))
    try:
        out, err = await (asyncio.shield(communicating) if finish_on_cancel else communicating)
    except asyncio.CancelledError:
        if finish_on_cancel:
            with contextlib.suppress(Exception):
                await communicating
        _kill_group(proc.pid)
        with contextlib.suppress(Exception):
            await asyncio.shield(proc.wait())
        raise
    except TimeoutError:
        _kill_group(proc.pid)
        with contextlib.suppress(Exception):
            await asyncio.shield(proc.wait())
        raise
    return Completed(
        list(argv),
        proc.returncode if proc.returncode is not None else -1,
        out.decode(errors="replace"),
        err.decode(errors="replace"),
    )


def processes_running(*words: str, proc_root: Path = Path("/proc")) -> list[int]:
    """Pids whose command line contains every one of `words` (as whole arguments)."""
    found = []
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        decoded = {a.decode(errors="replace") for a in args}
        if all(w in decoded for w in words):
            found.append(int(entry.name))
    return found


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
