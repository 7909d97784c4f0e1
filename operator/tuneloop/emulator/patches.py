"""The patch formats of `PATCH` requests, applied to a stored object.

JSON patches (RFC 6902) go to the `jsonpatch` library (kopf and kmock already depend on it).
The merge patch (RFC 7386) is hand-written: kmock's `merge_patch_dict` refuses to replace a
dict by a scalar and vice versa, which RFC 7386 allows.

Strategic merge patches are treated as merge patches, except for the lists whose strategy
clients really rely on in metadata (`finalizers`, with `$deleteFromPrimitiveList`, and
`ownerReferences` merged by uid); other lists (containers, env, ...) are replaced whole
where the real server would merge them by key.
"""

from __future__ import annotations

from typing import Any

import jsonpatch
import jsonpointer
import yaml

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = frozenset({MERGE_PATCH, STRATEGIC_MERGE_PATCH, JSON_PATCH, APPLY_PATCH})


class PatchError(ValueError):
    """The patch cannot be applied (a failed `test`, a missing path): 422 in the API."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: dicts merge recursively, `null` deletes, anything else replaces.

    Copy-on-write: untouched sub-dicts are shared with `target`, never mutated.
    """
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    metadata_patch = dict(patch.get("metadata") or {})
    old_metadata = target.get("metadata") or {}
    deleted = set(metadata_patch.pop("$deleteFromPrimitiveList/finalizers", None) or [])
    if "finalizers" in metadata_patch or deleted:
        # `finalizers` has patchStrategy=merge: the patch adds to the list, never shrinks it.
        merged = list(old_metadata.get("finalizers") or [])
        merged += [f for f in metadata_patch.get("finalizers") or [] if f not in merged]
        metadata_patch["finalizers"] = [f for f in merged if f not in deleted]
    if metadata_patch.get("ownerReferences") is not None:
        # `ownerReferences` has patchStrategy=merge with patchMergeKey=uid.
        refs = {ref.get("uid"): ref for ref in old_metadata.get("ownerReferences") or []}
        refs.update({ref.get("uid"): ref for ref in metadata_patch["ownerReferences"]})
        metadata_patch["ownerReferences"] = list(refs.values())
    if "metadata" in patch:
        patch = {**patch, "metadata": metadata_patch}
    return merge_patch(target, patch)


def json_patch(target: dict[str, Any], operations: Any) -> dict[str, Any]:
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    try:
        return jsonpatch.apply_patch(target, operations, in_place=False)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as e:
        # kopf relies on this: its `test` of metadata.resourceVersion failing means "retry later".
        raise PatchError(str(e)) from e


def decode_apply_body(body: bytes) -> Any:
    """Server-side apply bodies are YAML (JSON is YAML too)."""
    return yaml.safe_load(body.decode("utf-8")) if body else None


def apply_patch(target: dict[str, Any], content_type: str, patch: Any) -> dict[str, Any]:
    """The object after the patch. Server-side apply is approximated by a merge patch:
    there is no field ownership, so fields dropped from the applied config are kept."""
    if content_type == JSON_PATCH:
        return json_patch(target, patch)
    if not isinstance(patch, dict):
        raise PatchError(f"a {content_type} body must be an object")
    if content_type == STRATEGIC_MERGE_PATCH:
        return strategic_merge_patch(target, patch)
    return merge_patch(target, patch)
