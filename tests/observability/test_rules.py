"""The alert rules pass `promtool check rules`, every alert has a `promtool test rules` case
that makes it fire, each names a runbook section in docs/alerts.md, and the chart ships the
same rules as a PrometheusRule."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from observability.observability import REPO, RULE_TESTS, RULES, code_exports, metric_names, rules
from helm.test_chart import by_kind, render

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing: run .ci/setup (Debian's prometheus)")


def promtool(*args: str) -> str:
    proc = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_rules_pass_promtool_check():
    assert f"SUCCESS: {len(rules())} rules found" in promtool("check", "rules", str(RULES))


def test_promtool_unit_tests_pass():
    assert "SUCCESS" in promtool("test", "rules", str(RULE_TESTS))


def test_promtool_unit_tests_fail_when_an_alert_is_broken(tmp_path):
    # The unit tests can fail: with one threshold moved, promtool reports that alert.
    broken = RULES.read_text().replace(") >= 3", ") >= 30")
    assert broken != RULES.read_text()
    (tmp_path / "tuneloop-rules.yaml").write_text(broken)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "t.yaml").write_text(RULE_TESTS.read_text())
    proc = subprocess.run(["promtool", "test", "rules", str(tmp_path / "tests" / "t.yaml")], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "TuneloopFineTuneJobRetrying" in proc.stdout + proc.stderr


def test_every_alert_has_a_unit_test_that_makes_it_fire():
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {check["alertname"] for case in cases for check in case.get("alert_rule_test", []) if check.get("exp_alerts")}
    quiet = {check["alertname"] for case in cases for check in case.get("alert_rule_test", []) if not check.get("exp_alerts")}
    alerts = {rule["alert"] for rule in rules()}
    assert alerts - fired == set(), "alerts no test makes fire"
    assert alerts - quiet == set(), "alerts no test proves quiet"


def test_every_alert_has_a_severity_and_a_runbook_section():
    headings = {line.lstrip("#").strip().lower() for line in (REPO / "docs" / "alerts.md").read_text().splitlines() if line.startswith("## ")}
    for rule in rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["runbook"] == f"docs/alerts.md#{rule['alert'].lower()}"
        assert rule["alert"].lower() in headings, f"docs/alerts.md has no section for {rule['alert']}"


def test_rules_query_only_metrics_the_code_exports():
    exported = code_exports()
    for rule in rules():
        assert metric_names(rule["expr"]) <= exported, (rule["alert"], metric_names(rule["expr"]) - exported)


def test_chart_ships_the_same_rules_as_a_prometheusrule():
    assert not by_kind(render(), "PrometheusRule")  # off unless the cluster has the Prometheus Operator
    (rule,) = by_kind(render("prometheusRule.enabled=true", "prometheusRule.labels.release=kps"), "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    assert rule["metadata"]["labels"]["release"] == "kps" and rule["metadata"]["namespace"] == "tuneloop"
