"""deploy/monitoring/ checked by the real promtool (tools/prometheus, the version pinned there):
the rules file and the PrometheusRule's rules load, the plain scrape config is valid, every
dashboard query parses, and the alerts' unit tests (alerts_test.yaml) pass: the failing-
checkpoint alert fires on a synthetic failure, and no other alert fires without its trouble."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from monitoring_files import (
    MONITORING,
    PROMETHEUS_RULE,
    RULES,
    SCRAPE_CONFIG,
    alerts,
    dashboard_queries,
)

from harness.tools import run_tool

# A built tool, like the other e2e tests' binaries (`make tools` builds it before pytest).
pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent
LOADED = f"SUCCESS: {len(alerts())} rules found"


@pytest.fixture(scope="module")
def promtool() -> str:
    return str(Path(run_tool("prometheus/build.sh")) / "promtool")


def _promtool(promtool: str, *args: str, cwd: Path | None = None) -> str:
    proc = subprocess.run([promtool, *args], capture_output=True, text=True, check=False,
                          timeout=120, cwd=cwd)
    assert proc.returncode == 0, f"promtool {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def test_the_rules_file_and_the_prometheusrule_pass_check_rules(
    promtool: str, tmp_path: Path
) -> None:
    out = _promtool(promtool, "check", "rules", str(RULES))
    assert LOADED in out, out
    spec = tmp_path / "prometheusrule-spec.yaml"
    spec.write_text(yaml.safe_dump(yaml.safe_load(PROMETHEUS_RULE.read_text())["spec"]))
    assert LOADED in _promtool(promtool, "check", "rules", str(spec))


def test_the_plain_scrape_config_passes_check_config(promtool: str, tmp_path: Path) -> None:
    _promtool(promtool, "check", "config", "--syntax-only", str(SCRAPE_CONFIG))
    # In full (the files it names read, its rule file loaded), with the certificates and
    # tokens a Prometheus pod would have mounted given as files of this test.
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    mounted = {job["tls_config"]["ca_file"] for job in config["scrape_configs"]}
    tokens = {job["authorization"]["credentials_file"] for job in config["scrape_configs"]}
    certificate, token = tmp_path / "ca.crt", tmp_path / "token"
    certificate.write_text(_self_signed(tmp_path))
    token.write_text("not-a-real-token\n")
    text = SCRAPE_CONFIG.read_text()
    for path, here in [*((m, certificate) for m in mounted), *((t, token) for t in tokens)]:
        text = text.replace(path, str(here))
    (tmp_path / "prometheus.yml").write_text(text)
    (tmp_path / RULES.name).write_text(RULES.read_text())
    out = _promtool(promtool, "check", "config", str(tmp_path / "prometheus.yml"))
    assert LOADED in out, out


def _self_signed(folder: Path) -> str:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=ckpt-agent", "-keyout", str(folder / "tls.key"),
         "-out", str(folder / "cert.pem")],
        check=True, capture_output=True, timeout=60,
    )
    return (folder / "cert.pem").read_text()


def test_every_dashboard_query_parses(promtool: str, tmp_path: Path) -> None:
    """Each query as a recording rule: `check rules` parses its PromQL."""
    queries = dashboard_queries()
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries)
    ]}]}
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    out = _promtool(promtool, "check", "rules", str(path))
    assert f"SUCCESS: {len(queries)} rules found" in out, out


def test_the_alerts_unit_tests_pass(promtool: str) -> None:
    out = _promtool(promtool, "test", "rules", "alerts_test.yaml", cwd=HERE)
    assert "SUCCESS" in out, out
    # The unit tests load the rules file of deploy/monitoring, not a copy.
    assert yaml.safe_load((HERE / "alerts_test.yaml").read_text())["rule_files"] == [
        str(Path("..") / ".." / RULES.relative_to(MONITORING.parents[1]))]
