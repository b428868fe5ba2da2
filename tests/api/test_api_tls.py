"""The checkpoints API over TLS, as deploy/ serves it: uvicorn with `ckpt api serve`'s own
options and a certificate from a throwaway CA made here (for the Service's name only, as an
admin makes it), on loopback. Its clients verify it; /metrics answers authorized scrapers
only (the apiserver's reviews faked, as the fast tier does)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from api_support import Backend, make_backend

from ckpt.api.app import create_app
from ckpt.api.cli import server_options
from ckpt.api.settings import ApiSettings
from ckpt.contract.checkpoints_client import CheckpointsClient, SyncCheckpointsClient
from ckpt.contract.scrape_auth import Identity, ScrapeGuard
from ckpt.errors import Unavailable
from ckpt.retry import Backoff
from harness.cluster.pki import LocalPki

SERVER_NAME = "ckpt-api.ckpt-system.svc"
PROMETHEUS = Identity("system:serviceaccount:monitoring:prometheus-k8s")
TENANT_POD = Identity("system:serviceaccount:team-a:default")
# Long enough that a retried failure would show in the time it took.
SLOW_RETRY = Backoff(first=2.0, cap=2.0, attempts=3)


class FakeReviewer:
    def __init__(self) -> None:
        self.reviews: list[str] = []

    def authenticate(self, token: str) -> Identity | None:
        self.reviews.append(token)
        return {"prometheus-token": PROMETHEUS, "tenant-pod-token": TENANT_POD}.get(token)

    def may_get(self, identity: Identity, path: str) -> bool:
        return identity == PROMETHEUS and path == "/metrics"


@dataclass
class TlsApi:
    url: str
    ca: Path
    other_ca: Path
    backend: Backend
    reviewer: FakeReviewer


@pytest.fixture(scope="module")
def tls_api(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
            ) -> Iterator[TlsApi]:
    tmp = tmp_path_factory.mktemp("api-tls")
    pki = LocalPki(tmp / "pki", days=1)
    serving = pki.issue("api", "ckpt-api", dns_names=[SERVER_NAME], server=True)
    other = LocalPki(tmp / "other-pki", days=1).ensure_ca()
    backend = make_backend("sqlite", tmp, request)
    settings = ApiSettings(database_url=backend.url, tls_cert_file=serving.cert,
                           tls_key_file=serving.key, host="127.0.0.1", port=0)
    reviewer = FakeReviewer()
    options = server_options(settings)
    assert options["ssl_certfile"] == str(serving.cert)
    assert options["ssl_keyfile"] == str(serving.key)
    del options["host"], options["port"]  # served on the socket bound below
    options["log_level"] = "warning"
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(
        create_app(settings, scrape_guard=ScrapeGuard(reviewer)), **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.01)
    try:
        yield TlsApi(f"https://127.0.0.1:{sock.getsockname()[1]}", pki.ca.cert, other.cert,
                     backend, reviewer)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        backend.db.dispose()


def test_a_client_that_trusts_the_api_and_checks_its_name_works(tls_api: TlsApi) -> None:
    with SyncCheckpointsClient(tls_api.url, tls_api.backend.token(), ca_file=tls_api.ca,
                               server_name=SERVER_NAME) as api:
        created = api.create(name="team-a/web")
        assert [c.id for c in api.list([created])] == [created]


async def test_a_client_with_the_wrong_ca_fails_at_once_before_any_request(
    tls_api: TlsApi,
) -> None:
    started = time.monotonic()
    async with CheckpointsClient(tls_api.url, tls_api.backend.token(), ca_file=tls_api.other_ca,
                                 server_name=SERVER_NAME, retry=SLOW_RETRY) as api:
        with pytest.raises(Unavailable, match="certificate is not trusted") as raised:
            await api.list()
    # Not retried: another try cannot make the certificate trusted.
    assert time.monotonic() - started < SLOW_RETRY.first
    assert "give its CA file" in str(raised.value)


@pytest.mark.parametrize("how", ["no CA (system CAs)", "the URL's host (no name given)",
                                 "another name"])
async def test_a_client_verifies_whatever_it_is_not_given(tls_api: TlsApi, how: str) -> None:
    options: dict[str, Any] = {
        "no CA (system CAs)": {"server_name": SERVER_NAME},
        # The certificate names the Service, not 127.0.0.1.
        "the URL's host (no name given)": {"ca_file": tls_api.ca},
        "another name": {"ca_file": tls_api.ca, "server_name": "ckpt-agent.ckpt-system.svc"},
    }[how]
    async with CheckpointsClient(tls_api.url, tls_api.backend.token(), retry=SLOW_RETRY,
                                 **options) as api:
        with pytest.raises(Unavailable, match="certificate is not trusted"):
            await api.list()


def test_plain_http_to_the_api_gets_no_answer(tls_api: TlsApi) -> None:
    plain = tls_api.url.replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{plain}/healthz", timeout=10)
    # Nor does a hand-written request: TLS or nothing.
    host, port = plain.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"GET /v2/checkpoints HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer x\r\n\r\n")
        answer = b""
        try:
            while chunk := s.recv(4096):
                answer += chunk
        except OSError:
            pass
    assert not answer.startswith(b"HTTP/")


def _scrape(tls_api: TlsApi, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(verify=ssl.create_default_context(cafile=str(tls_api.ca)),
                      timeout=10) as http:
        return http.get(f"{tls_api.url}/metrics", headers=headers,
                        extensions={"sni_hostname": SERVER_NAME})


def test_metrics_answer_only_scrapers_rbac_allows(tls_api: TlsApi) -> None:
    anonymous = _scrape(tls_api, None)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert anonymous.json()["code"] == "unauthorized"
    assert "ckpt_api_requests" not in anonymous.text
    # A tenant's API token is no scraper's: the apiserver does not know it.
    assert _scrape(tls_api, tls_api.backend.token()).status_code == 401
    # A pod's own ServiceAccount token: known, but RBAC grants it no /metrics.
    refused = _scrape(tls_api, "tenant-pod-token")
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    allowed = _scrape(tls_api, "prometheus-token")
    assert allowed.status_code == 200
    # The refused scrapes are counted like any request.
    assert 'route="/metrics",status="401"' in allowed.text
    assert 'route="/metrics",status="403"' in allowed.text


def test_health_and_the_v2_contract_are_as_before(tls_api: TlsApi) -> None:
    with httpx.Client(verify=ssl.create_default_context(cafile=str(tls_api.ca)),
                      timeout=10) as http:
        sni = {"sni_hostname": SERVER_NAME}
        assert http.get(f"{tls_api.url}/healthz", extensions=sni).status_code == 200
        # /v2 still wants a tenant token, and no scraper token stands in for one.
        for token in (None, "prometheus-token"):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            answer = http.get(f"{tls_api.url}/v2/checkpoints", headers=headers, extensions=sni)
            assert answer.status_code == 401, token


def test_a_scraper_is_reviewed_once_not_on_every_scrape(tls_api: TlsApi) -> None:
    assert _scrape(tls_api, "prometheus-token").status_code == 200
    reviewed = len(tls_api.reviewer.reviews)

    async def scrapes() -> list[int]:
        verify = ssl.create_default_context(cafile=str(tls_api.ca))
        async with httpx.AsyncClient(verify=verify, timeout=10) as http:
            answers = await asyncio.gather(*(
                http.get(f"{tls_api.url}/metrics", extensions={"sni_hostname": SERVER_NAME},
                         headers={"Authorization": "Bearer prometheus-token"})
                for _ in range(10)))
        return [a.status_code for a in answers]

    assert asyncio.run(scrapes()) == [200] * 10
    assert len(tls_api.reviewer.reviews) == reviewed
