"""The `kube` fixture of tests/conftest.py: what end-to-end tests of the operator stand on."""

from __future__ import annotations

import os

import kubernetes

from tuneloop.emulator.testing import KubeCluster


def test_kube_serves_the_repo_crds_and_makes_namespaces(kube: KubeCluster) -> None:
    core = kubernetes.client.CoreV1Api(kube.api_client)
    namespace = kube.create_namespace(prefix="fixture-")
    assert core.read_namespace(namespace).status.phase == "Active"
    if kube.emulated:
        assert os.environ["KUBECONFIG"] == str(kube.kubeconfig)  # for operators started by tests
        custom = kubernetes.client.CustomObjectsApi(kube.api_client)
        assert custom.list_namespaced_custom_object("tuneloop.dev", "v1alpha1", namespace, "finetunejobs")["items"] == []
        assert kube.emulator is not None and kube.emulator.errors == []
