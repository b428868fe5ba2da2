"""deploy/monitoring/ without a cluster or Prometheus: the kustomization renders apart from
deploy/, every alert has a runbook in README.md, every metric the alerts and the dashboard use
is one ckpt exposes (from the job that exposes it), the PrometheusRule is the rules file, and
the scrape jobs reach the ports deploy/ declares.

test_monitoring_promtool.py checks the same files with the real promtool;
test_prometheus_e2e.py scrapes ckpt on the local cluster with the real Prometheus.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from monitoring_files import (
    DASHBOARD,
    JOBS,
    MONITORING,
    PROMETHEUS_RULE,
    README,
    REPO_ROOT,
    RULES,
    SCRAPE_CONFIG,
    alerts,
    dashboard,
    dashboard_panels,
    dashboard_queries,
    exposed_names,
    metric_names,
    prometheus_rule_text,
    render,
)
from prometheus_client import REGISTRY

from ckpt.agent.metrics import AgentMetrics
from ckpt.api.metrics import ApiMetrics
from ckpt.operator import metrics as operator_metrics

NAMESPACE = "ckpt-system"
RUNBOOKS = "https://github.com/ckpt-dev/ckpt/blob/main/README.md#"
EXPECTED_OBJECTS = {
    ("PodMonitor", "ckpt-operator"),
    ("PodMonitor", "ckpt-agent"),
    ("ServiceMonitor", "ckpt-api"),
    ("PrometheusRule", "ckpt"),
    ("NetworkPolicy", "ckpt-agent-metrics"),
    ("ServiceAccount", "ckpt-metrics"),
    ("ClusterRoleBinding", "ckpt-metrics"),
    ("ConfigMap", "ckpt-grafana-dashboard"),
}
# Each job's metrics come from one component; Prometheus adds `up` to every job.
JOB_OF_PREFIX = {"ckpt_operator_": "ckpt-operator", "ckpt_agent_": "ckpt-agent",
                 "ckpt_api_": "ckpt-api"}


@pytest.fixture(scope="module")
def monitoring() -> list[dict[str, Any]]:
    return render(MONITORING)


@pytest.fixture(scope="module")
def deployed() -> list[dict[str, Any]]:
    return render(REPO_ROOT / "deploy")


def _one(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def test_the_kustomization_renders_the_monitoring_objects_in_ckpt_system(
    monitoring: list[dict[str, Any]],
) -> None:
    assert {(m["kind"], m["metadata"]["name"]) for m in monitoring} == EXPECTED_OBJECTS
    for manifest in monitoring:
        if manifest["kind"] != "ClusterRoleBinding":
            assert manifest["metadata"]["namespace"] == NAMESPACE, manifest["metadata"]
        assert manifest["metadata"]["labels"]["app.kubernetes.io/part-of"] == "ckpt"
    dashboard_map = _one(monitoring, "ConfigMap", "ckpt-grafana-dashboard")
    assert dashboard_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard_map["data"]["ckpt-dashboard.json"] == DASHBOARD.read_text()


def test_deploy_installs_no_monitoring(deployed: list[dict[str, Any]]) -> None:
    # Its kinds exist only with prometheus-operator: deploy/ must apply on any cluster.
    assert not [m for m in deployed if m["apiVersion"].startswith("monitoring.coreos.com/")]
    kustomization = yaml.safe_load((REPO_ROOT / "deploy" / "kustomization.yaml").read_text())
    assert not [r for r in kustomization["resources"] if "monitoring" in r]


def _container_ports(deployed: list[dict[str, Any]], app: str) -> set[str]:
    ports = set()
    for manifest in deployed:
        if manifest["kind"] not in ("Deployment", "DaemonSet"):
            continue
        template = manifest["spec"]["template"]
        if template["metadata"]["labels"].get("app.kubernetes.io/name") != app:
            continue
        for container in template["spec"]["containers"]:
            ports |= {p["name"] for p in container.get("ports", [])}
    return ports


def test_the_monitors_scrape_ports_the_pods_declare(
    monitoring: list[dict[str, Any]], deployed: list[dict[str, Any]]
) -> None:
    for name in ("ckpt-operator", "ckpt-agent"):
        monitor = _one(monitoring, "PodMonitor", name)
        app = monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        assert endpoint["port"] in _container_ports(deployed, app), (name, endpoint["port"])
        assert endpoint["path"] == "/metrics"
        assert {"targetLabel": "job", "replacement": name} in endpoint["relabelings"]
    api = _one(monitoring, "ServiceMonitor", "ckpt-api")
    service = _one(deployed, "Service", "ckpt-api")
    (endpoint,) = api["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert api["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {"targetLabel": "job", "replacement": "ckpt-api"} in endpoint["relabelings"]


def _serving_secret(deployed: list[dict[str, Any]], app: str) -> str:
    """The Secret holding the certificate a component serves with: deploy/ names each
    ckpt-<component>-tls and mounts it into the component's pods."""
    secret = f"{app}-tls"
    volumes = [
        v for m in deployed if m["kind"] in ("Deployment", "DaemonSet")
        and m["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") == app
        for v in m["spec"]["template"]["spec"].get("volumes", [])
    ]
    assert any((v.get("secret") or {}).get("secretName") == secret for v in volumes), (
        f"deploy/ mounts no Secret {secret} into the {app} pods")
    return secret


