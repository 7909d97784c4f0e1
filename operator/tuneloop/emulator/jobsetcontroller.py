"""A minimal JobSet controller (jobset.x-k8s.io/v1alpha2) in the local kubelet's pass, so an
end-to-end test can prove a group restart through JobSet (issue 9 item 1). Hand-written
because JobSet's own controller is Go and needs a real API server with webhooks.

A mixin of `Kubelet` (kubelet.py), run once per pass when the API serves JobSets. For each
JobSet, as kubernetes-sigs/jobset's `pkg/controllers/jobset_controller.go` does:

- the headless Service named `network.subdomain` (default: the JobSet's name) selecting
  `jobset.sigs.k8s.io/jobset-name`, `publishNotReadyAddresses` default true;
- child Jobs `<jobset>-<replicatedJob>-<index>` with the jobset-name, replicatedjob-name,
  job-index and restart-attempt labels (on their pods too), the pods' `subdomain` when
  `network.enableDNSHostnames`, and `suspend` from the JobSet;
- a failed child Job goes through `failurePolicy.rules` (first match of
  `onJobFailureReasons` and `onJobFailureMessagePatterns`; none: RestartJobSet): FailJobSet
  fails the JobSet; RestartJobSet bumps `status.restarts` and `restartsCountTowardsMax` (past
  `maxRestarts`: Failed, ReachedMaxRestarts); RestartJobSetAndIgnoreMaxRestarts bumps only
  `restarts`. Jobs of an earlier attempt are deleted in the foreground (their pods first)
  and re-created once gone;
- `Completed` (AllJobsCompleted) when every child Job is Complete (successPolicy All).

Not here: webhooks (defaulting beyond the above), startupPolicy, coordinator, dependsOn,
successPolicy other than All, RestartJob actions, InPlaceRestart/BlockingRecreate,
exclusive placement, volumeClaimPolicies, TTL, managedBy, `replicatedJobsStatus`.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Mapping
from typing import Any

from tuneloop.emulator.client import ApiError, resource_path
from tuneloop.emulator.podrun import now_rfc3339

API_VERSION = "jobset.x-k8s.io/v1alpha2"
NAME_KEY = "jobset.sigs.k8s.io/jobset-name"
REPLICATED_JOB_KEY = "jobset.sigs.k8s.io/replicatedjob-name"
INDEX_KEY = "jobset.sigs.k8s.io/job-index"
RESTARTS_KEY = "jobset.sigs.k8s.io/restart-attempt"
NOT_SERVED_RETRY = 5.0  # seconds before asking again whether JobSets are served


class JobSetController:
    _jobsets_unserved_until: float = 0.0

    def _sync_jobsets(self) -> None:
        if time.monotonic() < self._jobsets_unserved_until:
            return
        query = {"labelSelector": self.selector} if self.selector else {}
        try:
            jobsets = self.api.request("GET", resource_path(API_VERSION, "jobsets", self.namespace), query=query)["items"]
        except ApiError as exc:
            if exc.status == 404:  # JobSet is not installed
                self._jobsets_unserved_until = time.monotonic() + NOT_SERVED_RETRY
                return
            raise
        if not jobsets:
            return
        children = self.api.request("GET", resource_path("batch/v1", "jobs", self.namespace), query={"labelSelector": NAME_KEY})["items"]
        for jobset in jobsets:
            uid = jobset["metadata"]["uid"]
            owned = [j for j in children if any(r.get("uid") == uid for r in j["metadata"].get("ownerReferences") or ())]
            try:
                self._sync_jobset(jobset, owned)
            except ApiError as exc:
                self._error(f"jobset {jobset['metadata']['name']}: {exc}")

    def _sync_jobset(self, jobset: dict[str, Any], jobs: list[dict[str, Any]]) -> None:
        meta, spec = jobset["metadata"], jobset.get("spec") or {}
        old = jobset.get("status") or {}
        status = copy.deepcopy(old)
        conditions: list[dict[str, Any]] = status.setdefault("conditions", [])
        if meta.get("deletionTimestamp") or _true(conditions, "Completed") or _true(conditions, "Failed"):
            return
        self._ensure_jobset_service(jobset)
        restarts = int(status.get("restarts") or 0)
        current = [j for j in jobs if int((j["metadata"].get("labels") or {}).get(RESTARTS_KEY, "0")) >= restarts]
        failed = next((j for j in current if _true((j.get("status") or {}).get("conditions") or (), "Failed")), None)
        if failed is not None:
            cond = _get((failed.get("status") or {}).get("conditions") or (), "Failed")
            action = _failure_action(spec.get("failurePolicy") or {}, cond.get("reason", ""), cond.get("message", ""))
            policy = spec.get("failurePolicy") or {}
            counted = int(status.get("restartsCountTowardsMax") or 0)
            if action == "FailJobSet":
                _set(conditions, "Failed", "FailJobSetFailurePolicyAction", "applying FailJobSet failure policy action")
            elif action == "RestartJobSet" and counted >= int(policy.get("maxRestarts") or 0):
                _set(conditions, "Failed", "ReachedMaxRestarts", "jobset failed due to reaching max number of restarts")
            else:
                status["restarts"] = restarts = restarts + 1
                if action == "RestartJobSet":
                    status["restartsCountTowardsMax"] = counted + 1
            current = []
        elif current and len(current) == _expected(spec) and all(
                _true((j.get("status") or {}).get("conditions") or (), "Complete") for j in current):
            _set(conditions, "Completed", "AllJobsCompleted", "jobset completed successfully")

        finished = _true(conditions, "Failed") or _true(conditions, "Completed")
        names = {j["metadata"]["name"] for j in jobs}
        for job in jobs:
            stale = int((job["metadata"].get("labels") or {}).get(RESTARTS_KEY, "0")) < restarts
            if stale and not job["metadata"].get("deletionTimestamp"):
                self.api.delete(resource_path("batch/v1", "jobs", job["metadata"]["namespace"], job["metadata"]["name"]),
                                propagationPolicy="Foreground")
            elif not stale and not finished and bool((job.get("spec") or {}).get("suspend")) != bool(spec.get("suspend")):
                self.api.patch(resource_path("batch/v1", "jobs", job["metadata"]["namespace"], job["metadata"]["name"]),
                               {"spec": {"suspend": bool(spec.get("suspend"))}})
        if not finished:
            for replicated in spec.get("replicatedJobs") or ():
                for index in range(int(replicated.get("replicas", 1))):
                    name = f"{meta['name']}-{replicated['name']}-{index}"
                    if name not in names:  # an earlier attempt's Job is re-created once it has gone
                        self._create_child_job(jobset, replicated, index, restarts)
        if not conditions:
            status["conditions"] = None
        patch = {k: v for k, v in status.items() if old.get(k) != v}
        if patch:
            self.api.patch(resource_path(API_VERSION, "jobsets", meta["namespace"], meta["name"], "status"), {"status": patch})

    def _ensure_jobset_service(self, jobset: Mapping[str, Any]) -> None:
        meta, network = jobset["metadata"], (jobset.get("spec") or {}).get("network") or {}
        name = network.get("subdomain") or meta["name"]
        if self.api.get(resource_path("v1", "services", meta["namespace"], name)) is not None:
            return
        self.api.request("POST", resource_path("v1", "services", meta["namespace"]), {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": meta["namespace"], "ownerReferences": [_owner(jobset)]},
            "spec": {"clusterIP": "None", "selector": {NAME_KEY: meta["name"]},
                     "publishNotReadyAddresses": network.get("publishNotReadyAddresses", True)},
        })

    def _create_child_job(self, jobset: Mapping[str, Any], replicated: Mapping[str, Any], index: int, restarts: int) -> None:
        meta, spec = jobset["metadata"], jobset.get("spec") or {}
        template = copy.deepcopy(replicated["template"])
        labels = {**(template.get("metadata") or {}).get("labels", {}), NAME_KEY: meta["name"],
                  REPLICATED_JOB_KEY: replicated["name"], INDEX_KEY: str(index), RESTARTS_KEY: str(restarts)}
        job_spec = template["spec"]
        job_spec["suspend"] = bool(spec.get("suspend"))
        pod_meta = job_spec["template"].setdefault("metadata", {})
        pod_meta["labels"] = {**pod_meta.get("labels", {}), **{k: v for k, v in labels.items() if k.startswith("jobset.")}}
        network = spec.get("network") or {}
        if network.get("enableDNSHostnames"):
            job_spec["template"]["spec"]["subdomain"] = network.get("subdomain") or meta["name"]
        self.api.request("POST", resource_path("batch/v1", "jobs", meta["namespace"]), {
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": f"{meta['name']}-{replicated['name']}-{index}", "namespace": meta["namespace"],
                         "labels": labels, "annotations": dict((template.get("metadata") or {}).get("annotations") or {}),
                         "ownerReferences": [_owner(jobset)]},
            "spec": job_spec,
        })


def _owner(jobset: Mapping[str, Any]) -> dict[str, Any]:
    meta = jobset["metadata"]
    return {"apiVersion": API_VERSION, "kind": "JobSet", "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}


def _expected(spec: Mapping[str, Any]) -> int:
    return sum(int(r.get("replicas", 1)) for r in spec.get("replicatedJobs") or ())


def _failure_action(policy: Mapping[str, Any], reason: str, message: str) -> str:
    """The first rule whose reasons and message patterns both match; RestartJobSet if none."""
    for rule in policy.get("rules") or ():
        reasons, patterns = rule.get("onJobFailureReasons") or [], rule.get("onJobFailureMessagePatterns") or []
        if (not reasons or reason in reasons) and (not patterns or any(re.search(p, message) for p in patterns)):
            return rule["action"]
    return "RestartJobSet"


def _get(conditions: Any, type_: str) -> dict[str, Any]:
    return next((c for c in conditions if c.get("type") == type_ and c.get("status") == "True"), {})


def _true(conditions: Any, type_: str) -> bool:
    return bool(_get(conditions, type_))


def _set(conditions: list[dict[str, Any]], type_: str, reason: str, message: str) -> None:
    now = now_rfc3339()
    conditions[:] = [c for c in conditions if c.get("type") != type_]
    conditions.append({"type": type_, "status": "True", "reason": reason, "message": message, "lastTransitionTime": now})
