"""The clients Tuneloop uses, against the emulator: a tiny kopf operator, and kmock's fault injection."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import kmock
import kopf
import kubernetes
import pytest

from tuneloop.emulator import BackgroundEmulator

from .conftest import GROUP, VERSION, widget


def wait_for(probe: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := probe():
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out; last seen: {probe()!r}")


@contextlib.contextmanager
def kopf_operator(emulator: BackgroundEmulator, namespace: str, registry: kopf.OperatorRegistry) -> Iterator[None]:
    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=emulator.url, token="emulator")

    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=kopf.run, kwargs=dict(
        registry=registry, standalone=True, namespaces=[namespace], stop_flag=stop, ready_flag=ready))
    thread.start()
    try:
        assert ready.wait(10)
        yield
    finally:
        stop.set()
        thread.join(10)


def test_kopf_operator_handles_a_custom_object(emulator, custom, core, namespace: str) -> None:
    registry = kopf.OperatorRegistry()
    deleted: list[str] = []

    @kopf.on.create(GROUP, VERSION, "widgets", registry=registry)
    def create(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        kopf.info(body, reason="Ready", message="the widget is ready")  # a k8s Event
        patch.status["phase"] = "Ready"
        patch.status["observedGeneration"] = 1

    @kopf.on.delete(GROUP, VERSION, "widgets", registry=registry)
    def delete(name: str, **_: Any) -> None:
        deleted.append(name)

    def read() -> dict:
        return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "widgets", "w1")

    with kopf_operator(emulator, namespace, registry):
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "widgets", widget("w1", size=3))
        handled = wait_for(lambda: (obj := read()).get("status", {}).get("phase") == "Ready" and obj)
        assert handled["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]
        assert handled["status"] == {"phase": "Ready", "observedGeneration": 1}  # through /status
        assert handled["metadata"]["generation"] == 1  # kopf's own writes are metadata and status
        events = lambda: core.list_namespaced_event(namespace, field_selector="involvedObject.name=w1").items
        assert wait_for(lambda: [(e.reason, e.message) for e in events()]) == [("Ready", "the widget is ready")]

        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "widgets", "w1")
        wait_for(lambda: not custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "widgets")["items"])
        assert deleted == ["w1"]  # kopf ran its handler, then removed its finalizer
    assert emulator.errors == []


def test_kmock_reactions_inject_faults(emulator, core, namespace: str) -> None:
    """Tests can still use kmock's DSL on the emulator: here, one failing PATCH."""
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cm"}})
    fault = kmock.KubernetesError(status=500, reason="InternalError", message="injected")
    emulator.call(lambda e: e["patch", kmock.resource("", "v1", "configmaps")][:1] << fault)
    with pytest.raises(kubernetes.client.ApiException) as error:
        core.patch_namespaced_config_map("cm", namespace, {"data": {"k": "v"}})
    assert error.value.status == 500
    assert core.patch_namespaced_config_map("cm", namespace, {"data": {"k": "v"}}).data == {"k": "v"}
