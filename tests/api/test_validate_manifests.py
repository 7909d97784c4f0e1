"""Every example is valid; each broken manifest is rejected at the right field path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from support.manifests import DELETE, finetunejob, maintenancepolicy, with_change
from tuneloop.api.validate import validate_manifest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example_documents():
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        for index, doc in enumerate(yaml.safe_load_all(path.read_text()), start=1):
            if isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith("tuneloop.dev/"):
                yield pytest.param(doc, id=f"{path.name}:{index}")


@pytest.mark.parametrize("doc", list(example_documents()))
def test_examples_are_valid(doc):
    result = validate_manifest(doc)
    assert result.problems == []


def test_examples_cover_every_kind_and_shape():
    docs = [p.values[0] for p in example_documents()]
    kinds = {d["kind"] for d in docs}
    assert kinds == {"FineTuneJob", "MaintenancePolicy"}
    jobs = [d["spec"] for d in docs if d["kind"] == "FineTuneJob"]
    assert {j["task"] for j in jobs} >= {"causal-lm-sft", "sequence-classification"}
    assert any(j.get("resources", {}).get("nodes", 1) > 1 and j["training"].get("method") == "lora" for j in jobs)
    assert any(j["training"].get("sharding") == "fsdp" for j in jobs)


def test_base_manifests_are_valid():
    assert validate_manifest(finetunejob()).problems == []
    assert validate_manifest(maintenancepolicy()).problems == []


FTJ = finetunejob()
SFT = finetunejob(task="causal-lm-sft")

# (manifest, expected field path). One broken thing each.
INVALID_FINETUNEJOBS = {
    # bad enums
    "task-enum": (with_change(FTJ, "spec.task", "summarization"), "spec.task"),
    "method-enum": (with_change(FTJ, "spec.training.method", "qlora"), "spec.training.method"),
    "precision-enum": (with_change(FTJ, "spec.training.precision", "int8"), "spec.training.precision"),
    "scheduler-enum": (with_change(FTJ, "spec.training.scheduler", "step"), "spec.training.scheduler"),
    "format-enum": (with_change(FTJ, "spec.dataset.format", "xml"), "spec.dataset.format"),
    "pull-policy-enum": (with_change(FTJ, "spec.imagePullPolicy", "Sometimes"), "spec.imagePullPolicy"),
    "trust-remote-code": (with_change(FTJ, "spec.model.trustRemoteCode", True), "spec.model.trustRemoteCode"),
    "early-stopping-metric-enum": (with_change(FTJ, "spec.training.earlyStopping", {"metric": "bleu"}), "spec.training.earlyStopping.metric"),
    # out-of-range numbers
    "batch-size-zero": (with_change(FTJ, "spec.training.batchSize", 0), "spec.training.batchSize"),
    "lr-zero": (with_change(FTJ, "spec.training.learningRate", 0), "spec.training.learningRate"),
    "lr-huge": (with_change(FTJ, "spec.training.learningRate", 5), "spec.training.learningRate"),
    "seq-length-insane": (with_change(FTJ, "spec.training.maxSeqLength", 10_000_000), "spec.training.maxSeqLength"),
    "nodes-zero": (with_change(FTJ, "spec.resources", {"nodes": 0}), "spec.resources.nodes"),
    "gpus-negative": (with_change(FTJ, "spec.resources", {"gpusPerNode": -1}), "spec.resources.gpusPerNode"),
    "split-too-large": (with_change(FTJ, "spec.dataset.split", {"validation": 0.9}), "spec.dataset.split.validation"),
    "backoff-negative": (with_change(FTJ, "spec.runPolicy", {"backoffLimit": -1}), "spec.runPolicy.backoffLimit"),
    "keep-last-zero": (with_change(FTJ, "spec.output.keepLast", 0), "spec.output.keepLast"),
    "lora-rank-zero": (with_change(with_change(FTJ, "spec.training.method", "lora"), "spec.training.lora", {"r": 0}), "spec.training.lora.r"),
    # missing required fields
    "missing-task": (with_change(FTJ, "spec.task", DELETE), "spec.task"),
    "missing-model-source": (with_change(FTJ, "spec.model", {"revision": "x"}), "spec.model.source"),
    "missing-output": (with_change(FTJ, "spec.output", DELETE), "spec.output"),
    "missing-train": (with_change(FTJ, "spec.dataset", {"format": "csv"}), "spec.dataset.train"),
    "missing-name": (with_change(FTJ, "metadata.name", DELETE), "metadata.name"),
    "missing-spec": (with_change(FTJ, "spec", DELETE), "spec"),
    # wrong types
    "batch-size-string": (with_change(FTJ, "spec.training.batchSize", "eight"), "spec.training.batchSize"),
    "epochs-string": (with_change(FTJ, "spec.training.epochs", "2"), "spec.training.epochs"),
    "node-selector-list": (with_change(FTJ, "spec.resources", {"nodeSelector": ["gpu"]}), "spec.resources.nodeSelector"),
    "packing-string": (with_change(SFT, "spec.training.packing", "yes"), "spec.training.packing"),
    "env-object": (with_change(FTJ, "spec.env", {"A": "b"}), "spec.env"),
    "model-string": (with_change(FTJ, "spec.model", "s3://models/base/minilm/"), "spec.model"),
    # unknown fields
    "snake-case-field": (with_change(FTJ, "spec.training.learning_rate", 1e-4), "spec.training.learning_rate"),
    "typo-field": (with_change(FTJ, "spec.modle", {"source": "x"}), "spec.modle"),
    # secrets by value
    "storage-access-key": (with_change(FTJ, "spec.storage", {"accessKey": "AKIAIOSFODNN7EXAMPLE"}), "spec.storage.accessKey"),
    "secret-value-in-ref": (with_change(FTJ, "spec.storage", {"credentialsSecret": {"name": "s3", "secretAccessKey": "wJalrXUt"}}), "spec.storage.credentialsSecret.secretAccessKey"),
    "secret-env-by-value": (with_change(FTJ, "spec.env", [{"name": "DB_PASSWORD", "value": "hunter2"}]), "spec.env[0].value"),
    "reserved-env-aws": (with_change(FTJ, "spec.env", [{"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]), "spec.env[0].name"),
    "reserved-env-torch": (with_change(FTJ, "spec.env", [{"name": "MASTER_ADDR", "value": "10.0.0.1"}]), "spec.env[0].name"),
    "reserved-env-prefix": (with_change(FTJ, "spec.env", [{"name": "TUNELOOP_METRICS_PORT", "value": "1"}]), "spec.env[0].name"),
    "secret-other-namespace": (with_change(FTJ, "spec.storage", {"credentialsSecret": {"name": "s3", "namespace": "kube-system"}}), "spec.storage.credentialsSecret.namespace"),
    "secret-key-ref-namespace": (with_change(FTJ, "spec.env", [{"name": "HF", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k", "namespace": "other"}}}]), "spec.env[0].valueFrom.secretKeyRef.namespace"),
    # malformed URIs
    "uri-http": (with_change(FTJ, "spec.model.source", "http://example.com/model"), "spec.model.source"),
    "uri-bad-bucket": (with_change(FTJ, "spec.model.source", "s3://Bad_Bucket/model"), "spec.model.source"),
    "uri-one-slash": (with_change(FTJ, "spec.output.uri", "s3:/models/x"), "spec.output.uri"),
    "uri-no-bucket": (with_change(FTJ, "spec.dataset.train", "s3://"), "spec.dataset.train"),
    "uri-gs": (with_change(FTJ, "spec.dataset.validation", "gs://bucket/val.csv"), "spec.dataset.validation"),
    "endpoint-no-scheme": (with_change(FTJ, "spec.storage", {"endpoint": "minio:9000"}), "spec.storage.endpoint"),
    # patterns
    "bad-name": (with_change(FTJ, "metadata.name", "Bad_Name"), "metadata.name"),
    "long-name": (with_change(FTJ, "metadata.name", "a" * 60), "metadata.name"),
    "env-name-pattern": (with_change(FTJ, "spec.env", [{"name": "1BAD", "value": "x"}]), "spec.env[0].name"),
    "memory-pattern": (with_change(FTJ, "spec.resources", {"memory": "lots"}), "spec.resources.memory"),
    "wrong-version": (with_change(FTJ, "apiVersion", "tuneloop.dev/v1"), "apiVersion"),
    # cross-field rules (CEL) and meaning-level checks
    "epochs-and-max-steps": (with_change(FTJ, "spec.training.maxSteps", 100), "spec.training.maxSteps"),
    "lora-with-full": (with_change(FTJ, "spec.training.lora", {"r": 8}), "spec.training.lora"),
    "packing-on-classification": (with_change(FTJ, "spec.training.packing", True), "spec.training.packing"),
    "packed-batching-on-classification": (with_change(FTJ, "spec.training.batching", "packed"), "spec.training.batching"),
    "batching-unknown": (with_change(FTJ, "spec.training.batching", "sorted"), "spec.training.batching"),
    "packing-contradicts-batching": (with_change(with_change(SFT, "spec.training.packing", True), "spec.training.batching", "length-grouped"), "spec.training.packing"),
    "batch-tokens-with-packing": (with_change(with_change(SFT, "spec.training.batching", "packed"), "spec.training.batchTokens", 4096), "spec.training.batchTokens"),
    "batch-tokens-too-small": (with_change(FTJ, "spec.training.batchTokens", 4), "spec.training.batchTokens"),
    "messages-on-classification": (with_change(FTJ, "spec.dataset.fields", {"messages": "chat"}), "spec.dataset.fields.messages"),
    "secret-and-irsa": (with_change(FTJ, "spec.storage", {"credentialsSecret": {"name": "s3"}, "serviceAccountName": "irsa"}), "spec.storage"),
    "env-value-and-from": (with_change(FTJ, "spec.env", [{"name": "X", "value": "1", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]), "spec.env[0]"),
    "max-below-min-length": (with_change(FTJ, "spec.dataset.cleaning", {"minLength": 10, "maxLength": 5}), "spec.dataset.cleaning.maxLength"),
    "early-stopping-wrong-task-metric": (with_change(with_change(SFT, "spec.training.earlyStopping", {"metric": "accuracy"}), "spec.training.evalEverySteps", 10), "spec.training.earlyStopping.metric"),
    "early-stopping-no-eval": (with_change(FTJ, "spec.training.earlyStopping", {"metric": "accuracy"}), "spec.training.evalEverySteps"),
    "fsdp-with-lora": (with_change(with_change(FTJ, "spec.training.method", "lora"), "spec.training.sharding", "fsdp"), "spec.training.sharding"),
    "fsdp-with-fp16": (with_change(with_change(FTJ, "spec.training.precision", "fp16"), "spec.training.sharding", "fsdp"), "spec.training.sharding"),
    "sharding-enum": (with_change(FTJ, "spec.training.sharding", "zero3"), "spec.training.sharding"),
    "split-leaves-nothing": (with_change(FTJ, "spec.dataset.split", {"validation": 0.5, "test": 0.5}), "spec.dataset.split"),
}


@pytest.mark.parametrize("doc, path", INVALID_FINETUNEJOBS.values(), ids=INVALID_FINETUNEJOBS.keys())
def test_invalid_finetunejob_is_rejected_at_its_field(doc, path):
    problems = validate_manifest(doc).problems
    assert path in [p.path for p in problems], problems
    assert all(p.message for p in problems)


MP = maintenancepolicy()
INVALID_POLICIES = {
    "direction-enum": (with_change(MP, "spec.promotion.direction", "up"), "spec.promotion.direction"),
    "configmap-target-without-configmap": (with_change(MP, "spec.promotion.target", {"type": "ConfigMap"}), "spec.promotion.target.configMap"),
    "prometheus-without-query": (with_change(MP, "spec.triggers.metric", {"source": "prometheus", "operator": "<", "threshold": 1}), "spec.triggers.metric"),
    "cooldown-words": (with_change(MP, "spec.guards", {"cooldown": "1 hour"}), "spec.guards.cooldown"),
    "cron-words": (with_change(MP, "spec.triggers.schedule", {"cron": "every day"}), "spec.triggers.schedule.cron"),
    "cron-out-of-range": (with_change(MP, "spec.evaluation.schedule", "0 25 * * *"), "spec.evaluation.schedule"),
    # The old regex passed these; croniter (the controller's reader) refuses them or never fires.
    "cron-zero-step": (with_change(MP, "spec.evaluation.schedule", "*/0 * * * *"), "spec.evaluation.schedule"),
    "cron-no-such-date": (with_change(MP, "spec.evaluation.schedule", "0 3 31 4 *"), "spec.evaluation.schedule"),
    "cron-six-fields": (with_change(MP, "spec.triggers.schedule", {"cron": "0 0 3 * * *"}), "spec.triggers.schedule.cron"),
    "template-task-enum": (with_change(MP, "spec.jobTemplate.spec.task", "chat"), "spec.jobTemplate.spec.task"),
    "template-bad-uri": (with_change(MP, "spec.jobTemplate.spec.model.source", "ftp://x/y"), "spec.jobTemplate.spec.model.source"),
    "metric-not-for-task": (with_change(with_change(MP, "spec.jobTemplate.spec.task", "regression"), "spec.evaluation.metric", "mse"), "spec.promotion.metric"),
    "new-data-without-threshold": (with_change(MP, "spec.triggers.newData", {"uri": "s3://data/new/"}), "spec.triggers.newData"),
    "evaluation-trigger-without-evaluation": (with_change(MP, "spec.evaluation", DELETE), "spec.triggers.metric"),
    "missing-promotion": (with_change(MP, "spec.promotion", DELETE), "spec.promotion"),
    "threshold-string": (with_change(MP, "spec.triggers.metric", {"operator": "<", "threshold": "high"}), "spec.triggers.metric.threshold"),
    "time-zone-typo": (with_change(MP, "spec.evaluation.timeZone", "Europe/Berln"), "spec.evaluation.timeZone"),
    "schedule-time-zone-typo": (with_change(MP, "spec.triggers.schedule", {"cron": "@daily", "timeZone": "CEST"}), "spec.triggers.schedule.timeZone"),
    "pinned-not-a-revision": (with_change(MP, "spec.pinnedRevision", "latest"), "spec.pinnedRevision"),
    "adopt-bad-uri": (with_change(MP, "spec.adoptModelURI", "gs://models/prod/"), "spec.adoptModelURI"),
}


@pytest.mark.parametrize("doc, path", INVALID_POLICIES.values(), ids=INVALID_POLICIES.keys())
def test_invalid_policy_is_rejected_at_its_field(doc, path):
    problems = validate_manifest(doc).problems
    assert path in [p.path for p in problems], problems


IMMUTABLE_CHANGES = {
    "task": (FTJ, "spec.task", "regression", "spec.task"),
    "model-source": (FTJ, "spec.model.source", "s3://models/base/other/", "spec.model"),
    "dataset": (FTJ, "spec.dataset.train", "s3://data/other.csv", "spec.dataset"),
    "output-uri": (FTJ, "spec.output.uri", "s3://models/elsewhere/", "spec.output.uri"),
    "learning-rate": (FTJ, "spec.training.learningRate", 1e-3, "spec.training"),
    "nodes": (FTJ, "spec.resources", {"nodes": 2}, "spec.resources"),
    "queue": (with_change(FTJ, "spec.runPolicy", {"queueName": "a"}), "spec.runPolicy.queueName", "b", "spec.runPolicy.queueName"),
    # Issue 9: `self == oldSelf` on queueName alone passes when the old value is absent.
    "queue-added": (FTJ, "spec.runPolicy.queueName", "b", "spec.runPolicy.queueName"),
    "queue-removed": (with_change(FTJ, "spec.runPolicy", {"queueName": "a"}), "spec.runPolicy.queueName", DELETE,
                      "spec.runPolicy.queueName"),
    "policy-model": (MP, "spec.model", "other", "spec.model"),
}


@pytest.mark.parametrize("old, path, value, problem_path", IMMUTABLE_CHANGES.values(), ids=IMMUTABLE_CHANGES.keys())
def test_immutable_fields_cannot_change(old, path, value, problem_path):
    new = with_change(old, path, value)
    assert validate_manifest(new).problems == []  # valid on its own ...
    problems = validate_manifest(new, old=old).problems  # ... but not as an update
    assert problem_path in [p.path for p in problems], problems


@pytest.mark.parametrize("path, value", [("spec.runPolicy", {"suspend": True}), ("spec.runPolicy", {"ttlSecondsAfterFinished": 60}),
                                         ("metadata.labels", {"team": "x"})])
def test_mutable_fields_can_change(path, value):
    assert validate_manifest(with_change(FTJ, path, value), old=FTJ).problems == []


def test_policy_template_may_change():
    new = with_change(MP, "spec.jobTemplate.spec.training.learningRate", 1e-4)
    assert validate_manifest(new, old=MP).problems == []


def test_problem_messages_say_what_is_allowed():
    (problem,) = validate_manifest(with_change(FTJ, "spec.training.precision", "int8")).problems
    assert "auto" in problem.message and "bf16" in problem.message
    unknown = validate_manifest(with_change(FTJ, "spec.training.learning_rate", 1)).problems
    assert any("learningRate" in p.message for p in unknown)


@pytest.mark.parametrize("doc", [None, 5, "text", [], {"apiVersion": "tuneloop.dev/v1alpha1", "kind": "FineTuneJob", "metadata": "x", "spec": 7},
                                 {"apiVersion": "tuneloop.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "a"}, "spec": {"task": ["x"], "model": 3, "dataset": None, "output": []}},
                                 {"apiVersion": "tuneloop.dev/v1alpha1", "kind": "Nope", "metadata": {"name": "a"}}])
def test_wrong_shapes_never_crash(doc):
    result = validate_manifest(doc)
    assert result.kind is None or result.problems


@pytest.mark.parametrize("name, nodes, ok", [
    ("lives9", 2, True), ("9lives", 1, True),
    ("9lives", 2, False),  # the headless Service would be `9lives-trainer`: not a DNS-1035 label
    ("a.b", 1, False), ("a.b", 2, False),  # pod hostnames are DNS labels: no dots
])
def test_child_names_must_be_valid_for_the_api_server(name, nodes, ok):
    doc = with_change(with_change(FTJ, "metadata.name", name), "spec.resources", {"nodes": nodes})
    problems = validate_manifest(doc).problems
    assert (problems == []) is ok, problems
    if not ok:
        assert [p.path for p in problems] == ["metadata.name"]


def test_queue_name_is_a_label_value():
    problems = validate_manifest(with_change(FTJ, "spec.runPolicy", {"queueName": "team a/b"})).problems
    assert "spec.runPolicy.queueName" in [p.path for p in problems], problems