def _server_names(deployed: list[dict[str, Any]]) -> dict[str, str]:
    """The name each component's certificate carries, as its clients check it."""
    env = {
        e["name"]: e.get("value")
        for e in _one(deployed, "Deployment", "ckpt-operator")["spec"]["template"]["spec"][
            "containers"][0]["env"]
    }
    api_host = str(env["CKPT_OPERATOR_API_URL"]).split("://", 1)[1].split(":", 1)[0]
    return {
        "ckpt-operator": f"ckpt-operator.{NAMESPACE}.svc",
        "ckpt-agent": env.get("CKPT_OPERATOR_AGENT_SERVER_NAME") or f"ckpt-agent.{NAMESPACE}.svc",
        "ckpt-api": api_host,
    }


def _endpoints(monitoring: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found = {}
    for name in ("ckpt-operator", "ckpt-agent"):
        (found[name],) = _one(monitoring, "PodMonitor", name)["spec"]["podMetricsEndpoints"]
    (found["ckpt-api"],) = _one(monitoring, "ServiceMonitor", "ckpt-api")["spec"]["endpoints"]
    return found


def test_every_part_is_scraped_over_verified_tls_with_a_token(
    monitoring: list[dict[str, Any]], deployed: list[dict[str, Any]]
) -> None:
    """TLS verified against each part's own certificate for the name it carries (not the pod
    IP); a bearer token of the apiserver's audience for the operator and the API, of the
    agents' audience for the agents (two Secrets: one token is never good for both)."""
    names = _server_names(deployed)
    tokens = {}
    for app, endpoint in _endpoints(monitoring).items():
        assert endpoint["scheme"] == "https", app
        tls = endpoint["tlsConfig"]
        assert tls["ca"]["secret"] == {"name": _serving_secret(deployed, app), "key": "tls.crt"}
        assert tls["serverName"] == names[app], app
        assert "insecureSkipVerify" not in tls, app
        assert endpoint["authorization"]["type"] == "Bearer", app
        tokens[app] = endpoint["authorization"]["credentials"]["name"]
    assert tokens == {"ckpt-operator": "ckpt-metrics-token", "ckpt-api": "ckpt-metrics-token",
                      "ckpt-agent": "ckpt-agent-metrics-token"}


def test_the_metrics_identity_may_read_metrics_and_reach_the_agents(
    monitoring: list[dict[str, Any]], deployed: list[dict[str, Any]]
) -> None:
    binding = _one(monitoring, "ClusterRoleBinding", "ckpt-metrics")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "ckpt-metrics", "namespace": NAMESPACE}]
    reader = _one(deployed, "ClusterRole", binding["roleRef"]["name"])
    assert reader["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
    account = _one(monitoring, "ServiceAccount", "ckpt-metrics")
    assert account["automountServiceAccountToken"] is False
    # deploy/'s NetworkPolicy admits only the operator to the agents' port.
    policy = _one(monitoring, "NetworkPolicy", "ckpt-agent-metrics")
    assert policy["spec"]["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/name": "ckpt-agent"}}
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == ["agent"]


