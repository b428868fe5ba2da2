"""A real S3 server for tests, benches and the local cluster: SeaweedFS (`weed server -s3`) on
loopback (or another local address, `bind`), with one identity's static keys, started and
stopped by the caller.

`weed` comes from tools/seaweedfs/build.sh (pinned Go module, cached), or CKPT_WEED_BIN.
The server keeps its data in its own folder, so it can be stopped (killed, as a crashed
storage service would be) and started again with the same data and ports.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from harness.tools import run_tool

# weed server (master, volume, filer and S3 in one process) answers SIGTERM or SIGINT only
# after 15 s here, every time (measured): its gRPC peers wait out their own timeouts. What it
# stored survives a SIGKILL (the kill-and-restart tests read their data back), so a stop
# waits only this long.
STOP_GRACE = 2.0


class S3Error(RuntimeError):
    """The S3 server did not start; the message holds the tail of its log."""


def weed_binary() -> str:
    return os.environ.get("CKPT_WEED_BIN") or run_tool("seaweedfs/build.sh", timeout=3600)


def _free_port_pair(bind: str) -> int:
    """A port p with p and p + 10000 free on `bind`: weed puts each service's gRPC at
    port + 10000."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind((bind, 0))
            port: int = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as s2:
            try:
                s2.bind((bind, port + 10000))
            except OSError:
                continue
        return port
    raise S3Error("no free port pair for weed")


class SeaweedS3:
    """`weed server` (master, volume, filer, S3 gateway) in one process, bound to one local
    address: 127.0.0.1 by default; the local cluster's pods reach only its host address
    (harness.cluster.cluster.API_ADDRESS), not the host's loopback."""

    def __init__(self, workdir: Path, *, weed: str | None = None,
                 bind: str = "127.0.0.1") -> None:
        self.workdir = workdir
        self.bind = bind
        self.weed = weed or weed_binary()
        self.access_key = "ckpt" + secrets.token_hex(4)
        self.secret_key = secrets.token_hex(20)
        self.region = "us-east-1"
        self._ports = {name: _free_port_pair(bind) for name in ("master", "volume", "filer", "s3")}
        self._proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "weed.log"

    @property
    def endpoint(self) -> str:
        return f"http://{self.bind}:{self._ports['s3']}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise S3Error("weed is not running")
        return self._proc.pid

    def _config(self) -> Path:
        config = {
            "identities": [
                {
                    "name": "ckpt",
                    "credentials": [
                        {"accessKey": self.access_key, "secretKey": self.secret_key}
                    ],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        path = self.workdir / "s3.json"
        path.write_text(json.dumps(config))
        path.chmod(0o600)
        return path

    def start(self, timeout: float = 60.0) -> Self:
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        p = self._ports
        argv = [
            self.weed, "server",
            f"-ip={self.bind}", f"-ip.bind={self.bind}",
            f"-dir={data}",
            f"-master.port={p['master']}",
            f"-volume.port={p['volume']}",
            f"-filer.port={p['filer']}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.config={self._config()}",
            # Small volumes (a test machine's disk), but many: every bucket is a collection
            # that grows volumes of its own, and a server out of volume slots answers 500.
            "-master.volumeSizeLimitMB=128", "-volume.max=400",
        ]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise S3Error(f"weed exited with {self._proc.returncode}:\n{self.log_tail()}")
            if self._ready():
                return self
            time.sleep(0.3)
        self.stop()
        raise S3Error(f"weed's S3 gateway not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def _ready(self) -> bool:
        """Ready when an object can be written and deleted: after a restart the gateway
        answers listings before the master has its volume server back."""
        probe = "ckpt-harness-probe"
        try:
            client = self.client()
            if probe not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
                client.create_bucket(Bucket=probe)
            client.put_object(Bucket=probe, Key="ready", Body=b"ready")
            client.delete_object(Bucket=probe, Key="ready")
        except Exception:  # not up yet: connection refused, 503 while the filer starts
            return False
        return True

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_GRACE seconds."""
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGTERM)
        try:
            self._proc.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=10)
        self._proc = None

    def kill(self) -> None:
        """Stops the server outright, as a crash would."""
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait(timeout=10)
        self._proc = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- an S3 client independent of the code under test (boto3) ---------------------------

    def client(self, *, access_key: str | None = None, secret_key: str | None = None) -> Any:
        # boto3 ships no type hints: this client is an independent checker, typed Any.
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name=self.region,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                connect_timeout=2,
                read_timeout=30,
            ),
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` (ListObjectsV2)."""
        out: list[str] = []
        paginator = self.client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            out.extend(obj["Key"] for obj in page.get("Contents", []))
        return out

    def pending_uploads(self, bucket: str) -> list[str]:
        """Keys of multipart uploads begun and neither completed nor aborted."""
        answer = self.client().list_multipart_uploads(Bucket=bucket)
        return [u["Key"] for u in answer.get("Uploads", [])]


@contextlib.contextmanager
def seaweed_s3(workdir: Path, *, bind: str = "127.0.0.1") -> Iterator[SeaweedS3]:
    server = SeaweedS3(workdir, bind=bind)
    with server:
        yield server
