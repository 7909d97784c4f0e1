"""Pure builders: a parsed FineTuneJob spec in, Kubernetes manifests (plain dicts) out.

No clock, no uuid, no API call here: everything a child looks like is decided by the spec,
the owner's identity and the operator's defaults, so the tests can pin every field and an
operator restart renders byte-for-byte the same children (STYLE.md, "three layers").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import yaml

from tuneloop.api.crds import GROUP, VERSION  # the CRDs own the API group and version
from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.api.typed import Problem, to_dict

KIND = "FineTuneJob"
PLURAL = "finetunejobs"

LABEL_FINETUNEJOB = "tuneloop.dev/finetunejob"
LABEL_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
LABEL_KUEUE_JOB_UID = "kueue.x-k8s.io/job-uid"  # on the Workload Kueue makes for a Job
# On the Job: we deactivated its Kueue Workload for spec.runPolicy.suspend, and reactivate it on resume.
ANNOTATION_WORKLOAD_DEACTIVATED = "tuneloop.dev/workload-deactivated"
ANNOTATION_COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
# The Job controller labels every pod with its Job's uid (1.27+; `controller-uid` before).
LABEL_JOB_CONTROLLER_UID = "batch.kubernetes.io/controller-uid"

CONTAINER = "trainer"
TERMINATION_MESSAGE_PATH = "/dev/termination-log"  # Kubernetes' default, set explicitly
CONFIG_KEY = "config.yaml"
CONFIG_DIR = "/etc/tuneloop"
CACHE_DIR = "/var/cache/tuneloop"
MASTER_PORT = 29500
METRICS_PORT = 9400
# Exit code the trainer uses for bad config or data: retrying cannot help (issue 3).
EXIT_BAD_INPUT = 2
# Exit code the trainer uses when the model and batch do not fit the GPU (issue 8 item 11).
EXIT_OUT_OF_MEMORY = 3
# Pod hostnames of an Indexed Job are `<job>-<index>` and must stay a DNS label.
DNS_LABEL_MAX = 63


@dataclass(frozen=True)
class Owner:
    """The FineTuneJob the children belong to (what an ownerReference needs)."""

    name: str
    namespace: str
    uid: str
    # What the children are named and labelled after: the FineTuneJob's name, or a search
    # trial's `<name>-t<N>` (issue 14); the ownerReference always names the FineTuneJob.
    children: str | None = None

    @property
    def base(self) -> str:
        return self.children or self.name


@dataclass(frozen=True)
class TrainerDefaults:
    """Operator-wide settings that shape every trainer pod."""

    image: str = "ghcr.io/tuneloop/trainer:0.1.0"
    metrics_port: int = METRICS_PORT
    master_port: int = MASTER_PORT
    # The trainer checkpoints on SIGTERM; give it time to finish the upload (issue 3).
    termination_grace_seconds: int = 120
    # The trainer image's own user (Dockerfile.trainer: USER 65532), so files it owns stay readable.
    run_as_user: int = 65532


# --- names: deterministic, so a restart finds the children it made before ---------------


def config_map_name(name: str) -> str:
    return f"{name}-config"


def job_name(name: str) -> str:
    return f"{name}-trainer"


def service_name(name: str) -> str:
    # Same name as the Job: pod `<job>-0` resolves as `<job>-0.<job>` through it.
    return f"{name}-trainer"


def master_addr(name: str) -> str:
    return f"{job_name(name)}-0.{service_name(name)}"


# The replicated Job of a JobSet (jobset.py): short, as it is part of every pod's hostname.
JOBSET_REPLICATED_JOB = "node"


def check_names(name: str, spec: FineTuneJobSpec) -> list[Problem]:
    """Names the children would get that Kubernetes would refuse, found before creating any."""
    longest = job_name(name)
    if spec.run_policy.group_restart == "JobSet" and spec.resources.nodes > 1:
        longest = f"{longest}-{JOBSET_REPLICATED_JOB}-0"  # JobSet's child Job
    if spec.resources.nodes > 1:
        longest = f"{longest}-{spec.resources.nodes - 1}"
    if len(longest) > DNS_LABEL_MAX:
        room = DNS_LABEL_MAX - (len(longest) - len(name))
        return [Problem("metadata.name", f"is too long: at most {room} characters for this job (pod hostnames are DNS labels)")]
    return []


# --- metadata --------------------------------------------------------------------------


def build_labels(name: str, component: str) -> dict[str, str]:
    """The recommended `app.kubernetes.io/*` labels plus ours, for selectors and dashboards."""
    return {
        "app.kubernetes.io/name": "tuneloop-trainer",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "tuneloop",
        "app.kubernetes.io/managed-by": "tuneloop-operator",
        LABEL_FINETUNEJOB: name,
    }


def owner_reference(owner: Owner) -> dict[str, Any]:
    # controller=True lets `kubectl describe` and GC tools point back to the FineTuneJob;
    # deleting it removes every child through the garbage collector, never data in S3.
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(owner: Owner, name: str, component: str, extra_labels: Mapping[str, str] = {}) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": {**build_labels(owner.base, component), **extra_labels},
        "ownerReferences": [owner_reference(owner)],
    }


# --- children ----------------------------------------------------------------------------


def render_trainer_config(spec: FineTuneJobSpec) -> str:
    """The trainer's config file: exactly the spec's fields (references only, no secret values)."""
    return yaml.safe_dump(spec.to_dict(), sort_keys=False)


def build_config_map(owner: Owner, spec: FineTuneJobSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(owner, config_map_name(owner.base), "config"),
        "data": {CONFIG_KEY: render_trainer_config(spec)},
    }


def service_selector(name: str, job_uid: str = "") -> dict[str, str]:
    """The pods of one Job only: its uid, which no earlier Job of this FineTuneJob shares.

    A group restart re-creates the Job under the same name, so its pods get the same
    hostnames (`<job>-<i>`) as the old ones; selected per FineTuneJob, the old pods still
    Terminating (publishNotReadyAddresses publishes them) would answer for the new rank 0
    (issue 9). Until the Job exists (`job_uid` empty) it selects nothing.
    """
    return {LABEL_FINETUNEJOB: name, "app.kubernetes.io/component": "trainer", LABEL_JOB_CONTROLLER_UID: job_uid}


def build_headless_service(owner: Owner, spec: FineTuneJobSpec, defaults: TrainerDefaults = TrainerDefaults(),
                           job_uid: str = "") -> dict[str, Any]:
    """Stable DNS names for the pods of a multi-node Indexed Job (`<job>-<index>.<service>`),
    answered by the current Job's pods only (`service_selector`)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, service_name(owner.base), "trainer"),
        "spec": {
            "clusterIP": "None",
            "selector": service_selector(owner.base, job_uid),
            # Rank 0 must resolve before it is Ready, or the other ranks cannot rendezvous.
            "publishNotReadyAddresses": True,
            "ports": [{"name": "dist", "port": defaults.master_port, "targetPort": defaults.master_port}],
        },
    }


