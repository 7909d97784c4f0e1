"""Table-driven tests of the pure builders: spec in, manifests out."""

from __future__ import annotations

from pathlib import Path

import re
from typing import Any

import pytest
import yaml

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.operator.builders import (
    Owner, TrainerDefaults, build_children, build_config_map, build_headless_service, build_trainer_job, check_names,
    job_suspend_patch, service_selector_patch, unapplied_changes,
)

OWNER = Owner(name="sft", namespace="ml", uid="uid-1")
BASE = {
    "task": "causal-lm-sft",
    "model": {"source": "s3://models/llama"},
    "dataset": {"train": "s3://data/train.jsonl"},
    "output": {"uri": "s3://out/sft"},
}


def make_spec(**overrides: Any) -> FineTuneJobSpec:
    spec = {**BASE}
    for key, value in overrides.items():
        spec[key] = value
    return FineTuneJobSpec.from_dict(spec)


def at(obj: Any, path: str) -> Any:
    """`spec.template.spec.containers[0].env` -> the value (KeyError if absent)."""
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        obj = obj[int(part[1:-1])] if part.startswith("[") else obj[part]
    return obj


def env_of(job: dict) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in at(job, "spec.template.spec.containers[0].env")}


def pod_of(job: dict) -> dict:
    return at(job, "spec.template.spec")


