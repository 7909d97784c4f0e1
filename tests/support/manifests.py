"""Valid base manifests and a helper to make one invalid in exactly one place."""

from __future__ import annotations

import copy
from typing import Any

DELETE = object()


def finetunejob(name: str = "demo", **spec_overrides: Any) -> dict[str, Any]:
    """A valid FineTuneJob named `name` in namespace ml; keyword arguments replace spec fields."""
    doc = {
        "apiVersion": "tuneloop.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {
            "task": "sequence-classification",
            "model": {"source": "s3://models/base/minilm/"},
            "dataset": {"train": "s3://data/tickets/train.csv"},
            "output": {"uri": "s3://models/out/demo/"},
            "training": {"epochs": 1},
        },
    }
    doc["spec"].update(spec_overrides)
    return doc


def maintenancepolicy() -> dict[str, Any]:
    return {
        "apiVersion": "tuneloop.dev/v1alpha1",
        "kind": "MaintenancePolicy",
        "metadata": {"name": "router", "namespace": "ml"},
        "spec": {
            "model": "router",
            "jobTemplate": {"spec": copy.deepcopy(finetunejob()["spec"])},
            "evaluation": {"dataset": {"uri": "s3://data/fresh/"}, "metric": "accuracy", "schedule": "0 3 * * *"},
            "triggers": {"metric": {"operator": "<", "threshold": 0.8}},
            "promotion": {"metric": "accuracy", "direction": "maximize"},
        },
    }


def with_change(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `doc` with the dotted `path` set to `value` (or removed with DELETE)."""
    out = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node = out
    for part in parents:
        node = node.setdefault(part, {})
    if value is DELETE:
        node.pop(last, None)
    else:
        node[last] = value
    return out


def schemaless_crd(group: str, version: str, kind: str, plural: str) -> dict[str, Any]:
    """A namespaced CRD that keeps any field: a stand-in for a promotion target's kind (KServe...)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
                 "versions": [{"name": version, "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
    }
