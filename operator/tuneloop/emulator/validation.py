"""Validation of object metadata that every real API server does, whatever the resource.

Kept because operator bugs hide here: a child name with an uppercase letter or over 63
characters, a label value that is a number, a finalizer added to an object being deleted.
Each check returns messages in the server's words (`metadata.name: Invalid value: ...`).
Rules: k8s.io/apimachinery/pkg/util/validation and pkg/api/validation/objectmeta.go.
"""

from __future__ import annotations

import re
from typing import Any

import kmock

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

_DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

# Resources whose names must be DNS labels (they become DNS names or label values).
_LABEL_NAMED = frozenset({("", "namespaces")})
# Service names are DNS-1035 labels: a leading letter (ValidateServiceName).
_1035_NAMED = frozenset({("", "services")})
# RBAC names are path segments: `system:controller:job-controller` is a valid ClusterRole.
_PATH_SEGMENT_GROUPS = frozenset({"rbac.authorization.k8s.io"})


def name_errors(resource: kmock.resource, name: str) -> list[str]:
    if resource.group in _PATH_SEGMENT_GROUPS:
        if name in (".", "..") or "/" in name or "%" in name:
            return [f"metadata.name: Invalid value: {name!r}: may not contain '/' or '%'"]
        return []
    if (resource.group, resource.plural) in _1035_NAMED:
        if len(name) > 63 or not _DNS_1035_LABEL.match(name):
            return [f"metadata.name: Invalid value: {name!r}: a DNS-1035 label must consist of lower case alphanumeric "
                    f"characters or '-', start with an alphabetic character, and end with an alphanumeric character"]
        return []
    if (resource.group, resource.plural) in _LABEL_NAMED:
        if len(name) > 63 or not _DNS_LABEL.match(name):
            return [f"metadata.name: Invalid value: {name!r}: a lowercase RFC 1123 label must consist of "
                    f"lower case alphanumeric characters or '-', start and end with an alphanumeric "
                    f"character, and be at most 63 characters"]
        return []
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        return [f"metadata.name: Invalid value: {name!r}: a lowercase RFC 1123 subdomain must consist of "
                f"lower case alphanumeric characters, '-' or '.', and must start and end with an "
                f"alphanumeric character"]
    return []


def _qualified_name_errors(key: Any, where: str) -> list[str]:
    if not isinstance(key, str):
        return [f"{where}: Invalid value: {key!r}: must be a string"]
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return [f"{where}: Invalid value: {key!r}: prefix part must be a DNS subdomain"]
    if len(name) > 63 or not _QUALIFIED_NAME.match(name):
        return [f"{where}: Invalid value: {key!r}: name part must consist of alphanumeric characters, "
                f"'-', '_' or '.', start and end with an alphanumeric character, at most 63 characters"]
    return []


def metadata_errors(metadata: Any) -> list[str]:
    """Problems with labels, annotations and finalizers (names are checked on create only)."""
    if not isinstance(metadata, dict):
        return ["metadata: Invalid value: must be an object"]
    errors: list[str] = []
    labels = metadata.get("labels") or {}
    if not isinstance(labels, dict):
        errors.append("metadata.labels: Invalid value: must be an object")
        labels = {}
    for key, value in labels.items():
        errors += _qualified_name_errors(key, "metadata.labels")
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            errors.append(f"metadata.labels: Invalid value: {value!r}: a valid label must be a string of at most "
                          f"63 characters: alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric")
    annotations = metadata.get("annotations") or {}
    if not isinstance(annotations, dict):
        errors.append("metadata.annotations: Invalid value: must be an object")
        annotations = {}
    for key, value in annotations.items():
        errors += _qualified_name_errors(key, "metadata.annotations")
        if not isinstance(value, str):
            errors.append(f"metadata.annotations: Invalid value: {value!r}: must be a string")
    finalizers = metadata.get("finalizers") or []
    if not isinstance(finalizers, list):
        errors.append("metadata.finalizers: Invalid value: must be a list")
        finalizers = []
    for finalizer in finalizers:
        errors += _qualified_name_errors(finalizer, "metadata.finalizers")
    return errors


def new_finalizer_errors(old_metadata: dict[str, Any], new_metadata: dict[str, Any]) -> list[str]:
    """An object being deleted may lose finalizers but never gain new ones."""
    if not old_metadata.get("deletionTimestamp"):
        return []
    added = set(new_metadata.get("finalizers") or []) - set(old_metadata.get("finalizers") or [])
    if not added:
        return []
    return [f"metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, "
            f"found new finalizers {sorted(added)!r}"]
