"""Custom objects checked against their CRD's schema, as the API server does on every write:
unknown fields pruned, defaults applied, then the structural schema and the CEL rules
(`x-kubernetes-validations`, transition rules against the old object) checked.

Pruning is ours (the real server prunes silently, so an operator writing a status field its
CRD does not declare loses it on a real cluster and must lose it here too); defaulting and
checking reuse `tuneloop.api.schema`, which `tuneloop validate` uses for the same job.
"""

from __future__ import annotations

from typing import Any

from tuneloop.api.schema import apply_defaults, check_cel, check_structure

# Every object has these at its root whatever its schema says; metadata is validated as
# ObjectMeta by the server (see validation.py), never against the CRD's schema.
_ROOT_FIELDS = {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}


def prune(schema: dict[str, Any], value: Any, *, embedded: bool = False) -> Any:
    """`value` without the fields `schema` does not declare (a structural schema's rules)."""
    if isinstance(value, list):
        items = schema.get("items")
        return [prune(items, item) for item in value] if isinstance(items, dict) else value
    if not isinstance(value, dict) or schema.get("x-kubernetes-int-or-string"):
        return value
    properties = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    keeps_unknown = schema.get("x-kubernetes-preserve-unknown-fields") or additional is True
    embedded = embedded or bool(schema.get("x-kubernetes-embedded-resource"))
    result = {}
    for key, item in value.items():
        if embedded and key in _ROOT_FIELDS:
            result[key] = item
        elif key in properties:
            result[key] = prune(properties[key], item)
        elif isinstance(additional, dict):
            result[key] = prune(additional, item)
        elif keeps_unknown:
            result[key] = item
    return result


def admit(schema: dict[str, Any], obj: dict[str, Any], old: dict[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """The object as it will be stored, and what is invalid about it (empty if valid)."""
    if not schema:
        return obj, []
    root = {**schema, "properties": {**schema.get("properties", {}), **_ROOT_FIELDS}}
    admitted = apply_defaults(root, prune(root, obj, embedded=True))
    problems = check_structure(root, admitted)
    if not problems:  # CEL rules assume a structurally valid object, as in the API server.
        problems = check_cel(root, admitted) if old is None else check_cel(root, admitted, old)
    return admitted, [str(problem) for problem in problems]
