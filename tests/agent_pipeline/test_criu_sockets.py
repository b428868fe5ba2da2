"""CRIU >= 4.2 on processes that hold sockets, on this kernel (>= 6.16), and the reason of a
failed dump reaching the job's error.

Linux 6.16 restricted SO_PASSCRED/SO_PASSSEC to unix, netlink and bluetooth sockets; CRIU 4.1
asks them of every socket, so with 4.1 the first test fails at the dump with
"sockets: Can't get 1:16 opt: Operation not supported".
"""
# The test drives child processes with plain blocking calls on purpose: it is the only task.
# ruff: noqa: ASYNC221, ASYNC251

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ckpt.agent.runtimes.base import ContainerRef, ContainerRuntimeError
from ckpt.agent.runtimes.process import ProcessRuntime
from harness.containers import pid_alive
from harness.controlplane import free_port

# Needs CRIU on real processes, as root.
pytestmark = pytest.mark.e2e

# A threaded HTTP server with a background thread counting in memory: the state a user
# checks after a restore is the counter, read over HTTP on the same port.
SERVER = """
import http.server, sys, threading, time
count = 0
def tick():
    global count
    while True:
        count += 1
        time.sleep(0.05)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = str(count).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
threading.Thread(target=tick, daemon=True).start()
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def spawn(*argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )


def counter(port: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as answer:
                return int(answer.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def pids() -> Iterator[list[int]]:
    """Process groups the test started; killed at the end, whatever happened."""
    started: list[int] = []
    yield started
    for pid in started:
        if pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)


async def test_threaded_http_server_dumps_and_restores_with_its_listening_socket(
    criu_bin: str, tmp_path: Path, pids: list[int]
) -> None:
    port = free_port()
    server = spawn(sys.executable, "-c", SERVER, str(port))
    pids.append(server.pid)
    before = counter(port)
    runtime = ProcessRuntime(criu_bin)
    ref = ContainerRef("server", str(server.pid), "default", "server", "")
    dumped = await runtime.dump(await runtime.resolve(ref), tmp_path / "work",
                                leave_running=False)
    server.wait(timeout=10)  # CRIU ended the tree: the port and the pids are free again

    restored = subprocess.run(
        [criu_bin, "restore", "-D", str(dumped.images_dir), "-W", str(tmp_path),
         "-o", "restore.log", "--restore-detached", "--shell-job"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert restored.returncode == 0, (tmp_path / "restore.log").read_text()[-2000:]
    after = counter(port)
    assert after >= before, "the restored server's in-memory counter went back"
    time.sleep(0.3)
    assert counter(port) > after, "the restored server's background thread does not run"


async def test_a_dump_refused_by_criu_says_why_without_node_paths(
    criu_bin: str, tmp_path: Path, pids: list[int]
) -> None:
    # A unix socket connected to a peer outside the dumped tree: CRIU refuses it by name
    # ("external socket"), the kind of reason a user can act on.
    outside = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = tmp_path / "peer.sock"
    outside.bind(str(path))
    outside.listen(1)
    client = spawn(sys.executable, "-c",
                   "import socket, sys, time\n"
                   "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
                   "time.sleep(600)\n", str(path))
    pids.append(client.pid)
    peer, _ = outside.accept()
    try:
        runtime = ProcessRuntime(criu_bin)
        ref = ContainerRef("client", str(client.pid), "default", "client", "")
        work = tmp_path / "work"
        with pytest.raises(ContainerRuntimeError) as failure:
            await runtime.dump(await runtime.resolve(ref), work, leave_running=True)
    finally:
        peer.close()
        outside.close()
    message = str(failure.value)
    assert "CRIU: " in message and "unix" in message.lower(), message
    assert str(work) not in message, message
    assert pid_alive(client.pid), "a refused dump must leave the process running"
