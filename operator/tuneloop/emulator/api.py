"""The semantics of kube-apiserver over the in-memory store, with no HTTP in sight.

Every method runs synchronously in the emulator's event loop, so a write, its new
resourceVersion and its watch event happen with no `await` in between: writes are atomic
without locks, and watchers see changes in resourceVersion order. Errors are raised as
`kmock.KubernetesError`, which the HTTP layer renders as `Status` bodies.

Deletion (finalizers, owner cascades, namespaces) lives in deletion.py.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import datetime
import json
import random
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import kmock

from tuneloop.emulator import admission, builtins, deletion, errors, objects, patches, schemas, validation
from tuneloop.emulator.crds import CRD_RESOURCE, crd_problems, crd_resources, established_status
from tuneloop.emulator.registry import NAMESPACES, ResourceRegistry
from tuneloop.emulator.selection import FieldSelector, LabelSelector, unsupported_fields
from tuneloop.emulator.store import Key, ObjectStore
from tuneloop.emulator.watches import Change, WatchHub, follow

logger = logging.getLogger(__name__)
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
# Resources whose storage returns the deleted object (kube-apiserver's ReturnDeletedObject).
RETURNS_DELETED_OBJECT = frozenset({NAMESPACES, kmock.resource("", "v1", "pods"), kmock.resource("", "v1", "services")})
_GENERATED_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # as the real server's, no vowels

Matcher = Callable[[dict[str, Any]], bool]


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiServer:
    def __init__(
            self, *, objects: kmock.ObjectsArray, resources: kmock.ResourcesArray,
            history_limit: int | None, watch_history: int, gc_delay: float = 0.1,
    ) -> None:
        self.registry = ResourceRegistry(resources)
        self.registry.load_builtins()
        self.store = ObjectStore(objects, history_limit=history_limit)
        self.hub = WatchHub(limit=watch_history)
        self.clock: Callable[[], str] = utc_now
        # The garbage collector's lag after a DELETE (deletion.py); 0 still defers it.
        self.gc_delay = gc_delay
        for name in DEFAULT_NAMESPACES:
            self.create(NAMESPACES, None, {"metadata": {"name": name}})

    # Reading.

    def get(self, resource: kmock.resource, namespace: str | None, name: str, subresource: str | None = None) -> dict[str, Any]:
        info = self._info(resource, namespace, subresource)
        key = self._key(resource, info, namespace, name)
        return self._existing(key)

    def list(
            self, resource: kmock.resource, namespace: str | None, *,
            label_selector: str | None = None, field_selector: str | None = None,
            limit: int | None = None, continue_token: str | None = None,
    ) -> dict[str, Any]:
        info = self._info(resource, namespace)
        matches = self._matcher(resource, None, label_selector, field_selector)
        candidates = self.store.objects(resource, namespace, self._required_labels(label_selector))
        if continue_token:
            after = _decode_continue(continue_token)
            candidates = [obj for obj in candidates if (obj["metadata"].get("namespace") or "", obj["metadata"]["name"]) > after]
        items: list[dict[str, Any]] = []
        metadata: dict[str, Any] = {"resourceVersion": str(self.store.resource_version)}
        for obj in candidates:
            if matches(obj):
                if limit and len(items) == limit:
                    last = items[-1]["metadata"]
                    metadata["continue"] = _encode_continue(last.get("namespace") or "", last["name"])
                    break
                items.append(obj)
        return {"apiVersion": self.registry.api_version(resource), "kind": f"{info.kind}List",
                "metadata": metadata, "items": items}

    def watch(
            self, resource: kmock.resource, namespace: str | None, name: str | None = None, *,
            resource_version: str | None = None, label_selector: str | None = None,
            field_selector: str | None = None, timeout: float | None = None,
            bookmark_interval: float | None = None, send_initial_events: bool = False,
    ) -> AsyncIterator[dict[str, Any]]:
        """Validate the request now (so errors are HTTP errors); the events come from
        `watches.follow()` as they happen."""
        info = self._info(resource, namespace)
        matches = self._matcher(resource, name, label_selector, field_selector)
        try:
            since = int(resource_version) if resource_version not in (None, "", "0") else None
        except ValueError:
            raise errors.bad_request(f"invalid resourceVersion: {resource_version!r}")
        return follow(
            self.hub, self.store, resource, namespace, matches, since,
            api_version=self.registry.api_version(resource), kind=info.kind or "",
            timeout=timeout, bookmark_interval=bookmark_interval, send_initial_events=send_initial_events)

    # Writing.

    def create(self, resource: kmock.resource, namespace: str | None, body: Any) -> dict[str, Any]:
        info = self._info(resource, namespace)
        body = self._checked_body(resource, info, body)
        metadata = objects.metadata(body)
        if info.namespaced:
            if namespace is None:
                raise errors.resource_not_found()
            if metadata.get("namespace") not in (None, "", namespace):
                raise errors.bad_request("the namespace of the provided object does not match the namespace sent on the request")
        name = metadata.get("name") or self._generated_name(resource, namespace, metadata.get("generateName"))
        if not name:
            raise errors.invalid(resource, "", ["metadata.name: Required value: name or generateName is required"], info.kind)
        problems = validation.name_errors(resource, name) + validation.metadata_errors(metadata)
        if problems:
            raise errors.invalid(resource, name, problems, info.kind)
        if info.namespaced:
            self._require_open_namespace(resource, namespace, name)
        key = self._key(resource, info, namespace, name)
        if self.store.get(key) is not None:
            raise errors.already_exists(resource, name)

        obj = objects.new_object(
            body, api_version=self.registry.api_version(resource), kind=info.kind, name=name,
            namespace=key[1], uid=str(uuid.uuid4()), now=self.clock(), has_status="status" in info.subresources,
        )
        obj = self._admit(key, info, self._on_create(resource, obj), None)
        if resource == admission.PODS:  # its name in the request: a generateName is not filled in yet
            obj = admission.admit_pod(self, key[1], obj, metadata.get("name") or metadata.get("generateName") or "")
        created = self.commit(key, obj, None)
        deletion.after_create(self, key, created)
        if resource == NAMESPACES:
            account = admission.default_service_account(name)
            self.create(admission.SERVICE_ACCOUNTS, name, account)
        return created

    def replace(self, resource: kmock.resource, namespace: str | None, name: str, body: Any,
                subresource: str | None = None) -> dict[str, Any]:
        info = self._info(resource, namespace, subresource)
        body = self._checked_body(resource, info, body)
        if objects.metadata(body).get("name") not in (None, name):
            raise errors.bad_request(f"the name of the object ({objects.metadata(body)['name']}) "
                                     f"does not match the name on the URL ({name})")
        key = self._key(resource, info, namespace, name)
        existing = self._existing(key)
        if self.registry.is_custom(resource) and not objects.metadata(body).get("resourceVersion"):
            # Custom resources do not allow an unconditional update (the CRD strategy's
            # AllowUnconditionalUpdate is false); most built-ins do.
            raise errors.invalid(resource, name, ["metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"],
                                 info.kind)
        return self._update(key, info, existing, body, subresource)

    def patch(self, resource: kmock.resource, namespace: str | None, name: str, content_type: str, body: Any,
              subresource: str | None = None) -> dict[str, Any]:
        info = self._info(resource, namespace, subresource)
        if content_type not in patches.PATCH_TYPES:
            raise errors.unsupported_media_type(content_type)
        if content_type == patches.STRATEGIC_MERGE_PATCH and self.registry.is_custom(resource):
            raise errors.unsupported_media_type(f"{content_type} (not supported for custom resources)")
        key = self._key(resource, info, namespace, name)
        old = self.store.get(key)
        if old is None and content_type == patches.APPLY_PATCH and subresource is None and isinstance(body, dict):
            return self.create(resource, namespace, objects.with_metadata(body, name=name))  # apply creates
        old = self._existing(key)
        try:
            candidate = patches.apply_patch(old, content_type, body)
        except patches.PatchError as e:
            raise errors.invalid(resource, name, [str(e)], info.kind)
        if not isinstance(candidate, dict):
            raise errors.invalid(resource, name, ["the patched object is not an object"], info.kind)
        return self._update(key, info, old, candidate, subresource)

    def delete(self, resource: kmock.resource, namespace: str | None, name: str,
               options: dict[str, Any] | None = None) -> dict[str, Any]:
        info = self._info(resource, namespace)
        key = self._key(resource, info, namespace, name)
        obj = self._existing(key)
        options = options or {}
        preconditions = options.get("preconditions") or {}
        for field in ("uid", "resourceVersion"):
            expected, actual = preconditions.get(field), objects.metadata(obj).get(field)
            if expected and expected != actual:
                raise errors.conflict(resource, name, f"Precondition failed: {field} in precondition: "
                                                      f"{expected}, {field} in object meta: {actual}")
        result = deletion.delete(self, key, _propagation_policy(options), grace=_grace_period(options))
        if self.store.get(key) is not None or self.registry.is_custom(resource) or resource in RETURNS_DELETED_OBJECT:
            return result
        # Most built-ins answer an immediate deletion with a Status, not the object.
        return {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success",
                "details": {"name": name, "group": resource.group, "kind": resource.plural,
                            "uid": objects.metadata(obj).get("uid")}}

    def delete_collection(self, resource: kmock.resource, namespace: str | None, *,
                          label_selector: str | None = None, field_selector: str | None = None,
                          options: dict[str, Any] | None = None) -> dict[str, Any]:
        info = self._info(resource, namespace)
        matches = self._matcher(resource, None, label_selector, field_selector)
        policy = _propagation_policy(options or {})
        deleted = []
        for key in self.store.keys(resource, namespace):
            obj = self.store.get(key)
            if obj is not None and matches(obj):
                deleted.append(deletion.delete(self, key, policy, grace=_grace_period(options or {})))
        return {"apiVersion": self.registry.api_version(resource), "kind": f"{info.kind}List",
                "metadata": {"resourceVersion": str(self.store.resource_version)}, "items": deleted}

    def register_crd(self, crd: dict[str, Any]) -> dict[str, Any]:
        """Create the CRD, or replace it if one of that name exists; its resources get served."""
        name = objects.metadata(crd).get("name", "")
        if self.store.get((CRD_RESOURCE, None, name)) is None:
            return self.create(CRD_RESOURCE, None, crd)
        return self.replace(CRD_RESOURCE, None, name, objects.with_metadata(crd, resourceVersion=None))

    # The primitives that deletion.py shares.

    def commit(self, key: Key, new: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        """Store a created or changed object under a new resourceVersion and tell watchers."""
        resource_version = self.store.next_resource_version()
        new = objects.with_metadata(new, resourceVersion=resource_version)
        self.store.put(key, new, old)
        self.hub.publish(key[0], Change(int(resource_version), "ADDED" if old is None else "MODIFIED", new, old))
        return new

    def remove(self, key: Key, obj: dict[str, Any]) -> dict[str, Any]:
        """Delete an object for good (no finalizers left); the DELETED event carries a new
        resourceVersion, so watchers resuming from it do not see the deletion twice."""
        resource_version = self.store.next_resource_version()
        final = objects.with_metadata(obj, resourceVersion=resource_version)
        self.store.remove(key, final)
        self.hub.publish(key[0], Change(int(resource_version), "DELETED", final, obj))
        if key[0] == CRD_RESOURCE:
            self._drop_custom_resources(final)
        deletion.after_removal(self, key, final)
        return final

    def defer(self, work: Callable[[], Any]) -> None:
        """Run a controller's work (the garbage collector) after this request has returned."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            work()
            return

        def run() -> None:
            try:
                work()
            except Exception:  # noqa: BLE001 - a controller's failure must not stop the loop
                logger.exception("deferred controller work failed")

        loop.call_later(self.gc_delay, run)

    # Helpers.

    def _update(self, key: Key, info: kmock.ResourceInfo, old: dict[str, Any], candidate: dict[str, Any],
                subresource: str | None) -> dict[str, Any]:
        resource, _, name = key
        expected = objects.metadata(candidate).get("resourceVersion")
        if expected and expected != objects.metadata(old).get("resourceVersion"):
            raise errors.conflict(resource, name)
        new = objects.updated_object(old, candidate, subresource=subresource, has_status="status" in info.subresources)
        problems = (validation.metadata_errors(objects.metadata(new))
                    + validation.new_finalizer_errors(objects.metadata(old), objects.metadata(new)))
        if problems:
            raise errors.invalid(resource, name, problems, info.kind)
        new = self._admit(key, info, self._on_update(resource, new, old), old)
        if new == old:
            return old  # a no-op write: no new resourceVersion, no watch event (as in the real server)
        terminating_pod = key[0] == deletion.PODS and objects.metadata(new).get("deletionGracePeriodSeconds")
        if objects.metadata(new).get("deletionTimestamp") and not objects.metadata(new).get("finalizers") and not terminating_pod:
            return self.remove(key, new)  # the last finalizer is gone: the deletion completes
        return self.commit(key, new, old)

    def _info(self, resource: kmock.resource, namespace: str | None, subresource: str | None = None) -> kmock.ResourceInfo:
        info = self.registry.info(resource)
        if info is None or (namespace is not None and not info.namespaced):
            raise errors.resource_not_found()
        if subresource is not None and (subresource != "status" or "status" not in info.subresources):
            raise errors.resource_not_found()  # scale, log, exec, ... are not emulated
        return info

    @staticmethod
    def _key(resource: kmock.resource, info: kmock.ResourceInfo, namespace: str | None, name: str) -> Key:
        if info.namespaced and namespace is None:
            raise errors.resource_not_found()
        return resource, namespace if info.namespaced else None, name

    def _existing(self, key: Key) -> dict[str, Any]:
        obj = self.store.get(key)
        if obj is None:
            raise errors.not_found(key[0], key[2])
        return obj

    def _checked_body(self, resource: kmock.resource, info: kmock.ResourceInfo, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be a JSON object")
        expected_version = self.registry.api_version(resource)
        if body.get("apiVersion") not in (None, "", expected_version):
            raise errors.bad_request(f"the API version in the data ({body['apiVersion']}) does not match "
                                     f"the expected API version ({expected_version})")
        if body.get("kind") not in (None, "", info.kind):
            raise errors.bad_request(f"the kind in the data ({body['kind']}) does not match the expected kind ({info.kind})")
        if not isinstance(body.get("metadata") or {}, dict):
            raise errors.bad_request("metadata must be an object")
        return body

    def _matcher(self, resource: kmock.resource, name: str | None,
                 label_selector: str | None, field_selector: str | None) -> Matcher:
        try:
            labels = LabelSelector.parse(label_selector)
            fields = FieldSelector.parse(field_selector)
        except ValueError as e:
            raise errors.bad_request(f"unable to parse selector: {e}")
        if unsupported := unsupported_fields(resource.group or "", resource.plural or "", fields):
            raise errors.bad_request(f"field label not supported: {sorted(unsupported)[0]}")

        checks: list[Matcher] = []  # only the checks asked for: lists scan every object
        if name is not None:
            checks.append(lambda obj: (obj.get("metadata") or {}).get("name") == name)
        if labels.requirements:
            checks.append(lambda obj: labels.matches((obj.get("metadata") or {}).get("labels")))
        if fields.terms:
            checks.append(fields.matches)
        if len(checks) <= 1:
            return checks[0] if checks else (lambda obj: True)
        return lambda obj: all(check(obj) for check in checks)

    @staticmethod
    def _required_labels(label_selector: str | None) -> dict[str, frozenset[str]]:
        try:
            return LabelSelector.parse(label_selector).required_values
        except ValueError:
            return {}  # _matcher() has already turned this into a 400

    def _generated_name(self, resource: kmock.resource, namespace: str | None, prefix: str | None) -> str | None:
        if not prefix:
            return None
        while True:  # the real server fails on a collision instead; retrying is kinder to tests
            name = prefix[:58] + "".join(random.choices(_GENERATED_NAME_ALPHABET, k=5))
            if all(self.store.get((resource, ns, name)) is None for ns in (namespace, None)):
                return name

    def _require_open_namespace(self, resource: kmock.resource, namespace: str, name: str) -> None:
        obj = self.store.get((NAMESPACES, None, namespace))
        if obj is None:
            raise errors.not_found(NAMESPACES, namespace)
        if objects.metadata(obj).get("deletionTimestamp"):
            raise errors.forbidden(f'{errors.qualified_name(resource)} "{name}" is forbidden: unable to create new '
                                   f"content in namespace {namespace} because it is being terminated")

    def _admit(self, key: Key, info: kmock.ResourceInfo, obj: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        if not self.registry.is_custom(key[0]):
            if old is None:
                obj = builtins.default(key[0], obj)
            if problems := builtins.problems(key[0], obj, old):
                raise errors.invalid(key[0], key[2], problems, info.kind)
            return obj
        admitted, problems = schemas.admit(self.registry.schema(key[0]) or {}, obj, old)
        if problems:
            raise errors.invalid(key[0], key[2], problems, info.kind)
        return admitted

    def _on_create(self, resource: kmock.resource, obj: dict[str, Any]) -> dict[str, Any]:
        """What the built-in controllers add right away to a new object."""
        if resource == NAMESPACES:
            return {**obj, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}
        if resource == CRD_RESOURCE:
            self._register_crd_resources(obj)
            return {**obj, "status": established_status(obj, self.clock())}
        return obj

    def _on_update(self, resource: kmock.resource, new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
        if resource == CRD_RESOURCE and new.get("spec") != old.get("spec"):
            if problems := crd_problems(new):  # before unregistering: a rejected update changes nothing
                raise errors.invalid(CRD_RESOURCE, objects.metadata(new).get("name", ""), problems, "CustomResourceDefinition")
            self.registry.unregister(crd_resources(old))
            self._register_crd_resources(new)
            return {**new, "status": established_status(new, self.clock())}
        return new

    def _register_crd_resources(self, crd: dict[str, Any]) -> None:
        if problems := crd_problems(crd):
            raise errors.invalid(CRD_RESOURCE, objects.metadata(crd).get("name", ""), problems, "CustomResourceDefinition")
        self.registry.register(crd_resources(crd))

    def _drop_custom_resources(self, crd: dict[str, Any]) -> None:
        """A deleted CRD takes its objects with it (their finalizers are not waited for)."""
        custom_resources = crd_resources(crd)
        for custom in custom_resources:
            for key in self.store.keys(custom.resource):
                if (obj := self.store.get(key)) is not None:
                    self.remove(key, obj)
        self.registry.unregister(custom_resources)


def _propagation_policy(options: dict[str, Any]) -> str:
    if options.get("orphanDependents") is True:
        return "Orphan"
    policy = options.get("propagationPolicy") or "Background"
    if policy not in ("Background", "Foreground", "Orphan"):
        raise errors.bad_request(f"propagationPolicy: Unsupported value: {policy!r}")
    return policy


def _grace_period(options: dict[str, Any]) -> int | None:
    value = options.get("gracePeriodSeconds")
    if value in (None, ""):
        return None
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        raise errors.bad_request(f"gracePeriodSeconds: invalid value {value!r}")


def _encode_continue(namespace: str, name: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([namespace, name]).encode()).decode()


def _decode_continue(token: str) -> tuple[str, str]:
    try:
        namespace, name = json.loads(base64.urlsafe_b64decode(token.encode()))
        return str(namespace), str(name)
    except (ValueError, TypeError, binascii.Error):
        raise errors.bad_request(f"invalid continue token: {token!r}")
