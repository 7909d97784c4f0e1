"""A multi-node FineTuneJob as a JobSet (jobset.x-k8s.io): the group restart done by JobSet's
controller instead of ours (issue 9 item 1). Pure builders, as builders.py.

Why the operator's own restart (delete and re-create the Indexed Job) stays the default:
it needs nothing installed beside Kubernetes, and it counts attempts the way
`runPolicy.backoffLimit` is documented (a disruption is free, bad input or out of memory is
final). JobSet does the same with `failurePolicy`: every child Job fails as a whole on any
pod failure (the same podFailurePolicy as the operator's Job), and the JobSet's rules read the
child Job's failure message, which the Job controller writes as
`Container trainer for pod <ns>/<pod> failed with exit code <N> matching FailJob rule at index <i>`
or `Pod <ns>/<pod> has condition DisruptionTarget matching FailJob rule at index <i>`
(kubernetes pkg/controller/job/pod_failure_policy.go): exit 2 or 3 fails the JobSet,
a disruption restarts it without counting, anything else restarts it against `maxRestarts`.

JobSet names things its own way: the child Job `<jobset>-<replicatedJob>-<jobIndex>`, its
pods' hostnames `<jobset>-<replicatedJob>-<jobIndex>-<podIndex>`, and a headless Service
named by `network.subdomain` (we keep `<name>-trainer`) selecting the JobSet's pods.

Chosen per FineTuneJob by `spec.runPolicy.groupRestart: JobSet` (handlers.py `children_for`,
`current_job`; status.py `_jobset_verdict`).
"""

from __future__ import annotations

import copy
from typing import Any

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.operator.builders import (
    EXIT_BAD_INPUT, EXIT_OUT_OF_MEMORY, JOBSET_REPLICATED_JOB, LABEL_KUEUE_QUEUE, Owner, TrainerDefaults, _metadata, build_trainer_job, job_name,
    service_name,
)

GROUP = "jobset.x-k8s.io"
VERSION = "v1alpha2"
KIND = "JobSet"
PLURAL = "jobsets"
REPLICATED_JOB = JOBSET_REPLICATED_JOB
# JobSet's label on the child Jobs of each restart attempt (status.restarts).
RESTART_ATTEMPT_LABEL = "jobset.sigs.k8s.io/restart-attempt"

# RE2 patterns on a failed child Job's message (see the module docstring for its wording).
FINAL_EXIT_PATTERN = rf"failed with exit code ({EXIT_BAD_INPUT}|{EXIT_OUT_OF_MEMORY}) matching FailJob rule"
DISRUPTION_PATTERN = r"has condition DisruptionTarget matching FailJob rule"


def jobset_name(name: str) -> str:
    return job_name(name)


def pod_hostname(name: str, index: int) -> str:
    """As JobSet names the pods of its only replicated Job (one Job, replicas 1)."""
    return f"{jobset_name(name)}-{REPLICATED_JOB}-0-{index}"


def master_addr(name: str) -> str:
    return f"{pod_hostname(name, 0)}.{service_name(name)}"


def build_failure_policy(spec: FineTuneJobSpec) -> dict[str, Any]:
    """JobSet's restarts with the meaning of `runPolicy.backoffLimit` (see the module docstring)."""
    return {
        "maxRestarts": spec.run_policy.backoff_limit,
        "restartStrategy": "Recreate",
        "rules": [
            {"name": "InvalidInputOrOutOfMemory", "action": "FailJobSet",
             "onJobFailureReasons": ["PodFailurePolicy"], "onJobFailureMessagePatterns": [FINAL_EXIT_PATTERN]},
            {"name": "Disruption", "action": "RestartJobSetAndIgnoreMaxRestarts",
             "onJobFailureReasons": ["PodFailurePolicy"], "onJobFailureMessagePatterns": [DISRUPTION_PATTERN]},
        ],
    }


def build_trainer_jobset(owner: Owner, spec: FineTuneJobSpec, defaults: TrainerDefaults = TrainerDefaults()) -> dict[str, Any]:
    """The JobSet of one replicated Job: the operator's Indexed Job, one pod per node."""
    job = build_trainer_job(owner, spec, defaults)
    job_spec = copy.deepcopy(job["spec"])
    # Kueue (or the user) suspends the JobSet; JobSet suspends and resumes its Jobs.
    suspend = job_spec.pop("suspend")
    pod = job_spec["template"]["spec"]
    pod.pop("subdomain", None)  # JobSet sets it from network.subdomain
    for var in pod["containers"][0]["env"]:
        if var["name"] == "MASTER_ADDR" and spec.resources.nodes > 1:
            var["value"] = master_addr(owner.base)
    policy = spec.run_policy
    extra_labels = {LABEL_KUEUE_QUEUE: policy.queue_name} if policy.queue_name else {}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": _metadata(owner, jobset_name(owner.base), "trainer", extra_labels),
        "spec": {
            "suspend": suspend,
            "failurePolicy": build_failure_policy(spec),
            "successPolicy": {"operator": "All"},
            "network": {"enableDNSHostnames": True, "subdomain": service_name(owner.base),
                        # Rank 0 must resolve before it is Ready, or the other ranks cannot rendezvous.
                        "publishNotReadyAddresses": True},
            "replicatedJobs": [{
                "name": REPLICATED_JOB,
                "replicas": 1,
                "template": {"metadata": {"labels": dict(job["metadata"]["labels"])}, "spec": job_spec},
            }],
        },
    }
