"""Deletion as the API server and its controllers do it.

- Finalizers: an object with finalizers is only marked (deletionTimestamp set) and goes
  when its last finalizer is removed (kopf's own finalizer relies on this).
- Owner references: the garbage collector works after the DELETE has returned, as a real
  one does (`ApiServer.gc_delay` seconds later, 0.1 s by default): when an owner goes, its
  dependents go too (Background, the default), unless they still have other living owners;
  Foreground marks the owner (`foregroundDeletion`), deletes the dependents, and removes
  the owner once no dependent with `blockOwnerDeletion: true` is left; Orphan strips the
  owner reference and keeps the dependents (at once: no `orphan` finalizer here).
  Old children still being collected after `kubectl delete && kubectl apply` are a real
  cluster's everyday state (issue 9), so tests must see them.
- Namespaces: a deleted namespace is Terminating (creating in it is refused) and is emptied
  by the namespace controller after the DELETE has returned (`gc_delay` later); it goes once
  everything inside it has gone, graceful pods and finalizers included.
- Pods: a scheduled pod that has not ended is deleted gracefully: it gets
  `deletionTimestamp` and `deletionGracePeriodSeconds` and stays, Terminating, until its
  kubelet confirms with `gracePeriodSeconds=0` (a pod never scheduled, or ended, goes at once).

Outside an event loop (unit tests of `ApiServer`), the collector runs at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import kmock

from tuneloop.emulator import objects
from tuneloop.emulator.registry import NAMESPACES
from tuneloop.emulator.store import Key

if TYPE_CHECKING:
    from tuneloop.emulator.api import ApiServer

FOREGROUND_FINALIZER = "foregroundDeletion"
PODS = kmock.resource("", "v1", "pods")


def _pod_grace(pod: dict[str, Any], grace: int | None) -> int | None:
    """Seconds a pod is Terminating before it goes; None to delete it now, as the pod
    strategy does for a pod never scheduled or already terminal, or `gracePeriodSeconds=0`
    (the kubelet's confirmation that the containers have stopped)."""
    if grace == 0:
        return None
    if not (pod.get("spec") or {}).get("nodeName") or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return None
    if grace is None:
        grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
    return int(grace)


def _terminate_pod(api: ApiServer, key: Key, pod: dict[str, Any], grace: int) -> dict[str, Any]:
    """Graceful deletion: the pod stays, Terminating, until its kubelet deletes it with
    grace 0 once the containers have stopped (or a shorter grace period is asked for)."""
    meta = objects.metadata(pod)
    if meta.get("deletionTimestamp"):
        if grace < int(meta.get("deletionGracePeriodSeconds") or 0):
            return api.commit(key, objects.with_metadata(pod, deletionGracePeriodSeconds=grace), pod)
        return pod
    marked = objects.deleting_object(pod, now=api.clock())
    return api.commit(key, objects.with_metadata(marked, deletionGracePeriodSeconds=grace), pod)


def delete(api: ApiServer, key: Key, policy: str, grace: int | None = None) -> dict[str, Any]:
    obj = api.store.get(key)
    if obj is None:
        raise LookupError(key)  # callers only pass live keys
    uid = objects.metadata(obj).get("uid", "")
    if key[0] == PODS and (graceful := _pod_grace(obj, grace)) is not None:
        return _terminate_pod(api, key, obj, graceful)
    if policy == "Orphan":
        _orphan_dependents(api, uid)
    if key[0] == NAMESPACES:
        return _terminate_namespace(api, key, obj)

    foreground = policy == "Foreground" and bool(api.store.dependents(uid))
    if not objects.metadata(obj).get("finalizers") and not foreground:
        return api.remove(key, obj)

    extra = (FOREGROUND_FINALIZER,) if foreground else ()
    marked = objects.deleting_object(obj, now=api.clock(), extra_finalizers=extra)
    result = obj if marked == obj else api.commit(key, marked, obj)
    if foreground:
        api.defer(lambda: _foreground(api, key, uid))
    return api.store.get(key) or result


def _foreground(api: ApiServer, key: Key, uid: str) -> None:
    for dependent in api.store.dependents(uid):
        if api.store.get(dependent) is not None:
            delete(api, dependent, "Background")
    _finish_foreground(api, key)


def after_removal(api: ApiServer, key: Key, final: dict[str, Any]) -> None:
    """What the controllers do once an object is gone for good (the collector: later)."""
    metadata = objects.metadata(final)
    uid = metadata.get("uid", "")
    if api.store.dependents(uid):
        api.defer(lambda: [_collect(api, dependent, uid) for dependent in api.store.dependents(uid)])
    for ref in metadata.get("ownerReferences") or []:
        owner = api.store.key_of(ref.get("uid", ""))
        if owner is not None:
            _finish_foreground(api, owner)
    if key[1] is not None:
        _finish_namespace(api, key[1])


def after_create(api: ApiServer, key: Key, created: dict[str, Any]) -> None:
    """A dependent created for owners that are all gone already (a controller racing its
    owner's deletion) is collected, as the real garbage collector does on first sight."""
    refs = objects.metadata(created).get("ownerReferences") or []
    if refs and all(api.store.key_of(ref.get("uid", "")) is None for ref in refs):
        uid = objects.metadata(created).get("uid")

        def collect() -> None:
            obj = api.store.get(key)
            if obj is not None and objects.metadata(obj).get("uid") == uid and \
                    all(api.store.key_of(ref.get("uid", "")) is None for ref in objects.metadata(obj).get("ownerReferences") or []):
                delete(api, key, "Background")
        api.defer(collect)


def _collect(api: ApiServer, key: Key, gone_owner_uid: str) -> None:
    """A dependent of a removed owner: deleted, unless another owner still lives."""
    obj = api.store.get(key)
    if obj is None:
        return
    refs = objects.metadata(obj).get("ownerReferences") or []
    remaining = [ref for ref in refs if ref.get("uid") != gone_owner_uid]
    if any(api.store.key_of(ref.get("uid", "")) is not None for ref in remaining):
        api.commit(key, objects.with_metadata(obj, ownerReferences=remaining), obj)
    else:
        delete(api, key, "Background")


def _orphan_dependents(api: ApiServer, owner_uid: str) -> None:
    for key in api.store.dependents(owner_uid):
        obj = api.store.get(key)
        if obj is not None:
            refs = [ref for ref in objects.metadata(obj).get("ownerReferences") or [] if ref.get("uid") != owner_uid]
            api.commit(key, objects.with_metadata(obj, ownerReferences=refs or None), obj)


def _finish_foreground(api: ApiServer, key: Key) -> None:
    """A foreground-deleted owner goes once its last dependent has gone."""
    owner = api.store.get(key)
    finalizers = objects.metadata(owner or {}).get("finalizers") or []
    if owner is None or FOREGROUND_FINALIZER not in finalizers:
        return
    owner_uid = objects.metadata(owner).get("uid", "")
    if any(_blocks(api.store.get(dependent), owner_uid) for dependent in api.store.dependents(owner_uid)):
        return
    remaining = [f for f in finalizers if f != FOREGROUND_FINALIZER]
    released = objects.with_metadata(owner, finalizers=remaining or None)
    if remaining:
        api.commit(key, released, owner)
    else:
        api.remove(key, released)


def _blocks(dependent: dict[str, Any] | None, owner_uid: str) -> bool:
    """Only dependents whose reference says `blockOwnerDeletion: true` hold a foreground owner."""
    refs = objects.metadata(dependent or {}).get("ownerReferences") or []
    return any(ref.get("uid") == owner_uid and ref.get("blockOwnerDeletion") for ref in refs)


def _terminate_namespace(api: ApiServer, key: Key, obj: dict[str, Any]) -> dict[str, Any]:
    marked = objects.deleting_object(obj, now=api.clock())
    marked = {**marked, "status": {**(obj.get("status") or {}), "phase": "Terminating"}}
    result = obj if marked == obj else api.commit(key, marked, obj)
    # The namespace controller empties it after the DELETE has returned: until then its
    # objects are all still there, and nothing new may be created in it.
    api.defer(lambda: _empty_namespace(api, key[2]))
    return api.store.get(key) or result


def _empty_namespace(api: ApiServer, namespace: str) -> None:
    for resource in api.store.resources():
        for inner in api.store.keys(resource, namespace):
            if api.store.get(inner) is not None:
                delete(api, inner, "Background")
    _finish_namespace(api, namespace)


def _finish_namespace(api: ApiServer, namespace: str) -> None:
    """A Terminating namespace goes once it is empty (and its own finalizers are gone)."""
    key: Key = (NAMESPACES, None, namespace)
    obj = api.store.get(key)
    if obj is None or not objects.metadata(obj).get("deletionTimestamp"):
        return
    if api.store.namespace_size(namespace) or objects.metadata(obj).get("finalizers"):
        return
    api.remove(key, {**obj, "spec": {**(obj.get("spec") or {}), "finalizers": []}})
