"""The FineTuneJob status as a small state machine: a pure function of the Job and its pods.

`derive_status` takes everything it needs as arguments (the previous status and `now`
included) and returns the fields the operator owns; `status_patch` keeps only what changed,
so an unchanged world costs no API call. Conditions follow the Kubernetes conventions
(type/status/reason/message/lastTransitionTime/observedGeneration) that kstatus, Argo CD and
`kubectl wait --for=condition=Succeeded` read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.api.typed import Problem
from tuneloop.operator.builders import ANNOTATION_COMPLETION_INDEX, CONTAINER, EXIT_BAD_INPUT, EXIT_OUT_OF_MEMORY, Blocked

PENDING, QUEUED, RUNNING, SUCCEEDED, FAILED, SUSPENDED = "Pending", "Queued", "Running", "Succeeded", "Failed", "Suspended"
TERMINAL = frozenset({SUCCEEDED, FAILED})
CONDITION_TYPES = ("Ready", "Reconciling", "Stalled", "Succeeded", "Failed", "Suspended")
# Fields derive_status owns; progress, metrics and checkpoints come from the trainer (scrape.py).
OWNED = ("phase", "reason", "message", "observedGeneration", "conditions", "attempts", "startTime", "completionTime", "jobName")
INVALID_SPEC = "InvalidSpec"
CHILD_REJECTED = "ChildRejected"
# Failed, but a corrected spec tries again: nothing ran (issue 9).
RECOVERABLE = frozenset({INVALID_SPEC, CHILD_REJECTED})
# Pending that long with the scheduler saying no is worth a Stalled condition, not a shrug.
UNSCHEDULABLE_AFTER_SECONDS = 300.0
IMAGE_PULL_REASONS = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"})
# The kubelet retries these forever, but nothing changes until someone fixes the cluster
# (a missing Secret, ConfigMap or key; a bad command): Stalled, with the kubelet's words.
START_FAILURE_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError"})
ERROR_PREFIX = "tuneloop-train: error:"  # the trainer's last word on a failure (trainer cli.py)


@dataclass(frozen=True)
class Verdict:
    """Where the job stands, before it is spelled out as conditions."""

    phase: str
    reason: str
    message: str
    ready: bool = False
    reconciling: bool = False
    stalled: bool = False


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _dig(obj: Mapping[str, Any] | None, *keys: str, default: Any = None) -> Any:
    for key in keys:
        if not isinstance(obj, Mapping) or key not in obj or obj[key] is None:
            return default
        obj = obj[key]
    return obj


def _condition(obj: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any] | None:
    for cond in _dig(obj, "status", "conditions", default=()):
        if cond.get("type") == type_ and cond.get("status") == "True":
            return cond
    return None


# --- pods ----------------------------------------------------------------------------------


def pod_rank(pod: Mapping[str, Any]) -> int:
    """The pod's completion index; -1 (no rank) when the annotation is not a number."""
    value = _dig(pod, "metadata", "annotations", ANNOTATION_COMPLETION_INDEX, default="0") or 0
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def _trainer_state(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    for status in _dig(pod, "status", "containerStatuses", default=()):
        if status.get("name") == CONTAINER:
            return status
    return {}


def trainer_terminated(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    """The trainer container's `terminated` state ({} while it runs)."""
    return _dig(_trainer_state(pod), "state", "terminated") or {}


def error_line(message: str) -> str:
    """The line of a termination message that says what went wrong.

    FallbackToLogsOnError hands over up to 80 log lines (a traceback, torchrun's report); the
    trainer's own `tuneloop-train: error:` line says it best, else the last line does.
    """
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return next((line for line in reversed(lines) if line.startswith(ERROR_PREFIX)), lines[-1] if lines else "")


def pod_problem(pod: Mapping[str, Any], now: datetime, unschedulable_after: float = UNSCHEDULABLE_AFTER_SECONDS) -> tuple[str, str] | None:
    """(reason, message) when a pod is failing or stuck; None when it is fine or still starting."""
    name = _dig(pod, "metadata", "name", default="pod")
    state = _trainer_state(pod)
    terminated = _dig(state, "state", "terminated") or _dig(state, "lastState", "terminated")
    if _dig(pod, "status", "phase") == "Failed":
        if _dig(pod, "status", "reason") == "Evicted":
            return "Evicted", f"pod {name} was evicted: {_dig(pod, 'status', 'message', default='')}".strip()
        if terminated:
            code = terminated.get("exitCode")
            detail = error_line(terminated.get("message") or "")
            if terminated.get("reason") == "OOMKilled" or code == 137 and "OOM" in (terminated.get("reason") or ""):
                return "OOMKilled", f"pod {name} ran out of memory (OOMKilled); raise spec.resources.memory or lower spec.training.batchSize"
            if code == EXIT_OUT_OF_MEMORY:
                return "OutOfMemory", f"pod {name}: the model and batch do not fit the GPU (exit code 3)" + (f": {detail}" if detail else "")
            if code == EXIT_BAD_INPUT:
                return "InvalidInput", f"pod {name}: the trainer rejected its config or data (exit code 2)" + (f": {detail}" if detail else "")
            return "Error", f"pod {name}: the trainer exited with code {code}" + (f": {detail}" if detail else "")
        return "Error", f"pod {name} failed: {_dig(pod, 'status', 'message', default='no details')}"
    waiting = _dig(state, "state", "waiting")
    if waiting and waiting.get("reason") in IMAGE_PULL_REASONS:
        return "ImagePullBackOff", f"pod {name} cannot pull its image: {waiting.get('message') or waiting.get('reason')}"
    if waiting and waiting.get("reason") in START_FAILURE_REASONS:
        return waiting["reason"], (f"pod {name} cannot start its container: {waiting.get('message') or waiting['reason']}"
                                   " (check spec.storage.credentialsSecret, spec.env and their keys)")
    for cond in _dig(pod, "status", "conditions", default=()):
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and cond.get("reason") == "Unschedulable":
            since = parse_time(cond.get("lastTransitionTime")) or now
            if (now - since).total_seconds() >= unschedulable_after:
                return "Unschedulable", f"pod {name} has been unschedulable for over {int(unschedulable_after)}s: {cond.get('message', '')}".strip()
    return None


def _newest_failure(pods: Sequence[Mapping[str, Any]], now: datetime) -> tuple[str, str] | None:
    failed = [p for p in pods if _dig(p, "status", "phase") == "Failed"]
    failed.sort(key=lambda p: _dig(p, "metadata", "creationTimestamp", default=""))
    for pod in reversed(failed):
        found = pod_problem(pod, now)
        if found:
            return found
    return None


def _disrupted(pod: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "DisruptionTarget" and c.get("status") == "True"
               for c in _dig(pod, "status", "conditions", default=()))


def _first_failure(pods: Sequence[Mapping[str, Any]], now: datetime) -> tuple[str, str] | None:
    """The rank that failed first (its peers fail after it, or are stopped by the Job controller)."""
    failed = [p for p in pods if _dig(p, "status", "phase") == "Failed"]
    failed.sort(key=lambda p: (trainer_terminated(p).get("finishedAt") or "~", _dig(p, "metadata", "creationTimestamp", default="")))
    for pod in failed:
        if found := pod_problem(pod, now):
            return found
    return None


@dataclass(frozen=True)
class GroupRestart:
    """A multi-node attempt failed: the operator deletes the whole Job and re-creates it."""

    counted: bool  # False when a rank was disrupted (preempted, drained): it costs no retry
    message: str


def group_restart(job: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]], spec: FineTuneJobSpec | None,
                  attempts: int, now: datetime) -> GroupRestart | None:
    """Whether a failed multi-node Job is restarted as a group; None when it is final.

    Why the operator and not JobSet: JobSet (`failurePolicy.maxRestarts`) does the same, but
    is an add-on most clusters lack; a Job the operator deletes (foreground, so the Job is gone
    only once its pods are) and re-creates under the same name needs nothing but batch/v1, and
    the trainer resumes from the newest checkpoint either way (issue 9).
    A Job is final only once `Failed` is written (1.31+: after its pods have terminated), so
    two attempts never run side by side.
    """
    if job is None or spec is None or spec.resources.nodes <= 1 or not _condition(job, "Failed"):
        return None
    if _dig(job, "metadata", "deletionTimestamp"):
        return None  # already being replaced
    if _condition(job, "Failed").get("reason") == "DeadlineExceeded":
        return None
    failed = [p for p in pods if _dig(p, "status", "phase") == "Failed"]
    if any(trainer_terminated(p).get("exitCode") in (EXIT_BAD_INPUT, EXIT_OUT_OF_MEMORY) for p in failed):
        return None  # bad config or data, or out of GPU memory: every attempt would fail the same way
    disrupted = any(_disrupted(p) for p in failed)
    if not disrupted and attempts > spec.run_policy.backoff_limit:
        return None
    cause = _first_failure(pods, now)
    why = "a rank was disrupted (not counted)" if disrupted else (cause[1] if cause else "a rank failed")
    nodes = spec.resources.nodes
    return GroupRestart(not disrupted, f"restarting all {nodes} nodes from the newest checkpoint: {why}")


