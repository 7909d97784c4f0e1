"""Lists: label and field selectors, namespaces, pagination."""

from __future__ import annotations

import kubernetes
import pytest


@pytest.fixture()
def labelled(core, namespace: str) -> str:
    for name, labels in [("a", {"app": "x", "tier": "web"}), ("b", {"app": "x", "tier": "db"}),
                         ("c", {"app": "y"}), ("d", {})]:
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name, "labels": labels}})
    return namespace


@pytest.mark.parametrize("selector, names", [
    ("", ["a", "b", "c", "d"]),
    ("app=x", ["a", "b"]),
    ("app=x,tier!=db", ["a"]),
    ("app in (x,y),!tier", ["c"]),
    ("tier", ["a", "b"]),
    ("app notin (x)", ["c", "d"]),
])
def test_label_selectors(core, labelled: str, selector: str, names: list[str]) -> None:
    listed = core.list_namespaced_config_map(labelled, label_selector=selector)
    assert [cm.metadata.name for cm in listed.items] == names


def test_field_selectors(core, labelled: str) -> None:
    assert [cm.metadata.name for cm in core.list_namespaced_config_map(labelled, field_selector="metadata.name=b").items] == ["b"]
    everywhere = core.list_config_map_for_all_namespaces(field_selector=f"metadata.namespace={labelled},metadata.name!=a")
    assert [cm.metadata.name for cm in everywhere.items] == ["b", "c", "d"]
    with pytest.raises(kubernetes.client.ApiException) as error:
        core.list_namespaced_config_map(labelled, field_selector="data.x=1")
    assert error.value.status == 400  # a real server supports only a few fields per resource


def test_lists_are_scoped_to_their_namespace(core, labelled: str) -> None:
    other = core.create_namespace({"metadata": {"generateName": "other-"}}).metadata.name
    core.create_namespaced_config_map(other, {"metadata": {"name": "z"}})
    assert [cm.metadata.name for cm in core.list_namespaced_config_map(other).items] == ["z"]
    everywhere = {(cm.metadata.namespace, cm.metadata.name) for cm in core.list_config_map_for_all_namespaces().items}
    assert {(other, "z"), (labelled, "a")} <= everywhere


def test_pagination_with_limit_and_continue(core, labelled: str) -> None:
    first = core.list_namespaced_config_map(labelled, limit=3)
    assert [cm.metadata.name for cm in first.items] == ["a", "b", "c"] and first.metadata._continue
    second = core.list_namespaced_config_map(labelled, limit=3, _continue=first.metadata._continue)
    assert [cm.metadata.name for cm in second.items] == ["d"] and not second.metadata._continue


def test_list_kind_and_version(http, labelled: str) -> None:
    status, body = http("GET", f"/api/v1/namespaces/{labelled}/configmaps")
    assert status == 200 and (body["kind"], body["apiVersion"]) == ("ConfigMapList", "v1")
    assert int(body["metadata"]["resourceVersion"]) >= max(int(i["metadata"]["resourceVersion"]) for i in body["items"])


def test_label_lists_follow_relabelling_and_deletion(core, labelled: str) -> None:
    core.patch_namespaced_config_map("c", labelled, {"metadata": {"labels": {"app": "x"}}})
    core.patch_namespaced_config_map("a", labelled, {"metadata": {"labels": {"app": None}}})
    core.delete_namespaced_config_map("b", labelled)
    listed = core.list_namespaced_config_map(labelled, label_selector="app in (x)")
    assert [cm.metadata.name for cm in listed.items] == ["c"]