def service_selector_patch(service: Mapping[str, Any], job: Mapping[str, Any]) -> dict[str, Any] | None:
    """The patch that points the headless Service at this Job's pods, or None if it does."""
    uid = (job.get("metadata") or {}).get("uid") or ""
    selector = (service.get("spec") or {}).get("selector") or {}
    if selector.get(LABEL_JOB_CONTROLLER_UID) == uid:
        return None
    return {"spec": {"selector": {LABEL_JOB_CONTROLLER_UID: uid}}}


def build_env(owner: Owner, spec: FineTuneJobSpec, defaults: TrainerDefaults = TrainerDefaults()) -> list[dict[str, Any]]:
    """The pod contract with the trainer (issue 3), then the user's own variables."""
    res = spec.resources
    multi_node = res.nodes > 1
    env: list[dict[str, Any]] = [
        {"name": "TUNELOOP_JOB_NAME", "value": owner.base},
        {"name": "TUNELOOP_NAMESPACE", "value": owner.namespace},
        {"name": "TUNELOOP_METRICS_PORT", "value": str(defaults.metrics_port)},
        {"name": "TUNELOOP_CACHE_DIR", "value": CACHE_DIR},
        # The container's terminationMessagePath (a local kubelet maps both to its own file).
        {"name": "TUNELOOP_TERMINATION_LOG", "value": TERMINATION_MESSAGE_PATH},
        # The root filesystem is read-only: libraries that write under $HOME get /tmp.
        {"name": "HOME", "value": "/tmp"},
        {"name": "NNODES", "value": str(res.nodes)},
        {"name": "NPROC_PER_NODE", "value": str(max(res.gpus_per_node, 1))},
        {"name": "MASTER_ADDR", "value": master_addr(owner.base) if multi_node else "127.0.0.1"},
        {"name": "MASTER_PORT", "value": str(defaults.master_port)},
    ]
    if multi_node:
        env.append({
            "name": "NODE_RANK",
            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{ANNOTATION_COMPLETION_INDEX}']"}},
        })
    else:
        env.append({"name": "NODE_RANK", "value": "0"})

    storage = spec.storage
    if storage.endpoint is not None:
        env.append({"name": "AWS_ENDPOINT_URL", "value": storage.endpoint})
    if storage.region is not None:
        env.append({"name": "AWS_REGION", "value": storage.region})
    secret = storage.credentials_secret
    if secret is not None:
        # By reference only: the kubelet reads the Secret, the value never passes through us.
        keys = [
            ("AWS_ACCESS_KEY_ID", secret.access_key_id_key),
            ("AWS_SECRET_ACCESS_KEY", secret.secret_access_key_key),
        ]
        if secret.session_token_key is not None:
            keys.append(("AWS_SESSION_TOKEN", secret.session_token_key))
        env += [
            {"name": var, "valueFrom": {"secretKeyRef": {"name": secret.name, "key": key}}}
            for var, key in keys
        ]

    for var in spec.env:
        item: dict[str, Any] = {"name": var.name}
        if var.value_from is not None:
            item["valueFrom"] = to_dict(var.value_from)
        else:
            item["value"] = var.value if var.value is not None else ""
        env.append(item)
    return env


