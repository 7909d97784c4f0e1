"""The Job controller half of the local kubelet (kubelet.py): batch/v1 Jobs -> pods and status.

A mixin of `Kubelet`, which runs the pods and calls `_sync_job` once per Job per pass; it
uses the kubelet's `api`, `runs`, `jobs`, `departed`, pod backoff and start/stop helpers.

Jobs (in `namespace`, or all when None, filtered by `selector`): one pod per completion
index (Indexed: parallelism = completions), named `<job>-<index>-<suffix>` (`<job>-<suffix>`
when NonIndexed, as Kubernetes names them), with the `job-name`, `controller-uid` and index
labels and annotation and an ownerReference; status `active`, `ready`, `terminating`,
`succeeded`, `failed`, `startTime`, `completionTime`, `completedIndexes` and conditions as the
Job controller of Kubernetes 1.31+ writes them: `SuccessCriteriaMet`, then in a later write
`Complete` (CompletionsReached); `FailureTarget`, then in a later write once no pod is running
or terminating, `Failed` with reason PodFailurePolicy, BackoffLimitExceeded or
DeadlineExceeded; `Suspended` (JobSuspended / JobResumed). A failed pod (one deleted through
the API included) goes through `podFailurePolicy` (FailJob, Ignore, Count; the first matching
rule), else counts against `backoffLimit`, and is replaced after the kubelet's `pod_backoff`
(Kubernetes: 10 s, doubling, at most 6 min). A suspended Job's pods get SIGTERM, then SIGKILL
after the grace period, and are deleted; they do not count as failures.

A pod the API server refuses (admission.py: a missing ServiceAccount or PriorityClass) is
not made: a `FailedCreate` Warning Event on the Job says why (repeats counted on one Event),
and the next try waits for the same backoff as a failed pod's replacement.

`podReplacementPolicy`: with `TerminatingOrFailed` a pod deleted through the API is replaced
while it is still Terminating (the same completion index may have two pods then); with
`Failed` only once it has ended.

What it leaves out: `uncountedTerminatedPods`, `successPolicy`, `backoffLimitPerIndex`,
`managedBy`, and the pods' job-tracking finalizer (failures are counted in memory; a pod
deleted through the API is counted from the kubelet's record of it).
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Iterable, Mapping
from typing import Any

from tuneloop.emulator.client import ApiError, resource_path
from tuneloop.emulator.podrun import INDEX_KEY, JOB_NAME_KEYS, UID_KEYS, JobState, PodRun, _parse_time, free_port, now_rfc3339


class JobController:
    def _sync_job(self, job: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        meta, spec = job["metadata"], job.get("spec") or {}
        uid = meta["uid"]
        state = self.jobs.setdefault(uid, JobState())
        runs = {r.uid: r for r in self.runs.values() if r.job_uid == uid}
        for run in runs.values():
            run.job = job
        # Our own pods as we last wrote them (this pass may have reported an exit), and those
        # deleted through the API since the last pass (gone from the listing, still counted).
        gone = {p["metadata"]["uid"]: p for p in self.departed.pop(uid, ())}
        pods = [runs[p["metadata"]["uid"]].pod if p["metadata"]["uid"] in runs else p for p in pods
                if p["metadata"]["uid"] not in gone] + list(gone.values())
        old = job.get("status") or {}
        status = copy.deepcopy(old)
        conditions: list[dict[str, Any]] = status.setdefault("conditions", [])
        now = now_rfc3339()
        if not state.adopted:
            self._adopt(state, pods, runs)
        if _has(conditions, "Complete") or _has(conditions, "Failed"):
            for run in runs.values():
                run.terminate(self._grace(run.pod))
            return

        # Account pods that ended since the last pass (podFailurePolicy, backoffLimit).
        indexed = spec.get("completionMode") == "Indexed"
        completions = int(spec.get("completions") or 1)
        done_indexes = _parse_indexes(status.get("completedIndexes", ""))
        for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or ""):
            pod_uid, phase = pod["metadata"]["uid"], (pod.get("status") or {}).get("phase")
            if pod_uid in state.counted or phase not in ("Succeeded", "Failed"):
                continue
            state.counted.add(pod_uid)
            if phase == "Succeeded":
                status["succeeded"] = int(status.get("succeeded") or 0) + 1
                if indexed:
                    done_indexes.add(_pod_index(pod) or 0)
                continue
            action, rule_message = _failure_action(spec.get("podFailurePolicy"), pod)
            if action == "FailJob" and not _has(conditions, "FailureTarget"):
                _set(conditions, "FailureTarget", "True", "PodFailurePolicy", rule_message, now)
            if action != "Ignore":
                status["failed"] = int(status.get("failed") or 0) + 1
                state.backoff = min(self.pod_backoff_max, max(self.pod_backoff, state.backoff * 2))
                state.next_start = time.monotonic() + state.backoff
        if indexed:
            status["completedIndexes"] = _format_indexes(done_indexes)

        suspended = bool(spec.get("suspend"))
        if suspended:
            if not _has(conditions, "Suspended"):
                _set(conditions, "Suspended", "True", "JobSuspended", "Job suspended", now)
        else:
            if _has(conditions, "Suspended"):
                _set(conditions, "Suspended", "False", "JobResumed", "Job resumed", now)
                status["startTime"] = now  # Kubernetes resets it on every resume
            status.setdefault("startTime", now)

        backoff_limit = int(spec.get("backoffLimit", 6))
        if not _has(conditions, "FailureTarget"):
            if int(status.get("failed") or 0) > backoff_limit:
                _set(conditions, "FailureTarget", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit", now)
            elif spec.get("activeDeadlineSeconds") is not None and not suspended and status.get("startTime"):
                started = _parse_time(status["startTime"]) or time.time()
                if time.time() - started >= int(spec["activeDeadlineSeconds"]):
                    _set(conditions, "FailureTarget", "True", "DeadlineExceeded", "Job was active longer than specified deadline", now)
        succeeded = len(done_indexes) if indexed else int(status.get("succeeded") or 0)
        if succeeded >= completions and not _has(conditions, "SuccessCriteriaMet") and not _has(conditions, "FailureTarget"):
            _set(conditions, "SuccessCriteriaMet", "True", "CompletionsReached", "Reached expected number of succeeded pods", now)

        finishing = _has(conditions, "FailureTarget") or _has(conditions, "SuccessCriteriaMet")
        active_runs = [r for r in self.runs.values() if r.job_uid == uid and r.reported not in ("Succeeded", "Failed")]
        if finishing or suspended:
            for run in active_runs:
                run.terminate(self._grace(run.pod))
                run.delete_when_gone = True  # the job controller deletes the pods it stops
                run.stopped_by_controller = True
        else:
            self._start_missing(job, state, active_runs, done_indexes if indexed else None, succeeded)
            active_runs = [r for r in self.runs.values() if r.job_uid == uid and r.reported not in ("Succeeded", "Failed")]

        stopping = [r for r in active_runs if r.kill_deadline is not None]
        # As the Job controller of 1.31+: the interim condition is one status write, the
        # terminal one a later write, once no pod is left running or terminating.
        interim_written = _has(old.get("conditions") or (), "FailureTarget") or _has(old.get("conditions") or (), "SuccessCriteriaMet")
        if not active_runs and interim_written:
            if cond := _get(conditions, "FailureTarget"):
                _set(conditions, "Failed", "True", cond["reason"], cond["message"], now)
            elif cond := _get(conditions, "SuccessCriteriaMet"):
                _set(conditions, "Complete", "True", cond["reason"], cond["message"], now)
                status["completionTime"] = now
        status["active"] = len(active_runs) - len(stopping)
        status["ready"] = sum(1 for r in active_runs if r.reported == "Running" and r.kill_deadline is None)
        status["terminating"] = len(stopping)
        for key in ("active", "succeeded", "failed"):
            if not status.get(key):
                status[key] = None  # omitted when zero, as Kubernetes writes it
        if not conditions:
            status["conditions"] = None
        patch = {k: v for k, v in status.items() if old.get(k) != v}
        if patch:
            self.api.patch(resource_path("batch/v1", "jobs", meta["namespace"], meta["name"], "status"), {"status": patch})

    def _adopt(self, state: JobState, pods: list[dict], runs: Mapping[str, PodRun]) -> None:
        """First sight of a Job: its terminal pods were counted by whoever ran them; pods said
        to be running that no process of ours backs are a lost node's pods (as PodGC marks them)."""
        state.adopted = True
        for pod in pods:
            uid, phase = pod["metadata"]["uid"], (pod.get("status") or {}).get("phase")
            if uid in runs:
                continue
            if phase in ("Succeeded", "Failed"):
                state.counted.add(uid)
            else:
                now = now_rfc3339()
                status = {"phase": "Failed", "conditions": [
                    {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC",
                     "message": "PodGC: node no longer exists", "lastTransitionTime": now}]}
                pod["status"] = {**(pod.get("status") or {}), **status}
                self.api.patch(resource_path("v1", "pods", pod["metadata"]["namespace"], pod["metadata"]["name"], "status"),
                               {"status": status})

    def _start_missing(self, job: dict, state: JobState, active: list[PodRun], done_indexes: set[int] | None,
                       succeeded: int) -> None:
        if time.monotonic() < state.next_start:
            return
        spec = job["spec"]
        completions = int(spec.get("completions") or 1)
        if spec.get("podReplacementPolicy", "TerminatingOrFailed") == "TerminatingOrFailed":
            # A pod being deleted is replaced at once, beside it; `Failed` (the default with a
            # podFailurePolicy) waits until it has ended (KEP-3939).
            active = [r for r in active if r.kill_deadline is None]
        if done_indexes is not None:
            busy = {r.index for r in active}
            wanted: list[int | None] = [i for i in range(completions) if i not in done_indexes and i not in busy]
            wanted = wanted[: max(0, int(spec.get("parallelism", completions)) - len(active))]
        else:
            count = min(int(spec.get("parallelism", 1)), completions - succeeded) - len(active)
            wanted = [None] * max(0, count)
        if wanted and self.remap_ports and not state.host_ports:
            for container in spec["template"]["spec"].get("containers") or ():
                for port in container.get("ports") or ():
                    state.host_ports.setdefault(int(port["containerPort"]), free_port())
        for index in wanted:
            if not self._create_pod(job, state, index):
                break  # refused: the rest would be too; retried after the backoff

    def _create_pod(self, job: dict, state: JobState, index: int | None) -> bool:
        meta, template = job["metadata"], copy.deepcopy(job["spec"]["template"])
        # The API server adds 5 characters, as for the real Job controller's pods.
        generate_name = f"{meta['name']}-{index}-" if index is not None else f"{meta['name']}-"
        labels = {**(template.get("metadata") or {}).get("labels", {})}
        labels.update({key: meta["name"] for key in JOB_NAME_KEYS})
        labels.update({key: meta["uid"] for key in UID_KEYS})
        annotations = {**(template.get("metadata") or {}).get("annotations", {})}
        pod_spec = template["spec"]
        if index is not None:
            labels[INDEX_KEY] = annotations[INDEX_KEY] = str(index)
            pod_spec.setdefault("hostname", f"{meta['name']}-{index}")
        pod_spec["nodeName"] = self.node_name
        for container in pod_spec.get("containers") or ():
            for port in container.get("ports") or ():
                port["containerPort"] = state.host_ports.get(int(port["containerPort"]), port["containerPort"])
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": generate_name, "namespace": meta["namespace"], "labels": labels, "annotations": annotations,
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                                              "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}]},
            "spec": pod_spec,
        }
        try:
            created = self.api.request("POST", resource_path("v1", "pods", meta["namespace"]), pod)
        except ApiError as exc:
            if exc.status not in (403, 422):  # refused by admission or validation; else an API hiccup
                raise
            self._failed_create(job, state, f"Error creating: {exc.message}")
            state.backoff = min(self.pod_backoff_max, max(self.pod_backoff, state.backoff * 2))
            state.next_start = time.monotonic() + state.backoff
            return False
        name = created["metadata"]["name"]
        run = PodRun(meta["namespace"], name, created["metadata"]["uid"], meta["uid"], index, job, created,
                     tempfile.TemporaryDirectory(prefix=f"tuneloop-pod-{name}-"))
        self.runs[run.uid] = run
        self._patch_pod_status(run, {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now_rfc3339()}]})
        self._start_containers(run)
        return True

    def _failed_create(self, job: dict, state: JobState, message: str) -> None:
        """A `FailedCreate` Warning Event on the Job, as the Job controller records a refused
        pod; a repeat bumps the same Event's count, as the event recorder aggregates them."""
        meta, now = job["metadata"], now_rfc3339()
        events = resource_path("v1", "events", meta["namespace"])
        if message in state.events:
            name, count = state.events[message]
            self.api.patch(f"{events}/{name}", {"count": count + 1, "lastTimestamp": now})
            state.events[message] = (name, count + 1)
            return
        created = self.api.request("POST", events, {
            "apiVersion": "v1", "kind": "Event", "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": "batch/v1", "kind": "Job", "namespace": meta["namespace"], "name": meta["name"],
                               "uid": meta["uid"], "resourceVersion": meta.get("resourceVersion", "")},
            "reason": "FailedCreate", "message": message, "type": "Warning",
            "source": {"component": "job-controller"}, "reportingComponent": "job-controller", "reportingInstance": "",
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        })
        state.events[message] = (created["metadata"]["name"], 1)



