"""Real applications on the local cluster, for the application tests and their bench.

Each `App` is a Pod spec over an image of tools/apps/build.sh (Debian's packages: Python,
Redis, OpenJDK, Node.js, PostgreSQL), what to do to it before the checkpoint (`prepare`) and
how to read its state through its own protocol from another Pod (`state`): HTTP with Python's
urllib, redis-cli, psql. A client Pod of the same image runs those, so nothing is read through
`kubectl exec` into the application itself.

State that only memory holds proves a restore: every server reports the wall time its process
started (`started`), which a restarted process could not reproduce, and a counter that
goes on from where the checkpoint left it.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.cluster import e2e
from harness.controlplane import Cluster
from harness.tools import run_tool

PORT = 8080
REDIS_PORT = 6379
PG_PORT = 5432


def image(name: str) -> str:
    return f"ckpt.local/app-{name}:1"


def build_images() -> Path:
    """The folder of the apps' OCI archives (tools/apps/build.sh; cached by its inputs)."""
    return Path(run_tool("apps/build.sh", timeout=3600))


State = dict[str, Any]


@dataclass(frozen=True)
class App:
    """One application: its Pod, its client's commands and what its state must show."""

    name: str
    image_name: str
    command: list[str]
    port: int
    #: Commands run in the client Pod against `{host}` before the checkpoint.
    prepare: list[str] = field(default_factory=list)
    #: A command run in the client Pod against `{host}` printing the state as JSON.
    probe: str = ""
    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    env: list[dict[str, str]] = field(default_factory=list)
    #: (state at the checkpoint, state of the restored Pod) -> None, asserting.
    check: Callable[[State, State], None] = lambda before, after: None
    #: Commands run against the restored Pod (`{host}`) that must succeed (writes go on).
    after: list[str] = field(default_factory=list)
    #: The client's image: its protocol's own tool (redis-cli, psql), else Python's urllib.
    client_image_name: str = "python"
    #: The Pod's securityContext.
    pod_security: dict[str, Any] = field(default_factory=dict)

    @property
    def image(self) -> str:
        return image(self.image_name)

    @property
    def client_image(self) -> str:
        return image(self.client_image_name)

    def pod(self, name: str, node: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
        container: dict[str, Any] = {
            "name": "app", "image": self.image, "imagePullPolicy": "Never",
            "args": self.command,
            "ports": [{"containerPort": self.port}],
            # Ready once it answers: the cold start measured is to a serving process.
            "readinessProbe": {"tcpSocket": {"port": self.port}, "periodSeconds": 1},
        }
        if self.mounts:
            container["volumeMounts"] = self.mounts
        if self.env:
            container["env"] = self.env
        spec: dict[str, Any] = {
            "nodeName": node, "containers": [container],
            "terminationGracePeriodSeconds": e2e.QUICK_STOP,
        }
        if self.volumes:
            spec["volumes"] = self.volumes
        if self.pod_security:
            spec["securityContext"] = self.pod_security
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "labels": labels or {"app": self.name}},
                "spec": spec}


def _http_probe(path: str = "/") -> str:
    return (
        "python3 -c 'import sys, urllib.request; "
        "print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "
        f"http://{{host}}:{PORT}{path}"
    )


def _goes_on(before: State, after: State) -> None:
    # The same process (its start time is in memory only) and its counter went on from the
    # checkpoint, not from zero.
    assert after["started"] == before["started"], (before, after)
    assert after["count"] >= before["count"] > 0, (before, after)


def _python_check(before: State, after: State) -> None:
    _goes_on(before, after)
    assert after["items"] == before["items"] == 1


def _jvm_check(before: State, after: State) -> None:
    _goes_on(before, after)
    entries = after["entries"]
    assert entries == before["entries"] == 200_000
    # The heap-held map is intact: the sum of 0..entries-1, recomputed from it after restore.
    assert after["sum"] == entries * (entries - 1) // 2


def _redis_check(before: State, after: State) -> None:
    assert after == before and before["value"] == "kept-in-memory" and before["keys"] == 1001


def _postgres_check(before: State, after: State) -> None:
    assert before["rows"] == 1 and after["rows"] >= 1, (before, after)
    assert after["started"] == before["started"], "PostgreSQL restarted instead of resuming"


PG_DATA = "/var/lib/postgresql/data"


def psql(statement: str) -> str:
    """A psql command line running one statement ({host} left to fill in)."""
    return (f"psql -h {{host}} -p {PG_PORT} -U postgres -d postgres -v ON_ERROR_STOP=1 -Atc "
            f"{shlex.quote(statement)}")

PG_ROWS = psql("SELECT count(*) FROM kept WHERE note LIKE 'committed%'")
PG_STARTED = psql("SELECT pg_postmaster_start_time()")

