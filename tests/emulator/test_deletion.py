"""Deletion: finalizers, owner-reference cascades (background, foreground, orphan), namespaces, CRDs."""

from __future__ import annotations

import time

import kubernetes
import pytest

from .conftest import GROUP, VERSION, widget
from .test_errors import api_error


def configmap(name: str, *, owners: list = (), finalizers: list = (), block: bool = False) -> dict:
    refs = [{"apiVersion": "v1", "kind": "ConfigMap", "name": o.metadata.name, "uid": o.metadata.uid,
             **({"blockOwnerDeletion": True} if block else {})} for o in owners]
    return {"metadata": {"name": name, "ownerReferences": refs, "finalizers": list(finalizers)}}


def names(core, namespace: str) -> set[str]:
    return {cm.metadata.name for cm in core.list_namespaced_config_map(namespace).items}


def settled(core, namespace: str, timeout: float = 5.0) -> set[str]:
    """The ConfigMaps left once the garbage collector (asynchronous, as a real one) is done."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        now = names(core, namespace)
        if now == last:
            return now
        last = now
        time.sleep(0.5)  # the collector runs gc_delay (0.1 s) after a deletion
    return names(core, namespace)


def exists(call, *args) -> bool:
    try:
        call(*args)
        return True
    except kubernetes.client.ApiException as e:
        assert e.status == 404
        return False


def test_finalizers_hold_an_object_until_removed(custom, namespace: str) -> None:
    body = widget("w1")
    body["metadata"]["finalizers"] = ["example.com/cleanup"]
    created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "widgets", body)
    deleting = custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "widgets", "w1")
    assert deleting["metadata"]["deletionTimestamp"]
    assert deleting["metadata"]["generation"] == created["metadata"]["generation"] + 1  # as BeforeDelete does
    again = custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "widgets", "w1")
    assert again["metadata"]["resourceVersion"] == deleting["metadata"]["resourceVersion"]  # idempotent
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "widgets", "w1", {"metadata": {"finalizers": None}})
    assert not exists(custom.get_namespaced_custom_object, GROUP, VERSION, namespace, "widgets", "w1")


def test_background_cascade_is_recursive(emulator, core, namespace: str) -> None:
    root = core.create_namespaced_config_map(namespace, configmap("root"))
    child = core.create_namespaced_config_map(namespace, configmap("child", owners=[root]))
    core.create_namespaced_config_map(namespace, configmap("grandchild", owners=[child]))
    core.create_namespaced_config_map(namespace, configmap("unrelated"))
    api = emulator.emulator.api
    api.gc_delay, default = 2.0, api.gc_delay  # a slow collector, so the test sees it work later
    try:
        core.delete_namespaced_config_map("root", namespace)
        # The collector works after the DELETE has returned, as a real one does (issue 9).
        assert names(core, namespace) == {"unrelated", "child", "grandchild"}
    finally:
        api.gc_delay = default
    deadline = time.monotonic() + 10
    while names(core, namespace) != {"unrelated"} and time.monotonic() < deadline:
        time.sleep(0.1)
    assert names(core, namespace) == {"unrelated"}


def test_dependents_wait_for_an_owner_held_by_finalizers(core, namespace: str) -> None:
    owner = core.create_namespaced_config_map(namespace, configmap("owner", finalizers=["example.com/x"]))
    core.create_namespaced_config_map(namespace, configmap("dependent", owners=[owner]))
    core.delete_namespaced_config_map("owner", namespace)
    assert names(core, namespace) == {"owner", "dependent"}
    core.patch_namespaced_config_map("owner", namespace, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/x"]}})
    assert settled(core, namespace) == set()


def test_a_dependent_with_another_living_owner_survives(core, namespace: str) -> None:
    first = core.create_namespaced_config_map(namespace, configmap("first"))
    second = core.create_namespaced_config_map(namespace, configmap("second"))
    core.create_namespaced_config_map(namespace, configmap("shared", owners=[first, second]))
    core.delete_namespaced_config_map("first", namespace)
    settled(core, namespace)
    shared = core.read_namespaced_config_map("shared", namespace)
    assert [ref.name for ref in shared.metadata.owner_references] == ["second"]
    core.delete_namespaced_config_map("second", namespace)
    assert settled(core, namespace) == set()


def test_foreground_deletes_dependents_first(core, namespace: str) -> None:
    owner = core.create_namespaced_config_map(namespace, configmap("owner"))
    core.create_namespaced_config_map(namespace, configmap("held", owners=[owner], finalizers=["example.com/x"], block=True))
    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Foreground")
    assert settled(core, namespace) == {"owner", "held"}
    waiting = core.read_namespaced_config_map("owner", namespace)
    assert waiting.metadata.deletion_timestamp and "foregroundDeletion" in waiting.metadata.finalizers
    core.patch_namespaced_config_map("held", namespace, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/x"]}})
    assert settled(core, namespace) == set()


def test_foreground_waits_only_for_dependents_that_block(core, namespace: str) -> None:
    owner = core.create_namespaced_config_map(namespace, configmap("owner"))
    core.create_namespaced_config_map(namespace, configmap("loose", owners=[owner], finalizers=["example.com/x"]))
    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Foreground")
    assert settled(core, namespace) == {"loose"}  # being deleted, held by its own finalizer only


def test_orphan_keeps_dependents(core, namespace: str) -> None:
    owner = core.create_namespaced_config_map(namespace, configmap("owner"))
    core.create_namespaced_config_map(namespace, configmap("orphan", owners=[owner]))
    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Orphan")
    assert names(core, namespace) == {"orphan"}
    assert not core.read_namespaced_config_map("orphan", namespace).metadata.owner_references


def test_cascade_across_kinds(api_client, custom, core, namespace: str) -> None:
    owner = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "widgets", widget("w1"))
    ref = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget", "name": "w1", "uid": owner["metadata"]["uid"],
           "controller": True, "blockOwnerDeletion": True}
    batch = kubernetes.client.BatchV1Api(api_client)
    batch.create_namespaced_job(namespace, {"metadata": {"name": "w1-trainer", "ownerReferences": [ref]}, "spec": {
        "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}})
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "widgets", "w1")
    deadline = time.monotonic() + 5
    while batch.list_namespaced_job(namespace).items and time.monotonic() < deadline:
        time.sleep(0.05)
    assert batch.list_namespaced_job(namespace).items == []


def test_precondition_mismatch_is_a_conflict(core, namespace: str) -> None:
    core.create_namespaced_config_map(namespace, configmap("cm"))
    with pytest.raises(kubernetes.client.ApiException) as error:
        core.delete_namespaced_config_map("cm", namespace, body={"preconditions": {"uid": "not-the-uid"}})
    assert error.value.status == 409


def test_deleting_a_namespace_deletes_its_contents(emulator, core, namespace: str) -> None:
    core.create_namespaced_config_map(namespace, configmap("held", finalizers=["example.com/x"]))
    core.create_namespaced_config_map(namespace, configmap("free"))
    api = emulator.emulator.api
    api.gc_delay, default = 2.0, api.gc_delay  # a slow namespace controller, so the test sees it work later
    try:
        core.delete_namespace(namespace)
        # Issue 9: emptied after the DELETE has returned, as the namespace controller does.
        terminating = core.read_namespace(namespace)
        assert terminating.status.phase == "Terminating" and names(core, namespace) == {"held", "free"}
        status, body = api_error(core.create_namespaced_config_map, namespace, {"metadata": {"name": "late"}})
        assert status == 403 and "because it is being terminated" in body["message"]
    finally:
        api.gc_delay = default
    deadline = time.monotonic() + 10
    while names(core, namespace) != {"held"} and time.monotonic() < deadline:
        time.sleep(0.1)
    assert names(core, namespace) == {"held"}
    assert core.read_namespace(namespace).status.phase == "Terminating"
    core.patch_namespaced_config_map("held", namespace, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/x"]}})
    assert not exists(core.read_namespace, namespace)


def test_delete_collection_by_label(core, namespace: str) -> None:
    for name, app in [("a", "x"), ("b", "x"), ("c", "y")]:
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name, "labels": {"app": app}}})
    core.delete_collection_namespaced_config_map(namespace, label_selector="app=x")
    assert names(core, namespace) == {"c"}