# --- pure helpers -------------------------------------------------------------------------------


def _job_name(pod: Mapping[str, Any]) -> str:
    return (pod.get("metadata") or {}).get("labels", {}).get(JOB_NAME_KEYS[0], "")


def _pod_index(pod: Mapping[str, Any]) -> int | None:
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(INDEX_KEY)
    return int(value) if value not in (None, "") else None


def _get(conditions: Iterable[Mapping[str, Any]], type_: str) -> dict | None:
    return next((dict(c) for c in conditions if c.get("type") == type_ and c.get("status") == "True"), None)


def _has(conditions: Iterable[Mapping[str, Any]], type_: str) -> bool:
    return _get(conditions, type_) is not None


def _set(conditions: list[dict[str, Any]], type_: str, status: str, reason: str, message: str, now: str) -> None:
    for cond in conditions:
        if cond.get("type") == type_:
            if cond.get("status") != status:
                cond["lastTransitionTime"] = now
            cond.update(status=status, reason=reason, message=message, lastProbeTime=now)
            return
    conditions.append({"type": type_, "status": status, "reason": reason, "message": message,
                       "lastProbeTime": now, "lastTransitionTime": now})


def _failure_action(policy: Mapping[str, Any] | None, pod: Mapping[str, Any]) -> tuple[str, str]:
    """(action, message) of the first podFailurePolicy rule matching a failed pod; Count if none."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    for number, rule in enumerate((policy or {}).get("rules") or ()):
        if on_codes := rule.get("onExitCodes"):
            for cs in status.get("containerStatuses") or ():
                if on_codes.get("containerName") and cs.get("name") != on_codes["containerName"]:
                    continue
                code = ((cs.get("state") or {}).get("terminated") or {}).get("exitCode")
                if code is None or code == 0:
                    continue
                inside = code in (on_codes.get("values") or ())
                if inside == (on_codes.get("operator", "In") == "In"):
                    return rule["action"], (f"Container {cs['name']} for pod {meta.get('namespace')}/{meta.get('name')} "
                                            f"failed with exit code {code} matching {rule['action']} rule at index {number}")
        for wanted in rule.get("onPodConditions") or ():
            for cond in status.get("conditions") or ():
                if cond.get("type") == wanted.get("type") and cond.get("status") == wanted.get("status", "True"):
                    return rule["action"], (f"Pod {meta.get('namespace')}/{meta.get('name')} has condition {cond['type']} "
                                            f"matching {rule['action']} rule at index {number}")
    return "Count", ""


def _parse_indexes(text: str) -> set[int]:
    out: set[int] = set()
    for part in filter(None, (text or "").split(",")):
        low, _, high = part.partition("-")
        out.update(range(int(low), int(high or low) + 1))
    return out


def _format_indexes(indexes: set[int]) -> str:
    """`1,3-5`: the completedIndexes format."""
    parts, ordered = [], sorted(indexes)
    while ordered:
        start = end = ordered.pop(0)
        while ordered and ordered[0] == end + 1:
            end = ordered.pop(0)
        parts.append(str(start) if start == end else f"{start}-{end}")
    return ",".join(parts)