def build_resources(spec: FineTuneJobSpec) -> dict[str, Any]:
    """Requests equal limits: GPUs must, and a training pod should not be throttled or evicted first."""
    res = spec.resources
    amounts: dict[str, str] = {}
    if res.cpu is not None:
        amounts["cpu"] = res.cpu
    if res.memory is not None:
        amounts["memory"] = res.memory
    if res.ephemeral_storage is not None:
        # Scheduled onto a node with that much local disk, and evicted past it rather than
        # filling the node's disk (DiskPressure evicts everyone else's pods too; issue 9).
        amounts["ephemeral-storage"] = res.ephemeral_storage
    if res.gpus_per_node > 0:
        amounts[res.gpu_resource_name] = str(res.gpus_per_node)
    return {"requests": dict(amounts), "limits": dict(amounts)} if amounts else {}


def build_security_context(defaults: TrainerDefaults = TrainerDefaults()) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod, container) security contexts meeting the `restricted` Pod Security Standard."""
    pod = {
        "runAsNonRoot": True,
        "runAsUser": defaults.run_as_user,
        "runAsGroup": defaults.run_as_user,
        "fsGroup": defaults.run_as_user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return pod, container


def build_volumes(owner: Owner, spec: FineTuneJobSpec | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, mounts): config read-only; writable emptyDirs since the root fs is read-only."""
    shm: dict[str, Any] = {"medium": "Memory"}
    if spec is not None and spec.resources.memory is not None:
        # tmpfs pages count against the memory limit; without a sizeLimit it is sized to the
        # node's allocatable memory (issue 9).
        shm["sizeLimit"] = spec.resources.memory
    disk: dict[str, Any] = {}
    if spec is not None and spec.resources.ephemeral_storage is not None:
        # Each bounded by the whole budget: their total is what the pod's limit counts, and the
        # cache (the base model) may need most of it.
        disk["sizeLimit"] = spec.resources.ephemeral_storage
    volumes = [
        {"name": "config", "configMap": {"name": config_map_name(owner.base)}},
        {"name": "tmp", "emptyDir": dict(disk)},
        {"name": "cache", "emptyDir": dict(disk)},
        # PyTorch DataLoader workers share tensors through /dev/shm; the default 64Mi is too small.
        {"name": "dshm", "emptyDir": shm},
    ]
    mounts = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "cache", "mountPath": CACHE_DIR},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    return volumes, mounts


