"""The Helm chart renders, lints, ships the CRDs from crds/ unchanged, and runs the operator
with arguments it accepts and the rights it needs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tuneloop.operator.main import PEERING_NAME, parse_args

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "tuneloop"
HELM = shutil.which("helm") or str(REPO / ".tools" / "bin" / "helm")  # .ci/setup puts it there


def helm(*args: str) -> str:
    if not Path(HELM).exists():
        pytest.fail("helm is missing: run .ci/setup (it fetches helm into .tools/bin)")
    proc = subprocess.run([HELM, *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def render(*values: str) -> list[dict]:
    sets = [a for v in values for a in ("--set", v)]
    out = helm("template", "tl", str(CHART), "-n", "tuneloop", "--include-crds", "--kube-version", "1.29.0", *sets)
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def test_chart_lints():
    helm("lint", str(CHART), "--strict")


def test_chart_ships_the_crds_unchanged():
    crds = {d["metadata"]["name"]: d for d in by_kind(render(), "CustomResourceDefinition")}
    for path in (REPO / "crds").glob("*.yaml"):
        source = yaml.safe_load(path.read_text())
        assert crds[source["metadata"]["name"]] == source
    assert "kopfpeerings.kopf.dev" in crds and "clusterkopfpeerings.kopf.dev" in crds


def test_deployment_is_restricted_and_its_args_parse():
    (deployment,) = by_kind(render(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    args = parse_args(container["args"])
    assert args.all_namespaces and not args.standalone
    assert args.liveness == "http://0.0.0.0:8080/healthz" and container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert args.metrics_port == 9401 and args.trainer_image.startswith("ghcr.io/tuneloop/trainer")
    assert deployment["spec"]["replicas"] == 2


def test_single_namespace_and_single_replica():
    docs = render("watchNamespaces={ml-a,ml-b}", "replicaCount=1")
    (container,) = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"]
    args = parse_args(container["args"])
    assert args.namespace == ["ml-a", "ml-b"] and args.standalone
    assert sorted(r["metadata"]["namespace"] for r in by_kind(docs, "Role")) == ["ml-a", "ml-b"]
    assert len(by_kind(docs, "RoleBinding")) == 2
    assert not by_kind(docs, "KopfPeering") and not by_kind(docs, "ClusterKopfPeering")  # one replica: no peering


def test_replicas_meet_in_the_peering_object_the_operator_uses():
    (peering,) = by_kind(render(), "ClusterKopfPeering")
    assert peering["metadata"]["name"] == PEERING_NAME
    namespaced = by_kind(render("watchNamespaces={ml-a,ml-b}"), "KopfPeering")
    assert sorted((p["metadata"]["namespace"], p["metadata"]["name"]) for p in namespaced) == [("ml-a", PEERING_NAME), ("ml-b", PEERING_NAME)]


def allowed(rules: list[dict], group: str, resource: str, verb: str) -> bool:
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in rules)


@pytest.mark.parametrize("group, resource, verb", [
    ("tuneloop.dev", "finetunejobs", "watch"), ("tuneloop.dev", "finetunejobs", "patch"),
    ("tuneloop.dev", "finetunejobs/status", "patch"), ("tuneloop.dev", "maintenancepolicies", "watch"),
    ("batch", "jobs", "create"), ("batch", "jobs", "patch"), ("batch", "jobs", "delete"), ("", "pods", "watch"),
    ("", "configmaps", "create"), ("", "services", "create"), ("", "events", "create"),
    ("kopf.dev", "clusterkopfpeerings", "patch"), ("", "namespaces", "watch"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
])
def test_rbac_grants_what_the_operator_does(group, resource, verb):
    rules = [rule for role in by_kind(render(), "ClusterRole") for rule in role["rules"]]
    assert allowed(rules, group, resource, verb)
    assert not allowed(rules, "", "secrets", "get")  # credentials reach pods by reference only


@pytest.mark.parametrize("group, resource, verb", [
    # The MaintenancePolicy controller: revisions, its status, evaluation Jobs and their config, ConfigMap targets.
    ("tuneloop.dev", "finetunejobs", "create"), ("tuneloop.dev", "finetunejobs", "delete"),
    ("tuneloop.dev", "maintenancepolicies/status", "patch"), ("batch", "jobs", "delete"),
    ("", "configmaps", "patch"), ("", "configmaps", "delete"),
])
def test_rbac_grants_what_the_policy_controller_does(group, resource, verb):
    rules = [rule for role in by_kind(render(), "ClusterRole") for rule in role["rules"]]
    assert allowed(rules, group, resource, verb)


def test_promotion_targets_of_other_kinds_are_granted_by_a_value_never_a_wildcard():
    rules = [rule for role in by_kind(render(), "ClusterRole") for rule in role["rules"]]
    assert not allowed(rules, "serving.kserve.io", "inferenceservices", "patch")
    granted = render("promotionTargetRules[0].apiGroups={serving.kserve.io}",
                     "promotionTargetRules[0].resources={inferenceservices}", "promotionTargetRules[0].verbs={get,patch}")
    rules = [rule for role in by_kind(granted, "ClusterRole") for rule in role["rules"]]
    assert allowed(rules, "serving.kserve.io", "inferenceservices", "patch")
    for rule in rules:
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"], rule
