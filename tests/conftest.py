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