def build_pod_failure_policy(nodes: int = 1) -> dict[str, Any]:
    """What the Job controller does with a failed pod.

    One node: the Job controller replaces the pod, counted against backoffLimit.
    Several nodes: every failure fails the whole Job at once, and the operator re-creates it
    (a group restart from the newest checkpoint, counted once; see `status.group_restart`).
    Replacing one rank of a static torchrun rendezvous leaves its peers blocked in collectives
    until they time out and fail one by one, each counted (issue 9).
    """
    bad_input = {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [EXIT_BAD_INPUT]}}
    out_of_memory = {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [EXIT_OUT_OF_MEMORY]}}
    disruption = [{"type": "DisruptionTarget", "status": "True"}]
    if nodes > 1:
        return {
            "rules": [
                bad_input,
                out_of_memory,
                # A preempted or drained rank: the group restarts, and the operator does not
                # count it (it reads DisruptionTarget on the pods; their peers have none).
                {"action": "FailJob", "onPodConditions": disruption},
                {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "NotIn", "values": [0]}},
            ]
        }
    return {
        "rules": [
            # Bad config or data (exit 2): fail at once, a retry would fail the same way.
            bad_input,
            # Out of GPU memory (exit 3): the same model and batch fail the same way on a retry.
            out_of_memory,
            # Preemption and node drain are not the trainer's fault: retry without counting.
            {"action": "Ignore", "onPodConditions": disruption},
        ]
    }


def build_pod_template(owner: Owner, spec: FineTuneJobSpec, defaults: TrainerDefaults = TrainerDefaults()) -> dict[str, Any]:
    res = spec.resources
    pod_security, container_security = build_security_context(defaults)
    volumes, mounts = build_volumes(owner, spec)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image or defaults.image,
        "command": ["tuneloop-train", "--config", f"{CONFIG_DIR}/{CONFIG_KEY}"],
        "env": build_env(owner, spec, defaults),
        "ports": [
            {"name": "metrics", "containerPort": defaults.metrics_port},
            {"name": "dist", "containerPort": defaults.master_port},
        ],
        "resources": build_resources(spec),
        "securityContext": container_security,
        "volumeMounts": mounts,
        # The trainer writes its final report (success) or its error line here, and names the
        # file by TUNELOOP_TERMINATION_LOG; without one, the last log lines say what went wrong.
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if spec.image_pull_policy is not None:
        container["imagePullPolicy"] = spec.image_pull_policy

    pod: dict[str, Any] = {
        # Required by podFailurePolicy; retries are new pods counted against backoffLimit.
        "restartPolicy": "Never",
        "securityContext": pod_security,
        # The trainer never talks to the Kubernetes API (IRSA projects its own token).
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": defaults.termination_grace_seconds,
        "containers": [container],
        "volumes": volumes,
    }
    if res.nodes > 1:
        pod["subdomain"] = service_name(owner.base)
    if spec.storage.service_account_name is not None:
        pod["serviceAccountName"] = spec.storage.service_account_name
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": secret.name} for secret in spec.image_pull_secrets]
    if res.node_selector:
        pod["nodeSelector"] = dict(res.node_selector)
    if res.tolerations:
        pod["tolerations"] = [dict(t) for t in res.tolerations]
    if res.affinity is not None:
        pod["affinity"] = dict(res.affinity)
    if res.priority_class_name is not None:
        pod["priorityClassName"] = res.priority_class_name
    return {"metadata": {"labels": build_labels(owner.base, "trainer"), "annotations": scrape_annotations(defaults.metrics_port)},
            "spec": pod}


def scrape_annotations(port: int) -> dict[str, str]:
    """The `prometheus.io/*` convention, for a Prometheus without the Prometheus Operator (the
    chart's PodMonitor is the other way). Only global rank 0 serves metrics: the other pods of
    a multi-node Job answer nothing on this port (docs/dashboard.md says how to keep index 0)."""
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}


def build_trainer_job(owner: Owner, spec: FineTuneJobSpec, defaults: TrainerDefaults = TrainerDefaults()) -> dict[str, Any]:
    """The batch/v1 Job; Indexed with one pod per node when `nodes > 1`."""
    res = spec.resources
    policy = spec.run_policy
    extra_labels = {LABEL_KUEUE_QUEUE: policy.queue_name} if policy.queue_name else {}
    job_spec: dict[str, Any] = {
        # With a Kueue queue the Job starts suspended and Kueue admits it (never us).
        "suspend": bool(policy.suspend or policy.queue_name),
        # One node: the Job controller retries. Several: any failure fails the Job, and the
        # operator restarts the group (it counts the attempts against backoffLimit itself).
        "backoffLimit": policy.backoff_limit if res.nodes == 1 else 0,
        "podFailurePolicy": build_pod_failure_policy(res.nodes),
        "template": build_pod_template(owner, spec, defaults),
    }
    # No ttlSecondsAfterFinished: the operator deletes the Job itself once the final status
    # is written; Kubernetes' TTL controller could remove it before we read how it ended.
    if policy.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = policy.active_deadline_seconds
    if res.nodes > 1:
        job_spec.update({"completionMode": "Indexed", "completions": res.nodes, "parallelism": res.nodes})
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(owner, job_name(owner.base), "trainer", extra_labels),
        "spec": job_spec,
    }


