"""Which resources the emulated cluster serves: the built-in APIs, kopf's, and CRDs.

The registry writes into kmock's `ResourcesArray` (the emulator's `resources`), which kmock's
discovery endpoints (`/api`, `/apis`, `/apis/{group}/{version}`) already serve; it adds the
lookups the API needs per request (scope, kind, status subresource, schema).
"""

from __future__ import annotations

import warnings
from typing import Any

import kmock

from tuneloop.emulator.crds import ALL_VERBS, CustomResource

NAMESPACES = kmock.resource("", "v1", "namespaces")

# kopf's peering resources; real clusters get them from kopf's peering.yaml CRDs.
KOPF_PEERINGS = {
    kmock.resource("kopf.dev", "v1", "clusterkopfpeerings"): kmock.ResourceInfo(
        kind="ClusterKopfPeering", singular="clusterkopfpeering", namespaced=False, verbs=set(ALL_VERBS)),
    kmock.resource("kopf.dev", "v1", "kopfpeerings"): kmock.ResourceInfo(
        kind="KopfPeering", singular="kopfpeering", namespaced=True, verbs=set(ALL_VERBS)),
}


class ResourceRegistry:
    def __init__(self, resources: kmock.ResourcesArray) -> None:
        self._resources = resources
        self._schemas: dict[kmock.resource, dict[str, Any]] = {}
        self._columns: dict[kmock.resource, list[dict[str, Any]]] = {}
        self._infos: dict[kmock.resource, kmock.ResourceInfo] = {}  # a fast mirror, see info()

    def load_builtins(self) -> None:
        """kmock's bundled discovery of a recent K3s cluster (core, apps, batch, coordination,
        events.k8s.io, apiextensions, ...), plus kopf's peering resources."""
        with warnings.catch_warnings():  # kmock 0.8 reads its data with a deprecated importlib call
            warnings.simplefilter("ignore", DeprecationWarning)
            self._resources.load_bundled()
        for resource, info in KOPF_PEERINGS.items():
            self._resources[resource] = info

    def info(self, resource: kmock.resource) -> kmock.ResourceInfo | None:
        # A plain-dict mirror: `resource in ResourcesArray` costs a runtime Protocol check per
        # request. Rebuilt when the array changes size, so resources a test adds through
        # kmock's `emulator.resources[...]` are served too.
        if len(self._infos) != len(self._resources):
            self._infos = {resource: self._resources[resource] for resource in self._resources}
        return self._infos.get(resource)

    def has_status(self, resource: kmock.resource) -> bool:
        info = self.info(resource)
        return info is not None and "status" in info.subresources

    def schema(self, resource: kmock.resource) -> dict[str, Any] | None:
        return self._schemas.get(resource)

    def columns(self, resource: kmock.resource) -> list[dict[str, Any]] | None:
        """A custom resource's printer columns (None for other resources: plain JSON for them)."""
        return self._columns.get(resource)

    def is_custom(self, resource: kmock.resource) -> bool:
        return resource in self._schemas

    def served(self) -> list[kmock.resource]:
        return list(self._resources)

    def register(self, custom_resources: list[CustomResource]) -> None:
        for custom in custom_resources:
            self._resources[custom.resource] = custom.info
            self._infos[custom.resource] = custom.info
            self._schemas[custom.resource] = custom.schema or {}
            self._columns[custom.resource] = list(custom.columns)

    def unregister(self, custom_resources: list[CustomResource]) -> None:
        for custom in custom_resources:
            self._schemas.pop(custom.resource, None)
            self._columns.pop(custom.resource, None)
            self._infos.pop(custom.resource, None)
            if custom.resource in self._resources:
                del self._resources[custom.resource]

    @staticmethod
    def api_version(resource: kmock.resource) -> str:
        return f"{resource.group}/{resource.version}" if resource.group else str(resource.version)
