"""Split Kubernetes REST paths into group, version, namespace, resource, name, subresource.

Hand-written rather than kmock's parser: kmock fails on `/api/v1/namespaces` (the list of
namespaces) and reads `/api/v1/namespaces/foo` as "namespace foo" rather than "the namespace
named foo". The real server tells them apart by its route table; so do we, below.
"""

from __future__ import annotations

import dataclasses

# `/api/v1/namespaces/{name}/status` and `/finalize` address a Namespace itself,
# while `/api/v1/namespaces/{ns}/{plural}` addresses objects inside one.
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})


@dataclasses.dataclass(frozen=True)
class ApiPath:
    group: str
    version: str | None = None  # None: the group's own discovery document (/apis/{group})
    plural: str | None = None  # None: the group-version's discovery document
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None


def parse_api_path(path: str) -> ApiPath | None:
    """The parts of an API path, or None for paths outside `/api/{v}` and `/apis/{g}`."""
    parts = [part for part in path.split("/") if part]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) == 2 and parts[0] == "apis":
        return ApiPath(group=parts[1])
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None

    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in _NAMESPACE_SUBRESOURCES:
        namespace, rest = rest[1], rest[2:]
    return ApiPath(
        group=group,
        version=version,
        plural=rest[0] if len(rest) >= 1 else None,
        namespace=namespace,
        name=rest[1] if len(rest) >= 2 else None,
        subresource="/".join(rest[2:]) or None,
    )
