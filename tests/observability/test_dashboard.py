"""The Grafana dashboard is well-formed, queries only metrics the code exports, and the chart
ships it unchanged. (tests/e2e/test_observability_live.py runs every query on a real
Prometheus scraping a real run.)"""

from __future__ import annotations

import json

from helm.test_chart import by_kind, render
from observability.observability import code_exports, dashboard, dashboard_queries, metric_names, panels, variable_queries


def test_every_panel_queries_only_metrics_the_code_exports():
    exported = code_exports()
    unknown = {(title, name) for title, expr in dashboard_queries() for name in metric_names(expr) - exported}
    assert not unknown, f"panels query metrics no registry exports: {sorted(unknown)}"
    for _, query in variable_queries():
        assert metric_names(query) <= exported


def test_the_export_check_catches_a_made_up_metric():
    assert "tuneloop_trainer_train_loss" in code_exports()
    assert "tuneloop_operator_reconciles_total" in code_exports() and "tuneloop_operator_reconciles" not in code_exports()
    # The policy controller's metrics live in the operator's registry only once policy/metrics.py is imported.
    assert {"tuneloop_policy_retrains_total", "tuneloop_policy_condition"} <= code_exports()
    assert metric_names("tuneloop_policy_retrains") - code_exports() == {"tuneloop_policy_retrains"}
    assert metric_names('rate(tuneloop_trainer_nope_total[5m]) / tuneloop_trainer_step') - code_exports() == {"tuneloop_trainer_nope_total"}


def test_panels_have_unique_ids_a_datasource_variable_and_the_namespace_job_and_policy_filters():
    dash = dashboard()
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids))
    assert [v["name"] for v in dash["templating"]["list"]] == ["datasource", "namespace", "job", "policy"]
    for panel in panels(dash):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and all(t["refId"] and t["expr"] for t in panel["targets"]), panel["title"]
        for target in panel["targets"]:
            per_job = any(n.startswith("tuneloop_trainer_") or "finetunejob_" in n for n in metric_names(target["expr"]))
            if per_job:  # the variables filter every per-job query
                assert '"$namespace"' in target["expr"] and '"$job"' in target["expr"], (panel["title"], target["expr"])
            if any(n.startswith("tuneloop_policy_") for n in metric_names(target["expr"])):  # and every per-policy one
                assert '"$namespace"' in target["expr"] and '"$policy"' in target["expr"], (panel["title"], target["expr"])


def test_dashboard_covers_what_sres_asked_for():
    titles = {p["title"] for p in panels()}
    assert {"FineTuneJobs by phase", "Training loss", "Eval loss", "Eval metric", "Tokens per second", "Samples per second",
            "MFU (GPU only)", "GPU memory (GPU only)", "Checkpoint duration", "Checkpoint size", "Rows dropped by reason",
            "Reconciles per second", "Reconcile errors per second", "Reconcile latency"} <= titles
    assert {"Watched value and threshold", "Retrains by trigger", "Promotions and rejections", "Champion revision",
            "Time since last successful retrain", "Policy conditions"} <= titles


def test_policy_panels_cover_every_policy_metric():
    exported = {n for n in code_exports() if n.startswith("tuneloop_policy_")}
    queried = {n for _, expr in dashboard_queries() for n in metric_names(expr)}
    assert exported - queried == set(), "policy metrics no panel shows"


def test_chart_ships_the_dashboard_with_the_sidecar_label():
    assert not by_kind(render(), "ConfigMap")
    (config_map,) = by_kind(render("grafana.dashboard.enabled=true", "grafana.dashboard.namespace=monitoring",
                                   "grafana.dashboard.annotations.grafana_folder=ML"), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "ML"}
    assert json.loads(config_map["data"]["tuneloop.json"]) == dashboard()


def test_docs_list_every_panel():
    from observability.observability import REPO

    text = (REPO / "docs" / "dashboard.md").read_text()
    missing = [p["title"] for p in panels() if p["type"] != "row" and f"| {p['title']} |" not in text]
    assert not missing, f"docs/dashboard.md lacks panels: {missing}"
