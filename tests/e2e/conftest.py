"""End-to-end fixtures: an API (the emulator from tests/conftest.py's `kube` fixture, or a real
cluster when KUBECONFIG is set), a fresh namespace per test, the CRDs, the real operator.

Nothing here reaches into the emulator: the tests see only the Kubernetes API, and play the
Job controller and the kubelet themselves by creating pods and patching `status`.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from e2e.harness import FTJ_API, REPO, Api, ApiError, Cluster, OperatorProcess, wait_for


def _kubeconfig_of(kube: Any) -> str:
    for attr in ("kubeconfig", "kubeconfig_path", "path"):
        value = getattr(kube, attr, None)
        if value:
            return str(value)
    if isinstance(kube, (str, os.PathLike)):
        return str(kube)
    raise TypeError(f"cannot find a kubeconfig in the `kube` fixture: {kube!r}")


@pytest.fixture
def kubeconfig(request: pytest.FixtureRequest) -> str:
    try:
        # tests/conftest.py: the cluster in $KUBECONFIG, else the emulator.
        return _kubeconfig_of(request.getfixturevalue("kube"))
    except pytest.FixtureLookupError:
        if os.environ.get("KUBECONFIG"):
            return os.environ["KUBECONFIG"]
        pytest.skip("no Kubernetes API: set KUBECONFIG or provide the `kube` fixture (tests/conftest.py)")


@pytest.fixture
def api(kubeconfig: str) -> Api:
    api = Api(kubeconfig)
    for path in sorted((REPO / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        try:
            api.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        except ApiError as exc:
            if exc.status not in (404, 405, 409):  # already there, or preloaded by the emulator
                raise
    wait_for(lambda: api.get(f"/apis/{FTJ_API}"), timeout=30, what="the FineTuneJob API")
    return api


@pytest.fixture
def namespace(api: Api) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    api.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture
def faults(request: pytest.FixtureRequest, kubeconfig: str) -> Iterator[Any]:
    """The emulator's fault rules (tuneloop.emulator.faults), empty before and after the test;
    skipped on a real cluster, whose API server cannot be told to fail."""
    kube = request.getfixturevalue("kube")
    if getattr(kube, "emulator", None) is None:
        pytest.skip("injects API faults: needs the emulator")
    faults = kube.emulator.emulator.faults
    faults.clear()
    yield faults
    faults.clear()


@pytest.fixture
def operator(kubeconfig: str, namespace: str, tmp_path: Path, api: Api) -> Iterator[OperatorProcess]:
    process = OperatorProcess(kubeconfig, namespace, tmp_path)
    process.start()
    yield process
    process.stop()


@pytest.fixture
def cluster(api: Api, namespace: str) -> Cluster:
    return Cluster(api, namespace)
