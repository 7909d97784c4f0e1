"""Table-driven tests of `derive_status`: every phase and every failure reason."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.api.typed import Problem
from tuneloop.operator.status import (
    CONDITION_TYPES, awaits_first_pods, derive_status, pod_problem, status_patch, transition_events,
)

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
T0 = "2025-01-01T11:00:00Z"
BASE = {"task": "causal-lm-sft", "model": {"source": "s3://m/x"}, "dataset": {"train": "s3://d/t.jsonl"},
        "output": {"uri": "s3://o/run"}}


def spec(**overrides: Any) -> FineTuneJobSpec:
    return FineTuneJobSpec.from_dict({**BASE, **overrides})


def job(*, suspend: bool = False, active: int = 0, failed: int = 0, succeeded: int = 0, ready: int = 0,
        conditions: list | None = None, start: str | None = T0, completion: str | None = None) -> dict:
    status: dict[str, Any] = {"active": active, "failed": failed, "succeeded": succeeded, "ready": ready,
                              "conditions": conditions or []}
    if start:
        status["startTime"] = start
    if completion:
        status["completionTime"] = completion
    return {"metadata": {"name": "ft-trainer", "uid": "job-uid"}, "spec": {"suspend": suspend}, "status": status}


def cond(type_: str, reason: str = "", message: str = "", at: str = "2025-01-01T11:30:00Z") -> dict:
    return {"type": type_, "status": "True", "reason": reason, "message": message, "lastTransitionTime": at}


def pod(phase: str = "Running", *, name: str = "ft-trainer-abc", created: str = T0, rank: int = 0,
        terminated: dict | None = None, waiting: dict | None = None, conditions: list | None = None,
        reason: str | None = None) -> dict:
    state: dict[str, Any] = {}
    if terminated:
        state["terminated"] = terminated
    if waiting:
        state["waiting"] = waiting
    status: dict[str, Any] = {"phase": phase, "containerStatuses": [{"name": "trainer", "state": state}],
                              "conditions": conditions or []}
    if reason:
        status["reason"] = reason
    return {"metadata": {"name": name, "creationTimestamp": created,
                         "annotations": {"batch.kubernetes.io/job-completion-index": str(rank)}},
            "status": status}


OOM = pod("Failed", name="p-oom", terminated={"exitCode": 137, "reason": "OOMKilled"})
EXIT2 = pod("Failed", name="p-bad", terminated={"exitCode": 2, "reason": "Error", "message": "missing column `label` in train.jsonl"})
EXIT1 = pod("Failed", name="p-err", terminated={"exitCode": 1, "reason": "Error"})
EXIT3 = pod("Failed", name="p-gpu-oom", terminated={"exitCode": 3, "reason": "Error", "message":
            "tuneloop-train: error: out of memory: CUDA out of memory. Tried to allocate 20.00 GiB; the model and batch do not fit"})
PULL = pod("Pending", name="p-pull", waiting={"reason": "ImagePullBackOff", "message": "Back-off pulling image \"nope\""})
NO_SECRET = pod("Pending", name="p-sec", waiting={"reason": "CreateContainerConfigError", "message": 'secret "s3-creds" not found'})
TERMINATING = {**pod("Running", name="p-term"), "metadata": {"name": "p-term", "deletionTimestamp": T0}}
UNSCHED_OLD = pod("Pending", name="p-uns", conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                                         "message": "0/3 nodes have nvidia.com/gpu", "lastTransitionTime": "2025-01-01T11:00:00Z"}])
UNSCHED_NEW = pod("Pending", name="p-uns", conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                                         "message": "0/3 nodes", "lastTransitionTime": "2025-01-01T11:59:00Z"}])

# (id, job, pods, spec overrides, expected phase, expected reason, message fragment, true conditions)
CASES = [
    ("no job yet", None, [], {}, "Pending", "CreatingJob", "creating", {"Reconciling"}),
    ("job created, pods starting", job(active=1), [pod("Pending")], {}, "Pending", "Starting", "waiting", {"Reconciling"}),
    ("running", job(active=1, ready=1), [pod("Running")], {}, "Running", "Training", "1 node", {"Ready", "Reconciling"}),
    ("multi-node partly running", job(active=2), [pod("Running"), pod("Pending", rank=1)], {"resources": {"nodes": 2}},
     "Running", "WaitingForNodes", "1 of 2", {"Reconciling"}),
    ("retrying after OOM", job(active=1, failed=1), [OOM, pod("Running", created="2025-01-01T11:10:00Z")], {},
     "Running", "Training", "OOMKilled", {"Ready", "Reconciling"}),
    ("succeeded", job(succeeded=1, conditions=[cond("Complete")], completion="2025-01-01T11:50:00Z"), [pod("Succeeded")], {},
     "Succeeded", "Succeeded", "final", {"Ready", "Succeeded"}),
    ("deadline exceeded", job(failed=1, conditions=[cond("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")]),
     [], {"runPolicy": {"activeDeadlineSeconds": 600}}, "Failed", "DeadlineExceeded", "activeDeadlineSeconds (600s)", {"Failed", "Stalled"}),
    ("backoff limit, OOM", job(failed=4, conditions=[cond("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")]),
     [OOM], {}, "Failed", "BackoffLimitExceeded", "OOMKilled", {"Failed", "Stalled"}),
    ("backoff limit, exit 1", job(failed=4, conditions=[cond("Failed", "BackoffLimitExceeded")]),
     [EXIT1], {}, "Failed", "BackoffLimitExceeded", "exited with code 1", {"Failed", "Stalled"}),
    ("bad input: exit 2", job(failed=1, conditions=[cond("Failed", "PodFailurePolicy", "Container trainer for pod exited with code 2")]),
     [EXIT2], {}, "Failed", "InvalidInput", "missing column `label`", {"Failed", "Stalled"}),
    ("GPU out of memory: exit 3", job(failed=1, conditions=[cond("Failed", "PodFailurePolicy", "Container trainer for pod exited with code 3")]),
     [EXIT3], {}, "Failed", "OutOfMemory", "Tried to allocate 20.00 GiB", {"Failed", "Stalled"}),
    # Kubernetes 1.31+: FailureTarget and SuccessCriteriaMet come before the pods have
    # terminated; the final word waits for Failed / Complete (issue 9).
    ("failure target is not final yet", job(failed=1, active=1, conditions=[cond("FailureTarget", "PodFailurePolicy")]),
     [EXIT2], {}, "Pending", "Stopping", "waiting for its pods to terminate", {"Reconciling"}),
    ("success criteria met keeps it running", job(succeeded=1, conditions=[cond("SuccessCriteriaMet", "CompletionsReached")]),
     [pod("Succeeded")], {}, "Running", "Completing", "training finished", {"Ready", "Reconciling"}),
    ("a terminating pod is not training", job(active=1), [TERMINATING], {}, "Pending", "Starting", "waiting", {"Reconciling"}),
    ("missing secret can never start", job(active=1), [NO_SECRET], {}, "Pending", "CreateContainerConfigError",
     'secret "s3-creds" not found', {"Reconciling", "Stalled"}),
    ("job that creates no pod", job(start="2025-01-01T11:50:00Z"), [], {"runPolicy": {}}, "Pending", "NoPods", "FailedCreate",
     {"Reconciling", "Stalled"}),
    ("previous job's pods still running", None, [pod("Running")], {}, "Pending", "WaitingForOldPods", "1 pod(s)", {"Reconciling"}),
    # Several nodes: every failure is FailJob, and the operator restarts the whole group.
    ("multi-node rank failed: group restart", job(failed=2, conditions=[cond("Failed", "PodFailurePolicy")]),
     [EXIT1, pod("Failed", name="p-peer", rank=1, terminated={"exitCode": 143, "reason": "Error"})], {"resources": {"nodes": 2}},
     "Pending", "Restarting", "restarting all 2 nodes", {"Reconciling"}),
    ("multi-node bad input is final", job(failed=2, conditions=[cond("Failed", "PodFailurePolicy")]),
     [EXIT1, EXIT2], {"resources": {"nodes": 2}}, "Failed", "InvalidInput", "missing column", {"Failed", "Stalled"}),
    ("multi-node out of retries", job(failed=2, conditions=[cond("Failed", "PodFailurePolicy")]),
     [EXIT1], {"resources": {"nodes": 2}, "runPolicy": {"backoffLimit": 0}}, "Failed", "BackoffLimitExceeded", "exited with code 1",
     {"Failed", "Stalled"}),
    ("multi-node job being replaced", {**job(failed=2, conditions=[cond("Failed", "PodFailurePolicy")]),
                                       "metadata": {"name": "ft-trainer", "uid": "u", "deletionTimestamp": T0}},
     [], {"resources": {"nodes": 2}}, "Pending", "Restarting", "deleted", {"Reconciling"}),
    ("image pull backoff", job(active=1), [PULL], {}, "Pending", "ImagePullBackOff", "nope", {"Reconciling", "Stalled"}),
    ("unschedulable too long", job(active=1), [UNSCHED_OLD], {}, "Pending", "Unschedulable", "nvidia.com/gpu", {"Reconciling", "Stalled"}),
    ("unschedulable briefly", job(active=1), [UNSCHED_NEW], {}, "Pending", "Starting", "waiting", {"Reconciling"}),
    ("queued in kueue", job(suspend=True, start=None), [], {"runPolicy": {"queueName": "team-a"}},
     "Queued", "Queued", "team-a", {"Reconciling"}),
    ("suspended", job(suspend=True), [], {"runPolicy": {"suspend": True}}, "Suspended", "Suspended", "resume", {"Suspended"}),
    ("suspending", job(active=1), [pod("Running")], {"runPolicy": {"suspend": True}}, "Suspended", "Suspending", "stopping",
     {"Suspended", "Reconciling"}),
    ("resuming", job(suspend=True), [], {}, "Pending", "Resuming", "checkpoint", {"Reconciling"}),
    ("evicted then retried", job(active=1), [pod("Failed", name="p-ev", reason="Evicted"), pod("Pending", created="2025-01-01T11:10:00Z")],
     {}, "Pending", "Starting", "evicted", {"Reconciling"}),
]


REFUSED = 'Error creating: pods "ft-trainer-" is forbidden: error looking up service account ml/s3: serviceaccount "s3" not found'


def test_pods_refused_by_the_api_server_are_stalled_with_the_events_words() -> None:
    """Issue 9: a FailedCreate Event on the Job says at once why it has no pod (no NoPods wait)."""
    fresh = job(start="2025-01-01T11:59:50Z")
    assert awaits_first_pods(fresh, [])
    status = derive_status(fresh, [], spec=spec(), generation=1, previous={}, now=NOW, failed_create=REFUSED)
    assert (status["phase"], status["reason"]) == ("Pending", "FailedCreate")
    assert REFUSED in status["message"] and "spec.storage.serviceAccountName" in status["message"]
    assert {c["type"] for c in status["conditions"] if c["status"] == "True"} == {"Reconciling", "Stalled"}
    assert ("Warning", "FailedCreate", status["message"]) in transition_events({}, status)
    # Where pods exist, or the Job is suspended or finishing, Events are not read at all.
    assert not awaits_first_pods(job(active=1), [pod("Running")])
    assert not awaits_first_pods(job(suspend=True), [])
    assert not awaits_first_pods(job(succeeded=1, conditions=[cond("SuccessCriteriaMet", "CompletionsReached")]), [])


def jobset(restarts: int = 0, counted: int = 0, conditions: list | None = None) -> dict:
    return {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet", "metadata": {"name": "ft-trainer", "uid": "js"},
            "status": {"restarts": restarts, "restartsCountTowardsMax": counted, "conditions": conditions or []}}


MULTI = {"resources": {"nodes": 2}, "runPolicy": {"groupRestart": "JobSet", "backoffLimit": 2}}


@pytest.mark.parametrize("job_, pods, jobset_, phase, reason, fragment, attempts", [
    ("none yet", [], jobset(), "Pending", "CreatingJob", "JobSet is creating", 1),
    ("running", [pod("Running"), pod("Running", name="p1", rank=1)], jobset(restarts=1, counted=1), "Running", "Training",
     "2 node(s)", 2),
    # The child Job failed: JobSet restarts the group, never the operator (no group_restart).
    ("child failed", [EXIT1], jobset(), "Pending", "Restarting", "restart 0", 1),
    ("being replaced", [], jobset(restarts=2, counted=1), "Pending", "Restarting", "restart 2", 2),
    ("failed for good: exit 2", [EXIT2], jobset(conditions=[cond("Failed", "FailJobSetFailurePolicyAction")]),
     "Failed", "InvalidInput", "missing column", 1),
    ("failed for good: out of restarts", [EXIT1], jobset(restarts=2, counted=2, conditions=[cond("Failed", "ReachedMaxRestarts")]),
     "Failed", "BackoffLimitExceeded", "failed after 2 retries", 3),
], ids=["none yet", "running", "child failed", "being replaced", "exit 2", "out of restarts"])
def test_derive_status_with_groupRestart_jobset(job_: str, pods: list, jobset_: dict, phase: str, reason: str, fragment: str,
                                                attempts: int) -> None:
    """Issue 9 item 1: with a JobSet, its restarts and final state, read through its child Job."""
    child = {"none yet": None, "running": job(active=2, ready=2), "being replaced": None}.get(
        job_, job(failed=1, conditions=[cond("Failed", "PodFailurePolicy", "Container trainer for pod failed with exit code 1")]))
    status = derive_status(child, pods, spec=spec(**MULTI), generation=1, previous={}, now=NOW, jobset=jobset_)
    assert (status["phase"], status["reason"]) == (phase, reason), status["message"]
    assert fragment in status["message"]
    assert status["attempts"] == attempts


@pytest.mark.parametrize("job_, pods, overrides, phase, reason, fragment, true_conditions",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_derive_status(job_: dict | None, pods: list, overrides: dict, phase: str, reason: str, fragment: str,
                       true_conditions: set) -> None:
    status = derive_status(job_, pods, spec=spec(**overrides), generation=3, previous={}, now=NOW)
    assert status["phase"] == phase
    assert status["reason"] == reason
    assert fragment in status["message"]
    assert status["observedGeneration"] == 3
    conditions = {c["type"]: c for c in status["conditions"]}
    assert list(conditions) == list(CONDITION_TYPES)
    assert {t for t, c in conditions.items() if c["status"] == "True"} == true_conditions
    for c in conditions.values():
        assert c["reason"] == reason and c["observedGeneration"] == 3 and c["lastTransitionTime"]


def test_invalid_spec_is_failed_and_stalled_with_the_exact_problem() -> None:
    problems = [Problem("spec.output.uri", "scheme 'gs' is not supported; use s3://bucket/prefix")]
    status = derive_status(None, [], spec=None, problems=problems, generation=1, previous={}, now=NOW)
    assert status["phase"] == "Failed"
    assert status["reason"] == "InvalidSpec"
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True"
    assert stalled["message"] == "spec.output.uri: scheme 'gs' is not supported; use s3://bucket/prefix"


def test_times_attempts_and_job_name() -> None:
    running = derive_status(job(active=1, failed=2), [pod()], spec=spec(), generation=1, previous={}, now=NOW)
    assert running["attempts"] == 3
    assert running["startTime"] == T0
    assert running["jobName"] == "ft-trainer"
    assert "completionTime" not in running
    # After a suspend/resume the Job's own startTime moves; ours stays the first start.
    resumed = derive_status(job(active=1, failed=2, start="2025-01-01T11:55:00Z"), [pod()], spec=spec(), generation=1,
                            previous=running, now=NOW)
    assert resumed["startTime"] == T0
    done = derive_status(job(succeeded=1, failed=2, conditions=[cond("Complete")], completion="2025-01-01T11:59:00Z"), [],
                         spec=spec(), generation=1, previous=resumed, now=NOW)
    assert done["completionTime"] == "2025-01-01T11:59:00Z"
    assert done["attempts"] == 3
    # Several nodes: the Job never retries (backoffLimit 0); the operator counts group restarts.
    multi = derive_status(job(active=2), [pod()], spec=spec(resources={"nodes": 2}), generation=1, previous={"attempts": 2}, now=NOW)
    assert multi["attempts"] == 2


def test_finished_job_deleted_by_ttl_keeps_its_status() -> None:
    done = derive_status(job(succeeded=1, conditions=[cond("Complete")], completion="2025-01-01T11:59:00Z"), [], spec=spec(),
                         generation=1, previous={}, now=NOW)
    later = derive_status(None, [], spec=spec(), generation=1, previous=done, now=NOW + timedelta(hours=1))
    assert later == done
    assert status_patch(done, later) == {}


def test_unchanged_world_patches_nothing_and_keeps_transition_times() -> None:
    first = derive_status(job(active=1), [pod()], spec=spec(), generation=1, previous={}, now=NOW)
    again = derive_status(job(active=1), [pod()], spec=spec(), generation=1, previous=first, now=NOW + timedelta(minutes=5))
    assert status_patch(first, again) == {}
    done = derive_status(job(succeeded=1, conditions=[cond("Complete")]), [], spec=spec(), generation=1, previous=first,
                         now=NOW + timedelta(minutes=9))
    by_type = {c["type"]: c for c in done["conditions"]}
    first_by_type = {c["type"]: c for c in first["conditions"]}
    assert by_type["Ready"]["lastTransitionTime"] == first_by_type["Ready"]["lastTransitionTime"]  # True -> True
    assert by_type["Succeeded"]["lastTransitionTime"] == "2025-01-01T12:09:00Z"
    assert set(status_patch(first, done)) >= {"phase", "conditions", "completionTime"}


@pytest.mark.parametrize("old, new, expected", [
    ({"phase": "Pending"}, {"phase": "Running", "attempts": 1}, [("Normal", "Started")]),
    ({"phase": "Running", "attempts": 1}, {"phase": "Running", "attempts": 2}, [("Warning", "Retrying")]),
    ({"phase": "Running"}, {"phase": "Suspended"}, [("Normal", "Suspended")]),
    ({"phase": "Suspended"}, {"phase": "Pending"}, [("Normal", "Resumed")]),
    ({"phase": "Running"}, {"phase": "Succeeded"}, [("Normal", "Succeeded")]),
    ({"phase": "Running"}, {"phase": "Failed", "reason": "DeadlineExceeded"}, [("Warning", "Failed")]),
    ({}, {"phase": "Failed", "reason": "InvalidSpec"}, [("Warning", "Failed")]),
    ({"phase": "Pending"}, {"phase": "Queued"}, [("Normal", "Queued")]),
    ({"phase": "Running"}, {"phase": "Running"}, []),
    ({"phase": "Pending", "reason": "Starting"}, {"phase": "Pending", "reason": "ImagePullBackOff"}, [("Warning", "ImagePullBackOff")]),
])
def test_transition_events(old: dict, new: dict, expected: list) -> None:
    assert [(t, r) for t, r, _ in transition_events(old, {"message": "m", **new})] == expected


def test_pod_problem_none_for_healthy_pods() -> None:
    assert pod_problem(pod("Running"), NOW) is None
    assert pod_problem(pod("Pending"), NOW) is None


def test_child_rejected_is_failed_until_a_corrected_spec() -> None:
    problems = [Problem("spec", "create Job ml/x: rejected by the API server: Unprocessable Entity")]
    failed = derive_status(None, [], spec=None, problems=problems, generation=1, previous={}, now=NOW,
                           invalid_reason="ChildRejected")
    assert (failed["phase"], failed["reason"]) == ("Failed", "ChildRejected")
    # Nothing ran: a corrected spec (the next reconcile) creates the children (issue 9).
    again = derive_status(None, [], spec=spec(), generation=2, previous=failed, now=NOW)
    assert (again["phase"], again["reason"]) == ("Pending", "CreatingJob")


def test_blocked_children_wait_or_stall() -> None:
    from tuneloop.operator.builders import Blocked

    waiting = derive_status(None, [], spec=spec(), generation=1, previous={}, now=NOW,
                            blocked=Blocked("WaitingForOldChildren", "ConfigMap x-config is being deleted", stalled=False))
    assert (waiting["phase"], waiting["reason"]) == ("Pending", "WaitingForOldChildren")
    conflict = derive_status(None, [], spec=spec(), generation=1, previous={}, now=NOW,
                             blocked=Blocked("NameConflict", "a Job named x-trainer already exists", stalled=True))
    assert conflict["reason"] == "NameConflict"
    assert {c["type"] for c in conflict["conditions"] if c["status"] == "True"} == {"Reconciling", "Stalled"}


TRACEBACK = ("Traceback (most recent call last):\n  File \"recipe.py\", line 10, in train\nRuntimeError: boom\n"
             "tuneloop-train: error: RuntimeError: boom (retryable: a retry resumes from the newest checkpoint)\n"
             "[rank0]: torch.distributed.elastic.multiprocessing.errors.ChildFailedError\n\n")


# (id, exit code, termination message, expected message tail)
FAILURE_MESSAGES = [
    ("one line", 2, "tuneloop-train: error: missing column `label`\n", "(exit code 2): tuneloop-train: error: missing column `label`"),
    # FallbackToLogsOnError: up to 80 log lines; the trainer's error line says it, not the traceback.
    ("log tail with the error line", 1, TRACEBACK,
     "code 1: tuneloop-train: error: RuntimeError: boom (retryable: a retry resumes from the newest checkpoint)"),
    ("the last error line wins", 2, "tuneloop-train: error: first\nnoise\ntuneloop-train: error: second\n",
     "(exit code 2): tuneloop-train: error: second"),
    ("no error line: the last non-empty one", 1, "loading\nSegmentation fault (core dumped)\n\n  \n",
     "code 1: Segmentation fault (core dumped)"),
    ("no message", 1, "", "exited with code 1"),
]


@pytest.mark.parametrize("code, message, tail", [c[1:] for c in FAILURE_MESSAGES], ids=[c[0] for c in FAILURE_MESSAGES])
def test_failed_pod_message_is_one_line(code: int, message: str, tail: str) -> None:
    found = pod_problem(pod("Failed", name="p", terminated={"exitCode": code, "reason": "Error", "message": message}), NOW)
    assert found is not None and "\n" not in found[1]
    assert found[1].endswith(tail), found


def test_group_restart_counts_failures_but_not_disruptions() -> None:
    from tuneloop.operator.status import group_restart

    two = spec(resources={"nodes": 2}, runPolicy={"backoffLimit": 1})
    failed_job = job(failed=2, conditions=[cond("Failed", "PodFailurePolicy")])
    peer = pod("Failed", name="p-peer", rank=0, terminated={"exitCode": 143, "reason": "Error"})
    preempted = pod("Failed", name="p-pre", rank=1, terminated={"exitCode": 143, "reason": "Error"},
                    conditions=[{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}])
    restart = group_restart(failed_job, [EXIT1, peer], two, attempts=1, now=NOW)
    assert restart is not None and restart.counted and "exited with code 1" in restart.message
    # The budget is spent: attempt 2 of backoffLimit 1 is the last.
    assert group_restart(failed_job, [EXIT1, peer], two, attempts=2, now=NOW) is None
    # A disruption restarts the group however many attempts were used, and costs none.
    free = group_restart(failed_job, [preempted, peer], two, attempts=2, now=NOW)
    assert free is not None and not free.counted and "disrupted" in free.message
    # Not failed yet (FailureTarget: pods still terminating), one node, a deadline: no restart.
    assert group_restart(job(conditions=[cond("FailureTarget", "PodFailurePolicy")]), [EXIT1], two, 1, NOW) is None
    assert group_restart(failed_job, [EXIT1], spec(), 1, NOW) is None
    assert group_restart(job(conditions=[cond("Failed", "DeadlineExceeded")]), [EXIT1], two, 1, NOW) is None


def test_multi_node_attempts_are_the_operators_count() -> None:
    two = spec(resources={"nodes": 2})
    status = derive_status(job(active=2, failed=0), [pod("Running"), pod("Running", rank=1)], spec=two, generation=1,
                           previous={"attempts": 2}, now=NOW)
    assert status["attempts"] == 2 and status["reason"] == "Training"
