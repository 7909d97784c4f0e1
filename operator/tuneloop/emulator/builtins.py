"""Validation and defaulting of built-in objects, as kube-apiserver does them (issue 9).

- Schema: every built-in object is checked against the official OpenAPI schema of its kind
  for `KUBE_VERSION`, which the PyPI package `kubernetes-validate` ships for each minor
  version (not hand-written rules). Unknown fields pass, as a real server drops them under
  the default `fieldValidation=Warn`.
- The rules the schema cannot say that matter to Tuneloop's children: Job `spec.selector`
  and `spec.template` are immutable (the template's scheduling fields may change while a
  Job is suspended and has not started, since 1.27), `completionMode` and `restartPolicy`
  values, `podFailurePolicy` needs `restartPolicy: Never`, a pod hostname is a DNS label.
  (k8s.io/kubernetes pkg/apis/batch/validation/validation.go, pkg/apis/core/validation.)
- Defaults on create: a Job gets its generated `spec.selector`, the `controller-uid` and
  `job-name` labels on its template, `podReplacementPolicy` and the numeric defaults
  (pkg/apis/batch/v1/defaults.go, pkg/registry/batch/job/strategy.go).

Not done: strategic-merge list semantics, admission plugins (ServiceAccount, PriorityClass,
ResourceQuota, LimitRange, Pod Security), mutating webhooks; see `kubelet.py` for the
controllers.
"""

from __future__ import annotations

import copy
import functools
import re
from typing import Any

import jsonschema
import kmock
from kubernetes_validate import utils as kv
from referencing import Registry, Resource

KUBE_VERSION = "1.33"
JOBS = kmock.resource("batch", "v1", "jobs")
PODS = kmock.resource("", "v1", "pods")
CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
JOB_NAME = "batch.kubernetes.io/job-name"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Template fields a suspended Job that never started may change (JobMutableSchedulingDirectives).
_SCHEDULING = ("nodeSelector", "tolerations", "affinity", "schedulingGates")


@functools.cache
def _validator(kind: str, api_version: str, version: str) -> jsonschema.protocols.Validator | None:
    """The schema of one kind, compiled once (kubernetes-validate reads it per call: ~50 ms)."""
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    schema_dir = f"v{kv.major_minor(version)}.0-local"
    try:
        schema = kv.schema_contents(f"kubernetes-json-schema/{schema_dir}/{kind.lower()}-{group}.json", version)
    except FileNotFoundError:
        return None  # a kind the package has no schema for (aggregated APIs, custom resources)
    definitions = kv.schema_contents(f"kubernetes-json-schema/{schema_dir}/_definitions.json", version)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def schema_errors(obj: dict[str, Any], version: str = KUBE_VERSION) -> list[str]:
    """Every place `obj` breaks its kind's OpenAPI schema, in `path: message` form."""
    validator = _validator(str(obj.get("kind")), str(obj.get("apiVersion")), version)
    if validator is None:
        return []
    found = []
    for error in validator.iter_errors(obj):
        path = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in error.absolute_path).replace(".[", "[")
        found.append(f"{path or '<root>'}: Invalid value: {error.message}")
    return sorted(found)


def default(resource: kmock.resource, obj: dict[str, Any]) -> dict[str, Any]:
    """What the API server fills in on create."""
    if resource != JOBS:
        return obj
    obj = copy.deepcopy(obj)
    meta, spec = obj["metadata"], obj.setdefault("spec", {})
    uid = meta["uid"]
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec.update(completions=1, parallelism=1)
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    # With a podFailurePolicy a replacement waits for the old pod to be fully gone (1.29+).
    spec.setdefault("podReplacementPolicy", "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed")
    if not spec.get("manualSelector"):
        spec["selector"] = {"matchLabels": {CONTROLLER_UID: uid}}
        template_meta = spec.setdefault("template", {}).setdefault("metadata", {})
        labels = template_meta.setdefault("labels", {})
        labels.update({CONTROLLER_UID: uid, "controller-uid": uid, JOB_NAME: meta["name"], "job-name": meta["name"]})
    return obj


def problems(resource: kmock.resource, obj: dict[str, Any], old: dict[str, Any] | None) -> list[str]:
    """What the server refuses in a create (`old` None) or update of a built-in object."""
    found = schema_errors(obj)
    if resource == JOBS:
        found += _job_problems(obj, old)
    elif resource == PODS:
        found += _pod_spec_problems(obj.get("spec") or {}, "spec")
    return found


def _pod_spec_problems(spec: dict[str, Any], where: str) -> list[str]:
    found = []
    hostname = spec.get("hostname")
    if hostname is not None and (len(hostname) > 63 or not _DNS_LABEL.match(hostname)):
        found.append(f"{where}.hostname: Invalid value: {hostname!r}: a lowercase RFC 1123 label must consist of lower "
                     "case alphanumeric characters or '-', and must start and end with an alphanumeric character")
    subdomain = spec.get("subdomain")
    if subdomain is not None and (len(subdomain) > 63 or not _DNS_LABEL.match(subdomain)):
        found.append(f"{where}.subdomain: Invalid value: {subdomain!r}: a lowercase RFC 1123 label must consist of lower "
                     "case alphanumeric characters or '-', and must start and end with an alphanumeric character")
    return found


def _job_problems(job: dict[str, Any], old: dict[str, Any] | None) -> list[str]:
    spec = job.get("spec") or {}
    template = spec.get("template") or {}
    pod = template.get("spec") or {}
    found = _pod_spec_problems(pod, "spec.template.spec")
    mode = spec.get("completionMode", "NonIndexed")
    if mode not in ("NonIndexed", "Indexed"):
        found.append(f'spec.completionMode: Unsupported value: {mode!r}: supported values: "NonIndexed", "Indexed"')
    if mode == "Indexed" and spec.get("completions") is None:
        found.append("spec.completions: Required value: when completion mode is Indexed")
    restart = pod.get("restartPolicy")
    if restart not in ("Never", "OnFailure"):
        found.append(f'spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never" (got {restart!r})')
    if spec.get("podFailurePolicy") and restart != "Never":
        found.append("spec.podFailurePolicy: Invalid value: only allowed when spec.template.spec.restartPolicy is Never")
    if old is not None:
        before = old.get("spec") or {}
        if spec.get("selector") != before.get("selector"):
            found.append("spec.selector: Invalid value: field is immutable")
        if spec.get("completionMode", "NonIndexed") != before.get("completionMode", "NonIndexed"):
            found.append("spec.completionMode: Invalid value: field is immutable")
        if _template_changed(before, spec):
            found.append("spec.template: Invalid value: field is immutable")
    return found


def _template_changed(before: dict[str, Any], after: dict[str, Any]) -> bool:
    old, new = before.get("template") or {}, after.get("template") or {}
    if old == new:
        return False
    never_started = before.get("suspend") and not ((before.get("status") or {}).get("startTime"))
    if not never_started:
        return True
    strip = lambda t: {**t, "metadata": {}, "spec": {k: v for k, v in (t.get("spec") or {}).items() if k not in _SCHEDULING}}  # noqa: E731
    return strip(old) != strip(new)
