"""The policy's pure builders and readers: revision FineTuneJobs, evaluation Jobs, target patches,
evaluation reports and Prometheus answers."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from typing import Any

import pytest
import yaml

from tuneloop.api.policy import MaintenancePolicySpec
from tuneloop.api.validate import validate_manifest
from tuneloop.operator.builders import Owner
from tuneloop.operator.policy.builders import build_evaluation, build_revision, nested, target_patch
from tuneloop.operator.policy.decide import EvaluationRequest
from tuneloop.operator.policy.observe import evaluation_run, parse_query_result, revision_run
from support.manifests import maintenancepolicy

OWNER = Owner("router", "ml", "uid-1")
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)


def spec(**changes: Any) -> MaintenancePolicySpec:
    doc = copy.deepcopy(maintenancepolicy()["spec"])
    doc["jobTemplate"]["metadata"] = {"labels": {"team": "support"}, "annotations": {"note": "x"}}
    doc["jobTemplate"]["spec"]["storage"] = {"endpoint": "http://minio:9000", "credentialsSecret": {"name": "s3"}}
    doc["jobTemplate"]["spec"]["resources"] = {"nodes": 2, "gpusPerNode": 0}
    doc.update(changes)
    return MaintenancePolicySpec.from_dict(doc)


def test_revision_is_an_owned_labelled_finetunejob_with_its_own_output() -> None:
    ftj = build_revision(OWNER, spec(), 3, "router-r3")
    meta = ftj["metadata"]
    assert meta["name"] == "router-r3" and meta["namespace"] == "ml"
    assert meta["labels"]["team"] == "support" and meta["annotations"] == {"note": "x"}
    assert meta["labels"]["tuneloop.dev/maintenancepolicy"] == "router" and meta["labels"]["tuneloop.dev/revision"] == "r3"
    assert meta["ownerReferences"] == [{"apiVersion": "tuneloop.dev/v1alpha1", "kind": "MaintenancePolicy", "name": "router",
                                        "uid": "uid-1", "controller": True, "blockOwnerDeletion": True}]
    assert ftj["spec"]["output"]["uri"] == "s3://models/out/demo/r3/"
    assert validate_manifest(ftj).problems == []  # what we create passes the FineTuneJob's own checks


def test_a_retrain_that_searches_starts_from_the_champions_best_params() -> None:
    """Issue 14: the first trial of every retrain's search is the champion's own settings."""
    template = copy.deepcopy(maintenancepolicy()["spec"]["jobTemplate"])
    template["spec"]["training"] = {**template["spec"].get("training", {}), "evalEverySteps": 10}
    template["spec"]["tuning"] = {"objective": {"metric": "eval_loss"}, "trials": 4, "parallelism": 2,
                                  "searchSpace": [{"path": "training.learningRate", "low": 1e-5, "high": 1e-3, "log": True}]}
    searching = spec(jobTemplate=template)
    champion = {"training.learningRate": 2e-4}
    ftj = build_revision(OWNER, searching, 4, "router-r4", champion)
    assert json.loads(ftj["metadata"]["annotations"]["tuneloop.dev/enqueue-params"]) == champion
    # Each revision's search its own seed: a retrain must not propose the previous one's trials again.
    assert ftj["spec"]["tuning"]["seed"] == 4 and build_revision(OWNER, searching, 5, "router-r5")["spec"]["tuning"]["seed"] == 5
    assert validate_manifest(ftj).problems == []
    assert "annotations" not in build_revision(OWNER, searching, 4, "router-r4")["metadata"]
    # A template without a search ignores the champion's params.
    assert "tuneloop.dev/enqueue-params" not in build_revision(OWNER, spec(), 4, "router-r4", champion)["metadata"]["annotations"]
    assert revision_run({"status": {"tuning": {"bestParams": champion}}}).best_params == champion
    assert revision_run({"status": {}}).best_params is None


def test_gate_job_scores_both_models_with_the_trainer_image_and_secret_references_only() -> None:
    request = EvaluationRequest("router-r3-gate", "gate", "r3", ("s3://models/out/demo/r3/final/", "s3://prod/v7/"))
    config_map, job = build_evaluation(OWNER, spec(), request)
    assert config_map["metadata"]["name"] == "router-r3-gate-config"
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    assert config["resources"]["nodes"] == 1  # one process, whatever the template trains on
    assert config["output"]["uri"] == "s3://models/out/demo/r3/"
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == [
        "tuneloop-train", "--config", "/etc/tuneloop/config.yaml", "--evaluate-only",
        "--model", "s3://models/out/demo/r3/final/", "--model", "s3://prod/v7/", "--data", "s3://data/fresh/",
        "--results", "s3://models/out/demo/r3/evaluations/router-r3-gate.json"]
    assert container["image"] == "ghcr.io/tuneloop/trainer:0.1.0"
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "s3", "key": "AWS_SECRET_ACCESS_KEY"}
    assert env["TUNELOOP_METRICS_PORT"]["value"] == "0"
    assert pod["volumes"][0]["configMap"]["name"] == "router-r3-gate-config"
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["tuneloop.dev/maintenancepolicy"] == "router" and "tuneloop.dev/finetunejob" not in labels
    assert job["metadata"]["ownerReferences"][0]["kind"] == "MaintenancePolicy"
    assert job["spec"]["backoffLimit"] == 1 and job["spec"]["activeDeadlineSeconds"] > 0


def test_without_an_evaluation_dataset_the_gate_uses_the_challengers_test_split() -> None:
    doc = copy.deepcopy(maintenancepolicy()["spec"])
    doc.pop("evaluation")
    doc["triggers"] = {}
    _, job = build_evaluation(OWNER, MaintenancePolicySpec.from_dict(doc), EvaluationRequest("g", "gate", "r1", ("m",)))
    assert "--data" not in job["spec"]["template"]["spec"]["containers"][0]["command"]


def test_data_check_job_lists_the_prefix_since_the_watermark() -> None:
    s = spec(triggers={"newData": {"uri": "s3://data/incoming/", "minObjects": 5}})
    _, job = build_evaluation(OWNER, s, EvaluationRequest("router-d1", "data", "data", since="2026-03-01T00:00:00Z"))
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][3:] == [
        "--new-data", "s3://data/incoming/", "--since", "2026-03-01T00:00:00Z"]


@pytest.mark.parametrize("target, expected", [
    ({"type": "Status"}, None),
    ({"type": "ConfigMap", "configMap": {"name": "serving", "key": "model"}},
     ("v1", "ConfigMap", "serving", {"data": {"model": "s3://m/"}})),
    ({"type": "ObjectField", "objectField": {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                                             "name": "router", "fieldPath": "spec.predictor.model.storageUri"}},
     ("serving.kserve.io/v1beta1", "InferenceService", "router", {"spec": {"predictor": {"model": {"storageUri": "s3://m/"}}}})),
])
def test_promotion_target_patch(target: dict, expected: Any) -> None:
    s = spec(promotion={"metric": "accuracy", "direction": "maximize", "target": target})
    found = target_patch(s, "s3://m/")
    assert (found if found is None else (found[0], found[1], found[2], found[4])) == expected
    assert nested("a.b", 1) == {"a": {"b": 1}}


# --- readers ------------------------------------------------------------------------------------------


def job(condition: str | None, completed: str = "2026-03-02T11:59:00Z") -> dict:
    conds = [{"type": condition, "status": "True", "reason": "BackoffLimitExceeded" if condition == "Failed" else "Done",
              "lastTransitionTime": completed}] if condition else []
    return {"metadata": {"name": "g", "uid": "j"}, "status": {"conditions": conds, "completionTime": completed}}


def pod(phase: str, message: str = "", code: int = 0) -> dict:
    state = {"terminated": {"exitCode": code, "message": message}} if phase in ("Succeeded", "Failed") else {"running": {}}
    return {"metadata": {"name": "g-abc", "creationTimestamp": "2026-03-02T11:58:00Z"},
            "status": {"phase": phase, "containerStatuses": [{"name": "trainer", "state": state}]}}


def test_evaluation_run_reads_the_report_from_the_termination_message() -> None:
    report = {"rows": 40, "models": [{"model": "m", "metrics": {"accuracy": 0.9}}]}
    run = evaluation_run(job("Complete"), [pod("Succeeded", json.dumps(report))], NOW)
    assert run.succeeded and run.report == report
    assert not evaluation_run(job(None), [pod("Running")], NOW).finished
    # Complete, but the pod's final state has not reached us yet: wait (briefly), then give up.
    assert not evaluation_run(job("Complete", "2026-03-02T11:59:55Z"), [pod("Running")], NOW).finished
    late = evaluation_run(job("Complete"), [pod("Running")], NOW)
    assert late.failed and "without a report" in late.message
    failed = evaluation_run(job("Failed"), [pod("Failed", "tuneloop-train: error: no label column", code=2)], NOW)
    assert failed.failed and "no label column" in failed.message


def test_revision_run_takes_the_final_model_from_status() -> None:
    run = revision_run({"status": {"phase": "Succeeded", "checkpoints": {"final": "s3://o/r1/final/"},
                                   "completionTime": "2026-03-02T11:00:00Z"}})
    assert (run.phase, run.model_uri, run.completed) == ("Succeeded", "s3://o/r1/final/", "2026-03-02T11:00:00Z")


@pytest.mark.parametrize("body, value, error", [
    ({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "0.73"]}]}}, 0.73, None),
    ({"status": "success", "data": {"resultType": "scalar", "result": [1, "2"]}}, 2.0, None),
    ({"status": "success", "data": {"resultType": "vector", "result": []}}, None, "no series"),
    ({"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, "1"]}, {"value": [1, "2"]}]}}, None, "2 series"),
    ({"status": "error", "errorType": "bad_data", "error": "parse error"}, None, "parse error"),
    ({"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, "NaN"]}]}}, None, "NaN"),
])
def test_prometheus_answers(body: dict, value: float | None, error: str | None) -> None:
    if error is None:
        assert parse_query_result(body) == value
    else:
        with pytest.raises(ValueError, match=error):
            parse_query_result(body)
