"""Built-in objects are validated and defaulted as kube-apiserver does (issue 9): the official
OpenAPI schemas (kubernetes-validate), Job immutability and defaults, DNS-1035 Service names,
no unconditional update of a custom resource."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from .conftest import GROUP, VERSION, widget


def job(name: str = "j", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": {
        "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}, **spec}}


def jobs(namespace: str) -> str:
    return f"/apis/batch/v1/namespaces/{namespace}/jobs"


def test_a_job_gets_the_servers_defaults(http, namespace: str) -> None:
    code, created = http("POST", jobs(namespace), job(podFailurePolicy={"rules": [
        {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2]}}]}))
    assert code == 201, created
    uid, spec = created["metadata"]["uid"], created["spec"]
    assert spec["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    labels = spec["template"]["metadata"]["labels"]
    assert labels["batch.kubernetes.io/controller-uid"] == labels["controller-uid"] == uid
    assert labels["batch.kubernetes.io/job-name"] == labels["job-name"] == "j"
    assert spec["podReplacementPolicy"] == "Failed"  # with a podFailurePolicy
    assert (spec["backoffLimit"], spec["completions"], spec["parallelism"], spec["completionMode"], spec["suspend"]) == (
        6, 1, 1, "NonIndexed", False)


@pytest.mark.parametrize("body, fragment", [
    (job(backoffLimit="six"), "spec.backoffLimit"),  # the OpenAPI schema
    (job(template={"spec": {"containers": [{"image": "x"}], "restartPolicy": "Never"}}), "name"),
    (job(completionMode="Bogus"), "spec.completionMode: Unsupported value"),
    (job(completionMode="Indexed", parallelism=2), "spec.completions: Required value"),
    (job(template={"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "x"}]}},
         podFailurePolicy={"rules": []}), "spec.podFailurePolicy"),
    (job(template={"spec": {"restartPolicy": "Never", "hostname": "a.b", "containers": [{"name": "c", "image": "x"}]}}),
     "spec.template.spec.hostname"),
])
def test_invalid_jobs_are_refused(http, namespace: str, body: dict, fragment: str) -> None:
    code, status = http("POST", jobs(namespace), body)
    assert code == 422, status
    assert fragment in status["message"], status["message"]


def test_a_jobs_template_and_selector_are_immutable(http, namespace: str) -> None:
    code, created = http("POST", jobs(namespace), job())
    assert code == 201
    path = f"{jobs(namespace)}/j"
    template = copy.deepcopy(created["spec"]["template"])
    template["spec"]["containers"][0]["image"] = "y"
    code, status = http("PATCH", path, {"spec": {"template": template}}, "application/merge-patch+json")
    assert code == 422 and "spec.template: Invalid value: field is immutable" in status["message"]
    code, status = http("PATCH", path, {"spec": {"selector": {"matchLabels": {"a": "b"}}}}, "application/merge-patch+json")
    assert code == 422 and "spec.selector" in status["message"]
    code, _ = http("PATCH", path, {"spec": {"suspend": True, "activeDeadlineSeconds": 60}}, "application/merge-patch+json")
    assert code == 200  # mutable


def test_a_suspended_job_that_never_ran_may_change_its_scheduling(http, namespace: str) -> None:
    code, created = http("POST", jobs(namespace), job(suspend=True))
    template = copy.deepcopy(created["spec"]["template"])
    template["spec"]["nodeSelector"] = {"pool": "gpu"}
    code, status = http("PATCH", f"{jobs(namespace)}/j", {"spec": {"template": template}}, "application/merge-patch+json")
    assert code == 200, status


@pytest.mark.parametrize("name, ok", [("run-trainer", True), ("2run-trainer", False), ("a.b-trainer", False)])
def test_service_names_are_dns_1035_labels(http, namespace: str, name: str, ok: bool) -> None:
    code, status = http("POST", f"/api/v1/namespaces/{namespace}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": {"clusterIP": "None", "ports": [{"port": 1}]}})
    assert (code == 201) is ok, status
    if not ok:
        assert "DNS-1035" in status["message"]


def test_a_custom_resource_is_never_updated_unconditionally(custom, http, namespace: str) -> None:
    created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "widgets", widget("w1"))
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/widgets/w1"
    body = {**created, "metadata": {k: v for k, v in created["metadata"].items() if k != "resourceVersion"}}
    code, status = http("PUT", path, body)
    assert code == 422 and "must be specified for an update" in status["message"]
    code, _ = http("PUT", path, created)  # with its resourceVersion: fine
    assert code == 200


def test_built_in_objects_are_checked_against_their_schema(http, namespace: str) -> None:
    code, status = http("POST", f"/api/v1/namespaces/{namespace}/configmaps",
                        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"n": 1}})
    assert code == 422 and "data.n" in status["message"]


def pod(name: str, node: str | None = "node-1") -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "x"}], "terminationGracePeriodSeconds": 20}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def test_a_running_pod_is_deleted_gracefully_until_its_kubelet_confirms(http, namespace: str) -> None:
    pods = f"/api/v1/namespaces/{namespace}/pods"
    assert http("POST", pods, pod("p"))[0] == 201
    code, deleting = http("DELETE", f"{pods}/p")
    assert code == 200 and deleting["metadata"]["deletionTimestamp"]
    assert deleting["metadata"]["deletionGracePeriodSeconds"] == 20
    code, still = http("GET", f"{pods}/p")
    assert code == 200  # Terminating: the kubelet is stopping its containers
    assert http("PATCH", f"{pods}/p/status", {"status": {"phase": "Failed"}}, "application/merge-patch+json")[0] == 200
    assert http("GET", f"{pods}/p")[0] == 200  # a status write does not end it
    assert http("DELETE", f"{pods}/p?gracePeriodSeconds=0")[0] == 200  # the kubelet's confirmation
    assert http("GET", f"{pods}/p")[0] == 404


def test_a_pod_never_scheduled_goes_at_once(http, namespace: str) -> None:
    pods = f"/api/v1/namespaces/{namespace}/pods"
    assert http("POST", pods, pod("q", node=None))[0] == 201
    assert http("DELETE", f"{pods}/q")[0] == 200
    assert http("GET", f"{pods}/q")[0] == 404
