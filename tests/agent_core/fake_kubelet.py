"""A local HTTPS endpoint that behaves like the kubelet's checkpoint API.

``POST /checkpoint/{ns}/{pod}/{container}`` with the expected bearer token checkpoints the
mapped runc container for real (``runc checkpoint --leave-running``, real CRIU) and writes an
uncompressed tar, mode 0600, laid out as the kubelet/CRI-O's (``checkpoint/`` with the CRIU
images, ``spec.dump``, ``config.dump``); it answers ``{"items": ["<path>"]}``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import ssl
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from harness.containers import BusyboxContainer


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 made with openssl; returns (cert, key)."""
    cert, key = folder / "kubelet.crt", folder / "kubelet.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@contextmanager
def fake_kubelet(
    folder: Path, token: str, containers: dict[tuple[str, str, str], BusyboxContainer]
) -> Iterator[tuple[str, Path, Path]]:
    """Serve on 127.0.0.1:<free port>; yields (url, CA cert, checkpoints folder)."""
    cert, key = self_signed_cert(folder)
    out_dir = folder / "checkpoints"
    out_dir.mkdir()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self, code: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            if self.headers.get("Authorization") != f"Bearer {token}":
                self._answer(401, {"message": "Unauthorized"})
                return
            parts = self.path.split("?")[0].strip("/").split("/")
            if len(parts) != 4 or parts[0] != "checkpoint":
                self._answer(404, {"message": "not found"})
                return
            c = containers.get((parts[1], parts[2], parts[3]))
            if c is None:
                self._answer(404, {"message": "container not found"})
                return
            work = folder / f"dump-{secrets.token_hex(4)}"
            try:
                c.checkpoint(work / "checkpoint", leave_running=True)
                (work / "spec.dump").write_text((c.bundle / "config.json").read_text())
                (work / "config.dump").write_text(json.dumps({"id": c.id, "name": parts[3]}))
                tar_path = out_dir / f"checkpoint-{parts[2]}_{parts[1]}-{parts[3]}.tar"
                fd = os.open(tar_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w") as tar:
                    for p in sorted(work.rglob("*")):
                        tar.add(p, arcname=p.relative_to(work).as_posix(), recursive=False)
            except Exception as exc:
                self._answer(500, {"message": str(exc)})
                return
            finally:
                shutil.rmtree(work, ignore_errors=True)
            self._answer(200, {"items": [str(tar_path)]})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert, out_dir
    finally:
        server.shutdown()
        server.server_close()
