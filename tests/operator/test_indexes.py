"""The Job and pod indexes keep only what is read of them (issue 15: they hold every Job for
the operator's life), and everything computed from them is the same as from whole objects."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone

import pytest

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.operator.builders import Owner, build_trainer_job, job_suspend_patch, workload_active_change
from tuneloop.operator.handlers import indexed_job, indexed_pod
from tuneloop.operator.scrape import metrics_url
from tuneloop.operator.status import derive_status, group_restart

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
SPEC = {"task": "causal-lm-sft", "model": {"source": "s3://m/x"}, "dataset": {"train": "s3://d/t.jsonl"}, "output": {"uri": "s3://o/run"}}
MANAGED = [{"manager": "kube-controller-manager", "operation": "Update", "fieldsV1": {"f:status": {}}}]


def spec(**overrides: object) -> FineTuneJobSpec:
    return FineTuneJobSpec.from_dict({**SPEC, **overrides})


def whole_job(parsed: FineTuneJobSpec, **status: object) -> dict:
    job = build_trainer_job(Owner("ft", "ml", "ft-uid"), parsed)
    job["metadata"].update(uid="job-uid", creationTimestamp="2025-01-01T11:00:00Z", managedFields=MANAGED)
    job["status"] = status
    return job


def whole_pod(job: dict, phase: str, rank: int = 0, **state: object) -> dict:
    template = copy.deepcopy(job["spec"]["template"])
    for port in template["spec"]["containers"][0].get("ports") or ():
        port["containerPort"] = 29500 + rank
    return {"metadata": {**template["metadata"], "name": f"ft-trainer-{rank}-x", "creationTimestamp": "2025-01-01T11:01:00Z",
                         "annotations": {"batch.kubernetes.io/job-completion-index": str(rank)}, "managedFields": MANAGED,
                         "ownerReferences": [{"uid": "job-uid", "kind": "Job", "name": job["metadata"]["name"]}]},
            "spec": template["spec"],
            "status": {"phase": phase, "podIP": "10.0.0.7",
                       "containerStatuses": [{"name": "trainer", "state": state or {"running": {}}}]}}


COMPLETE = {"type": "Complete", "status": "True", "lastTransitionTime": "2025-01-01T11:50:00Z"}
FAILED = {"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "lastTransitionTime": "2025-01-01T11:50:00Z"}
CASES = [
    ("starting", {}, {"active": 1, "startTime": "2025-01-01T11:00:00Z"}, ["Pending"]),
    ("running", {}, {"active": 1, "ready": 1}, ["Running"]),
    ("suspending", {"runPolicy": {"suspend": True}}, {"active": 1}, ["Running"]),
    ("succeeded", {}, {"succeeded": 1, "conditions": [COMPLETE], "completionTime": "2025-01-01T11:50:00Z"}, ["Succeeded"]),
    ("multi-node failed", {"resources": {"nodes": 2}}, {"failed": 2, "conditions": [FAILED]}, ["Failed", "Failed"]),
]


@pytest.mark.parametrize("overrides, job_status, phases", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_everything_read_from_the_index_is_what_the_whole_objects_give(overrides: dict, job_status: dict, phases: list) -> None:
    parsed = spec(**overrides)
    job = whole_job(parsed, **job_status)
    state = {"terminated": {"exitCode": 1, "reason": "Error"}} if phases[0] == "Failed" else {}
    pods = [whole_pod(job, phase, rank, **state) for rank, phase in enumerate(phases)]
    slim_job, slim_pods = indexed_job(job), [indexed_pod(p) for p in pods]

    def status(j: dict, ps: list) -> dict:
        return derive_status(j, ps, spec=parsed, generation=1, previous={}, now=NOW)
    assert status(slim_job, slim_pods) == status(job, pods)
    assert metrics_url(slim_pods) == metrics_url(pods)
    assert job_suspend_patch(parsed, slim_job) == job_suspend_patch(parsed, job)
    assert workload_active_change(parsed, slim_job) == workload_active_change(parsed, job)
    assert group_restart(slim_job, slim_pods, parsed, 1, NOW) == group_restart(job, pods, parsed, 1, NOW)


def test_the_index_drops_the_pod_template_and_managed_fields() -> None:
    job = whole_job(spec(), active=1)
    pod = whole_pod(job, "Running")
    slim_job, slim_pod = indexed_job(job), indexed_pod(pod)
    assert "template" not in slim_job["spec"] and "managedFields" not in slim_job["metadata"]
    assert slim_pod["spec"] == {"containers": [{"name": c["name"], "ports": c.get("ports") or []}
                                               for c in pod["spec"]["containers"]]}
    assert len(json.dumps(slim_job)) < len(json.dumps(job)) / 3
    assert job["spec"]["template"]  # the watch event's object itself is left alone
