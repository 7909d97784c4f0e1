"""Table-driven tests of the pure parts: paths, selectors, patches."""

from __future__ import annotations

import pytest

from tuneloop.emulator.patches import PatchError, json_patch, merge_patch, strategic_merge_patch
from tuneloop.emulator.paths import ApiPath, parse_api_path
from tuneloop.emulator.selection import FieldSelector, LabelSelector


@pytest.mark.parametrize("path, expected", [
    ("/version", None),
    ("/api", None),
    ("/apis", None),
    ("/api/v1", ApiPath("", "v1")),
    ("/apis/batch", ApiPath("batch")),
    ("/apis/batch/v1", ApiPath("batch", "v1")),
    ("/api/v1/namespaces", ApiPath("", "v1", "namespaces")),
    ("/api/v1/namespaces/foo", ApiPath("", "v1", "namespaces", name="foo")),
    ("/api/v1/namespaces/foo/status", ApiPath("", "v1", "namespaces", name="foo", subresource="status")),
    ("/api/v1/namespaces/ns/pods", ApiPath("", "v1", "pods", namespace="ns")),
    ("/api/v1/pods", ApiPath("", "v1", "pods")),
    ("/apis/batch/v1/namespaces/ns/jobs/j/status", ApiPath("batch", "v1", "jobs", "ns", "j", "status")),
    ("/apis/tuneloop.dev/v1alpha1/finetunejobs", ApiPath("tuneloop.dev", "v1alpha1", "finetunejobs")),
    ("/apis/kopf.dev/v1/clusterkopfpeerings/default", ApiPath("kopf.dev", "v1", "clusterkopfpeerings", name="default")),
])
def test_api_paths(path: str, expected: ApiPath | None) -> None:
    assert parse_api_path(path) == expected


@pytest.mark.parametrize("selector, labels, matches", [
    ("", {}, True),
    ("a=b", {"a": "b"}, True),
    ("a==b", {"a": "c"}, False),
    ("a!=b", {}, True),  # absent labels match `!=` and `notin`
    ("a!=b", {"a": "b"}, False),
    ("a in (x, y)", {"a": "y"}, True),
    ("a in (x,y)", {"a": "z"}, False),
    ("a notin (x,y)", {}, True),
    ("a notin (x,y)", {"a": "x"}, False),
    ("a", {"a": ""}, True),
    ("!a", {"a": "1"}, False),
    ("!a", {"b": "1"}, True),
    ("a=b,c!=d,e in (x,y),f,!g", {"a": "b", "c": "z", "e": "x", "f": "1"}, True),
    ("a=b,c!=d,e in (x,y),f,!g", {"a": "b", "c": "z", "e": "x", "f": "1", "g": "1"}, False),
    ("app.kubernetes.io/name=tuneloop", {"app.kubernetes.io/name": "tuneloop"}, True),
])
def test_label_selectors(selector: str, labels: dict[str, str], matches: bool) -> None:
    assert LabelSelector.parse(selector).matches(labels) is matches


@pytest.mark.parametrize("selector", ["a=b=c", "a in x", "=b", "a in (x", "a b"])
def test_malformed_label_selectors(selector: str) -> None:
    with pytest.raises(ValueError):
        LabelSelector.parse(selector)


@pytest.mark.parametrize("selector, matches", [
    ("metadata.name=x", True),
    ("metadata.name==x,metadata.namespace=ns", True),
    ("metadata.name!=x", False),
    ("status.phase=Running", False),
    ("status.phase=", True),  # missing fields read as ""
])
def test_field_selectors(selector: str, matches: bool) -> None:
    obj = {"metadata": {"name": "x", "namespace": "ns"}}
    assert FieldSelector.parse(selector).matches(obj) is matches


@pytest.mark.parametrize("target, patch, expected", [
    ({"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"c": None, "e": 4}}, {"a": 1, "b": {"d": 3, "e": 4}}),
    ({"a": {"b": 1}}, {"a": "scalar"}, {"a": "scalar"}),  # RFC 7386 replaces dicts by scalars...
    ({"a": "scalar"}, {"a": {"b": 1}}, {"a": {"b": 1}}),  # ... and scalars by dicts
    ({"a": [1, 2]}, {"a": [3]}, {"a": [3]}),  # lists are replaced whole
    ({"a": 1}, {"b": {"c": None}}, {"a": 1, "b": {}}),
])
def test_merge_patch(target: dict, patch: dict, expected: dict) -> None:
    original = repr(target)
    assert merge_patch(target, patch) == expected
    assert repr(target) == original  # copy-on-write: the stored object is never mutated


def test_strategic_merge_patch_merges_finalizers() -> None:
    target = {"metadata": {"finalizers": ["a", "b"]}, "spec": {"x": 1}}
    assert strategic_merge_patch(target, {"metadata": {"finalizers": ["c"]}})["metadata"]["finalizers"] == ["a", "b", "c"]
    removed = strategic_merge_patch(target, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}})
    assert removed["metadata"]["finalizers"] == ["b"]


def test_json_patch_test_failure_is_a_patch_error() -> None:
    target = {"metadata": {"resourceVersion": "5"}}
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": "4"}]
    with pytest.raises(PatchError):
        json_patch(target, ops)
    assert json_patch(target, [{"op": "add", "path": "/spec", "value": {}}]) == {**target, "spec": {}}
