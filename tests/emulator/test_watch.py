"""Watch streams: replay from a resourceVersion, live events, selectors, timeouts, bookmarks, 410."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator

import kubernetes
import pytest

from tuneloop.emulator import BackgroundEmulator


@contextlib.contextmanager
def watching(emulator: BackgroundEmulator, path: str, **params: str) -> Iterator[Iterator[dict]]:
    """A raw watch stream: its events as they come, until the server ends it."""
    query = urllib.parse.urlencode({"watch": "true", **params})
    with urllib.request.urlopen(f"{emulator.url}{path}?{query}", timeout=10) as response:
        yield (json.loads(line) for line in response)


def summary(events) -> list[tuple[str, str]]:
    return [(event["type"], event["object"]["metadata"].get("name", "")) for event in events]


def test_kubernetes_client_watch_replays_from_a_resource_version(core, namespace: str) -> None:
    start = core.list_namespaced_config_map(namespace).metadata.resource_version
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cm"}})
    core.patch_namespaced_config_map("cm", namespace, {"data": {"k": "v"}})
    core.delete_namespaced_config_map("cm", namespace)
    watch = kubernetes.watch.Watch()
    started = time.monotonic()
    events = [(e["type"], e["object"].metadata.name, e["object"].data)
              for e in watch.stream(core.list_namespaced_config_map, namespace, resource_version=start, timeout_seconds=1)]
    assert events == [("ADDED", "cm", None), ("MODIFIED", "cm", {"k": "v"}), ("DELETED", "cm", {"k": "v"})]
    assert 0.9 < time.monotonic() - started < 5  # timeoutSeconds ends the stream


def test_watch_without_version_starts_with_current_objects_then_follows(emulator, core, namespace: str) -> None:
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "old"}})
    with watching(emulator, f"/api/v1/namespaces/{namespace}/configmaps", timeoutSeconds="5") as events:
        assert summary([next(events)]) == [("ADDED", "old")]
        core.create_namespaced_config_map(namespace, {"metadata": {"name": "new"}})
        core.delete_namespaced_config_map("old", namespace)
        assert summary([next(events), next(events)]) == [("ADDED", "new"), ("DELETED", "old")]


def test_deleted_events_carry_a_new_resource_version(emulator, core, namespace: str) -> None:
    start = core.list_namespaced_config_map(namespace).metadata.resource_version
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cm"}})
    deleted = core.delete_namespaced_config_map("cm", namespace)
    assert deleted["status"] == "Success" and deleted["details"]["name"] == "cm"  # as a real server answers
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    with watching(emulator, path, resourceVersion=start, timeoutSeconds="0.3") as events:
        added, removed = [int(event["object"]["metadata"]["resourceVersion"]) for event in events]
    assert removed > added  # a watcher resuming from the deletion does not see it again


def test_label_selector_watch_sees_objects_enter_and_leave(emulator, core, namespace: str) -> None:
    start = core.list_namespaced_config_map(namespace).metadata.resource_version
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cm"}})
    core.patch_namespaced_config_map("cm", namespace, {"metadata": {"labels": {"app": "x"}}})
    core.patch_namespaced_config_map("cm", namespace, {"data": {"k": "v"}})
    core.patch_namespaced_config_map("cm", namespace, {"metadata": {"labels": {"app": None}}})
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    with watching(emulator, path, resourceVersion=start, labelSelector="app=x", timeoutSeconds="0.3") as events:
        assert summary(events) == [("ADDED", "cm"), ("MODIFIED", "cm"), ("DELETED", "cm")]


def test_watch_one_object_by_name(emulator, core, namespace: str) -> None:
    start = core.list_namespaced_config_map(namespace).metadata.resource_version
    for name in ("a", "b"):
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name}})
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    with watching(emulator, path, resourceVersion=start, fieldSelector="metadata.name=b", timeoutSeconds="0.3") as events:
        assert summary(events) == [("ADDED", "b")]
    with watching(emulator, f"{path}/a", resourceVersion=start, timeoutSeconds="0.3") as events:
        assert summary(events) == [("ADDED", "a")]


def test_initial_events_end_with_a_bookmark(emulator, core, namespace: str) -> None:
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "a"}})
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    params = {"sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan", "timeoutSeconds": "0.3"}
    with watching(emulator, path, **params) as events:
        received = list(events)
    assert summary(received) == [("ADDED", "a"), ("BOOKMARK", "")]
    assert received[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


@pytest.fixture(scope="module")
def forgetful() -> Iterator[BackgroundEmulator]:
    """An emulator that keeps 3 changes per resource and bookmarks quiet watches quickly."""
    with BackgroundEmulator(watch_history=3, bookmark_interval=0.2) as running:
        yield running


def test_too_old_resource_version_is_410_gone(forgetful: BackgroundEmulator) -> None:
    core = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(forgetful.kubeconfig)))
    start = core.list_namespaced_config_map("default").metadata.resource_version
    for index in range(5):
        core.create_namespaced_config_map("default", {"metadata": {"name": f"cm{index}"}})
    with watching(forgetful, "/api/v1/namespaces/default/configmaps", resourceVersion=start) as events:
        (event,) = list(events)
    assert event["type"] == "ERROR" and event["object"]["code"] == 410 and event["object"]["reason"] == "Expired"


def test_quiet_watches_get_bookmarks(forgetful: BackgroundEmulator) -> None:
    path = "/api/v1/namespaces/kube-system/configmaps"
    start = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(forgetful.kubeconfig))) \
        .list_namespaced_config_map("kube-system").metadata.resource_version
    with watching(forgetful, path, resourceVersion=start, allowWatchBookmarks="true", timeoutSeconds="0.7") as events:
        received = list(events)
    assert 1 <= len(received) <= 4 and {event["type"] for event in received} == {"BOOKMARK"}  # ~every 0.2 s
    assert received[-1]["object"]["kind"] == "ConfigMap"
    assert int(received[-1]["object"]["metadata"]["resourceVersion"]) >= 1