# --- the verdict -----------------------------------------------------------------------------


def _attempts(job: Mapping[str, Any], nodes: int, previous: int) -> int:
    """Attempts started: failed pods (per node) plus the one running or done now."""
    if nodes > 1:
        return max(previous, 1)  # the operator counts group restarts itself (group_restart)
    status = _dig(job, "status", default={})
    failed = int(status.get("failed") or 0)
    current = 1 if (status.get("active") or status.get("succeeded") or _condition(job, "Complete")) else 0
    return max(previous, -(-failed // max(nodes, 1)) + current)


def _failed_verdict(job: Mapping[str, Any], cond: Mapping[str, Any], spec: FineTuneJobSpec | None, pods: Sequence[Mapping[str, Any]], now: datetime) -> Verdict:
    reason = cond.get("reason") or "Failed"
    message = cond.get("message") or "the training Job failed"
    last = _newest_failure(pods, now)
    nodes = spec.resources.nodes if spec else 1
    problems = [p for p in (pod_problem(pod, now) for pod in pods) if p]
    bad_input = next((p for p in problems if p[0] == "InvalidInput"), None)
    out_of_memory = next((p for p in problems if p[0] == "OutOfMemory"), None)
    if nodes > 1 and reason == "PodFailurePolicy":
        # Every multi-node failure is FailJob; only exit codes 2 and 3 are final by themselves.
        last = bad_input or out_of_memory or _first_failure(pods, now)
        reason = "InvalidInput" if bad_input else "BackoffLimitExceeded"
    if last and last[0] == "OutOfMemory" and reason != "DeadlineExceeded":
        return Verdict(FAILED, "OutOfMemory", last[1], stalled=True)
    if reason == "InvalidInput" or reason == "PodFailurePolicy" or (last and last[0] == "InvalidInput" and reason != "DeadlineExceeded"):
        return Verdict(FAILED, "InvalidInput", last[1] if last else message, stalled=True)
    if reason == "DeadlineExceeded":
        limit = spec.run_policy.active_deadline_seconds if spec else None
        message = f"ran longer than spec.runPolicy.activeDeadlineSeconds ({limit}s)" if limit else message
    elif reason == "BackoffLimitExceeded" and spec is not None:
        message = f"failed after {spec.run_policy.backoff_limit} retries (spec.runPolicy.backoffLimit)"
    if last:
        message = f"{message}; last failure: {last[1]}"
    return Verdict(FAILED, reason, message, stalled=True)


def _jobset_verdict(jobset: Mapping[str, Any], job: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]],
                    spec: FineTuneJobSpec | None, now: datetime) -> Verdict | None:
    """With `runPolicy.groupRestart: JobSet`, what only the JobSet knows: that it failed for good,
    or that it is restarting the group; None: read its current child Job as in Operator mode."""
    if cond := _condition(jobset, "Failed"):
        # The child Job's own failure says why (exit 2/3, or retries used up: ReachedMaxRestarts).
        return _failed_verdict(job or {}, _condition(job, "Failed") or cond, spec, pods, now)
    if job is None or _condition(job, "Failed") or _condition(job, "FailureTarget") or _dig(job, "metadata", "deletionTimestamp"):
        restarts = int(_dig(jobset, "status", "restarts", default=0) or 0)
        if job is None and restarts == 0:
            return Verdict(PENDING, "CreatingJob", "the JobSet is creating the training Job", reconciling=True)
        nodes = spec.resources.nodes if spec else 1
        return Verdict(PENDING, "Restarting", f"the JobSet is restarting all {nodes} nodes from the newest checkpoint "
                       f"(restart {restarts})", reconciling=True)
    return None


