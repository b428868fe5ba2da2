"""ckpt on the local cluster scraped by the real Prometheus (tools/prometheus), run on the test
host: every target is up and every rule of deploy/monitoring/ckpt.rules.yaml loads; after a
checkpoint and a restore every alert expression and dashboard query parses and the dashboard's
queries return series; a Checkpoint that fails makes CkptCheckpointsFailing fire.

Prometheus scrapes the pods' IPs, which the host routes to on the local cluster only (hence
`local_cluster`). Its jobs are those of deploy/monitoring/prometheus.yml with the pods listed
statically instead of discovered (the host's Prometheus has no ServiceAccount), scraped every
2 s with rules evaluated every 2 s, each part's certificate verified for its service name as
that file says. The tokens are those the README has Prometheus present: for the operator and
the API, one of a ServiceAccount bound to ckpt-metrics-reader (made in a namespace of this
module); for the agents, one of audience ckpt-agent of the operator's ServiceAccount, the
identity they allow by default, so that this test need not restart them with another one.

The restore panels need the operator's restore metrics (ckpt.operator.metrics.restore_* called
by the Restore flow) and the staging panels the agent's Stagings given its metrics.
"""

from __future__ import annotations

import base64
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from monitoring_files import RULES, SCRAPE_CONFIG, alerts, dashboard_queries

from harness.cluster import e2e
from harness.cluster.deploy import NAMESPACE
from harness.cluster.fixtures import ClusterUnderTest
from harness.controlplane import Cluster
from harness.tools import run_tool

pytestmark = [pytest.mark.e2e, pytest.mark.local_cluster, pytest.mark.timeout(900)]

INTERVAL = "2s"
# Queries that may rightly return nothing on a healthy cluster: counters of errors that have
# not happened (prometheus_client creates a labelled series at its first increment).
MAY_BE_EMPTY = ("ckpt_operator_agent_errors_total", "ckpt_operator_api_errors_total")
READER = "ckpt-metrics-reader"
# Files the scrape config names, as a Prometheus pod would have them mounted.
MOUNTED_CERTIFICATE = re.compile(r"/var/run/secrets/ckpt\.dev/([a-z]+)-tls/tls\.crt")
OWN_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
AGENT_TOKEN = "/var/run/secrets/ckpt.dev/agent-token/token"


@pytest.fixture(scope="module")
def kube(ckpt_cluster: Cluster) -> Cluster:
    return ckpt_cluster


