"""Benchmark of the checkpoints API: a create -> info -> uploaded -> list cycle.

Run: PYTHONPATH=. .venv/bin/python bench/api.py [--seconds 4] [--concurrency 1 16 64]

Each server (a bare ASGI baseline, the API on SQLite, the API on PostgreSQL) runs in its own
process under identical uvicorn settings on loopback; the load generator is this process.
Besides throughput and latency, each cell reports the server process's CPU time per request,
which depends far less than the others on what else runs on a shared machine.

Besides the table it saves bench/results/api.json and draws bench/plots/api.svg (the latency
percentiles; bench/plots.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.results import Recorder
from bench.stats import percentile, ratio
from ckpt.api import migrate
from ckpt.api.db import Database
from ckpt.api.tokens import create_token
from harness.controlplane import free_port
from harness.postgres import LOOPBACK, PostgresServer

UVICORN = {"loop": "uvloop", "http": "httptools", "access_log": False, "log_level": "warning"}
INFO = json.dumps({"gpu": "none", "platform": "linux/amd64", "info": {"node": "n1"}}).encode()
UPLOADED = json.dumps({"restore_path": "/store/x.tar.zst", "checksum": "sha256:00"}).encode()


async def bare_app(scope: dict, receive: object, send: object) -> None:
    """The baseline: answers the cycle's four requests with constant bodies, no work."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":  # type: ignore[operator]
            await send({"type": "lifespan.startup.complete"})  # type: ignore[operator]
        await send({"type": "lifespan.shutdown.complete"})  # type: ignore[operator]
        return
    while (await receive()).get("more_body"):  # type: ignore[operator]
        pass
    if scope["method"] == "GET":
        body, kind = b"[]", b"application/json"
    else:
        body, kind = b"00000000-0000-0000-0000-000000000000", b"text/plain; charset=utf-8"
    headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": body})  # type: ignore[operator]


def _serve(kind: str, port: int, database_url: str) -> None:
    import uvicorn

    from ckpt.api.app import create_app
    from ckpt.api.settings import ApiSettings

    app = bare_app if kind == "bare-asgi" else create_app(
        # The bench drives one tenant far above the per-tenant limit on purpose: it measures
        # the service, not the limiter.
        ApiSettings(database_url=database_url, rate_limit_per_second=0, metrics_auth="none")
    )
    uvicorn.run(app, host=LOOPBACK, port=port, **UVICORN)  # type: ignore[arg-type]


class Connection:
    """A minimal keep-alive HTTP/1.1 client: httpx would cost more CPU per request than the
    server under test, and on 2 cores the load generator shares the server's CPUs."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.auth = f"Authorization: Bearer {token}\r\n".encode()

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(LOOPBACK, self.port)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {len(body)}\r\n"
        if body:
            head += "Content-Type: application/json\r\n"
        self.writer.write(head.encode() + self.auth + b"\r\n" + body)
        header = await self.reader.readuntil(b"\r\n\r\n")
        status = int(header[9:12])
        length = 0
        for line in header.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def _cycle(conn: Connection, latencies: list[float]) -> None:
    start = time.perf_counter()
    status, body = await conn.request("POST", "/v2/checkpoints")
    checkpoint_id = body.decode()
    steps = [
        ("PUT", f"/v2/checkpoints/info/{checkpoint_id}", INFO),
        ("POST", f"/v2/checkpoints/uploaded/{checkpoint_id}", UPLOADED),
        ("GET", f"/v2/checkpoints?ids={checkpoint_id}", b""),
    ]
    results = [status]
    now = time.perf_counter()
    latencies.append(now - start)
    for method, path, payload in steps:
        start = now
        status, _ = await conn.request(method, path, payload)
        results.append(status)
        now = time.perf_counter()
        latencies.append(now - start)
    if results != [200, 200, 200, 200]:
        raise RuntimeError(f"cycle failed with statuses {results}")


async def _load(
    port: int, token: str, concurrency: int, seconds: float
) -> tuple[int, list[float], int]:
    """Requests/s and latencies of the measured period, and all requests sent (warm-up too)."""
    conns = [Connection(port, token) for _ in range(concurrency)]
    await asyncio.gather(*(c.open() for c in conns))
    latencies: list[float] = []
    warmup_until = time.perf_counter() + min(1.0, seconds / 4)

    async def worker(conn: Connection, sink: list[float], until: float) -> None:
        while time.perf_counter() < until:
            await _cycle(conn, sink)

    warmup: list[float] = []
    await asyncio.gather(*(worker(c, warmup, warmup_until) for c in conns))
    start = time.perf_counter()
    await asyncio.gather(*(worker(c, latencies, start + seconds) for c in conns))
    elapsed = time.perf_counter() - start
    for c in conns:
        c.close()
    return int(len(latencies) / elapsed), latencies, len(warmup) + len(latencies)


@dataclass
class Row:
    server: str
    concurrency: int
    rps: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    cpu_us: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Row:
        return cls(**data)


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # utime and stime are fields 14 and 15 of stat(5), here 12 and 13 after the name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(name: str, url: str, token: str, levels: list[int], seconds: float) -> list[Row]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "_serve", name, str(port), url])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://{LOOPBACK}:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{name} server did not start") from None
                time.sleep(0.1)
        rows = []
        for c in levels:
            cpu_before = _cpu_seconds(proc.pid)
            rps, lat, sent = asyncio.run(_load(port, token, c, seconds))
            cpu_after = _cpu_seconds(proc.pid)
            cpu_us = None
            if cpu_before is not None and cpu_after is not None:
                cpu_us = (cpu_after - cpu_before) / sent * 1e6
            p50_ms, p90_ms, p99_ms = (percentile(lat, p) * 1000 for p in (50, 90, 99))
            rows.append(Row(name, c, rps, p50_ms, p90_ms, p99_ms, cpu_us))
            print(f"  {name} c={c}: {rps} req/s", file=sys.stderr)
        return rows
    finally:
        proc.terminate()
        proc.wait(15)


def _api_database(url: str) -> str:
    db = Database(url)
    migrate.upgrade(db.engine)
    token = create_token(db, f"bench-{uuid.uuid4()}")
    db.dispose()
    return token


def table(rows: list[Row]) -> str:
    bare = {r.concurrency: r for r in rows if r.server == "bare-asgi"}
    lines = [
        "| server | concurrency | requests/s | p50 ms | p90 ms | p99 ms "
        "| requests/s vs bare ASGI | server CPU µs/request |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cpu = f"{r.cpu_us:.0f}" if r.cpu_us is not None else "n/a"
        vs = ratio(r.rps, bare[r.concurrency].rps) if r.concurrency in bare else "n/a"
        lines.append(
            f"| {r.server} | {r.concurrency} | {r.rps} | {r.p50_ms:.2f} | {r.p90_ms:.2f} "
            f"| {r.p99_ms:.2f} | {vs} | {cpu} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0, help="measured time per cell")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    args = parser.parse_args()
    recorder = Recorder("api", {"seconds": args.seconds, "concurrency": args.concurrency})

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="ckpt-bench-") as tmp:
        rows += _measure("bare-asgi", "", "x", args.concurrency, args.seconds)
        sqlite_url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        rows += _measure(
            "sqlite", sqlite_url, _api_database(sqlite_url), args.concurrency, args.seconds
        )
        with PostgresServer(durable=True) as pg:
            rows += _measure(
                "postgresql", pg.url, _api_database(pg.url), args.concurrency, args.seconds
            )

    print(table(rows))
    print("\n" + recorder.footer())
    recorder.save([r.to_json() for r in rows])


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "_serve":
        _serve(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        main()
