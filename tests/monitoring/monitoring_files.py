"""deploy/monitoring/ read for the monitoring tests: the alert rules, the dashboard's queries,
the metric names a PromQL expression uses, and the names ckpt's services expose.

Run as a script, it writes deploy/monitoring/prometheusrule.yaml from ckpt.rules.yaml (the one
source of the alerts): `python tests/monitoring/monitoring_files.py`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
MONITORING = REPO_ROOT / "deploy" / "monitoring"
RULES = MONITORING / "ckpt.rules.yaml"
PROMETHEUS_RULE = MONITORING / "prometheusrule.yaml"
SCRAPE_CONFIG = MONITORING / "prometheus.yml"
DASHBOARD = MONITORING / "ckpt-dashboard.json"
README = REPO_ROOT / "README.md"
JOBS = ("ckpt-operator", "ckpt-agent", "ckpt-api")

_PROMETHEUS_RULE_HEAD = """\
# Generated from ckpt.rules.yaml by `python tests/monitoring/monitoring_files.py`: edit that
# file, then run this. ckpt's alerts for prometheus-operator (a Prometheus whose ruleSelector
# matches these labels picks them up); plain Prometheus loads ckpt.rules.yaml itself.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: ckpt
  labels:
    app.kubernetes.io/name: ckpt
spec:
"""


def render(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIR`, parsed: what `kubectl apply -k DIR` would send."""
    # Here, not at the top: run as a script, this file has only its own folder on sys.path.
    from harness.controlplane import kubectl_binary

    proc = subprocess.run([kubectl_binary(), "kustomize", str(directory)], capture_output=True,
                          text=True, check=False, timeout=60)
    assert proc.returncode == 0, f"kubectl kustomize {directory} failed:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def prometheus_rule_text(rules_text: str | None = None) -> str:
    """The PrometheusRule: ckpt.rules.yaml from its `groups:` line on, comments included,
    indented under `spec`."""
    text = RULES.read_text() if rules_text is None else rules_text
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("groups:"))
    body = "".join(f"  {line}\n" if line else "\n" for line in lines[start:])
    return _PROMETHEUS_RULE_HEAD + body


def rule_groups() -> list[dict[str, Any]]:
    return list(yaml.safe_load(RULES.read_text())["groups"])


def alerts() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]


# Grafana's interval variables, as the tests substitute them to run a query outside Grafana.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "30s", "$__range": "1h"}


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def dashboard_panels() -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # those of a collapsed row
    return [p for p in panels if p.get("type") != "row"]


def dashboard_queries(substitute: bool = True) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query, Grafana's variables replaced unless asked."""
    found = []
    for panel in dashboard_panels():
        for target in panel.get("targets", []):
            expr = str(target["expr"])
            if substitute:
                for name, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(name, value)
            found.append((str(panel["title"]), expr))
    return found


# Words of PromQL that are not metric names: operators and modifiers. Functions and
# aggregations are recognised by the parenthesis that follows them.
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
             "group_left", "group_right", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not its functions, labels or values)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors and subqueries
    text = re.sub(r"\boffset\s+-?\w+", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call is None and word.lower() not in _KEYWORDS:
            names.add(word)
    return names


def exposed_names(families: Iterable[Any]) -> set[str]:
    """The sample names prometheus_client's metric families are scraped as (a counter `x`
    as x_total and x_created, a histogram as x_bucket, x_sum, x_count, x_created)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
        "info": ("_info",),
    }
    names = set()
    for family in families:
        for suffix in suffixes.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def main() -> None:
    PROMETHEUS_RULE.write_text(prometheus_rule_text())
    print(f"wrote {PROMETHEUS_RULE.relative_to(REPO_ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
