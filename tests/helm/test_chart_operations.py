"""What an SRE runs the chart with: a values schema that covers every value, scraping (PodMonitor,
ServiceMonitor, prometheus.io annotations), a PodDisruptionBudget, probes, priorityClassName,
imagePullSecrets, NOTES; and every rendered built-in object valid for Kubernetes (kubernetes-validate)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from helm.test_chart import CHART, HELM, by_kind, helm, render
from tuneloop.operator.main import parse_args

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
EVERYTHING_ON = ("grafana.dashboard.enabled=true", "prometheusRule.enabled=true", "metrics.serviceMonitor.enabled=true",
                 "metrics.podMonitor.enabled=true", "priorityClassName=system-cluster-critical", "imagePullSecrets[0].name=regcred")
# Kinds a cluster gets from CRDs, not from Kubernetes itself: kubernetes-validate has no schema for them.
FROM_CRDS = {"kopf.dev/v1", "monitoring.coreos.com/v1"}


def leaves(values: dict, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for key, value in values.items():
        if isinstance(value, dict) and value:
            out += leaves(value, prefix + (key,))
        else:
            out.append(prefix + (key,))
    return out


def schema_at(path: tuple[str, ...]) -> dict | None:
    node = SCHEMA
    for key in path:
        if node.get("additionalProperties") is True or isinstance(node.get("additionalProperties"), dict):
            return node  # a pass-through object (probe, affinity, label map): its inside is Kubernetes'
        node = node.get("properties", {}).get(key)
        if node is None:
            return None
    return node


def test_schema_describes_every_value():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [".".join(p) for p in leaves(values) if schema_at(p) is None]
    assert not missing, f"values.yaml keys the schema does not describe: {missing}"
    undescribed = [".".join(p) for p in leaves(values) if "description" not in (schema_at(p) or {})]
    assert not undescribed, undescribed


@pytest.mark.parametrize("setting, words", [
    ("replicaCont=2", "replicaCont"),  # a typo fails instead of passing silently
    ("metrics.port=0", "port"), ("image.pullPolicy=Sometimes", "pullPolicy"),
    ("metrics.podMonitor.interval=soon", "interval"), ("watchNamespaces[0]=ML_Team", "watchNamespaces"),
])
def test_schema_refuses_bad_values_and_names_them(setting, words):
    proc = subprocess.run([HELM, "template", "tl", str(CHART), "--kube-version", "1.29.0", "--set", setting],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and words in proc.stderr, proc.stderr


def test_lint_strict_with_every_option_on():
    helm("lint", str(CHART), "--strict", *[a for v in EVERYTHING_ON for a in ("--set", v)])


def test_every_built_in_object_is_valid_kubernetes():
    docs = render(*EVERYTHING_ON) + render("watchNamespaces={ml-a,ml-b}", "replicaCount=1")
    checked = set()
    for doc in docs:
        if doc["apiVersion"] in FROM_CRDS:
            continue
        # 1.28: the CRDs' CEL rules use `fieldPath`, new in Kubernetes 1.28, so they do not
        # validate on 1.27 although Chart.yaml says >=1.27 (kubeVersion is issue 9's to raise).
        for version in ("1.28.0", "1.29.0"):
            kubernetes_validate.validate(doc, version, strict=True)
        checked.add(doc["kind"])
    assert {"Deployment", "Service", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
            "ConfigMap", "PodDisruptionBudget", "CustomResourceDefinition"} <= checked


def test_validation_catches_a_broken_object():
    (deployment,) = by_kind(render(), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eighty"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.29.0", strict=True)


def test_operator_pods_are_annotated_prioritised_and_pull_with_secrets():
    (deployment,) = by_kind(render(*EVERYTHING_ON), "Deployment")
    template = deployment["spec"]["template"]
    (container,) = template["spec"]["containers"]
    port = parse_args(container["args"]).metrics_port
    assert template["metadata"]["annotations"] == {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
                                                   "prometheus.io/path": "/metrics"}
    assert template["spec"]["priorityClassName"] == "system-cluster-critical"
    assert template["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    (plain,) = by_kind(render("metrics.annotations=false"), "Deployment")
    assert "prometheus.io/scrape" not in (plain["spec"]["template"]["metadata"].get("annotations") or {})


def test_pod_disruption_budget_keeps_one_replica_only_with_two():
    (pdb,) = by_kind(render(), "PodDisruptionBudget")
    (deployment,) = by_kind(render(), "Deployment")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert not by_kind(render("replicaCount=1"), "PodDisruptionBudget")  # would block every drain


def test_pod_monitor_scrapes_rank_zero_of_training_pods_with_their_labels():
    assert not by_kind(render(), "PodMonitor") and not by_kind(render(), "ServiceMonitor")
    (monitor,) = by_kind(render(*EVERYTHING_ON), "PodMonitor")
    assert monitor["spec"]["selector"]["matchExpressions"] == [{"key": "tuneloop.dev/finetunejob", "operator": "Exists"}]
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and endpoint["honorLabels"] is True
    (keep,) = endpoint["relabelings"]
    # Prometheus anchors relabel regexes: index 0 and no index (single node) stay, others go.
    assert [bool(re.fullmatch(keep["regex"], index)) for index in ("0", "", "1", "10")] == [True, True, False, False]
    (scoped,) = by_kind(render("metrics.podMonitor.enabled=true", "watchNamespaces={ml-a,ml-b}"), "PodMonitor")
    assert scoped["spec"]["namespaceSelector"] == {"matchNames": ["ml-a", "ml-b"]}


def test_service_monitor_keeps_the_operator_labels():
    (monitor,) = by_kind(render(*EVERYTHING_ON), "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True


def test_training_pods_name_the_port_the_pod_monitor_scrapes():
    from tuneloop.api.finetunejob import FineTuneJobSpec
    from tuneloop.operator.builders import Owner, build_trainer_job

    spec = FineTuneJobSpec.from_dict({"task": "causal-lm-sft", "model": {"source": "s3://m/x"}, "dataset": {"train": "s3://d/t.jsonl"},
                                      "output": {"uri": "s3://o/run"}})
    template = build_trainer_job(Owner("ft", "ml", "u"), spec)["spec"]["template"]
    (endpoint,) = by_kind(render(*EVERYTHING_ON), "PodMonitor")[0]["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in [p["name"] for p in template["spec"]["containers"][0]["ports"]]
    assert "tuneloop.dev/finetunejob" in template["metadata"]["labels"]


def notes(tmp_path: Path, *values: str) -> str:
    """NOTES.txt as `helm install` prints it. `helm template` skips NOTES, and `install --dry-run`
    wants a cluster of the chart's kubeVersion; so render it as a template of a copy of the chart."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart, symlinks=False)
    text = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "notes-as-template.yaml").write_text(
        '{{- define "notes-under-test" }}' + text + '{{ end }}\nnotes: {{ include "notes-under-test" . | toJson }}\n')
    out = helm("template", "tl", str(chart), "-n", "tuneloop", "--kube-version", "1.29.0",
               "--show-only", "templates/notes-as-template.yaml", *[a for v in values for a in ("--set", v)])
    return yaml.safe_load(out)["notes"]


