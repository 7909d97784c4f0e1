"""The rules of the API server for what a write may change, as pure functions.

No clock, no uid source, no store: callers pass them in. Rules (kube-apiserver's generic
registry and the CRD strategy):
- the server owns uid, resourceVersion, generation, creationTimestamp, deletionTimestamp;
- a resource with a status subresource ignores status in writes to the main resource, and
  a write to `/status` changes nothing but status;
- generation starts at 1 and grows when anything outside metadata (and outside status, for
  resources with a status subresource) changes, and when deletion begins.
"""

from __future__ import annotations

from typing import Any

# Set by the server; a client's values are dropped on create and ignored on update.
SERVER_METADATA = ("uid", "resourceVersion", "generation", "creationTimestamp",
                   "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink", "managedFields")
# Fixed at creation: updates keep the stored values.
IMMUTABLE_METADATA = ("name", "namespace", "generateName") + SERVER_METADATA


def metadata(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def new_object(
        body: dict[str, Any], *, api_version: str, kind: str, name: str, namespace: str | None,
        uid: str, now: str, has_status: bool,
) -> dict[str, Any]:
    """A created object before it gets its resourceVersion."""
    meta = {key: value for key, value in metadata(body).items() if key not in SERVER_METADATA}
    meta.update(name=name, uid=uid, generation=1, creationTimestamp=now)
    if namespace is not None:
        meta["namespace"] = namespace
    else:
        meta.pop("namespace", None)
    rest = {key: value for key, value in body.items() if key not in ("apiVersion", "kind", "metadata")}
    if has_status:
        rest.pop("status", None)  # status is written through /status only, even on create
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **rest}


def _specification(obj: dict[str, Any], has_status: bool) -> dict[str, Any]:
    """What `generation` counts changes of."""
    ignored = {"apiVersion", "kind", "metadata", "status"} if has_status else {"apiVersion", "kind", "metadata"}
    return {key: value for key, value in obj.items() if key not in ignored}


def updated_object(
        old: dict[str, Any], candidate: dict[str, Any], *, subresource: str | None, has_status: bool,
) -> dict[str, Any]:
    """The object after a PUT or PATCH whose result (the whole object) is `candidate`.

    Keeps the old resourceVersion: the caller compares the result with `old` to skip no-op
    writes (no new version, no watch event), as the real server does.
    """
    if subresource == "status":
        updated = {key: value for key, value in old.items() if key != "status"}
        if "status" in candidate:
            updated["status"] = candidate["status"]
        return updated

    old_meta, candidate_meta = metadata(old), metadata(candidate)
    meta = {key: value for key, value in candidate_meta.items() if key not in IMMUTABLE_METADATA}
    meta.update({key: old_meta[key] for key in IMMUTABLE_METADATA if key in old_meta})
    rest = {key: value for key, value in candidate.items() if key not in ("apiVersion", "kind", "metadata")}
    if has_status:
        rest.pop("status", None)
        if "status" in old:
            rest["status"] = old["status"]
    updated = {"apiVersion": old.get("apiVersion"), "kind": old.get("kind"), "metadata": meta, **rest}
    if _specification(updated, has_status) != _specification(old, has_status):
        meta["generation"] = old_meta.get("generation", 1) + 1
    return updated


def deleting_object(obj: dict[str, Any], *, now: str, extra_finalizers: tuple[str, ...] = ()) -> dict[str, Any]:
    """The object marked for deletion (finalizers pending); generation grows, as in the
    server's BeforeDelete, because controllers must notice that deletion has begun."""
    meta = dict(metadata(obj))
    meta["finalizers"] = list(meta.get("finalizers") or []) + [f for f in extra_finalizers if f not in (meta.get("finalizers") or [])]
    if not meta.get("deletionTimestamp"):
        meta["deletionTimestamp"] = now
        meta["deletionGracePeriodSeconds"] = 0
        meta["generation"] = meta.get("generation", 1) + 1
    return {**obj, "metadata": meta}


def with_metadata(obj: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of `obj` with some metadata fields replaced (None removes them)."""
    meta = {**metadata(obj), **changes}
    return {**obj, "metadata": {key: value for key, value in meta.items() if value is not None}}
