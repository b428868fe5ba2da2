"""Child processes of ckpt's own servers (API, agent, operator) for tests, demo and benches.

Each runs `ckpt <part> ...` in its own session, logs to a file, is healthy once an HTTP
health URL answers 200, and can be stopped gracefully, killed outright (as a node losing a
pod would), or restarted with the same ports and environment.
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx


class ProcessError(RuntimeError):
    """A server did not start or died; the message carries the tail of its log."""


class ManagedProcess:
    def __init__(
        self,
        name: str,
        args: Sequence[str],
        *,
        env: dict[str, str],
        url: str,
        log_path: Path,
        health_path: str = "/healthz",
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.name = name
        self.argv = [sys.executable, "-m", "ckpt", *args]
        self.env = env
        self.url = url
        self.health_url = url + health_path
        self.log_path = log_path
        self.verify = verify  # how to trust a server that speaks https
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise ProcessError(f"{self.name} is not running")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 60.0) -> Self:
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.argv,
                env={**os.environ, **self.env},
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                # Its own process group, so kill() reaches what it spawned (runc, CRIU).
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ProcessError(
                    f"{self.name} exited with {self._proc.returncode}:\n{self.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.health_url, timeout=1.0, verify=self.verify).status_code == 200:
                    return self
            time.sleep(0.1)
        self.kill()
        raise ProcessError(f"{self.name} not healthy after {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self, sig: signal.Signals = signal.SIGTERM, grace: float = 30.0) -> None:
        """Signals the server (SIGTERM: a graceful stop) and waits; SIGKILL after `grace`."""
        if not self.running:
            return
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._proc.pid, sig)
        try:
            self._proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL to the whole process group: nothing gets to clean up."""
        if not self.running:
            return
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait()

    def restart(self, timeout: float = 60.0) -> Self:
        self.stop()
        return self.start(timeout)

    def log_tail(self, chars: int = 6000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