def _verdict(job: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]], spec: FineTuneJobSpec | None,
             problems: Sequence[Problem], previous: Mapping[str, Any], now: datetime, unschedulable_after: float,
             invalid_reason: str = INVALID_SPEC, blocked: Blocked | None = None,
             failed_create: str | None = None, jobset: Mapping[str, Any] | None = None) -> Verdict | None:
    if problems:
        return Verdict(FAILED, invalid_reason, "; ".join(str(p) for p in problems), stalled=True)
    if jobset is not None and (verdict := _jobset_verdict(jobset, job, pods, spec, now)) is not None:
        return verdict
    if job is None:
        if previous.get("phase") in TERMINAL and previous.get("reason") not in RECOVERABLE:
            return None  # finished and cleaned up (TTL): the status stays as it was
        if blocked is not None:
            return Verdict(PENDING, blocked.reason, blocked.message, reconciling=True, stalled=blocked.stalled)
        lingering = [p for p in pods if _dig(p, "status", "phase") not in ("Succeeded", "Failed")]
        if lingering:
            # Two generations must never write one output.uri (issue 9).
            return Verdict(PENDING, "WaitingForOldPods",
                           f"waiting for {len(lingering)} pod(s) of the previous Job to terminate", reconciling=True)
        return Verdict(PENDING, "CreatingJob", "creating the training Job", reconciling=True)

    if cond := _condition(job, "Complete"):
        return Verdict(SUCCEEDED, "Succeeded", "training finished; the model is in spec.output.uri/final/", ready=True)
    if _dig(job, "metadata", "deletionTimestamp"):
        restarting = previous.get("reason") == "Restarting"
        return Verdict(PENDING, "Restarting", previous.get("message") if restarting else
                       "waiting for the previous Job and its pods to be deleted", reconciling=True)
    attempts = int(previous.get("attempts") or 1)
    if restart := group_restart(job, pods, spec, attempts, now):
        return Verdict(PENDING, "Restarting", restart.message, reconciling=True)
    if cond := _condition(job, "Failed"):
        return _failed_verdict(job, cond, spec, pods, now)
    if cond := _condition(job, "FailureTarget"):
        # 1.31+: the Job will fail once its pods have terminated; final only then (issue 9).
        return Verdict(RUNNING if previous.get("phase") == RUNNING else PENDING, "Stopping",
                       f"the Job is failing ({cond.get('reason')}): waiting for its pods to terminate", reconciling=True)
    if _condition(job, "SuccessCriteriaMet"):
        # 1.31+: Complete follows once the pods have terminated; training itself is done.
        return Verdict(RUNNING, "Completing", "training finished; waiting for the pods to terminate", ready=True, reconciling=True)

    assert spec is not None
    policy = spec.run_policy
    suspended = bool(_dig(job, "spec", "suspend", default=False))
    # A pod being deleted is not training, whatever its phase still says (status.terminating).
    active_pods = [p for p in pods if _dig(p, "status", "phase") in ("Pending", "Running")
                   and not _dig(p, "metadata", "deletionTimestamp")]
    if policy.suspend:
        if suspended and not active_pods:
            return Verdict(SUSPENDED, "Suspended", "suspended by spec.runPolicy.suspend; set it to false to resume from the latest checkpoint")
        return Verdict(SUSPENDED, "Suspending", "stopping the training pods", reconciling=True)
    if suspended:
        if policy.queue_name:
            return Verdict(QUEUED, "Queued", f"waiting for Kueue to admit the workload (queue {policy.queue_name})", reconciling=True)
        return Verdict(PENDING, "Resuming", "resuming from the latest checkpoint", reconciling=True)

    nodes = spec.resources.nodes
    retry = _newest_failure(pods, now)
    retry_note = f" (retrying after: {retry[1]})" if retry else ""
    for pod in active_pods:
        if stuck := pod_problem(pod, now, unschedulable_after):
            return Verdict(PENDING, stuck[0], stuck[1], reconciling=True, stalled=True)
    running = [p for p in active_pods if _dig(p, "status", "phase") == "Running"]
    if running:
        if len(running) >= nodes:
            return Verdict(RUNNING, "Training", f"training on {nodes} node(s){retry_note}", ready=True, reconciling=True)
        return Verdict(RUNNING, "WaitingForNodes", f"{len(running)} of {nodes} training pods running{retry_note}", reconciling=True)
    if not active_pods and not _dig(job, "status", "active"):
        if failed_create:
            # The API server refused the Job's pods; the Job controller says so only in an
            # Event on the Job (issue 9). Not final: the Job retries once the cause is fixed.
            return Verdict(PENDING, "FailedCreate", f"the Job cannot create its pods: {failed_create} (check "
                           "spec.storage.serviceAccountName, spec.resources.priorityClassName, and the namespace's "
                           "ResourceQuota and Pod Security level)", reconciling=True, stalled=True)
        since = parse_time(_dig(job, "status", "startTime") or _dig(job, "metadata", "creationTimestamp")) or now
        if (now - since).total_seconds() >= unschedulable_after:
            # FailedCreate: admission refused the pods (a missing ServiceAccount or
            # PriorityClass, ResourceQuota, Pod Security); the reason is in the Job's Events.
            return Verdict(PENDING, "NoPods", f"the Job has created no pod for over {int(unschedulable_after)}s: "
                           f"see `kubectl describe job {_dig(job, 'metadata', 'name')}` (FailedCreate)",
                           reconciling=True, stalled=True)
    return Verdict(PENDING, "Starting", f"waiting for the training pods to start{retry_note}", reconciling=True)


