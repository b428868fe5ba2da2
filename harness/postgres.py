"""Real servers for tests and benchmarks: the API service as a process, and a throwaway
PostgreSQL cluster. Shipped in the package so that other parts' tests can reuse them."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

from harness.controlplane import free_port
from harness.processes import ManagedProcess

LOOPBACK = "127.0.0.1"


class ApiServer(ManagedProcess):
    """`ckpt api serve` in a child process on a free loopback port."""

    def __init__(
        self, database_url: str, log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.database_url = database_url
        super().__init__(
            "api",
            [
                "api",
                "serve",
                "--host",
                LOOPBACK,
                "--port",
                str(self.port),
                "--database",
                database_url,
            ],
            # No apiserver to review scrapers' tokens: /metrics open, as outside a cluster.
            env={"CKPT_API_METRICS_AUTH": "none", **(env or {})},
            url=f"http://{LOOPBACK}:{self.port}",
            log_path=log_path,
        )

    @property
    def base_url(self) -> str:
        return self.url


def postgres_bin_dir() -> Path:
    """Directory of `initdb`/`pg_ctl`; raises with the install hint when absent."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
    )
    for directory in reversed(candidates):
        if (Path(directory) / "initdb").exists():
            return Path(directory)
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise RuntimeError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: "
        "install them, e.g. `apt-get install -y postgresql`"
    )


class PostgresServer:
    """A private PostgreSQL cluster in a temporary directory, on a free loopback port.

    As root the cluster runs as the `postgres` user (PostgreSQL refuses to run as root).
    `durable=False` turns off fsync for test speed; benchmarks keep the defaults.
    """

    def __init__(self, durable: bool = False) -> None:
        self.durable = durable
        self.port = free_port()
        self.bin = postgres_bin_dir()
        self._dir: Path | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@{LOOPBACK}:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stdout}{result.stderr}")

    def start(self) -> Self:
        self._dir = Path(tempfile.mkdtemp(prefix="ckpt-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self._dir, "postgres", "postgres")
        data = self._dir / "data"
        self._run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        options = [
            f"-p {self.port}",
            f"-k {self._dir}",
            f"-c listen_addresses={LOOPBACK}",
            "-c max_connections=200",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run(
            "pg_ctl",
            "-D",
            str(data),
            "-l",
            str(self._dir / "server.log"),
            "-o",
            " ".join(options),
            "-w",
            "-t",
            "60",
            "start",
        )
        return self

    def stop(self) -> None:
        if self._dir is None:
            return
        try:
            self._run("pg_ctl", "-D", str(self._dir / "data"), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