APPS: dict[str, App] = {
    "python": App(
        "python", "python", ["/app/server.py", str(PORT)], PORT,
        prepare=[
            "python3 -c 'import sys, urllib.request; urllib.request.urlopen(urllib.request."
            "Request(sys.argv[1], data=b\"kept-in-memory\", method=\"PUT\"), timeout=5)' "
            f"http://{{host}}:{PORT}/items/k1",
        ],
        probe=_http_probe(),
        check=_python_check,
        after=[_http_probe("/items/k1") + " | grep -q kept-in-memory"],
    ),
    "redis": App(
        "redis", "redis",
        # Persistence off: the keys exist only in memory.
        ["--save", "", "--appendonly", "no", "--protected-mode", "no", "--bind", "0.0.0.0"],
        REDIS_PORT,
        prepare=[
            "redis-cli -h {host} SET k1 kept-in-memory",
            "redis-cli -h {host} EVAL \"for i=1,1000 do redis.call('SET','n'..i,i) end\" 0",
        ],
        probe=(
            "printf '{\"value\": \"%s\", \"keys\": %s}' "
            "\"$(redis-cli -h {host} GET k1)\" \"$(redis-cli -h {host} DBSIZE)\""
        ),
        check=_redis_check,
        client_image_name="redis",
        after=["redis-cli -h {host} SET k2 after-restore | grep -q OK"],
    ),
    "jvm": App("jvm", "jvm", ["Counter", str(PORT)], PORT, probe=_http_probe(),
               check=_jvm_check),
    # libuv 1.50 (Debian's Node.js 20) sets up io_uring rings, which CRIU cannot dump, even
    # with UV_USE_IO_URING=0; containerd's RuntimeDefault seccomp profile refuses
    # io_uring_setup, and libuv then uses epoll alone.
    "node": App("node", "node", ["/app/server.js", str(PORT)], PORT, probe=_http_probe(),
                check=_goes_on,
                pod_security={"seccompProfile": {"type": "RuntimeDefault"}}),
    "postgres": App(
        "postgres", "postgres", [], PG_PORT,
        volumes=[{"name": "data", "emptyDir": {}}],
        mounts=[{"name": "data", "mountPath": PG_DATA}],
        env=[{"name": "PGDATA", "value": PG_DATA}],
        prepare=[
            psql("CREATE TABLE kept (id int primary key, note text)"),
            psql("INSERT INTO kept VALUES (1, 'committed before the checkpoint')"),
        ],
        probe=(
            f"printf '{{\"rows\": %s, \"started\": \"%s\"}}' "
            f'"$({PG_ROWS})" "$({PG_STARTED})"'
        ),
        check=_postgres_check,
        client_image_name="postgres",
        # ON_ERROR_STOP: psql fails unless the transaction commits.
        after=[psql("INSERT INTO kept VALUES (2, 'after the restore')")],
    ),
}


def client_pod(kube: Cluster, namespace: str, app: App, node: str) -> str:
    """A Pod that only waits, with the app protocol's client: its state is read from there."""
    name = f"{app.name}-client"
    e2e.apply(kube, namespace, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "nodeName": node, "terminationGracePeriodSeconds": e2e.QUICK_STOP,
            "containers": [{"name": "client", "image": app.client_image,
                            "imagePullPolicy": "Never", "command": ["sleep", "infinity"]}],
        },
    })
    kube.kubectl("-n", namespace, "wait", "--for=condition=Ready", f"pod/{name}",
                 "--timeout=120s")
    return name


def in_client(kube: Cluster, namespace: str, client: str, command: str, host: str,
              timeout: float = 60) -> str:
    """Runs `command` ({host} filled in) in the client Pod; retried while it fails (a server
    that just turned Ready may still refuse its first query)."""
    script = command.replace("{host}", shlex.quote(host))
    deadline = time.monotonic() + timeout
    while True:
        proc = kube.kubectl("-n", namespace, "exec", client, "--", "sh", "-c", script,
                            check=False)
        if proc.returncode == 0:
            return str(proc.stdout)
        if time.monotonic() > deadline:
            raise AssertionError(f"{command!r} against {host} failed: {proc.stderr}")
        time.sleep(1)


def pod_ip(kube: Cluster, namespace: str, pod: str) -> str:
    def ip() -> str:
        found = e2e.get(kube, namespace, "pod", pod) or {}
        return str(found.get("status", {}).get("podIP") or "")

    e2e.wait_until(ip, 60, f"pod {pod} has no IP")
    return ip()


def state(kube: Cluster, namespace: str, client: str, app: App, host: str) -> State:
    answer: State = json.loads(in_client(kube, namespace, client, app.probe, host))
    return answer


def prepare(kube: Cluster, namespace: str, client: str, app: App, host: str) -> None:
    for command in app.prepare:
        in_client(kube, namespace, client, command, host)


CAP_SYS_RESOURCE = 24


def machine_has_cap_sys_resource() -> bool:
    """Whether this machine lets any process hold CAP_SYS_RESOURCE (its bounding set: the
    local cluster's agents run here). Without it CRIU cannot read the resource limits of a
    process of another user (prlimit: EPERM), so non-root workloads cannot be dumped."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    return False


def memory_kib(kube: Cluster, namespace: str, pod: str) -> int:
    """The resident memory of every process of the Pod's container (KiB)."""
    out = kube.kubectl("-n", namespace, "exec", pod, "--", "sh", "-c",
                       "cat /proc/[0-9]*/status 2>/dev/null").stdout
    return sum(int(line.split()[1]) for line in out.splitlines()
               if line.startswith("VmRSS:"))
