"""Publishing the champion to its promotion target, through `Kube`, against the API emulator."""

from __future__ import annotations

import copy
from typing import Any

import kopf
import pytest

from tuneloop.api.policy import MaintenancePolicySpec
from tuneloop.emulator.client import JsonApi, resource_path
from tuneloop.operator.kube import Kube
from tuneloop.operator.policy.handlers import publish
from support.manifests import maintenancepolicy, schemaless_crd

CRD = schemaless_crd("serving.example.com", "v1", "Model", "models")


def spec(target: dict) -> MaintenancePolicySpec:
    doc = copy.deepcopy(maintenancepolicy()["spec"])
    doc["promotion"]["target"] = target
    return MaintenancePolicySpec.from_dict(doc)


@pytest.fixture
def cluster(kube: Any) -> tuple[Kube, JsonApi, str]:
    api = JsonApi(kube.kubeconfig)
    namespace = kube.create_namespace()
    try:
        api.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", CRD)
    except Exception as exc:  # noqa: BLE001 - made by an earlier test in this session
        assert "409" in str(exc) or "exists" in str(exc).lower()
    return Kube(kube.api_client), api, namespace


def test_config_map_key_is_created_then_updated_and_other_keys_stay(cluster: tuple[Kube, JsonApi, str]) -> None:
    kube, api, ns = cluster
    target = spec({"type": "ConfigMap", "configMap": {"name": "serving", "key": "modelURI"}})
    publish(kube, target, ns, "s3://m/r1/final/")
    assert api.get(resource_path("v1", "configmaps", ns, "serving"))["data"] == {"modelURI": "s3://m/r1/final/"}
    api.patch(resource_path("v1", "configmaps", ns, "serving"), {"data": {"replicas": "3"}})
    publish(kube, target, ns, "s3://m/r2/final/")
    assert api.get(resource_path("v1", "configmaps", ns, "serving"))["data"] == {"modelURI": "s3://m/r2/final/", "replicas": "3"}


def test_object_field_of_a_custom_kind_is_patched_and_a_missing_object_is_retried(cluster: tuple[Kube, JsonApi, str]) -> None:
    kube, api, ns = cluster
    target = spec({"type": "ObjectField", "objectField": {"apiVersion": "serving.example.com/v1", "kind": "Model",
                                                          "name": "router", "fieldPath": "spec.source.uri"}})
    with pytest.raises(kopf.TemporaryError, match="does not exist"):
        publish(kube, target, ns, "s3://m/r1/final/")
    path = resource_path("serving.example.com/v1", "models", ns, "router")
    api.create(path.rsplit("/", 1)[0], {"apiVersion": "serving.example.com/v1", "kind": "Model", "metadata": {"name": "router"},
                                        "spec": {"source": {"uri": "s3://old/", "format": "hf"}, "replicas": 2}})
    publish(kube, target, ns, "s3://m/r1/final/")
    assert api.get(path)["spec"] == {"source": {"uri": "s3://m/r1/final/", "format": "hf"}, "replicas": 2}


def test_a_kind_the_api_server_does_not_serve_is_named(cluster: tuple[Kube, JsonApi, str]) -> None:
    kube, _, ns = cluster
    target = spec({"type": "ObjectField", "objectField": {"apiVersion": "serving.example.com/v1", "kind": "Nope",
                                                          "name": "x", "fieldPath": "spec.uri"}})
    with pytest.raises(kopf.TemporaryError, match="Nope is not served"):
        publish(kube, target, ns, "s3://m/")


def test_a_revision_the_api_server_refuses_is_remembered_for_the_next_pass_not_raised(kube: Any) -> None:
    """A 422 on create used to fail the timer before the status was written, every pass."""
    import logging

    from tuneloop.operator.builders import Owner
    from tuneloop.operator.policy.handlers import carry_out
    from tuneloop.operator.policy.model import Action, NewRevision

    ns = kube.create_namespace()
    doc = copy.deepcopy(maintenancepolicy()["spec"])
    doc["jobTemplate"]["spec"]["training"]["learningRate"] = -1.0  # the FineTuneJob CRD's minimum refuses it
    bad = MaintenancePolicySpec.from_dict(doc)
    owner, memo = Owner("router", ns, "uid-1"), kopf.Memo()
    status = carry_out(Kube(kube.api_client), kopf.Body({}), owner, bad, Action(status={"phase": "Retraining"},
                       create=(NewRevision(2, "router-r2"),)), set(), memo, logging.getLogger("test"))
    assert status == {"phase": "Retraining"}
    assert "router-r2" in memo["policy_refused"]["uid-1"] and "422" in memo["policy_refused"]["uid-1"]["router-r2"]


def test_the_policy_status_is_written_by_our_call_and_an_api_error_is_retried_not_final(kube: Any) -> None:
    """kopf's own status patch after a timer ends the timer on an API error (issue 13); ours
    raises a TemporaryError, so kopf runs the timer again."""
    from tuneloop.emulator import Fault

    ns = kube.create_namespace()
    api = JsonApi(kube.kubeconfig)
    policy = maintenancepolicy()
    policy["metadata"] = {"name": "router", "namespace": ns}
    api.create(resource_path("tuneloop.dev/v1alpha1", "maintenancepolicies", ns), policy)
    ours = Kube(kube.api_client)
    ours.patch_policy_status(ns, "router", {"phase": "Ready"})
    assert api.get(resource_path("tuneloop.dev/v1alpha1", "maintenancepolicies", ns, "router"))["status"]["phase"] == "Ready"
    if kube.emulator is None:
        return  # a real cluster: no fault injection
    kube.emulator.emulator.faults.add(Fault(method="PATCH", path=f"/namespaces/{ns}/maintenancepolicies/router/status", status=409, times=1))
    with pytest.raises(kopf.TemporaryError):
        ours.patch_policy_status(ns, "router", {"phase": "Degraded"})
    ours.patch_policy_status(ns, "router", {"phase": "Degraded"})
    assert api.get(resource_path("tuneloop.dev/v1alpha1", "maintenancepolicies", ns, "router"))["status"]["phase"] == "Degraded"
