"""Where the emulated cluster keeps its objects, indexed for the API's access patterns.

Objects live in kmock's `ObjectsArray` (the emulator's `objects`), so tests keep kmock's
assertions and per-object history: `emulator.objects['v1/pods', 'ns', 'name'].history`.
kmock finds objects by scanning that whole array on every request, which made it slow down
with a few hundred objects; the indexes here make a GET one dict lookup and a LIST walk
only the objects of one resource (and one namespace), in an order kept sorted between writes,
and a LIST by label (`app=x`, `tier in (a,b)`) only the objects with those labels.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import Any

import kmock

Key = tuple[kmock.resource, str | None, str]  # (resource, namespace or None, name)


class ObjectStore:
    def __init__(self, objects: kmock.ObjectsArray, *, history_limit: int | None) -> None:
        self._objects = objects
        self._history_limit = history_limit
        # The current versions, without kmock's wrappers: resource -> namespace -> name -> object.
        self._live: dict[kmock.resource, dict[str | None, dict[str, dict[str, Any]]]] = collections.defaultdict(dict)
        self._sorted: dict[tuple[kmock.resource, str | None], list[str]] = {}  # dropped on add/remove
        # (resource, namespace) -> (label, value) -> names.
        self._labels: dict[tuple[kmock.resource, str | None], dict[tuple[str, str], set[str]]] = \
            collections.defaultdict(lambda: collections.defaultdict(set))
        self._uids: dict[str, Key] = {}
        self._dependents: dict[str, set[Key]] = collections.defaultdict(set)  # owner uid -> keys
        self._namespace_sizes: collections.Counter[str] = collections.Counter()
        self.resource_version = 0  # the last one given out; one counter for the whole cluster

    def next_resource_version(self) -> str:
        self.resource_version += 1
        return str(self.resource_version)

    def get(self, key: Key) -> dict[str, Any] | None:
        """The stored object; shared, so never mutate it (writes build new dicts)."""
        return self._live.get(key[0], {}).get(key[1], {}).get(key[2])

    def objects(self, resource: kmock.resource, namespace: str | None = None,
                labels: Mapping[str, frozenset[str]] | None = None) -> list[dict[str, Any]]:
        """Live objects, sorted by namespace and name (the order of the real API).

        With `labels`, only objects whose label has one of the given values (a superset of
        a selector's matches: the caller still applies the whole selector).
        """
        by_namespace = self._live.get(resource, {})
        namespaces = [namespace] if namespace is not None else sorted(by_namespace, key=lambda ns: ns or "")
        objects: list[dict[str, Any]] = []
        for ns in namespaces:
            by_name = by_namespace.get(ns, {})
            if labels:
                index = self._labels.get((resource, ns), {})
                names: set[str] | None = None
                for label, values in labels.items():
                    having = set().union(*(index.get((label, value), ()) for value in values))
                    names = having if names is None else names & having
                objects += [by_name[name] for name in sorted(names or ())]
                continue
            if (resource, ns) not in self._sorted:
                self._sorted[resource, ns] = sorted(by_name)
            objects += [by_name[name] for name in self._sorted[resource, ns]]
        return objects

    def keys(self, resource: kmock.resource, namespace: str | None = None) -> list[Key]:
        return [(resource, (obj["metadata"].get("namespace") if namespace is None else namespace), obj["metadata"]["name"])
                for obj in self.objects(resource, namespace)]

    def resources(self) -> list[kmock.resource]:
        return [resource for resource, by_namespace in self._live.items() if any(by_namespace.values())]

    def key_of(self, uid: str) -> Key | None:
        return self._uids.get(uid)

    def dependents(self, owner_uid: str) -> list[Key]:
        return sorted(self._dependents.get(owner_uid, ()), key=lambda key: (key[1] or "", key[2]))

    def namespace_size(self, namespace: str) -> int:
        return self._namespace_sizes[namespace]

    def put(self, key: Key, new: dict[str, Any], old: dict[str, Any] | None) -> None:
        """Store a created (old is None) or updated object."""
        resource, namespace, name = key
        if old is None:
            if key in self._objects:
                self._objects[key].create(new)  # re-created after a deletion: history continues
            else:
                self._objects[key] = new
            self._sorted.pop((resource, namespace), None)
            if namespace is not None:
                self._namespace_sizes[namespace] += 1
        else:
            self._append_version(key, new)
        self._live[resource].setdefault(namespace, {})[name] = new
        self._index_labels(key, new, old)
        self._index_identity(key, new, old)

    def remove(self, key: Key, final: dict[str, Any]) -> None:
        """Forget a live object; its history ends with its final state and a deletion mark."""
        resource, namespace, name = key
        self._append_version(key, final)
        self._objects[key].delete()
        self._live[resource].get(namespace, {}).pop(name, None)
        self._sorted.pop((resource, namespace), None)
        self._index_labels(key, None, final)
        if namespace is not None:
            self._namespace_sizes[namespace] -= 1
        self._index_identity(key, None, final)

    def _append_version(self, key: Key, version: dict[str, Any]) -> None:
        history = self._objects[key].history
        history.append(version)
        if self._history_limit is not None and len(history) > self._history_limit:
            del history[:-self._history_limit]  # bounded memory for long demo runs

    def _index_labels(self, key: Key, new: dict[str, Any] | None, old: dict[str, Any] | None) -> None:
        old_labels = set((((old or {}).get("metadata") or {}).get("labels") or {}).items())
        new_labels = set((((new or {}).get("metadata") or {}).get("labels") or {}).items())
        index = self._labels[key[0], key[1]]
        for pair in old_labels - new_labels:
            index[pair].discard(key[2])
            if not index[pair]:
                del index[pair]
        for pair in new_labels - old_labels:
            index[pair].add(key[2])

    def _index_identity(self, key: Key, new: dict[str, Any] | None, old: dict[str, Any] | None) -> None:
        old_meta = (old or {}).get("metadata") or {}
        new_meta = (new or {}).get("metadata") or {}
        if old_meta.get("uid") and new is None:
            self._uids.pop(old_meta["uid"], None)
        if new_meta.get("uid"):
            self._uids[new_meta["uid"]] = key
        old_owners = {ref.get("uid") for ref in old_meta.get("ownerReferences") or []}
        new_owners = {ref.get("uid") for ref in new_meta.get("ownerReferences") or []}
        for uid in old_owners - new_owners:
            self._dependents[uid].discard(key)
            if not self._dependents[uid]:
                del self._dependents[uid]
        for uid in new_owners - old_owners:
            self._dependents[uid].add(key)
