"""Offline checks of a manifest against its CRD, the way the API server would do them.

Order follows the API server: defaults are applied, then the structural schema is checked
(with unknown fields rejected, as `kubectl apply --validate=strict` does), then the CEL rules
(`x-kubernetes-validations`) run, transition rules only when an old object is given.
jsonschema checks the OpenAPI v3 subset Kubernetes uses (draft-4 semantics, boolean
exclusiveMinimum); cel-python evaluates the CEL rules.
"""

from __future__ import annotations

import copy
import json
import re
from functools import lru_cache
from typing import Any

import celpy
import jsonschema

from tuneloop.api.typed import Problem

_MISSING = object()
_LOOKS_SECRET = re.compile(r"(secret|password|token|accesskey|access_key|credential)", re.I)


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """A copy of `value` with the schema's defaults filled in, recursively (API-server style)."""
    if isinstance(value, dict) and schema.get("type") == "object":
        out = dict(value)
        for key, sub in schema.get("properties", {}).items():
            if key not in out and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
            if key in out:
                out[key] = apply_defaults(sub, out[key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            out = {k: (apply_defaults(extra, v) if k not in schema.get("properties", {}) else v) for k, v in out.items()}
        return out
    if isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], v) for v in value]
    return value


def _closed(schema: Any) -> Any:
    """Translate a Kubernetes structural schema into JSON Schema that rejects unknown fields."""
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-") or key in ("default", "description", "format"):
            continue
        if key == "properties":
            out[key] = {k: _closed(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = _closed(value)
        else:
            out[key] = value
    if (
        schema.get("type") == "object"
        and "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@lru_cache(maxsize=8)
def _validator(schema_json: str) -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(_closed(json.loads(schema_json)))


def _path(base: str, parts: Any) -> str:
    out = base
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _describe(error: jsonschema.ValidationError) -> tuple[str, str]:
    """(extra path, message) in the words a user needs: what is wrong and what is allowed."""
    v, kw, val = error.validator_value, error.validator, error.instance
    if kw == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(val) - set(allowed))
        message = f"unknown field; known fields here: {', '.join(allowed)}"
        if _LOOKS_SECRET.search(unknown[0]):
            message += "; secrets are never given by value: reference a Secret (storage.credentialsSecret, env valueFrom.secretKeyRef)"
        return f".{unknown[0]}", message
    if kw == "required":
        missing = [r for r in v if r not in val]
        return f".{missing[0]}", "is required"
    if kw == "enum":
        return "", f"{val!r} is not allowed; use one of: {', '.join(map(str, v))}"
    if kw == "type":
        return "", f"must be {'an' if v in ('integer', 'object', 'array') else 'a'} {v}, got {val!r}"
    if kw == "minimum":
        exclusive = error.schema.get("exclusiveMinimum") is True
        return "", f"{val} is too small; must be {'>' if exclusive else '>='} {v}"
    if kw == "maximum":
        exclusive = error.schema.get("exclusiveMaximum") is True
        return "", f"{val} is too large; must be {'<' if exclusive else '<='} {v}"
    if kw == "pattern":
        return "", f"{val!r} does not match the pattern {v}"
    if kw in ("minLength", "maxLength"):
        return "", f"length must be {'at least' if kw == 'minLength' else 'at most'} {v}"
    if kw in ("minItems", "maxItems"):
        return "", f"must have {'at least' if kw == 'minItems' else 'at most'} {v} items"
    return "", error.message


def check_structure(schema: dict[str, Any], value: Any, base: str = "") -> list[Problem]:
    validator = _validator(json.dumps(schema, sort_keys=True))
    problems = []
    for error in sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path))):
        extra, message = _describe(error)
        path = _path(base, error.absolute_path) + extra
        problems.append(Problem(path.lstrip(".") or "(root)", message))
    return problems


_CEL_ENV = celpy.Environment()


@lru_cache(maxsize=512)
def _program(rule: str) -> celpy.Runner:
    return _CEL_ENV.program(_CEL_ENV.compile(rule))


def _check_node_rules(schema: dict[str, Any], value: Any, old: Any, base: str) -> list[Problem]:
    """The `x-kubernetes-validations` rules of this node only."""
    problems: list[Problem] = []
    converted: dict[str, Any] = {}  # each value converted once per node, not once per rule
    for rule in schema.get("x-kubernetes-validations", []):
        is_transition = "oldSelf" in rule["rule"]
        if is_transition and old is _MISSING:
            continue
        if "self" not in converted:
            converted["self"] = celpy.json_to_cel(value)
        activation = {"self": converted["self"]}
        if is_transition:
            if "oldSelf" not in converted:
                converted["oldSelf"] = celpy.json_to_cel(old)
            activation["oldSelf"] = converted["oldSelf"]
        try:
            result = _program(rule["rule"]).evaluate(activation)
            ok = isinstance(result, celpy.celtypes.BoolType) and bool(result)
        except celpy.CELEvalError:  # e.g. a missing key: the rule fails, as in the API server
            ok = False
        if not ok:
            path = base + rule.get("fieldPath", "")
            problems.append(Problem(path.lstrip(".") or "(root)", rule.get("message") or f"failed rule: {rule['rule']}"))
    return problems


def check_cel_along(schema: dict[str, Any], value: Any, path: list[str], base: str = "") -> list[Problem]:
    """The rules a change of the field at `path` can break: those of the nodes on the way to it
    (a rule sees only its own node's subtree), transition rules left out. What a search checks
    for each value a trial may get, in a fraction of `check_cel`'s time (celpy is slow)."""
    problems = _check_node_rules(schema, value, _MISSING, base)
    if path and isinstance(value, dict) and path[0] in value and path[0] in schema.get("properties", {}):
        problems += check_cel_along(schema["properties"][path[0]], value[path[0]], path[1:], f"{base}.{path[0]}")
    return problems


def check_cel(schema: dict[str, Any], value: Any, old: Any = _MISSING, base: str = "") -> list[Problem]:
    """Run every `x-kubernetes-validations` rule on `value` (and `old` for transition rules)."""
    problems = _check_node_rules(schema, value, old, base)
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                sub_old = old.get(key, _MISSING) if isinstance(old, dict) else _MISSING
                problems += check_cel(sub, value[key], sub_old, f"{base}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            # Old list items are matched by position only for list-type map keyed by `name`.
            problems += check_cel(schema["items"], item, _MISSING, f"{base}[{i}]")
    return problems
