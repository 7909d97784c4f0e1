"""Fixtures for the emulator's own tests: one emulator for the module, a fresh namespace per test.

The emulator is module-scoped: cheap to start (~0.1 s), and tests of one module cannot
leak cluster-scoped objects into another's.
"""

from __future__ import annotations

import copy
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest

from tuneloop.emulator import BackgroundEmulator

GROUP, VERSION = "emulator.tuneloop.dev", "v1"

# A small CRD of our own (the tests must not depend on Tuneloop's real CRDs): a status
# subresource, a default, a CEL rule, an immutable field, and a field pruned if unknown.
WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
        "versions": [{
            "name": VERSION, "served": True, "storage": True,
            "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {
                        "type": "object",
                        "x-kubernetes-validations": [{"rule": "self.size <= 10", "message": "size must be at most 10"}],
                        "properties": {
                            "size": {"type": "integer", "default": 1},
                            "color": {"type": "string", "enum": ["red", "blue"]},
                            "owner": {"type": "string", "x-kubernetes-validations": [
                                {"rule": "self == oldSelf", "message": "owner is immutable"}]},
                            "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    },
                    "status": {"type": "object", "properties": {
                        "phase": {"type": "string"},
                        "observedGeneration": {"type": "integer"},
                    }},
                },
            }},
        }],
    },
}

# Cluster-scoped and without a status subresource: status is ordinary data there.
GADGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"gadgets.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Cluster",
        "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
        "versions": [{"name": VERSION, "served": True, "storage": True, "schema": {"openAPIV3Schema": {
            "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}],
    },
}


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget", "metadata": {"name": name}, "spec": spec}


@pytest.fixture(scope="module")
def emulator() -> Iterator[BackgroundEmulator]:
    with BackgroundEmulator(crds=[copy.deepcopy(WIDGET_CRD), copy.deepcopy(GADGET_CRD)]) as running:
        yield running
        assert running.errors == []  # the emulator's own failures (500s), never API errors


@pytest.fixture(scope="module")
def api_client(emulator: BackgroundEmulator) -> Iterator[kubernetes.client.ApiClient]:
    client = kubernetes.config.new_client_from_config(config_file=str(emulator.kubeconfig))
    yield client
    client.close()


@pytest.fixture()
def core(api_client: kubernetes.client.ApiClient) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api_client)


@pytest.fixture()
def custom(api_client: kubernetes.client.ApiClient) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api_client)


@pytest.fixture()
def namespace(core: kubernetes.client.CoreV1Api) -> str:
    created = core.create_namespace({"metadata": {"generateName": "test-"}})
    return created.metadata.name


Http = Callable[..., tuple[int, Any]]


@pytest.fixture()
def http(emulator: BackgroundEmulator) -> Http:
    """Raw HTTP for what the kubernetes client does not expose (content types, error bodies)."""
    def request(method: str, path: str, body: Any = None, content_type: str = "application/json") -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(emulator.url + path, data=data, method=method, headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")
    return request