@pytest.fixture(scope="module")
def scraper(kube: Cluster) -> Iterator[str]:
    """A token of a ServiceAccount bound to ckpt-metrics-reader, as Prometheus's own would be
    (the binding is removed after: the security tests count the bindings of the cluster)."""
    with e2e.fresh_namespace(kube, "prometheus") as namespace:
        kube.kubectl("-n", namespace, "create", "serviceaccount", "prometheus")
        binding = f"{namespace}-{READER}"
        kube.kubectl("create", "clusterrolebinding", binding, f"--clusterrole={READER}",
                     f"--serviceaccount={namespace}:prometheus")
        try:
            yield kube.kubectl("-n", namespace, "create", "token", "prometheus",
                               "--duration=1h").stdout.strip()
        finally:
            kube.kubectl("delete", "clusterrolebinding", binding, "--ignore-not-found",
                         check=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _targets(kube: Cluster, job: dict[str, Any]) -> list[dict[str, Any]]:
    """The job's static targets: the Ready pods its selector and port name pick in
    ckpt-system, labelled as its relabelling labels them (namespace, pod, node)."""
    (sd,) = job["kubernetes_sd_configs"]
    (selector,) = sd["selectors"]
    (keep,) = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
    found = []
    for pod in e2e.items(kube, NAMESPACE, "pods", "-l", selector["label"]):
        ready = any(c["type"] == "Ready" and c["status"] == "True"
                    for c in pod.get("status", {}).get("conditions", []))
        if not ready or pod["metadata"].get("deletionTimestamp"):
            continue
        port = next(p["containerPort"] for c in pod["spec"]["containers"]
                    for p in c.get("ports", []) if p.get("name") == keep["regex"])
        found.append({
            "targets": [f"{pod['status']['podIP']}:{port}"],
            "labels": {"namespace": NAMESPACE, "pod": pod["metadata"]["name"],
                       "node": pod["spec"]["nodeName"]},
        })
    assert found, f"no Ready pod for job {job['job_name']}"
    return found


def _config(kube: Cluster, folder: Path, scraper_token: str) -> Path:
    """deploy/monitoring/prometheus.yml with static targets, short intervals, and the
    certificates and tokens it names as files of this test."""
    tokens = {OWN_TOKEN: scraper_token, AGENT_TOKEN: kube.kubectl(
        "-n", NAMESPACE, "create", "token", "ckpt-operator", "--audience=ckpt-agent",
        "--duration=1h").stdout.strip()}
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    config["global"] = {"scrape_interval": INTERVAL, "scrape_timeout": INTERVAL,
                        "evaluation_interval": INTERVAL}
    shutil.copy(RULES, folder / RULES.name)
    config["rule_files"] = [str(folder / RULES.name)]
    for job in config["scrape_configs"]:
        job["static_configs"] = _targets(kube, job)
        del job["kubernetes_sd_configs"], job["relabel_configs"]
        name = job["job_name"]
        mounted = MOUNTED_CERTIFICATE.fullmatch(job["tls_config"]["ca_file"])
        assert mounted, job["tls_config"]
        certificate = folder / f"{name}-ca.crt"
        certificate.write_bytes(base64.b64decode(kube.kubectl(
            "-n", NAMESPACE, "get", "secret", f"ckpt-{mounted.group(1)}-tls", "-o",
            "jsonpath={.data.tls\\.crt}").stdout))
        job["tls_config"]["ca_file"] = str(certificate)
        token = folder / f"{name}-token"
        token.write_text(tokens[job["authorization"]["credentials_file"]])
        job["authorization"]["credentials_file"] = str(token)
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


class Prometheus:
    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.log = log

    def get(self, path: str, **params: str) -> Any:
        answer = httpx.get(f"{self.url}{path}", params=params, timeout=30)
        body = answer.json()
        assert answer.status_code == 200 and body["status"] == "success", (
            f"GET {path} {params}: {answer.status_code} {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        return list(data["result"]) if data["resultType"] == "vector" else [data["result"]]

    def value(self, expr: str) -> float:
        """A query's one value (0 when it has no series)."""
        result = self.query(f"sum({expr})")
        return float(result[0]["value"][1]) if result else 0.0

    def tail(self) -> str:
        return "\n".join(self.log.read_text().splitlines()[-30:])


@pytest.fixture(scope="module")
def prometheus(
    kube: Cluster, scraper: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    binary = Path(run_tool("prometheus/build.sh")) / "prometheus"
    folder = tmp_path_factory.mktemp("prometheus")
    config = _config(kube, folder, scraper)
    port = _free_port()
    log = folder / "prometheus.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(binary), f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=out, stderr=subprocess.STDOUT,
        )
    server = Prometheus(f"http://127.0.0.1:{port}", log)
    try:
        def ready() -> bool:
            assert proc.poll() is None, f"prometheus exited:\n{server.tail()}"
            try:
                return httpx.get(f"{server.url}/-/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        e2e.wait_until(ready, 60, "prometheus never became ready")
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_every_target_is_up_and_every_rule_loads(
    kube: Cluster, prometheus: Prometheus
) -> None:
    targets: list[dict[str, Any]] = []

    def all_up() -> bool:
        targets[:] = prometheus.get("/api/v1/targets", state="active")["activeTargets"]
        return bool(targets) and all(t["health"] == "up" for t in targets)

    try:
        e2e.wait_until(all_up, 60, "not every target is up", interval=1)
    except AssertionError:
        down = [(t["labels"].get("job"), t["scrapeUrl"], t["lastError"]) for t in targets
                if t["health"] != "up"]
        raise AssertionError(f"targets not up: {down}\n{prometheus.tail()}") from None
    by_job: dict[str, int] = {}
    for target in targets:
        by_job[target["labels"]["job"]] = by_job.get(target["labels"]["job"], 0) + 1
    assert by_job == {"ckpt-operator": 1, "ckpt-api": 1, "ckpt-agent": len(e2e.nodes(kube))}

    rules: list[dict[str, Any]] = []

    def evaluated() -> bool:
        rules[:] = [r for g in prometheus.get("/api/v1/rules")["groups"] for r in g["rules"]]
        return bool(rules) and all(r["health"] != "unknown" for r in rules)

    e2e.wait_until(evaluated, 30, "the rules were never evaluated", interval=1)
    assert sorted(r["name"] for r in rules) == sorted(a["alert"] for a in alerts())
    assert [(r["name"], r["lastError"]) for r in rules if r["health"] != "ok"] == []


def test_the_queries_parse_and_the_dashboard_shows_a_checkpoint_and_a_restore(
    kube: Cluster, cluster_nodes: ClusterUnderTest, cluster_namespace: str,
    prometheus: Prometheus,
) -> None:
    namespace = cluster_namespace
    node = e2e.nodes(kube)[0]
    e2e.counter_pod(kube, namespace, "counter", cluster_nodes.busybox_image, node)
    e2e.wait_ticks(kube, namespace, "counter", at_least=3)
    e2e.checkpoint_ready(kube, namespace, "counter-1", "counter")
    e2e.create_restore(kube, namespace, "back", "counter-1", podName="counter-back",
                       nodeName=node)
    status = e2e.wait_phase(kube, namespace, "restore", "back", {"Running", "Failed"})
    assert status["phase"] == "Running", status

    # Every expression parses (a parse error is an HTTP 400, which `get` refuses).
    for alert in alerts():
        prometheus.query(alert["expr"])
    queries = dashboard_queries()
    empty: list[tuple[str, str]] = []

    def all_have_data() -> bool:
        empty[:] = [(title, expr) for title, expr in queries
                    if not prometheus.query(expr) and not any(m in expr for m in MAY_BE_EMPTY)]
        return not empty

    # Two scrapes after the restore at least: the rates need two samples.
    try:
        e2e.wait_until(all_have_data, 60, "", interval=2)
    except AssertionError:
        raise AssertionError(f"dashboard queries without data: {empty}") from None

    # What happened shows in the numbers, not only as series.
    assert prometheus.value(
        'ckpt_operator_checkpoints_total{job="ckpt-operator", phase="Ready"}') >= 1
    assert prometheus.value(
        'ckpt_operator_restores_total{job="ckpt-operator", phase="Running"}') >= 1
    assert prometheus.value('ckpt_agent_archive_bytes_written_total{job="ckpt-agent"}') > 0
    assert prometheus.value('ckpt_agent_staged_bytes_total{job="ckpt-agent"}') > 0
    assert prometheus.value('ckpt_api_requests_total{job="ckpt-api", route=~"/v2/.*"}') > 0
    free = prometheus.query('ckpt_agent_storage_free_bytes{job="ckpt-agent"}')
    assert {s["metric"]["volume"] for s in free} == {"restores", "archives"}


def test_a_failed_checkpoint_fires_the_failing_checkpoints_alert(
    kube: Cluster, cluster_namespace: str, prometheus: Prometheus
) -> None:
    failed = ('ckpt_operator_checkpoints_total'
              '{job="ckpt-operator", phase="Failed", reason="Timeout"}')
    before = prometheus.value(failed)
    # A pod that does not exist: the Checkpoint waits for it, then fails at its deadline.
    e2e.create_checkpoint(kube, cluster_namespace, "ghost", "nobody", timeoutSeconds=10)
    status = e2e.wait_phase(kube, cluster_namespace, "checkpoint", "ghost", {"Failed"},
                            timeout=60)
    assert e2e.conditions(status)["Ready"]["reason"] == "Timeout", status
    e2e.wait_until(lambda: prometheus.value(failed) >= before + 1, 30,
                   f"Prometheus never saw the failure (before: {before})", interval=1)

    firing: list[dict[str, Any]] = []

    def fires() -> bool:
        firing[:] = [a for a in prometheus.get("/api/v1/alerts")["alerts"]
                     if a["labels"]["alertname"] == "CkptCheckpointsFailing"
                     and a["labels"].get("reason") == "Timeout" and a["state"] == "firing"]
        return bool(firing)

    e2e.wait_until(fires, 30, "CkptCheckpointsFailing never fired for reason Timeout",
                   interval=1)
    (alert,) = firing
    assert float(alert["value"]) >= 1
    assert alert["annotations"]["runbook_url"].endswith("#ckptcheckpointsfailing")
    # Nothing is down meanwhile: those alerts are not even pending.
    pending = {a["labels"]["alertname"] for a in prometheus.get("/api/v1/alerts")["alerts"]}
    assert not pending & {"CkptAgentDown", "CkptOperatorDown"}, pending