# (case id, spec overrides, {path: expected}) for the Job; `None` means the key must be absent.
JOB_CASES = [
    ("single-node", {}, {
        "metadata.name": "sft-trainer",
        "metadata.namespace": "ml",
        "spec.backoffLimit": 3,
        "spec.suspend": False,
        "spec.completionMode": None,
        "spec.ttlSecondsAfterFinished": None,
        "spec.template.spec.restartPolicy": "Never",
        "spec.template.spec.subdomain": None,
        "spec.template.spec.containers[0].command": ["tuneloop-train", "--config", "/etc/tuneloop/config.yaml"],
        "spec.template.spec.containers[0].image": TrainerDefaults().image,
        "spec.template.spec.containers[0].resources": {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}},
    }),
    ("multi-node", {"resources": {"nodes": 4, "gpusPerNode": 8}}, {
        "spec.completionMode": "Indexed",
        "spec.completions": 4,
        "spec.parallelism": 4,
        # Any failure fails the Job; the operator restarts the group and counts (issue 9).
        "spec.backoffLimit": 0,
        "spec.template.spec.subdomain": "sft-trainer",
        "spec.template.spec.containers[0].resources.limits": {"nvidia.com/gpu": "8"},
    }),
    ("cpu-only custom resources", {"resources": {"gpusPerNode": 0, "cpu": "4", "memory": "16Gi"}}, {
        "spec.template.spec.containers[0].resources": {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"cpu": "4", "memory": "16Gi"}},
        "spec.template.spec.volumes[3]": {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}},
    }),
    # Issue 9: local disk asked for, and the writable volumes bounded, so a runaway writer is
    # evicted instead of filling the node's disk.
    ("local disk", {"resources": {"gpusPerNode": 0, "ephemeralStorage": "200Gi"}}, {
        "spec.template.spec.containers[0].resources": {"requests": {"ephemeral-storage": "200Gi"},
                                                       "limits": {"ephemeral-storage": "200Gi"}},
        "spec.template.spec.volumes[1]": {"name": "tmp", "emptyDir": {"sizeLimit": "200Gi"}},
        "spec.template.spec.volumes[2]": {"name": "cache", "emptyDir": {"sizeLimit": "200Gi"}},
    }),
    ("other gpu vendor", {"resources": {"gpusPerNode": 2, "gpuResourceName": "amd.com/gpu"}}, {
        "spec.template.spec.containers[0].resources.limits": {"amd.com/gpu": "2"},
    }),
    ("private image", {"image": "registry.example/trainer:1", "imagePullSecrets": [{"name": "regcred"}]}, {
        "spec.template.spec.imagePullSecrets": [{"name": "regcred"}],
        "spec.template.spec.containers[0].image": "registry.example/trainer:1",
    }),
    ("kueue", {"runPolicy": {"queueName": "team-a"}}, {
        "metadata.labels.kueue.x-k8s.io/queue-name": "team-a",
        "spec.suspend": True,
    }),
    ("suspended by user", {"runPolicy": {"suspend": True}}, {"spec.suspend": True}),
    ("run policy", {"runPolicy": {"backoffLimit": 5, "activeDeadlineSeconds": 3600, "ttlSecondsAfterFinished": 60}}, {
        "spec.backoffLimit": 5,
        "spec.activeDeadlineSeconds": 3600,
        "spec.ttlSecondsAfterFinished": None,  # the operator removes the Job itself (see builders)
    }),
    ("scheduling", {"resources": {
        "nodeSelector": {"gpu": "a100"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}},
        "priorityClassName": "training",
    }}, {
        "spec.template.spec.nodeSelector": {"gpu": "a100"},
        "spec.template.spec.tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []},
        "spec.template.spec.priorityClassName": "training",
    }),
    ("image", {"image": "registry.local/trainer:1", "imagePullPolicy": "Always"}, {
        "spec.template.spec.containers[0].image": "registry.local/trainer:1",
        "spec.template.spec.containers[0].imagePullPolicy": "Always",
    }),
    ("irsa", {"storage": {"serviceAccountName": "s3-reader", "region": "eu-west-1"}}, {
        "spec.template.spec.serviceAccountName": "s3-reader",
        "spec.template.spec.automountServiceAccountToken": False,
    }),
    ("security context", {}, {
        "spec.template.spec.securityContext.runAsNonRoot": True,
        "spec.template.spec.securityContext.seccompProfile": {"type": "RuntimeDefault"},
        "spec.template.spec.containers[0].securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "spec.template.spec.volumes": [
            {"name": "config", "configMap": {"name": "sft-config"}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "cache", "emptyDir": {}},
            {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        ],
        "spec.template.spec.containers[0].volumeMounts": [
            {"name": "config", "mountPath": "/etc/tuneloop", "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "cache", "mountPath": "/var/cache/tuneloop"},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
    }),
]


def _lookup(obj: Any, path: str) -> Any:
    # Label keys contain dots: try the known label prefix first.
    if ".labels." in path:
        head, key = path.split(".labels.", 1)
        return at(obj, head)["labels"].get(key, KeyError)
    try:
        return at(obj, path)
    except (KeyError, IndexError):
        return KeyError


@pytest.mark.parametrize("overrides, expected", [c[1:] for c in JOB_CASES], ids=[c[0] for c in JOB_CASES])
def test_trainer_job(overrides: dict, expected: dict) -> None:
    job = build_trainer_job(OWNER, make_spec(**overrides))
    for path, want in expected.items():
        got = _lookup(job, path)
        if want is None:
            assert got is KeyError, f"{path} should be absent, is {got!r}"
        else:
            assert got == want, f"{path}: {got!r} != {want!r}"


# (case id, spec overrides, expected env subset, names that must be absent)
ENV_CASES = [
    ("single node", {}, {
        "TUNELOOP_JOB_NAME": "sft", "TUNELOOP_NAMESPACE": "ml", "TUNELOOP_METRICS_PORT": "9400",
        "TUNELOOP_CACHE_DIR": "/var/cache/tuneloop", "NNODES": "1", "NODE_RANK": "0", "NPROC_PER_NODE": "1",
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "TUNELOOP_TERMINATION_LOG": "/dev/termination-log",
    }, ["AWS_ACCESS_KEY_ID", "AWS_ENDPOINT_URL", "AWS_REGION"]),
    ("multi node", {"resources": {"nodes": 3, "gpusPerNode": 4}}, {
        "NNODES": "3", "NPROC_PER_NODE": "4", "MASTER_ADDR": "sft-trainer-0.sft-trainer",
        "NODE_RANK": {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}},
    }, []),
    ("cpu: one process", {"resources": {"gpusPerNode": 0}}, {"NPROC_PER_NODE": "1"}, []),
    ("credentials secret", {"storage": {"endpoint": "http://minio:9000", "region": "us-east-1",
                                        "credentialsSecret": {"name": "s3", "accessKeyIdKey": "id", "secretAccessKeyKey": "key",
                                                              "sessionTokenKey": "tok"}}}, {
        "AWS_ENDPOINT_URL": "http://minio:9000",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": {"secretKeyRef": {"name": "s3", "key": "id"}},
        "AWS_SECRET_ACCESS_KEY": {"secretKeyRef": {"name": "s3", "key": "key"}},
        "AWS_SESSION_TOKEN": {"secretKeyRef": {"name": "s3", "key": "tok"}},
    }, []),
    ("credentials, default keys, no token", {"storage": {"credentialsSecret": {"name": "s3"}}}, {
        "AWS_ACCESS_KEY_ID": {"secretKeyRef": {"name": "s3", "key": "AWS_ACCESS_KEY_ID"}},
    }, ["AWS_SESSION_TOKEN"]),
    ("irsa: no keys", {"storage": {"serviceAccountName": "s3-reader"}}, {}, ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]),
    ("user env", {"env": [{"name": "HF_HUB_OFFLINE", "value": "1"},
                          {"name": "WANDB_KEY", "valueFrom": {"secretKeyRef": {"name": "wandb", "key": "k"}}}]}, {
        "HF_HUB_OFFLINE": "1", "WANDB_KEY": {"secretKeyRef": {"name": "wandb", "key": "k"}},
    }, []),
]