def awaits_first_pods(job: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]) -> bool:
    """A running, unsuspended Job with no pod at all: where FailedCreate Events are worth reading."""
    if job is None or pods or _dig(job, "status", "active") or _dig(job, "spec", "suspend", default=False):
        return False
    return not any(_condition(job, t) for t in ("Complete", "Failed", "FailureTarget", "SuccessCriteriaMet"))


def build_conditions(verdict: Verdict, previous: Iterable[Mapping[str, Any]], generation: int, now: datetime) -> list[dict[str, Any]]:
    """One condition per type; lastTransitionTime moves only when the status flips."""
    truth = {
        "Ready": verdict.ready,
        "Reconciling": verdict.reconciling,
        "Stalled": verdict.stalled,
        "Succeeded": verdict.phase == SUCCEEDED,
        "Failed": verdict.phase == FAILED,
        "Suspended": verdict.phase == SUSPENDED,
    }
    before = {c.get("type"): c for c in previous or ()}
    conditions = []
    for type_ in CONDITION_TYPES:
        status = "True" if truth[type_] else "False"
        old = before.get(type_) or {}
        since = old.get("lastTransitionTime") if old.get("status") == status else None
        conditions.append({
            "type": type_,
            "status": status,
            "reason": verdict.reason,
            "message": verdict.message,
            "lastTransitionTime": since or rfc3339(now),
            "observedGeneration": generation,
        })
    return conditions


