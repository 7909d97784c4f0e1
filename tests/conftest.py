"""Fixtures shared by every test folder."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from tuneloop.emulator.testing import KubeCluster, kube_cluster

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def kube() -> Iterator[KubeCluster]:
    """A Kubernetes API: the cluster in $KUBECONFIG as it is, else the emulator serving the
    repo's CRDs (with $KUBECONFIG pointing at it for the session). Yields `.kubeconfig`,
    `.api_client`, `.create_namespace()`, and `.emulator` (None on a real cluster)."""
    with kube_cluster(crds=REPO / "crds") as cluster:
        yield cluster


# Decided at collection, before the `kube` fixture points $KUBECONFIG at the emulator.
_REAL_CLUSTER = bool(__import__("os").environ.get("KUBECONFIG"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a real cluster, skip the tests that stand in for the Job controller and the kubelet
    (they create pods and write Job/pod status, which real controllers own there)."""
    if not _REAL_CLUSTER:
        return
    skip = pytest.mark.skip(reason="plays the Job controller/kubelet; a real cluster's own controllers own that status")
    for item in items:
        if item.get_closest_marker("plays_controllers"):
            item.add_marker(skip)
