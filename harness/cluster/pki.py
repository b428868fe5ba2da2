"""The local cluster's certificates: one CA and the certificates it signs, made with openssl.

Identities follow the names Kubernetes' default RBAC and the Node authorizer expect:
`system:node:<name>` in group `system:nodes` for a kubelet, `system:kube-controller-manager`,
`system:kube-scheduler`, `system:kube-proxy`; the apiserver's client identity for the kubelets
is in `system:masters`, which the kubelets' webhook authorizer allows `nodes/proxy` (exec, logs,
the checkpoint API): without a kubelet client identity the apiserver's exec answers
"unable to upgrade connection: Unauthorized".
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class PkiError(RuntimeError):
    """openssl failed; the message holds its command and output."""


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


class LocalPki:
    """A CA under `folder` (made on first use) that issues certificates into the same folder."""

    def __init__(self, folder: Path, days: int = 30) -> None:
        self.folder = folder
        self.days = days
        self.ca = KeyPair(folder / "ca.crt", folder / "ca.key")

    def ensure_ca(self) -> KeyPair:
        if self.ca.cert.exists() and self.ca.key.exists():
            return self.ca
        self.folder.mkdir(parents=True, exist_ok=True)
        self._new_key(self.ca.key)
        _openssl(
            "req", "-x509", "-new", "-key", str(self.ca.key), "-out", str(self.ca.cert),
            "-days", str(self.days), "-subj", "/CN=ckpt-local-ca",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        )
        return self.ca

    def issue(
        self,
        name: str,
        common_name: str,
        organizations: Sequence[str] = (),
        *,
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
        server: bool = False,
    ) -> KeyPair:
        """A certificate `name`.crt/.key for `common_name`; reused when it already exists."""
        self.ensure_ca()
        pair = KeyPair(self.folder / f"{name}.crt", self.folder / f"{name}.key")
        if pair.cert.exists() and pair.key.exists():
            return pair
        self._new_key(pair.key)
        subject = "".join(f"/O={org}" for org in organizations) + f"/CN={common_name}"
        csr = self.folder / f"{name}.csr"
        _openssl("req", "-new", "-key", str(pair.key), "-out", str(csr), "-subj", subject)
        usage = "serverAuth,clientAuth" if server else "clientAuth"
        extensions = [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            f"extendedKeyUsage={usage}",
        ]
        alt_names = [f"DNS:{d}" for d in dns_names] + [f"IP:{ip}" for ip in ip_addresses]
        if alt_names:
            extensions.append("subjectAltName=" + ",".join(alt_names))
        extfile = self.folder / f"{name}.ext"
        extfile.write_text("\n".join(extensions) + "\n")
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.ca.cert), "-CAkey", str(self.ca.key),
            "-CAcreateserial", "-out", str(pair.cert), "-days", str(self.days),
            "-extfile", str(extfile),
        )
        csr.unlink()
        extfile.unlink()
        return pair

    def service_account_key(self) -> KeyPair:
        """The RSA key pair that signs ServiceAccount tokens (`cert` holds the public key)."""
        pair = KeyPair(self.folder / "sa.pub", self.folder / "sa.key")
        if not (pair.cert.exists() and pair.key.exists()):
            self.folder.mkdir(parents=True, exist_ok=True)
            _openssl("genrsa", "-out", str(pair.key), "2048")
            _openssl("rsa", "-in", str(pair.key), "-pubout", "-out", str(pair.cert))
            pair.key.chmod(0o600)
        return pair

    @staticmethod
    def _new_key(path: Path) -> None:
        # P-256 keys: every Kubernetes component accepts them and openssl makes them at once.
        _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(path))
        path.chmod(0o600)


def _openssl(*args: str) -> None:
    proc = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise PkiError(f"openssl {' '.join(args)} failed: {proc.stderr.strip()}")