def test_the_plain_scrape_config_has_the_same_jobs_on_the_same_ports(
    monitoring: list[dict[str, Any]], deployed: list[dict[str, Any]]
) -> None:
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    assert config["rule_files"] == [RULES.name]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert tuple(jobs) == JOBS
    for name, job in jobs.items():
        (sd,) = job["kubernetes_sd_configs"]
        assert sd["role"] == "pod" and sd["namespaces"]["names"] == [NAMESPACE]
        (selector,) = sd["selectors"]
        app = selector["label"].removeprefix("app.kubernetes.io/name=")
        keep = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
        assert [(r["source_labels"], r["regex"]) for r in keep] == [
            (["__meta_kubernetes_pod_container_port_name"], keep[0]["regex"])]
        assert keep[0]["regex"] in _container_ports(deployed, app), (name, keep[0]["regex"])
        # The labels the alerts and the PodMonitors' series carry.
        targets = {r.get("target_label") for r in job["relabel_configs"]}
        assert {"namespace", "pod", "node"} <= targets, name
        # Verified TLS for the name the part's certificate carries, and a token.
        assert job["scheme"] == "https", name
        assert job["tls_config"]["server_name"] == _server_names(deployed)[name]
        assert job["tls_config"]["ca_file"].endswith(f"/{name.removeprefix('ckpt-')}-tls/tls.crt")
        assert "insecure_skip_verify" not in job["tls_config"], name
        assert job["authorization"]["credentials_file"], name
    # The agents take only tokens of their own audience: not Prometheus's own token.
    assert jobs["ckpt-agent"]["authorization"]["credentials_file"] != (
        jobs["ckpt-operator"]["authorization"]["credentials_file"])


def test_the_prometheusrule_is_the_rules_file(monitoring: list[dict[str, Any]]) -> None:
    assert PROMETHEUS_RULE.read_text() == prometheus_rule_text(), (
        "deploy/monitoring/prometheusrule.yaml differs from ckpt.rules.yaml: "
        "python tests/monitoring/monitoring_files.py")
    rule = _one(monitoring, "PrometheusRule", "ckpt")
    assert rule["spec"] == yaml.safe_load(RULES.read_text())


def _readme_anchors(markdown: str) -> dict[str, str]:
    """GitHub's anchor of each heading outside code blocks -> the section's text."""
    anchors: dict[str, str] = {}
    counts: dict[str, int] = {}
    fenced = False
    current: str | None = None
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        heading = None if fenced else re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
            n = counts.get(slug, 0)
            counts[slug] = n + 1
            current = slug if n == 0 else f"{slug}-{n}"
            anchors[current] = ""
        elif current is not None:
            anchors[current] += line + "\n"
    return anchors


def test_every_alert_has_a_runbook_section_in_the_readme() -> None:
    anchors = _readme_anchors(README.read_text())
    monitoring = README.read_text().split("\n## Monitoring", 1)
    assert len(monitoring) == 2, "README.md has no Monitoring section"
    in_monitoring = _readme_anchors("## Monitoring" + monitoring[1].split("\n## ", 1)[0])
    names = [a["alert"] for a in alerts()]
    assert len(names) == len(set(names)) >= 8, names
    for alert in alerts():
        url = alert["annotations"]["runbook_url"]
        assert url.startswith(RUNBOOKS), url
        anchor = url.removeprefix(RUNBOOKS)
        assert anchor in anchors, f"{alert['alert']}: README.md has no heading #{anchor}"
        assert anchor in in_monitoring, f"{alert['alert']}: #{anchor} is not under Monitoring"
        assert alert["alert"] in anchors[anchor] or anchor == alert["alert"].lower()
        # What it means, what to check, what to do: some substance, not a stub.
        assert len(anchors[anchor].split()) >= 40, f"runbook of {alert['alert']} is a stub"
        assert alert["labels"]["severity"] in ("warning", "critical")
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]


def _families() -> Iterator[Any]:
    yield from REGISTRY.collect()  # the operator's: its module registers there
    agent = AgentMetrics()
    agent.describe_criu("4.2", {"tcp": True})
    agent.track_jobs(dict)
    agent.track_storage({"restores": REPO_ROOT})
    yield from agent.registry.collect()
    yield from ApiMetrics().registry.collect()


