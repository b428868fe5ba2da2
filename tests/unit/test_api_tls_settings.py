"""The TLS and metrics settings of the API and the operator, and how the clients of the API
are configured: https verified by default, plain http only on loopback, the CA and server
name reaching the client from `ckpt list` and `kubectl ckpt ls`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from rich.console import Console
from typer.testing import CliRunner

from ckpt.api.settings import ApiSettings
from ckpt.contract import checkpoints_client
from ckpt.contract.checkpoints_api import Checkpoint
from ckpt.contract.checkpoints_client import plain_http_refusal
from ckpt.operator.settings import OperatorSettings
from ckpt.user import resources, verbs

CHECKPOINT_ID = "3f1e0b5a-54a8-4a9f-9d8e-6d1b2f1a7c10"


def test_the_api_serves_https_only_with_both_halves_of_its_certificate(tmp_path: Path) -> None:
    assert ApiSettings().tls_cert_file is None  # plain http unless given one
    pair = ApiSettings(tls_cert_file=tmp_path / "tls.crt", tls_key_file=tmp_path / "tls.key")
    assert pair.tls_key_file == tmp_path / "tls.key"
    for half in ({"tls_cert_file": tmp_path / "tls.crt"}, {"tls_key_file": tmp_path / "k"}):
        with pytest.raises(ValidationError, match="must be set together"):
            ApiSettings(**half)  # type: ignore[arg-type]


def test_metrics_need_an_authorized_scraper_unless_turned_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert ApiSettings().metrics_auth == "kubernetes"
    assert OperatorSettings().metrics_auth == "kubernetes"
    monkeypatch.setenv("CKPT_API_METRICS_AUTH", "none")
    monkeypatch.setenv("CKPT_OPERATOR_METRICS_AUTH", "none")
    assert ApiSettings().metrics_auth == OperatorSettings().metrics_auth == "none"
    monkeypatch.setenv("CKPT_API_METRICS_AUTH", "off")
    with pytest.raises(ValidationError):
        ApiSettings()


def test_an_api_without_credentials_for_its_reviews_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from ckpt.api.app import create_app

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    with pytest.raises(RuntimeError, match="metrics authentication needs the apiserver"):
        create_app(ApiSettings(database_url=f"sqlite:///{tmp_path / 'api.db'}"))
    create_app(ApiSettings(database_url=f"sqlite:///{tmp_path / 'api.db'}", metrics_auth="none"))


def test_the_operator_calls_the_deployed_api_over_https_and_plain_http_only_on_loopback(
    tmp_path: Path,
) -> None:
    settings = OperatorSettings()
    assert settings.api_url == "https://ckpt-api.ckpt-system.svc:8443"
    assert settings.api_ca_file is None and settings.api_server_name is None
    for local in ("http://127.0.0.1:8080", "http://localhost:1234/", "http://[::1]:80",
                  "http://127.3.4.5"):
        assert OperatorSettings(api_url=local).api_url == local
    for remote in ("http://ckpt-api.ckpt-system.svc:8080", "http://10.0.0.7:8080",
                   "ftp://ckpt-api"):
        with pytest.raises(ValidationError, match="checkpoints API"):
            OperatorSettings(api_url=remote)
    with pytest.raises(ValidationError, match="must be set together"):
        OperatorSettings(metrics_tls_cert_file=tmp_path / "tls.crt")


@pytest.mark.parametrize(("url", "refused"), [
    ("https://ckpt-api.ckpt-system.svc:8443", False),
    ("https://203.0.113.9", False),
    ("http://127.0.0.1:8080", False),
    ("http://localhost", False),
    ("http://[::1]:8080", False),
    ("http://ckpt-api.ckpt-system.svc:8080", True),
    ("http://localhost.example.com", True),
    ("http://198.18.0.1:8080", True),
    ("ckpt-api:8443", True),
])
def test_plain_http_is_for_loopback_only(url: str, refused: bool) -> None:
    assert (plain_http_refusal(url) is not None) == refused


class FakeCheckpoints:
    def list(self, namespace: str | None) -> list[dict[str, Any]]:
        return [{"metadata": {"namespace": "default", "name": "done",
                              "creationTimestamp": "2026-01-01T00:00:00Z"},
                 "spec": {"podName": "web"},
                 "status": {"phase": "Ready", "checkpointId": CHECKPOINT_ID}}]


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The API clients the verbs make, with their arguments."""
    clients: list[dict[str, Any]] = []

    class FakeApi:
        def __init__(self, url: str, token: str, **tls: Any) -> None:
            clients.append({"url": url, "token": token, **tls})

        def __enter__(self) -> FakeApi:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def list(self, ids: list[str]) -> list[Checkpoint]:
            return [Checkpoint(id=ids[0], status="ready", gpu="none", platform="linux/amd64")]

    monkeypatch.setattr(checkpoints_client, "SyncCheckpointsClient", FakeApi)
    return clients


def test_list_refuses_to_send_the_token_over_plain_http_off_this_host(
    made: list[dict[str, Any]],
) -> None:
    console = Console(record=True, width=200)
    listed = verbs.list_checkpoints(
        FakeCheckpoints(), None, "http://ckpt-api.ckpt-system.svc:8080", "secret", console)  # type: ignore[arg-type]
    assert made == [] and listed[0].record is None
    assert "refusing to send the API token over plain http" in console.export_text()


def test_list_hands_the_ca_and_server_name_to_the_client(
    made: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from ckpt.cli import app

    monkeypatch.setattr(resources, "api_client", lambda *a: object())
    monkeypatch.setattr(resources, "Checkpoints", lambda api: FakeCheckpoints())
    ca = tmp_path / "api-tls.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    env = {"CKPT_API_URL": "https://127.0.0.1:18443", "CKPT_API_TOKEN": "secret",
           "COLUMNS": "200"}
    result = CliRunner().invoke(app, ["list", "--api-ca", str(ca), "--api-server-name",
                                      "ckpt-api.ckpt-system.svc"], env=env)
    assert result.exit_code == 0, result.output
    assert made == [{"url": "https://127.0.0.1:18443", "token": "secret", "ca_file": ca,
                     "server_name": "ckpt-api.ckpt-system.svc"}]
    # The same from the environment; none given: the system CAs and the URL's host.
    result = CliRunner().invoke(app, ["list"], env={
        **env, "CKPT_API_CA": str(ca), "CKPT_API_SERVER_NAME": "ckpt-api.ckpt-system.svc"})
    assert result.exit_code == 0, result.output
    assert made[-1]["ca_file"] == ca
    result = CliRunner().invoke(app, ["list"], env={
        **env, "CKPT_API_CA": "", "CKPT_API_SERVER_NAME": ""})
    assert result.exit_code == 0, result.output
    assert (made[-1]["ca_file"], made[-1]["server_name"]) in {(None, None), (None, "")}
    assert "ready" in result.stdout
    # There is no option to skip verification.
    help_text = CliRunner().invoke(app, ["list", "--help"], env={"COLUMNS": "200"}).stdout
    assert "--api-ca" in help_text and "insecure" not in help_text.lower()
