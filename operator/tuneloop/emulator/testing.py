"""A Kubernetes API for end-to-end tests: the real cluster in $KUBECONFIG, else the emulator.

Used by the `kube` fixture in tests/conftest.py; tests written against `KubeCluster` run
unchanged on both. Against the emulator, $KUBECONFIG points at it while the cluster is up,
so an operator under test (kopf logs in through $KUBECONFIG) finds it without flags.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
from collections.abc import Iterator
from typing import Any

import kubernetes

from tuneloop.emulator.running import BackgroundEmulator


class KubeCluster:
    def __init__(self, kubeconfig: pathlib.Path, emulator: BackgroundEmulator | None) -> None:
        self.kubeconfig = kubeconfig
        self.emulator = emulator  # None on a real cluster
        self.api_client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        self._namespaces: list[str] = []

    @property
    def emulated(self) -> bool:
        return self.emulator is not None

    def create_namespace(self, prefix: str = "tuneloop-test-", labels: dict[str, str] | None = None) -> str:
        """A new namespace with a unique name; deleted when the cluster fixture ends."""
        body: dict[str, Any] = {"metadata": {"generateName": prefix, "labels": labels or {}}}
        name = kubernetes.client.CoreV1Api(self.api_client).create_namespace(body).metadata.name
        self._namespaces.append(name)
        return name

    def delete_namespaces(self) -> None:
        core = kubernetes.client.CoreV1Api(self.api_client)
        for name in self._namespaces:
            with contextlib.suppress(kubernetes.client.ApiException):
                core.delete_namespace(name)
        self._namespaces.clear()

    def close(self) -> None:
        self.delete_namespaces()
        self.api_client.close()


@contextlib.contextmanager
def kube_cluster(crds: str | os.PathLike[str] | None = None) -> Iterator[KubeCluster]:
    """The cluster of $KUBECONFIG as it is, or an emulator serving the CRDs in `crds` (a file
    or a directory; skipped if it does not exist)."""
    configured = os.environ.get("KUBECONFIG")
    if configured:
        cluster = KubeCluster(pathlib.Path(configured.split(os.pathsep)[0]), None)
        try:
            yield cluster
        finally:
            cluster.close()
        return

    sources = [crds] if crds is not None and pathlib.Path(crds).exists() else []
    with BackgroundEmulator(crds=sources) as emulator:
        os.environ["KUBECONFIG"] = str(emulator.kubeconfig)
        cluster = KubeCluster(emulator.kubeconfig, emulator)
        try:
            yield cluster
        finally:
            cluster.close()
            os.environ.pop("KUBECONFIG", None)