def build_children(owner: Owner, spec: FineTuneJobSpec, defaults: TrainerDefaults = TrainerDefaults()) -> list[dict[str, Any]]:
    """Every child, in creation order: the Job last, so its pods find the config and DNS ready."""
    children = [build_config_map(owner, spec)]
    if spec.resources.nodes > 1:
        children.append(build_headless_service(owner, spec, defaults))
    children.append(build_trainer_job(owner, spec, defaults))
    return children


@dataclass(frozen=True)
class Blocked:
    """A child's name is taken: why, and whether anything but a person can end it."""

    reason: str
    message: str
    stalled: bool


def check_existing_child(existing: Mapping[str, Any], wanted: Mapping[str, Any], owner: Owner) -> tuple[Blocked | None, dict | None]:
    """(blocked, patch) for a child whose create answered 409 with `existing`.

    Mine: fine; a ConfigMap with other data (rendered from an earlier spec) gets `patch`, so
    the Job never trains with another spec's config. A predecessor's (same name, old uid) or
    one being deleted: wait for the garbage collector. Anyone else's: a name conflict only a
    person can resolve (issue 9).
    """
    meta = existing.get("metadata") or {}
    kind, name = wanted["kind"], wanted["metadata"]["name"]
    refs = meta.get("ownerReferences") or ()
    if meta.get("deletionTimestamp"):
        return Blocked("WaitingForOldChildren", f"{kind} {name} of an earlier FineTuneJob is being deleted; "
                       "waiting for the garbage collector", stalled=False), None
    if any(ref.get("uid") == owner.uid for ref in refs):
        if kind == "ConfigMap" and existing.get("data") != wanted.get("data"):
            return None, {"data": dict(wanted["data"])}
        return None, None
    if any(ref.get("kind") == KIND and ref.get("name") == owner.name and ref.get("controller") for ref in refs):
        return Blocked("WaitingForOldChildren", f"{kind} {name} belongs to an earlier FineTuneJob named {owner.name}; "
                       "waiting for the garbage collector to delete it", stalled=False), None
    return Blocked("NameConflict", f"a {kind} named {name} already exists and is not this FineTuneJob's: "
                   f"delete it, or rename the FineTuneJob", stalled=True), None


def job_suspend_patch(spec: FineTuneJobSpec, job: Mapping[str, Any]) -> dict[str, Any] | None:
    """The patch that brings the Job's `suspend` to what the user asked, or None.

    With a Kueue queue, never: Kueue owns the Job's `suspend` and un-suspends an admitted Job
    whatever we write, so the two would fight and the pods churn (kueue#1726). A user suspend
    goes through the Workload instead (`workload_active_change`).
    """
    if spec.run_policy.queue_name:
        return None
    actual = bool((job.get("spec") or {}).get("suspend", False))
    wanted = spec.run_policy.suspend
    if wanted != actual:
        return {"spec": {"suspend": wanted}}
    return None


def workload_active_change(spec: FineTuneJobSpec, job: Mapping[str, Any]) -> bool | None:
    """With a Kueue queue: the Workload's `spec.active` to set for `runPolicy.suspend`, or None.

    Deactivating a Workload makes Kueue evict and suspend its Job (and never admit it while
    inactive); we mark the Job, so a resume knows to reactivate it, with no API read per pass.
    """
    if not spec.run_policy.queue_name:
        return None
    marked = ((job.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_WORKLOAD_DEACTIVATED) == "true"
    if spec.run_policy.suspend and not marked:
        return False
    if not spec.run_policy.suspend and marked:
        return True
    return None


def unapplied_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Spec fields changed after the Job exists that it cannot take (pod templates are
    immutable); only `runPolicy.suspend` is applied to a running Job."""
    def flat(spec: Mapping[str, Any]) -> dict[str, Any]:
        out = {}
        for key, value in spec.items():
            if isinstance(value, Mapping):
                out.update({f"{key}.{sub}": v for sub, v in value.items()})
            else:
                out[key] = value
        out.pop("runPolicy.suspend", None)
        return out

    before, after = flat(old), flat(new)
    return sorted(f"spec.{key}" for key in set(before) | set(after) if before.get(key) != after.get(key))
