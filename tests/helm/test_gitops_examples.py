"""The examples as GitOps uses them: a kustomize base (and an overlay) that builds into valid
Tuneloop manifests, and Argo CD Applications that point at real paths with values the chart
accepts."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from helm.test_chart import CHART, REPO, by_kind, helm
from tuneloop.api.validate import validate_manifest

KUBECTL = shutil.which("kubectl") or str(REPO / ".tools" / "bin" / "kubectl")  # .ci/setup puts it there
EXAMPLES = REPO / "examples"


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML speaks YAML 1.1, where `2e-05` (no dot) is a string; kustomize (Go, YAML 1.2)
    writes `2.0e-5` back that way, and the API server reads it as the number it is."""


Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?$"), list("-+0123456789."))


def kustomize(path: Path) -> list[dict]:
    if not Path(KUBECTL).exists():
        pytest.fail("kubectl is missing: run .ci/setup (it fetches kubectl into .tools/bin)")
    proc = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.load_all(proc.stdout, Loader=Yaml12Loader) if d]


def tuneloop_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict) and str(d.get("apiVersion", "")).startswith("tuneloop.dev/")]


def test_examples_build_with_kustomize_into_every_example_and_stay_valid():
    built = kustomize(EXAMPLES)
    expected = [d for path in sorted(EXAMPLES.glob("*.yaml")) for d in tuneloop_docs(path)]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in built) == sorted((d["kind"], d["metadata"]["name"]) for d in expected), \
        "every manifest in examples/ belongs in examples/kustomization.yaml"
    for doc in built:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "tuneloop-examples"
        assert validate_manifest(doc).problems == [], doc["metadata"]["name"]


def test_production_overlay_changes_namespace_and_batch_size_only():
    built = {(d["kind"], d["metadata"]["name"]): d for d in kustomize(REPO / "deploy" / "overlays" / "production")}
    base = {(d["kind"], d["metadata"]["name"]): d for d in kustomize(EXAMPLES)}
    assert set(built) == set(base)
    for key, doc in built.items():
        assert doc["metadata"]["namespace"] == "ml-production"
        assert validate_manifest(doc).problems == [], key
    assert built[("FineTuneJob", "ticket-router")]["spec"]["training"]["batchSize"] == 64
    assert base[("FineTuneJob", "ticket-router")]["spec"]["training"]["batchSize"] != 64


def applications() -> dict[str, dict]:
    return {path.stem: yaml.safe_load(path.read_text()) for path in (EXAMPLES / "argocd").glob("*.yaml")}


def test_argocd_applications_point_at_real_paths():
    apps = applications()
    assert set(apps) == {"tuneloop-operator", "ml-training"}
    for name, app in apps.items():
        assert (app["apiVersion"], app["kind"], app["metadata"]["namespace"]) == ("argoproj.io/v1alpha1", "Application", "argocd")
        source = (REPO / app["spec"]["source"]["path"]).resolve()
        assert source.is_dir(), (name, source)
    assert (REPO / apps["tuneloop-operator"]["spec"]["source"]["path"]).resolve() == CHART.resolve()
    assert (REPO / apps["ml-training"]["spec"]["source"]["path"] / "kustomization.yaml").exists()
    assert "ServerSideApply=true" in apps["tuneloop-operator"]["spec"]["syncPolicy"]["syncOptions"]


def test_the_chart_application_values_pass_the_schema_and_switch_observability_on(tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text(applications()["tuneloop-operator"]["spec"]["source"]["helm"]["values"])
    out = helm("template", "tuneloop", str(CHART), "-n", "tuneloop", "--kube-version", "1.29.0", "-f", str(values))
    docs = [d for d in yaml.safe_load_all(out) if d]
    for kind in ("PrometheusRule", "ServiceMonitor", "PodMonitor", "ConfigMap"):
        (doc,) = by_kind(docs, kind)
        if kind != "ConfigMap":
            assert doc["metadata"]["labels"]["release"] == "kube-prometheus-stack", kind
