"""Pure builders of what a MaintenancePolicy creates and writes: revision FineTuneJobs,
evaluation Jobs (with their config), and the promotion target's patch.

Like the FineTuneJob builders (which they reuse for the trainer pod): no clock, no API call;
names come from `decide` (deterministic), so a pass repeated after a restart renders the same.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

import yaml

from tuneloop.api.crds import GROUP, VERSION
from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.api.policy import MaintenancePolicySpec
from tuneloop.operator.builders import (
    CONFIG_DIR, CONFIG_KEY, CONTAINER, LABEL_FINETUNEJOB, Owner, TrainerDefaults, build_pod_failure_policy,
    build_pod_template,
)
from tuneloop.operator.policy.model import DATA, EvaluationRequest
from tuneloop.operator.tuning.builders import ANNOTATION_ENQUEUE

KIND = "MaintenancePolicy"
PLURAL = "maintenancepolicies"
LABEL_POLICY = "tuneloop.dev/maintenancepolicy"
LABEL_REVISION = "tuneloop.dev/revision"
LABEL_PURPOSE = "tuneloop.dev/evaluation"
# An evaluation that runs this long is stuck (a tiny model takes seconds, a large one minutes).
EVALUATION_DEADLINE_SECONDS = 3 * 3600


def policy_reference(owner: Owner) -> dict[str, Any]:
    # Deleting the policy removes its revisions and evaluations (garbage collector), never data in S3.
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": owner.name, "uid": owner.uid,
            "controller": True, "blockOwnerDeletion": True}


def policy_labels(policy: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "tuneloop-policy",
        "app.kubernetes.io/instance": policy,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "tuneloop",
        "app.kubernetes.io/managed-by": "tuneloop-operator",
        LABEL_POLICY: policy,
    }


def revision_output(spec: MaintenancePolicySpec, revision: str) -> str:
    """Each revision writes under its own folder: `<jobTemplate output.uri>/<revision>/`."""
    return spec.job_template.spec.output.uri.rstrip("/") + f"/{revision}/"


def revision_spec(spec: MaintenancePolicySpec, revision: str) -> FineTuneJobSpec:
    template = spec.job_template.spec
    return dataclasses.replace(template, output=dataclasses.replace(template.output, uri=revision_output(spec, revision)))


def build_revision(owner: Owner, spec: MaintenancePolicySpec, number: int, name: str,
                   champion_params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The FineTuneJob `<policy>-r<N>` from jobTemplate: owned, labelled, its own output.uri.

    A template that searches (`tuning`): the revision's search is seeded `tuning.seed + N`, or
    every retrain would propose the previous one's trials again; and when the champion searched
    too, its best params are the first trial (ANNOTATION_ENQUEUE), so the retrain searches
    around them."""
    template = spec.job_template
    revision = f"r{number}"
    labels = {**template.metadata.labels, **policy_labels(owner.name, "revision"), LABEL_REVISION: revision}
    metadata: dict[str, Any] = {"name": name, "namespace": owner.namespace, "labels": labels,
                                "ownerReferences": [policy_reference(owner)]}
    if template.metadata.annotations:
        metadata["annotations"] = dict(template.metadata.annotations)
    if champion_params and template.spec.tuning is not None:
        metadata.setdefault("annotations", {})[ANNOTATION_ENQUEUE] = json.dumps(dict(champion_params), sort_keys=True)
    body = revision_spec(spec, revision).to_dict()
    if template.spec.tuning is not None:
        body["tuning"]["seed"] = template.spec.tuning.seed + number
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "FineTuneJob", "metadata": metadata, "spec": body}


def evaluation_spec(spec: MaintenancePolicySpec, revision: str) -> FineTuneJobSpec:
    """The trainer config of an evaluation: the revision's spec, on one node, reading the
    evaluation dataset's format and columns when there is one."""
    base = revision_spec(spec, revision)
    base = dataclasses.replace(base, resources=dataclasses.replace(base.resources, nodes=1))
    ev = spec.evaluation
    if ev is not None:
        dataset = dataclasses.replace(base.dataset, format=ev.dataset.format or base.dataset.format, fields=ev.dataset.fields)
        base = dataclasses.replace(base, dataset=dataset)
    return base


