"""Errors as the kubernetes client and kopf expect them: codes, reasons, Status bodies."""

from __future__ import annotations

import json

import kubernetes
import pytest

from .conftest import GROUP, VERSION, widget


def api_error(call, *args, **kwargs) -> tuple[int, dict]:
    with pytest.raises(kubernetes.client.ApiException) as error:
        call(*args, **kwargs)
    return error.value.status, json.loads(error.value.body)


def test_missing_object_is_404_with_a_status_body(core, namespace: str) -> None:
    status, body = api_error(core.read_namespaced_config_map, "nope", namespace)
    assert status == 404
    assert body == {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure", "code": 404,
                    "reason": "NotFound", "message": 'configmaps "nope" not found',
                    "details": {"name": "nope", "group": "", "kind": "configmaps"}}


def test_unknown_resource_and_unknown_path_are_404(http) -> None:
    assert http("GET", "/apis/nope.example.com/v1/things")[0] == 404
    assert http("GET", "/api/v1/namespaces/default/nothings")[0] == 404
    assert http("GET", "/api/v1/namespaces/default/pods/p/exec")[0] == 404  # not emulated


def test_create_of_an_existing_name_is_409_already_exists(custom, namespace: str) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "widgets", widget("w1"))
    status, body = api_error(custom.create_namespaced_custom_object, GROUP, VERSION, namespace, "widgets", widget("w1"))
    assert (status, body["reason"]) == (409, "AlreadyExists")
    assert body["message"] == f'widgets.{GROUP} "w1" already exists'


def test_stale_resource_version_is_409_conflict(custom, core, namespace: str) -> None:
    created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "widgets", widget("w1", size=1))
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "widgets", "w1", {"spec": {"size": 2}})
    created["spec"]["size"] = 3  # carries the old resourceVersion
    status, body = api_error(custom.replace_namespaced_custom_object, GROUP, VERSION, namespace, "widgets", "w1", created)
    assert (status, body["reason"]) == (409, "Conflict")
    assert "the object has been modified" in body["message"]
    stale_patch = {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "spec": {"size": 4}}
    status, body = api_error(custom.patch_namespaced_custom_object, GROUP, VERSION, namespace, "widgets", "w1", stale_patch)
    assert (status, body["reason"]) == (409, "Conflict")


def test_missing_namespace_and_terminating_namespace(core, namespace: str) -> None:
    status, body = api_error(core.create_namespaced_config_map, "nowhere", {"metadata": {"name": "cm"}})
    assert (status, body["message"]) == (404, 'namespaces "nowhere" not found')
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})
    core.delete_namespace(namespace)
    status, body = api_error(core.create_namespaced_config_map, namespace, {"metadata": {"name": "late"}})
    assert (status, body["reason"]) == (403, "Forbidden")
    core.patch_namespaced_config_map("held", namespace, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/hold"]}})


@pytest.mark.parametrize("metadata, problem", [
    ({"name": "Upper"}, "metadata.name"),
    ({"name": "x" * 254}, "metadata.name"),
    ({"name": "ok", "labels": {"a": 1}}, "metadata.labels"),
    ({"name": "ok", "labels": {"a": "has space"}}, "metadata.labels"),
    ({"name": "ok", "annotations": {"a": True}}, "metadata.annotations"),
    ({}, "metadata.name: Required value"),
])
def test_invalid_metadata_is_422(http, namespace: str, metadata: dict, problem: str) -> None:
    status, body = http("POST", f"/api/v1/namespaces/{namespace}/configmaps", {"metadata": metadata})
    assert (status, body["reason"]) == (422, "Invalid")
    assert problem in body["message"]


def test_no_new_finalizers_while_deleting(core, namespace: str) -> None:
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cm", "finalizers": ["example.com/a"]}})
    core.delete_namespaced_config_map("cm", namespace)
    status, body = api_error(core.patch_namespaced_config_map, "cm", namespace, {"metadata": {"finalizers": ["example.com/b"]}})
    assert status == 422 and "no new finalizers" in body["message"]
    core.patch_namespaced_config_map("cm", namespace, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/a"]}})


def test_body_and_url_must_agree(http, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    assert http("POST", path, {"apiVersion": "v2", "kind": "ConfigMap", "metadata": {"name": "a"}})[0] == 400
    assert http("POST", path, {"kind": "Secret", "metadata": {"name": "a"}})[0] == 400
    assert http("POST", path, {"metadata": {"name": "a", "namespace": "other"}})[0] == 400
    assert http("POST", path, b"{not json")[0] == 400
    http("POST", path, {"metadata": {"name": "a"}})
    assert http("PUT", f"{path}/a", {"metadata": {"name": "b"}})[0] == 400


def test_unsupported_patch_types(http, custom, namespace: str) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "widgets", widget("w1"))
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/widgets/w1"
    # Custom resources have no strategic merge patch on a real server either.
    assert http("PATCH", path, {"spec": {}}, "application/strategic-merge-patch+json")[0] == 415
    assert http("PATCH", path, {"spec": {}}, "text/plain")[0] == 415


def test_dry_run_is_refused_rather_than_persisted(http, namespace: str) -> None:
    status, body = http("POST", f"/api/v1/namespaces/{namespace}/configmaps?dryRun=All", {"metadata": {"name": "dry"}})
    assert status == 400 and "dryRun" in body["message"]
    assert http("GET", f"/api/v1/namespaces/{namespace}/configmaps/dry")[0] == 404