@pytest.mark.parametrize("overrides, expected, absent", [c[1:] for c in ENV_CASES], ids=[c[0] for c in ENV_CASES])
def test_env(overrides: dict, expected: dict, absent: list) -> None:
    env = env_of(build_trainer_job(OWNER, make_spec(**overrides)))
    for name, value in expected.items():
        assert env.get(name) == value, name
    for name in absent:
        assert name not in env


def test_pod_failure_policy_and_labels() -> None:
    job = build_trainer_job(OWNER, make_spec())
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "FailJob", "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [2]}}
    assert rules[1] == {"action": "FailJob", "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [3]}}
    assert rules[2] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
        assert labels["tuneloop.dev/finetunejob"] == "sft"
        assert labels["app.kubernetes.io/instance"] == "sft"
        assert labels["app.kubernetes.io/managed-by"] == "tuneloop-operator"
        assert {"app.kubernetes.io/name", "app.kubernetes.io/component", "app.kubernetes.io/part-of"} <= set(labels)
    assert job["metadata"]["ownerReferences"] == [{
        "apiVersion": "tuneloop.dev/v1alpha1", "kind": "FineTuneJob", "name": "sft", "uid": "uid-1",
        "controller": True, "blockOwnerDeletion": True,
    }]


def test_multi_node_pod_failure_policy_fails_the_whole_job_on_any_failure() -> None:
    """One failed rank must not be replaced alone (its peers hang in collectives): FailJob for
    everything, the disruption rule before the exit codes so the operator can tell them apart."""
    rules = build_trainer_job(OWNER, make_spec(resources={"nodes": 2}))["spec"]["podFailurePolicy"]["rules"]
    assert rules == [
        {"action": "FailJob", "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [2]}},
        {"action": "FailJob", "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [3]}},
        {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {"action": "FailJob", "onExitCodes": {"containerName": "trainer", "operator": "NotIn", "values": [0]}},
    ]


def test_config_map_is_the_spec_and_holds_no_secret_values() -> None:
    spec = make_spec(storage={"credentialsSecret": {"name": "s3"}}, env=[{"name": "X", "value": "1"}])
    cm = build_config_map(OWNER, spec)
    assert cm["metadata"]["name"] == "sft-config"
    assert yaml.safe_load(cm["data"]["config.yaml"]) == spec.to_dict()
    assert FineTuneJobSpec.from_dict(yaml.safe_load(cm["data"]["config.yaml"])) == spec


def test_headless_service_and_children() -> None:
    single = build_children(OWNER, make_spec())
    assert [c["kind"] for c in single] == ["ConfigMap", "Job"]
    multi = build_children(OWNER, make_spec(resources={"nodes": 2}))
    assert [c["kind"] for c in multi] == ["ConfigMap", "Service", "Job"]
    svc = build_headless_service(OWNER, make_spec(resources={"nodes": 2}))
    assert svc["metadata"]["name"] == "sft-trainer"
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True
    # Issue 9: the pods of one Job only, by the uid the Job controller labels them with; the
    # template's own labels are shared by every Job re-created under this name.
    pod_labels = {**multi[2]["spec"]["template"]["metadata"]["labels"], "batch.kubernetes.io/controller-uid": "job-2"}
    selector = svc["spec"]["selector"]
    assert selector["batch.kubernetes.io/controller-uid"] == ""  # nothing until the Job exists
    selector = {**selector, **service_selector_patch(svc, {"metadata": {"uid": "job-2"}})["spec"]["selector"]}
    assert all(pod_labels[k] == v for k, v in selector.items())
    assert any(({**pod_labels, "batch.kubernetes.io/controller-uid": "job-1"})[k] != v for k, v in selector.items())
    assert service_selector_patch({"spec": {"selector": selector}}, {"metadata": {"uid": "job-2"}}) is None


def test_builders_are_deterministic() -> None:
    spec = make_spec(resources={"nodes": 2})
    assert build_children(OWNER, spec) == build_children(OWNER, spec)


@pytest.mark.parametrize("name, nodes, ok", [
    ("a" * 55, 1, True), ("a" * 56, 1, False), ("a" * 53, 10, True), ("a" * 54, 10, False),
])
def test_check_names(name: str, nodes: int, ok: bool) -> None:
    problems = check_names(name, make_spec(resources={"nodes": nodes}))
    assert (problems == []) is ok
    assert all(p.path == "metadata.name" for p in problems)


@pytest.mark.parametrize("run_policy, job_suspended, patch", [
    ({"suspend": True}, False, {"spec": {"suspend": True}}),
    ({"suspend": True}, True, None),
    ({"suspend": False}, True, {"spec": {"suspend": False}}),
    ({"suspend": False}, False, None),
    ({"suspend": False, "queueName": "q"}, True, None),  # Kueue admits; we never unsuspend
    # Kueue un-suspends an admitted Job: writing `suspend` would fight it (issue 9).
    ({"suspend": True, "queueName": "q"}, False, None),
])
def test_job_suspend_patch(run_policy: dict, job_suspended: bool, patch: dict | None) -> None:
    assert job_suspend_patch(make_spec(runPolicy=run_policy), {"spec": {"suspend": job_suspended}}) == patch


@pytest.mark.parametrize("run_policy, marked, change", [
    ({"suspend": True, "queueName": "q"}, False, False),  # deactivate the Workload
    ({"suspend": True, "queueName": "q"}, True, None),    # done already
    ({"suspend": False, "queueName": "q"}, True, True),   # resume: reactivate it
    ({"suspend": False, "queueName": "q"}, False, None),
    ({"suspend": True}, False, None),                     # no Kueue: the Job's own suspend
])
def test_workload_active_change(run_policy: dict, marked: bool, change: bool | None) -> None:
    from tuneloop.operator.builders import ANNOTATION_WORKLOAD_DEACTIVATED, workload_active_change

    job = {"metadata": {"annotations": {ANNOTATION_WORKLOAD_DEACTIVATED: "true"} if marked else {}}, "spec": {"suspend": False}}
    assert workload_active_change(make_spec(runPolicy=run_policy), job) is change


def test_unapplied_changes_ignore_suspend() -> None:
    old = {"runPolicy": {"suspend": False}, "image": "a"}
    assert unapplied_changes(old, {"runPolicy": {"suspend": True}, "image": "a"}) == []
    assert unapplied_changes(old, {"runPolicy": {"suspend": True}, "image": "b"}) == ["spec.image"]


def test_an_existing_child_is_checked_not_trusted() -> None:
    """Issue 9: a 409 on create is read: mine, a predecessor's, being deleted, or foreign."""
    from tuneloop.operator.builders import build_config_map, check_existing_child, owner_reference

    spec = make_spec()
    wanted = build_config_map(OWNER, spec)
    mine = {**wanted, "metadata": {**wanted["metadata"]}}
    assert check_existing_child(mine, wanted, OWNER) == (None, None)
    stale = {**mine, "data": {"config.yaml": "an earlier spec"}}
    assert check_existing_child(stale, wanted, OWNER) == (None, {"data": wanted["data"]})
    old_owner = Owner(OWNER.name, OWNER.namespace, "uid-0")
    predecessor = {**wanted, "metadata": {**wanted["metadata"], "ownerReferences": [owner_reference(old_owner)]}}
    blocked, _ = check_existing_child(predecessor, wanted, OWNER)
    assert blocked.reason == "WaitingForOldChildren" and not blocked.stalled
    deleting = {**mine, "metadata": {**mine["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"}}
    assert check_existing_child(deleting, wanted, OWNER)[0].reason == "WaitingForOldChildren"
    foreign = {**wanted, "metadata": {"name": wanted["metadata"]["name"]}}
    blocked, _ = check_existing_child(foreign, wanted, OWNER)
    assert blocked.reason == "NameConflict" and blocked.stalled and "delete it, or rename" in blocked.message


def test_the_operator_refuses_names_its_children_could_not_have() -> None:
    """Issue 9: the operator shares `tuneloop validate`'s name rules (no dots; a leading
    letter when a headless Service is made), so nothing is created for such a name."""
    from tuneloop.operator.handlers import parse

    base = make_spec().to_dict()
    assert parse(base, "9lives", "ml")[1] == []
    for name, nodes in (("9lives", 2), ("a.b", 1)):
        _, problems = parse({**base, "resources": {**base["resources"], "nodes": nodes}}, name, "ml")
        assert [p.path for p in problems] == ["metadata.name"], (name, problems)


def test_pods_run_as_the_images_user() -> None:
    """Issue 9: runAsUser is the trainer image's USER (Dockerfile.trainer)."""
    import re

    from tuneloop.operator.builders import TrainerDefaults

    dockerfile = (Path(__file__).resolve().parents[2] / "Dockerfile.trainer").read_text()
    user = int(re.search(r"^USER (\d+)", dockerfile, re.M).group(1))
    pod = build_trainer_job(OWNER, make_spec())["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == user == TrainerDefaults().run_as_user