def verdict_fields(verdict: Verdict, previous: Mapping[str, Any], generation: int, now: datetime) -> dict[str, Any]:
    """The fields every status carries from its verdict: phase, reason, message, conditions."""
    return {
        "phase": verdict.phase,
        "reason": verdict.reason,
        "message": verdict.message,
        "observedGeneration": generation,
        "conditions": build_conditions(verdict, previous.get("conditions") or (), generation, now),
    }


def derive_status(
    job: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    *,
    spec: FineTuneJobSpec | None,
    generation: int,
    previous: Mapping[str, Any] | None,
    now: datetime,
    problems: Sequence[Problem] = (),
    unschedulable_after: float = UNSCHEDULABLE_AFTER_SECONDS,
    invalid_reason: str = INVALID_SPEC,
    blocked: Blocked | None = None,
    failed_create: str | None = None,
    jobset: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The operator-owned status fields (see OWNED) for this Job and these pods.

    `problems` make it Failed and Stalled with `invalid_reason` (InvalidSpec, or ChildRejected
    when the API server refused a child built from the spec); `blocked`: no Job yet because a
    child's name is taken (WaitingForOldChildren, NameConflict); `failed_create`: the newest
    `FailedCreate` Event's message on the Job (its pods refused by the API server); `jobset`:
    the JobSet of `runPolicy.groupRestart: JobSet`, whose current child Job `job` is.
    """
    previous = dict(previous or {})
    verdict = _verdict(job, pods, spec, problems, previous, now, unschedulable_after, invalid_reason, blocked, failed_create, jobset)
    if verdict is None:
        kept = {k: previous[k] for k in OWNED if k in previous}
        return {**kept, "observedGeneration": generation}

    status: dict[str, Any] = {**verdict_fields(verdict, previous, generation, now), "attempts": int(previous.get("attempts") or 0)}
    for key in ("startTime", "completionTime", "jobName"):
        if previous.get(key):
            status[key] = previous[key]
    if job is not None:
        nodes = spec.resources.nodes if spec else 1
        status["attempts"] = _attempts(job, nodes, status["attempts"])
        status["jobName"] = _dig(job, "metadata", "name")
        started = _dig(job, "status", "startTime")
        # The first start counts: a Job's startTime resets on every resume from suspend.
        if started and not status.get("startTime"):
            status["startTime"] = started
    if jobset is not None:  # JobSet counts the restarts (disruptions not towards maxRestarts)
        status["attempts"] = max(status["attempts"], int(_dig(jobset, "status", "restartsCountTowardsMax", default=0) or 0) + 1)
    if verdict.phase in TERMINAL and not status.get("completionTime"):
        done = _dig(job, "status", "completionTime") if verdict.phase == SUCCEEDED else None
        failed = _condition(job, "Failed") if job else None
        status["completionTime"] = done or (failed or {}).get("lastTransitionTime") or rfc3339(now)
    return status


def status_patch(current: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """Only the owned fields that differ: an empty dict means no API call at all."""
    current = current or {}
    return {k: v for k, v in new.items() if current.get(k) != v}


def transition_events(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(type, reason, message) Events for what changed between two statuses."""
    old = old or {}
    before, after = old.get("phase"), new.get("phase")
    message = new.get("message", "")
    events: list[tuple[str, str, str]] = []
    if after != before:
        if after == RUNNING:
            events.append(("Normal", "Started", message))
        elif after == QUEUED:
            events.append(("Normal", "Queued", message))
        elif after == SUSPENDED:
            events.append(("Normal", "Suspended", message))
        elif after == SUCCEEDED:
            events.append(("Normal", "Succeeded", message))
        elif after == FAILED:
            events.append(("Warning", "Failed", f"{new.get('reason')}: {message}"))
        if before == SUSPENDED and after not in TERMINAL:
            events.append(("Normal", "Resumed", "resuming from the latest checkpoint"))
    if after not in TERMINAL and int(new.get("attempts") or 0) > max(int(old.get("attempts") or 0), 1):
        events.append(("Warning", "Retrying", f"attempt {new['attempts']}: {message}"))
    if new.get("reason") != old.get("reason") and new.get("reason") in ("ImagePullBackOff", "Unschedulable", "NoPods", "FailedCreate", "NameConflict", "Forbidden",
                                                                        *START_FAILURE_REASONS):
        events.append(("Warning", new["reason"], message))
    return events
