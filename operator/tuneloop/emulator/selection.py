"""Label and field selectors as they arrive in `?labelSelector=` and `?fieldSelector=`.

Hand-written: kopf and the kubernetes client only pass selector strings through, and no
maintained Python library parses them. The grammar follows apimachinery's
`pkg/labels/selector.go` and `pkg/fields/selector.go`; malformed selectors raise ValueError,
which the API turns into 400 BadRequest as the real server does.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_VALUE = r"[-A-Za-z0-9_.]*"
_SET_RE = re.compile(rf"^({_KEY})\s+(in|notin)\s*\(([^()]*)\)$")
_EQUALITY_RE = re.compile(rf"^({_KEY})\s*(==|=|!=)\s*({_VALUE})$")
_EXISTS_RE = re.compile(rf"^(!?)\s*({_KEY})$")
_FIELD_RE = re.compile(r"^([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*)$")


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside `in (a,b)` parentheses."""
    parts, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


@dataclasses.dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # "in", "notin", "exists", "doesnotexist"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "exists":
            return self.key in labels
        if self.operator == "doesnotexist":
            return self.key not in labels
        if self.operator == "in":
            return self.key in labels and labels[self.key] in self.values
        # `notin` and `!=` match objects without the label too, as in Kubernetes.
        return self.key not in labels or labels[self.key] not in self.values


@dataclasses.dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        requirements = []
        for term in _split_top_level(text or ""):
            if match := _SET_RE.match(term):
                values = frozenset(v.strip() for v in match.group(3).split(",") if v.strip())
                requirements.append(Requirement(match.group(1), match.group(2), values))
            elif match := _EQUALITY_RE.match(term):
                operator = "notin" if match.group(2) == "!=" else "in"
                requirements.append(Requirement(match.group(1), operator, frozenset({match.group(3)})))
            elif match := _EXISTS_RE.match(term):
                operator = "doesnotexist" if match.group(1) else "exists"
                requirements.append(Requirement(match.group(2), operator))
            else:
                raise ValueError(f"unable to parse requirement: {term!r}")
        return cls(tuple(requirements))

    @property
    def required_values(self) -> dict[str, frozenset[str]]:
        """label -> the values it must have (from `=`, `==` and `in`), for the label index."""
        required: dict[str, frozenset[str]] = {}
        for requirement in self.requirements:
            if requirement.operator == "in":
                required[requirement.key] = required.get(requirement.key, requirement.values) & requirement.values
        return required

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        for requirement in self.requirements:  # a plain loop: lists call this for every object
            if not requirement.matches(labels):
                return False
        return True


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """The value a field selector compares: missing fields read as "" (as in Kubernetes)."""
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclasses.dataclass(frozen=True)
class FieldSelector:
    terms: tuple[tuple[str, bool, str], ...] = ()  # (field path, must equal?, value)

    @classmethod
    def parse(cls, text: str | None) -> FieldSelector:
        terms = []
        for term in (part.strip() for part in (text or "").split(",")):
            if not term:
                continue
            match = _FIELD_RE.match(term)
            if not match:
                raise ValueError(f"invalid selector: {term!r}; can't understand it")
            terms.append((match.group(1), match.group(2) != "!=", match.group(3).strip()))
        return cls(tuple(terms))

    @property
    def fields(self) -> set[str]:
        return {path for path, _, _ in self.terms}

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return all((field_value(obj, path) == value) == equal for path, equal, value in self.terms)


# Field selectors the real server accepts besides metadata.name and metadata.namespace;
# others get 400 "field label not supported" there, so here too (tests must not depend on
# a field selector a real cluster would refuse). Custom resources: metadata.* only.
SELECTABLE_FIELDS: dict[tuple[str, str], frozenset[str]] = {
    ("", "pods"): frozenset({"spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
                             "spec.serviceAccountName", "status.phase", "status.podIP", "status.nominatedNodeName"}),
    ("", "events"): frozenset({"involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                               "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
                               "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"}),
    ("events.k8s.io", "events"): frozenset({"regarding.kind", "regarding.namespace", "regarding.name",
                                             "regarding.uid", "reason", "reportingController", "type"}),
    ("", "secrets"): frozenset({"type"}),
    ("", "namespaces"): frozenset({"status.phase"}),
    ("", "nodes"): frozenset({"spec.unschedulable"}),
    ("batch", "jobs"): frozenset({"status.successful"}),
}


def unsupported_fields(group: str, plural: str, selector: FieldSelector) -> set[str]:
    allowed = {"metadata.name", "metadata.namespace"} | SELECTABLE_FIELDS.get((group, plural), frozenset())
    return selector.fields - allowed