def evaluation_args(spec: MaintenancePolicySpec, request: EvaluationRequest) -> list[str]:
    args = ["--evaluate-only"]
    for model in request.models:
        args += ["--model", model]
    if spec.evaluation is not None:
        args += ["--data", spec.evaluation.dataset.uri]  # else the challenger's own test split
    args += ["--results", revision_output(spec, request.revision) + f"evaluations/{request.name}.json"]
    return args


def build_evaluation(owner: Owner, spec: MaintenancePolicySpec, request: EvaluationRequest,
                     defaults: TrainerDefaults = TrainerDefaults()) -> list[dict[str, Any]]:
    """[ConfigMap, Job]: `tuneloop-train --evaluate-only` with the trainer image and the job
    template's storage settings (credentials by reference: the operator never reads them).
    The report comes back as the pod's termination message."""
    config = evaluation_spec(spec, request.revision)
    job_owner = Owner(request.name, owner.namespace, owner.uid)
    labels = {**policy_labels(owner.name, "evaluation"), LABEL_PURPOSE: request.purpose, LABEL_REVISION: request.revision}
    meta = {"namespace": owner.namespace, "labels": labels, "ownerReferences": [policy_reference(owner)]}
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{request.name}-config", **meta},
                  "data": {CONFIG_KEY: yaml.safe_dump(config.to_dict(), sort_keys=False)}}
    template = build_pod_template(job_owner, config, defaults)
    template["metadata"]["labels"] = dict(labels)
    pod = template["spec"]
    pod["volumes"][0]["configMap"]["name"] = f"{request.name}-config"
    [container] = pod["containers"]
    container["command"] = ["tuneloop-train", "--config", f"{CONFIG_DIR}/{CONFIG_KEY}", *evaluation_args(spec, request)]
    if request.purpose == DATA and spec.triggers.new_data is not None:
        container["command"] = ["tuneloop-train", "--config", f"{CONFIG_DIR}/{CONFIG_KEY}",
                                "--new-data", spec.triggers.new_data.uri, *(["--since", request.since] if request.since else [])]
    container["ports"] = []
    # No metrics endpoint and no rendezvous: a short, single-process run.
    container["env"] = [e for e in container["env"] if e["name"] != "TUNELOOP_METRICS_PORT"] + \
        [{"name": "TUNELOOP_METRICS_PORT", "value": "0"}]
    assert container["name"] == CONTAINER and LABEL_FINETUNEJOB not in labels
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": request.name, **meta},
           "spec": {"backoffLimit": 1, "activeDeadlineSeconds": EVALUATION_DEADLINE_SECONDS,
                    "podFailurePolicy": build_pod_failure_policy(), "template": template}}
    return [config_map, job]


def nested(field_path: str, value: Any) -> dict[str, Any]:
    """`spec.predictor.model.storageUri` -> {"spec": {"predictor": {"model": {"storageUri": value}}}}."""
    out: Any = value
    for part in reversed(field_path.split(".")):
        out = {part: out}
    return out


def target_patch(spec: MaintenancePolicySpec, model_uri: str) -> tuple[str, str, str, str, dict[str, Any]] | None:
    """(apiVersion, kind, name, what, merge patch) that publishes `model_uri`; None for type Status."""
    target = spec.promotion.target
    if target.type == "ConfigMap" and target.config_map is not None:
        cm = target.config_map
        return "v1", "ConfigMap", cm.name, f"ConfigMap {cm.name} key {cm.key}", {"data": {cm.key: model_uri}}
    if target.type == "ObjectField" and target.object_field is not None:
        of = target.object_field
        return of.api_version, of.kind, of.name, f"{of.kind} {of.name} {of.field_path}", nested(of.field_path, model_uri)
    return None


def read_field(obj: Mapping[str, Any] | None, field_path: str) -> Any:
    for part in field_path.split("."):
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(part)
    return obj