def test_notes_say_what_to_do_next(tmp_path: Path):
    text = notes(tmp_path, "watchNamespaces={ml-a}")
    assert "the namespaces ml-a" in text and "kubectl apply -f examples/" in text
    assert "grafana.dashboard.enabled=true" in text and "docs/alerts.md" in text and "docs/argocd.md" in text
    enabled = notes(tmp_path / "on", *EVERYTHING_ON)
    assert "ConfigMap tl-tuneloop-dashboard" in enabled and "PrometheusRule tl-tuneloop" in enabled
    assert "every namespace" in enabled


def test_promotion_targets_of_other_kinds_get_rbac_from_values(tmp_path: Path):
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"promotionTargetRules": [
        {"apiGroups": ["serving.kserve.io"], "resources": ["inferenceservices"], "verbs": ["get", "patch"]}]}))
    out = helm("template", "tl", str(CHART), "--kube-version", "1.29.0", "-f", str(values))
    rules = [rule for doc in yaml.safe_load_all(out) if doc and doc["kind"] == "ClusterRole" for rule in doc["rules"]]
    assert {"apiGroups": ["serving.kserve.io"], "resources": ["inferenceservices"], "verbs": ["get", "patch"]} in rules
    values.write_text(yaml.safe_dump({"promotionTargetRules": [{"apiGroups": ["x"], "resources": ["y"]}]}))  # no verbs
    proc = subprocess.run([HELM, "template", "tl", str(CHART), "--kube-version", "1.29.0", "-f", str(values)], capture_output=True, text=True)
    assert proc.returncode != 0 and "verbs" in proc.stderr
