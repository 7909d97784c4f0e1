"""Discovery as kopf reads it, CRDs registered from dicts, files and the API, and their schemas."""

from __future__ import annotations

import copy
import json

import kubernetes
import pytest
import yaml

from tuneloop.emulator import load_crds

from .conftest import GROUP, VERSION, WIDGET_CRD, widget


def resources_of(http, path: str) -> dict[str, dict]:
    status, body = http("GET", path)
    assert status == 200 and body["kind"] == "APIResourceList"
    return {resource["name"]: resource for resource in body["resources"]}


def test_core_and_group_discovery(http) -> None:
    assert http("GET", "/api")[1]["versions"] == ["v1"]
    groups = {group["name"]: group for group in http("GET", "/apis")[1]["groups"]}
    assert {"batch", "coordination.k8s.io", "apiextensions.k8s.io", "events.k8s.io", "kopf.dev", GROUP} <= set(groups)
    assert groups["kopf.dev"]["preferredVersion"]["version"] == "v1"
    core = resources_of(http, "/api/v1")
    for plural in ("namespaces", "configmaps", "services", "pods", "events", "secrets", "serviceaccounts"):
        assert "list" in core[plural]["verbs"] and "watch" in core[plural]["verbs"]
    assert core["pods"]["namespaced"] and not core["namespaces"]["namespaced"] and "pods/status" in core
    assert "jobs/status" in resources_of(http, "/apis/batch/v1")
    assert "leases" in resources_of(http, "/apis/coordination.k8s.io/v1")
    assert "customresourcedefinitions" in resources_of(http, "/apis/apiextensions.k8s.io/v1")
    kopf = resources_of(http, "/apis/kopf.dev/v1")
    assert not kopf["clusterkopfpeerings"]["namespaced"] and kopf["kopfpeerings"]["namespaced"]
    assert http("GET", "/apis/nothing.example.com/v1")[0] == 404


def test_registered_crd_is_discoverable(http) -> None:
    widgets = resources_of(http, f"/apis/{GROUP}/{VERSION}")
    assert widgets["widgets"]["kind"] == "Widget" and widgets["widgets"]["shortNames"] == ["wd"]
    assert "widgets/status" in widgets and "gadgets/status" not in widgets
    crd = http("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.{GROUP}")[1]
    assert {c["type"]: c["status"] for c in crd["status"]["conditions"]} == {"NamesAccepted": "True", "Established": "True"}


def test_crd_created_and_deleted_through_the_api(api_client, http) -> None:
    crd = copy.deepcopy(WIDGET_CRD)
    crd["metadata"]["name"] = "things.other.tuneloop.dev"
    crd["spec"].update(group="other.tuneloop.dev", names={"plural": "things", "kind": "Thing"})
    extensions = kubernetes.client.ApiextensionsV1Api(api_client)
    extensions.create_custom_resource_definition(crd)
    custom = kubernetes.client.CustomObjectsApi(api_client)
    custom.create_namespaced_custom_object("other.tuneloop.dev", VERSION, "default", "things",
                                           {"apiVersion": f"other.tuneloop.dev/{VERSION}", "kind": "Thing", "metadata": {"name": "t"}})
    assert "things" in resources_of(http, f"/apis/other.tuneloop.dev/{VERSION}")
    extensions.delete_custom_resource_definition(crd["metadata"]["name"])
    assert http("GET", f"/apis/other.tuneloop.dev/{VERSION}")[0] == 404
    assert http("GET", f"/apis/other.tuneloop.dev/{VERSION}/namespaces/default/things/t")[0] == 404


def test_invalid_crds_are_rejected(http) -> None:
    crd = copy.deepcopy(WIDGET_CRD)
    crd["metadata"]["name"] = "wrong-name"
    status, body = http("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert status == 422 and "spec.names.plural" in body["message"]
    broken = [{"op": "remove", "path": "/spec/names/kind"}]
    path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.{GROUP}"
    assert http("PATCH", path, broken, "application/json-patch+json")[0] == 422
    assert "widgets" in resources_of(http, f"/apis/{GROUP}/{VERSION}")  # still served as before


def test_load_crds_from_files_and_directories(tmp_path) -> None:
    other = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ignored"}}
    (tmp_path / "both.yaml").write_text(yaml.safe_dump_all([WIDGET_CRD, other]))
    (tmp_path / "notes.txt").write_text("not yaml: [")
    assert [crd["metadata"]["name"] for crd in load_crds(tmp_path)] == [f"widgets.{GROUP}"]
    assert len(load_crds(tmp_path / "both.yaml", WIDGET_CRD)) == 2


def test_both_event_apis_accept_creates(api_client, namespace: str) -> None:
    core = kubernetes.client.CoreV1Api(api_client)
    involved = {"kind": "ConfigMap", "namespace": namespace, "name": "cm"}
    core.create_namespaced_event(namespace, {"metadata": {"generateName": "cm."}, "involvedObject": involved,
                                             "reason": "Tested", "message": "hi", "type": "Normal"})
    events = kubernetes.client.EventsV1Api(api_client)
    events.create_namespaced_event(namespace, {"metadata": {"generateName": "cm."}, "eventTime": "2025-01-01T00:00:00.000000Z",
                                               "reason": "Tested", "action": "Test", "reportingController": "t",
                                               "reportingInstance": "t", "regarding": involved, "type": "Normal"})
    found = core.list_namespaced_event(namespace, field_selector="involvedObject.name=cm,reason=Tested")
    assert len(found.items) == 1 and len(events.list_namespaced_event(namespace).items) == 1


# Schemas: what the CRD declares is what gets stored.

def create(custom, namespace: str, body: dict) -> dict:
    return custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "widgets", body)


def test_defaults_and_pruning(custom, namespace: str) -> None:
    body = widget("w1", unknown="dropped", extra={"kept": {"deep": 1}})
    body["topLevel"] = "dropped too"
    created = create(custom, namespace, body)
    assert created["spec"] == {"size": 1, "extra": {"kept": {"deep": 1}}}
    assert "topLevel" not in created
    status = custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "widgets", "w1",
                                                          {"status": {"phase": "Ready", "undeclared": True}})
    assert status["status"] == {"phase": "Ready"}  # a real server drops undeclared status fields too


@pytest.mark.parametrize("spec, message", [
    ({"size": "big"}, "spec.size"),
    ({"color": "green"}, "spec.color"),
    ({"size": 11}, "size must be at most 10"),
])
def test_schema_violations_are_422(custom, namespace: str, spec: dict, message: str) -> None:
    with pytest.raises(kubernetes.client.ApiException) as error:
        create(custom, namespace, widget("w1", **spec))
    body = json.loads(error.value.body)
    assert error.value.status == 422 and message in body["message"] and body["message"].startswith(f"Widget.{GROUP}")


def test_transition_rules_see_the_old_object(custom, namespace: str) -> None:
    create(custom, namespace, widget("w1", owner="alice"))
    with pytest.raises(kubernetes.client.ApiException) as error:
        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "widgets", "w1", {"spec": {"owner": "bob"}})
    assert error.value.status == 422 and "owner is immutable" in error.value.body