def _exposed() -> set[str]:
    assert operator_metrics.RESTORES is not None  # imported for its registrations
    return exposed_names(_families()) | {"up"}


def _used() -> list[tuple[str, str]]:
    """(where, PromQL) of every alert and dashboard query."""
    return [(f"alert {a['alert']}", a["expr"]) for a in alerts()] + [
        (f"panel {title!r}", expr) for title, expr in dashboard_queries()]


def test_every_metric_the_alerts_and_the_dashboard_use_is_exposed() -> None:
    exposed = _exposed()
    used: set[str] = set()
    for where, expr in _used():
        names = metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        assert names <= exposed, f"{where} uses {sorted(names - exposed)}, which ckpt never exposes"
        used |= names
    # The ones the task is about are all there.
    assert {"ckpt_operator_checkpoints_total", "ckpt_operator_restores_total",
            "ckpt_agent_archive_bytes_written_total", "ckpt_agent_staged_bytes_total",
            "ckpt_agent_storage_free_bytes", "ckpt_api_request_duration_seconds_bucket",
            "ckpt_operator_restore_phase_duration_seconds_bucket", "up"} <= used


def test_every_selector_names_the_job_that_exposes_its_metric() -> None:
    """`ckpt_agent_x{job="ckpt-operator"}` would parse and never match anything."""
    for where, expr in _used():
        for name, matchers in re.findall(r"\b(ckpt_[a-z_]+)\{([^}]*)\}", expr):
            job = next(j for prefix, j in JOB_OF_PREFIX.items() if name.startswith(prefix))
            assert f'job="{job}"' in matchers, f"{where}: {name}{{{matchers}}} lacks job={job}"
        for matchers in re.findall(r"\bup\{([^}]*)\}", expr):
            assert "job" in matchers, f"{where}: up without a job"


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (reason) (rate(a_total{job="x", le="0.5"}[5m])) > 0', {"a_total"}),
    ("histogram_quantile(0.99, sum by (le) (rate(b_bucket[1m])))", {"b_bucket"}),
    ("c / on(pod) group_left(node) d offset 15m and time() - e_created < 9e2",
     {"c", "d", "e_created"}),
    ('absent(up{job="ckpt-operator"} == 1)', {"up"}),
    ('label_replace(f, "dst", "$1", "src", "(.*)") unless g bool > 1', {"f", "g"}),
])
def test_metric_names_are_read_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_the_dashboard_is_a_grafana_dashboard_of_prometheus_queries() -> None:
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    (variable,) = board["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "datasource", "datasource", "prometheus")
    panels = dashboard_panels()
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids))
    boxes: list[tuple[int, int, int, int]] = []
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        grid = panel["gridPos"]
        box = (grid["x"], grid["y"], grid["x"] + grid["w"], grid["y"] + grid["h"])
        assert box[2] <= 24
        overlapping = [b for b in boxes if b[0] < box[2] and box[0] < b[2]
                       and b[1] < box[3] and box[1] < b[3]]
        assert not overlapping, f"panel {panel['title']!r} overlaps another"
        boxes.append(box)
    # What the dashboard is for: each of these shows somewhere.
    text = " ".join(expr for _, expr in dashboard_queries(substitute=False))
    for needed in ("ckpt_operator_checkpoints_total", "ckpt_operator_restores_total",
                   "ckpt_agent_phase_duration_seconds_bucket",
                   "ckpt_operator_restore_phase_duration_seconds_bucket",
                   "ckpt_agent_archive_bytes_written_total", "ckpt_agent_archive_size_bytes",
                   "ckpt_api_request_duration_seconds_bucket"):
        assert needed in text, needed
    assert "$__rate_interval" in text


def test_no_file_names_a_path_of_this_machine() -> None:
    # The machine's folders, asked for rather than written here: what holds the checkout, the
    # temporary folder and the home folder.
    machine = {f"{REPO_ROOT.parent}/", f"{tempfile.gettempdir()}/", f"{Path.home()}/"}
    for path in sorted(Path(MONITORING).iterdir()):
        text = path.read_text()
        assert not [where for where in machine if where in text], path
