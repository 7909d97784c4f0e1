"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator

import pytest

from tuneloop.emulator.testing import KubeCluster, kube_cluster

REPO = pathlib.Path(__file__).resolve().parents[1]

# Under pytest-xdist the workers share the cores: one OpenMP (torch) thread per process, in the
# worker and in every trainer it starts (the local kubelet and the tests pass OMP_NUM_THREADS
# on). With torch's default of a thread per core, each worker's threads spin in OpenMP barriers
# waiting for cores the other worker holds: the demo took 503 s instead of 193 s.
if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(scope="session")
def kube() -> Iterator[KubeCluster]:
    """A Kubernetes API: the cluster in $KUBECONFIG as it is, else the emulator serving the
    repo's CRDs (with $KUBECONFIG pointing at it for the session). Yields `.kubeconfig`,
    `.api_client`, `.create_namespace()`, and `.emulator` (None on a real cluster)."""
    with kube_cluster(crds=REPO / "crds") as cluster:
        yield cluster


# Decided at collection, before the `kube` fixture points $KUBECONFIG at the emulator.
_REAL_CLUSTER = bool(os.environ.get("KUBECONFIG"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a real cluster, skip the tests that stand in for the Job controller and the kubelet
    (they create pods and write Job/pod status, which real controllers own there)."""
    if not _REAL_CLUSTER:
        return
    skip = pytest.mark.skip(reason="plays the Job controller/kubelet; a real cluster's own controllers own that status")
    for item in items:
        if item.get_closest_marker("plays_controllers"):
            item.add_marker(skip)
