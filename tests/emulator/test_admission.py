"""A new pod passes the API server's admission plugins, as on a real cluster (issue 9): a
missing ServiceAccount or PriorityClass refuses it with 403 and the plugins' own words, which
is what a Job controller turns into a `FailedCreate` Event."""

from __future__ import annotations

from typing import Any


def pod(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "x"}], **spec}}


def pods(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods"


def test_every_new_namespace_has_the_default_service_account(http, namespace: str) -> None:
    code, account = http("GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/default")
    assert code == 200, account
    code, created = http("POST", pods(namespace), pod("plain"))
    assert code == 201, created
    assert created["spec"]["serviceAccountName"] == "default"


def test_a_missing_service_account_refuses_the_pod(http, namespace: str) -> None:
    code, status = http("POST", pods(namespace), pod("irsa", serviceAccountName="s3-reader"))
    assert code == 403, status
    assert status["message"] == (f'pods "irsa" is forbidden: error looking up service account {namespace}/s3-reader: '
                                 'serviceaccount "s3-reader" not found')
    code, _ = http("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts",
                   {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "s3-reader"}})
    assert code == 201
    code, created = http("POST", pods(namespace), pod("irsa", serviceAccountName="s3-reader"))
    assert code == 201, created


def test_a_missing_priority_class_refuses_the_pod(http, namespace: str) -> None:
    code, status = http("POST", pods(namespace), pod("urgent", priorityClassName="training-high"))
    assert code == 403, status
    assert status["message"] == 'pods "urgent" is forbidden: no PriorityClass with name training-high was found'
    code, _ = http("POST", "/apis/scheduling.k8s.io/v1/priorityclasses",
                   {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                    "metadata": {"name": "training-high"}, "value": 1000})
    assert code == 201
    try:
        code, created = http("POST", pods(namespace), pod("urgent", priorityClassName="training-high"))
        assert code == 201, created
        assert created["spec"]["priority"] == 1000
        code, created = http("POST", pods(namespace), pod("system", priorityClassName="system-node-critical"))
        assert code == 201 and created["spec"]["priority"] == 2000001000
    finally:
        http("DELETE", "/apis/scheduling.k8s.io/v1/priorityclasses/training-high")
