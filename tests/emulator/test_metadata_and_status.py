"""uid, resourceVersion, generation, creationTimestamp, generateName; the status subresource."""

from __future__ import annotations

import re

import kubernetes
import pytest

from .conftest import GROUP, VERSION, widget


def create_widget(custom: kubernetes.client.CustomObjectsApi, namespace: str, name: str, **spec) -> dict:
    return custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "widgets", widget(name, **spec))


def patch_widget(custom, namespace: str, name: str, body: dict) -> dict:
    return custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "widgets", name, body)


def patch_widget_status(custom, namespace: str, name: str, body: dict) -> dict:
    return custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "widgets", name, body)


def test_server_sets_identity_and_timestamps(custom, namespace: str) -> None:
    body = widget("w1", size=2)
    body["metadata"].update(uid="forged", resourceVersion="999", generation=7, creationTimestamp="2000-01-01T00:00:00Z")
    obj = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "widgets", body)
    meta = obj["metadata"]
    assert re.fullmatch(r"[0-9a-f-]{36}", meta["uid"]) and meta["uid"] != "forged"
    assert meta["generation"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"]) and not meta["creationTimestamp"].startswith("2000")
    assert meta["namespace"] == namespace
    assert obj["apiVersion"] == f"{GROUP}/{VERSION}" and obj["kind"] == "Widget"


def test_resource_versions_grow_globally(custom, core, namespace: str) -> None:
    w = create_widget(custom, namespace, "w1")
    cm = core.create_namespaced_config_map(namespace, {"metadata": {"name": "cm"}})
    w2 = patch_widget(custom, namespace, "w1", {"spec": {"size": 3}})
    versions = [int(w["metadata"]["resourceVersion"]), int(cm.metadata.resource_version), int(w2["metadata"]["resourceVersion"])]
    assert versions == sorted(versions) and len(set(versions)) == 3
    listed = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "widgets")
    assert int(listed["metadata"]["resourceVersion"]) >= versions[-1]


def test_generate_name(core, namespace: str) -> None:
    made = [core.create_namespaced_config_map(namespace, {"metadata": {"generateName": "job-"}}) for _ in range(3)]
    names = {cm.metadata.name for cm in made}
    assert len(names) == 3 and all(re.fullmatch(r"job-[a-z0-9]{5}", name) for name in names)


def test_generation_grows_only_with_spec_changes(custom, namespace: str) -> None:
    create_widget(custom, namespace, "w1", size=1)
    after_labels = patch_widget(custom, namespace, "w1", {"metadata": {"labels": {"a": "b"}}})
    after_status = patch_widget_status(custom, namespace, "w1", {"status": {"phase": "Running"}})
    after_spec = patch_widget(custom, namespace, "w1", {"spec": {"size": 2}})
    assert [after_labels["metadata"]["generation"], after_status["metadata"]["generation"],
            after_spec["metadata"]["generation"]] == [1, 1, 2]


def test_status_subresource_separates_spec_and_status(custom, namespace: str) -> None:
    create_widget(custom, namespace, "w1", size=1)
    # The main resource ignores status; /status ignores everything else.
    main = patch_widget(custom, namespace, "w1", {"spec": {"size": 2}, "status": {"phase": "Ignored"}})
    assert main["spec"]["size"] == 2 and "status" not in main
    status = patch_widget_status(custom, namespace, "w1", {"spec": {"size": 9}, "status": {"phase": "Running"},
                                                            "metadata": {"labels": {"ignored": "yes"}}})
    assert status["status"] == {"phase": "Running"} and status["spec"]["size"] == 2
    assert "labels" not in status["metadata"]


def test_status_is_dropped_on_create(custom, namespace: str) -> None:
    body = widget("w1")
    body["status"] = {"phase": "Forged"}
    assert "status" not in custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "widgets", body)


def test_status_put_replaces_only_status(custom, namespace: str) -> None:
    obj = create_widget(custom, namespace, "w1", size=1)
    obj["status"] = {"phase": "Done"}
    obj["spec"]["size"] = 5
    replaced = custom.replace_namespaced_custom_object_status(GROUP, VERSION, namespace, "widgets", "w1", obj)
    assert replaced["status"] == {"phase": "Done"} and replaced["spec"]["size"] == 1


def test_builtin_jobs_have_a_status_subresource(api_client, namespace: str) -> None:
    batch = kubernetes.client.BatchV1Api(api_client)
    job = {"metadata": {"name": "j"}, "spec": {"template": {"spec": {"restartPolicy": "Never",
           "containers": [{"name": "c", "image": "busybox"}]}}}}
    batch.create_namespaced_job(namespace, job)
    batch.patch_namespaced_job_status("j", namespace, {"status": {"succeeded": 1}})
    patched = batch.patch_namespaced_job("j", namespace, {"status": {"succeeded": 0}, "metadata": {"labels": {"x": "y"}}})
    assert patched.status.succeeded == 1 and patched.metadata.labels == {"x": "y"}
    assert patched.metadata.generation == 1


def test_without_status_subresource_status_is_ordinary_data(custom) -> None:
    # As in Kubernetes: without the subresource, status changes count for generation too.
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Gadget", "metadata": {"name": "g-status"}, "spec": {"a": 1}}
    custom.create_cluster_custom_object(GROUP, VERSION, "gadgets", body)
    patched = custom.patch_cluster_custom_object(GROUP, VERSION, "gadgets", "g-status", {"status": {"ok": True}})
    assert patched["status"] == {"ok": True} and patched["metadata"]["generation"] == 2
    with pytest.raises(kubernetes.client.ApiException) as error:
        custom.patch_cluster_custom_object_status(GROUP, VERSION, "gadgets", "g-status", {"status": {}})
    assert error.value.status == 404


def test_noop_writes_change_nothing(custom, namespace: str) -> None:
    created = create_widget(custom, namespace, "w1", size=1)
    same = patch_widget(custom, namespace, "w1", {"spec": {"size": 1}})
    assert same["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


def test_json_patch_with_resource_version_test(custom, http, namespace: str) -> None:
    """kopf's way of adding finalizers: a JSON patch guarded by a `test` of resourceVersion."""
    created = create_widget(custom, namespace, "w1")
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": created["metadata"]["resourceVersion"]},
           {"op": "add", "path": "/metadata/finalizers", "value": ["example.com/cleanup"]}]
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/widgets/w1"
    status, patched = http("PATCH", path, ops, "application/json-patch+json")
    assert status == 200 and patched["metadata"]["finalizers"] == ["example.com/cleanup"]
    status, error = http("PATCH", path, ops, "application/json-patch+json")
    assert status == 422 and error["reason"] == "Invalid"  # the version moved on: kopf retries later


def test_strategic_merge_patch_on_builtins(core, namespace: str) -> None:
    # The kubernetes client sends dict patches of built-in objects as strategic merge patches.
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cm", "finalizers": ["a.example.com/x"]}})
    patched = core.patch_namespaced_config_map("cm", namespace, {"metadata": {"finalizers": ["b.example.com/y"]}})
    assert patched.metadata.finalizers == ["a.example.com/x", "b.example.com/y"]
