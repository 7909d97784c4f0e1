"""Validate Tuneloop manifests the way the cluster and the operator would, all offline.

Used by `tuneloop validate` (GitOps pipelines) and by tests; the operator runs the same
`parse_and_check` on every object it reconciles.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tuneloop.api import crds
from tuneloop.api.checks import check_finetunejob
from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.api.policy import MaintenancePolicySpec, check_maintenancepolicy
from tuneloop.api.schema import _MISSING, apply_defaults, check_cel, check_structure
from tuneloop.api.typed import Problem, SpecError

API_VERSION = f"{crds.GROUP}/{crds.VERSION}"
# Child objects are named `<name>-<suffix>` and pods add an index and a random suffix; 52 keeps
# every derived name a valid 63-character label (the same limit CronJob uses for the same reason).
MAX_NAME_LENGTH = 52
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

SPECS = {"FineTuneJob": (FineTuneJobSpec, check_finetunejob), "MaintenancePolicy": (MaintenancePolicySpec, check_maintenancepolicy)}


@dataclass
class Result:
    kind: str | None  # None when the document is not a Tuneloop object (skipped)
    name: str = ""
    problems: list[Problem] = field(default_factory=list)
    note: str = ""


def parse_spec(kind: str, spec: Any, namespace: str | None = None) -> tuple[Any | None, list[Problem]]:
    """The typed spec (None if it does not parse) and every problem with it.

    The one function the operator, the trainer and the CLI share, so all three reject the
    same specs with the same words.
    """
    spec_cls, check = SPECS[kind]
    try:
        parsed = spec_cls.from_dict(spec)
    except SpecError as err:
        return None, err.problems
    return parsed, check(parsed, namespace)


def check_metadata(metadata: Any) -> list[Problem]:
    if not isinstance(metadata, dict):
        return [Problem("metadata", "is required: an object with at least a name")]
    namespace = metadata.get("namespace")
    if namespace is not None and not (isinstance(namespace, str) and _DNS_LABEL.match(namespace)):
        return [Problem("metadata.namespace", f"{namespace!r} must be a namespace name (lowercase letters, digits and '-')")]
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        if metadata.get("generateName"):
            return []
        return [Problem("metadata.name", "is required")]
    if len(name) > MAX_NAME_LENGTH or not _DNS_LABEL.match(name):
        return [
            Problem(
                "metadata.name",
                f"{name!r} must be lowercase letters, digits and '-', start and end alphanumeric, "
                f"at most {MAX_NAME_LENGTH} characters",
            )
        ]
    return []


_DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def check_child_names(kind: str, name: str, spec: Any) -> list[Problem]:
    """What the names of a FineTuneJob's children need beyond a valid resource name.

    A custom resource's name is a DNS subdomain (`a.b`, `9lives` are accepted), but its
    children's are not: pod hostnames are DNS labels (no dots), and a multi-node job's
    headless Service, named after it, must be a DNS-1035 label (a leading letter), or the API
    server refuses it after the ConfigMap was made (issue 9).
    """
    if kind != "FineTuneJob" or not name:
        return []
    if "." in name or not _DNS_LABEL.match(name):
        return [Problem("metadata.name", f"{name!r} must be lowercase letters, digits and '-', start and end alphanumeric "
                                         "(no dots: the trainer pods' hostnames are DNS labels)")]
    nodes = getattr(getattr(spec, "resources", None), "nodes", 1)
    if nodes > 1 and not _DNS_1035_LABEL.match(name):
        return [Problem("metadata.name", f"{name!r} must start with a letter when spec.resources.nodes > 1: "
                                         "its headless Service is named after it, and Service names are DNS-1035 labels")]
    return []


def validate_manifest(doc: Any, old: Any = None) -> Result:
    """Check one document; `old` (the object as it is now) enables the immutability rules."""
    if not isinstance(doc, dict):
        return Result(kind=None, note=f"skipped: not a Kubernetes object ({type(doc).__name__})")
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if api_version is None and kind is None:
        return Result(kind=None, note="skipped: no apiVersion or kind (not a Kubernetes manifest)")
    if not (isinstance(api_version, str) and api_version.startswith(crds.GROUP + "/")):
        return Result(kind=None, note=f"skipped: {api_version} {kind} is not a Tuneloop kind")
    name = (doc.get("metadata") or {}).get("name", "") if isinstance(doc.get("metadata"), dict) else ""
    if not isinstance(kind, str) or kind not in crds.KINDS:
        return Result(kind=str(kind), name=name, problems=[Problem("kind", f"{kind!r} is not a Tuneloop kind; use one of: {', '.join(crds.KINDS)}")])
    if api_version != API_VERSION:
        return Result(kind=kind, name=name, problems=[Problem("apiVersion", f"{api_version} is not served; use {API_VERSION}")])

    schema = crds.openapi_schema(kind)
    value = apply_defaults(schema, doc)
    problems = check_metadata(doc.get("metadata"))
    problems += check_structure(schema, value)
    old_value = apply_defaults(schema, old) if isinstance(old, dict) else _MISSING
    problems += check_cel(schema, value, old_value)
    if not problems:
        parsed, spec_problems = parse_spec(kind, value["spec"], doc["metadata"].get("namespace"))
        problems += spec_problems + check_child_names(kind, name, parsed)
    return Result(kind=kind, name=name, problems=_unique(problems))


def _unique(problems: list[Problem]) -> list[Problem]:
    seen: set[Problem] = set()
    return [p for p in problems if not (p in seen or seen.add(p))]
