"""The Prometheus alert rules and the Grafana dashboard in ``deploy/``: valid, and about metrics that exist.

Validated here:
- ``deploy/prometheus/alerts.yml`` passes ``promtool check rules`` (YAML structure, PromQL syntax, templates) and
  the rule unit tests of ``alerts_test.yml`` under ``promtool test rules`` (each alert fires when and only when it
  should, with the labels and annotations given); every ``xdplb_*`` name in an expression is a series of the
  golden ``/metrics`` output.
- ``deploy/grafana/xdplb.json``: the dashboard model's structure as Grafana (schemaVersion 39) reads it: uid,
  title, schemaVersion, templating variables (a Prometheus datasource variable, query variables), panels with
  unique ids, a known type, a grid position inside the 24-column grid and not overlapping another panel, and
  (except rows) the datasource variable and targets with unique refIds and an ``expr``; every variable an expr
  uses is defined; every expr is valid PromQL (``promtool check rules`` on the exprs, with the variables replaced)
  and names only series of the golden ``/metrics`` output.
There is no Grafana here to load the dashboard into, so its rendering is not checked.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "xdplb.json"
GOLDEN = Path(__file__).with_name("golden") / "metrics.txt"
PANEL_TYPES = {"row", "stat", "timeseries", "state-timeline", "table", "gauge", "bargauge", "text"}


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true and promtool is missing (Debian package `prometheus`)")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return path


def _run(*args: str, cwd: Path) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _golden_series() -> set[str]:
    return {sample.name for family in text_string_to_metric_families(GOLDEN.read_text()) for sample in family.samples}


def _names(expr: str) -> set[str]:
    return set(re.findall(r"\bxdplb_[a-z0-9_]+\b", expr))


def _rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_alert_rules_pass_promtool_check() -> None:
    out = _run(_promtool(), "check", "rules", str(RULES), cwd=RULES.parent)
    assert f"SUCCESS: {len(_rules())} rules found" in out


def test_alert_rules_fire_as_their_unit_tests_say() -> None:
    out = _run(_promtool(), "test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert "SUCCESS" in out


def test_alerts_cover_the_required_conditions_over_existing_metrics() -> None:
    rules = {rule["alert"]: rule for rule in _rules()}
    assert set(rules) >= {
        "XdplbVipWithdrawn",
        "XdplbServiceNoBackends",
        "XdplbBgpSessionDown",
        "XdplbHighDropRate",
        "XdplbConfigReloadFailing",
        "XdplbFlowTableEvictingActiveFlows",
    }
    assert rules["XdplbBgpSessionDown"]["for"] == "1m"
    series = _golden_series()
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert {"summary", "description"} <= rule["annotations"].keys(), name
        assert _names(rule["expr"]) and _names(rule["expr"]) <= series, f"{name}: {_names(rule['expr']) - series}"


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _targets(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_dashboard_structure() -> None:
    dashboard = _dashboard()
    assert dashboard["schemaVersion"] == 39 and dashboard["uid"] == "xdplb" and dashboard["title"]
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    ids: set[int] = set()
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        title = panel["title"]
        assert panel["type"] in PANEL_TYPES, title
        assert panel["id"] not in ids, f"duplicate id {panel['id']}"
        ids.add(panel["id"])
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in "xywh") and grid["w"] > 0 and grid["h"] > 0, title
        assert grid["x"] + grid["w"] <= 24, f"{title} is wider than the grid"
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{title} overlaps {cells[(x, y)]}"
                cells[(x, y)] = title
        if panel["type"] == "row":
            assert panel["panels"] == [] and panel["gridPos"]["w"] == 24
            continue
        assert panel["datasource"] == datasource, title
        assert panel["targets"], title
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), title
        for target in panel["targets"]:
            assert target["datasource"] == datasource and target["expr"].strip(), title
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == datasource
            assert _names(variable["definition"]) <= _golden_series()


def test_dashboard_exprs_name_existing_series_and_defined_variables() -> None:
    dashboard = _dashboard()
    defined = {variable["name"] for variable in dashboard["templating"]["list"]} | {"__rate_interval", "__interval"}
    series = _golden_series()
    targets = _targets(dashboard)
    assert len(targets) >= 20
    used: set[str] = set()
    for title, expr in targets:
        assert set(re.findall(r"\$(\w+)", expr)) <= defined, title
        assert _names(expr), f"{title}: no xdplb metric"
        assert _names(expr) <= series, f"{title}: {_names(expr) - series} not in the golden /metrics"
        used |= _names(expr)
    # the headline series all appear somewhere
    assert used >= {
        "xdplb_vip_announced",
        "xdplb_bgp_session_up",
        "xdplb_backend_up",
        "xdplb_service_packets_total",
        "xdplb_dropped_packets_total",
        "xdplb_healthcheck_duration_seconds_bucket",
    }


def test_dashboard_exprs_are_valid_promql(tmp_path: Path) -> None:
    promtool = _promtool()
    rules = []
    for index, (_, expr) in enumerate(_targets(_dashboard())):
        concrete = expr.replace("$__rate_interval", "5m").replace("$instance", ".*").replace("$service", ".*")
        rules.append({"record": f"dashboard:expr_{index}", "expr": concrete})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = _run(promtool, "check", "rules", str(path), cwd=tmp_path)
    assert f"SUCCESS: {len(rules)} rules found" in out
