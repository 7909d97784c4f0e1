"""The CRDs are structural, complete, and in step with the typed specs (both ways)."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from tuneloop.api import crds
from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.api.policy import MaintenancePolicySpec
from tuneloop.api.schema import apply_defaults
from tuneloop.api.typed import field_keys, help_text, key_of

KINDS = list(crds.KINDS)
# Where arbitrary Kubernetes objects are embedded on purpose, and where a search's values
# (a string, a number or a boolean, by the searched field) are kept.
TUNING_VALUES = {"spec.tuning.searchSpace[].choices[]"}
PRESERVED = {
    "FineTuneJob": {"spec.resources.tolerations[]", "spec.resources.affinity", *TUNING_VALUES,
                    "status.tuning.bestParams", "status.tuning.trials[].params"},
    "MaintenancePolicy": {"spec.jobTemplate.spec.resources.tolerations[]", "spec.jobTemplate.spec.resources.affinity",
                          *(f"spec.jobTemplate.{p}" for p in TUNING_VALUES)},
}


def walk(schema, path=""):
    yield path, schema
    for key, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{path}.{key}".lstrip("."))
    if "items" in schema:
        yield from walk(schema["items"], path + "[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], path + "{}")


@pytest.mark.parametrize("kind", KINDS)
def test_crd_is_structural(kind):
    preserved = set()
    for path, node in walk(crds.openapi_schema(kind)):
        assert "$ref" not in node, path
        # Structural schemas allow a type-less node only with int-or-string or preserve-unknown-fields.
        assert "type" in node or node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields"), \
            f"{path} has no type"
        if node.get("type") == "object" and "properties" in node:
            assert "additionalProperties" not in node, f"{path}: properties and additionalProperties together"
        if node.get("x-kubernetes-preserve-unknown-fields"):
            preserved.add(path)
        for rule in node.get("x-kubernetes-validations", []):
            assert rule.get("message"), f"{path}: CEL rule without a message"
    assert preserved == PRESERVED[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_crd_metadata(kind):
    crd = crds.load_crd(kind)
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == f"{names['plural']}.{crds.GROUP}"
    assert names["categories"] == ["tuneloop"]
    assert names["shortNames"] == {"FineTuneJob": ["ftj"], "MaintenancePolicy": ["mpol"]}[kind]
    (version,) = crd["spec"]["versions"]
    assert version["subresources"] == {"status": {}}
    schema = version["schema"]["openAPIV3Schema"]
    for column in version["additionalPrinterColumns"]:
        if column["jsonPath"].startswith(".metadata"):
            continue
        node = schema
        for part in column["jsonPath"].lstrip(".").split("."):
            node = node["properties"][part] if "properties" in node else node["additionalProperties"]
        assert node["type"] == column["type"] or column["type"] == "string", column


def test_every_spec_field_is_described():
    for path, node in walk(crds.openapi_schema("FineTuneJob")["properties"]["spec"]):
        if path and not path.endswith(("[]", "{}")):
            assert node.get("description"), f"spec.{path} has no description"


def schema_tree(schema):
    """The CRD's property tree in the shape of typed.field_keys."""
    tree = {}
    for key, sub in schema.get("properties", {}).items():
        node = sub["items"] if sub.get("type") == "array" else sub
        tree[key] = schema_tree(node) if "properties" in node else None
    return tree


@pytest.mark.parametrize("cls, schema", [
    (FineTuneJobSpec, lambda: crds.openapi_schema("FineTuneJob")["properties"]["spec"]),
    (MaintenancePolicySpec, lambda: crds.openapi_schema("MaintenancePolicy")["properties"]["spec"]),
])
def test_typed_spec_has_exactly_the_crd_fields(cls, schema):
    assert field_keys(cls) == schema_tree(schema())


def defaults_of(schema, path=""):
    for key, sub in schema.get("properties", {}).items():
        if "default" in sub and sub["default"] != {}:
            yield f"{path}{key}", sub["default"]
        yield from defaults_of(sub, f"{path}{key}.")


@pytest.mark.parametrize("cls, kind", [(FineTuneJobSpec, "FineTuneJob"), (MaintenancePolicySpec, "MaintenancePolicy")])
def test_crd_defaults_equal_dataclass_defaults(cls, kind):
    spec_schema = crds.openapi_schema(kind)["properties"]["spec"]
    for path, default in defaults_of(spec_schema):
        node_cls, *parts = [cls, *path.split(".")]
        for part in parts[:-1]:
            hints = typing.get_type_hints(node_cls)
            f = next(f for f in dataclasses.fields(node_cls) if key_of(f) == part)
            tp = hints[f.name]
            node_cls = next((a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)), tp)
        f = next(f for f in dataclasses.fields(node_cls) if key_of(f) == parts[-1])
        value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        assert value == default, path


def test_defaulted_spec_round_trips_through_the_typed_spec():
    schema = crds.openapi_schema("FineTuneJob")["properties"]["spec"]
    raw = {"task": "causal-lm-sft", "model": {"source": "s3://m/b"}, "dataset": {"train": "s3://d/t"},
           "output": {"uri": "s3://o/p"}, "training": {"lora": {"r": 4}, "method": "lora"},
           "storage": {"credentialsSecret": {"name": "s"}}, "env": [{"name": "A", "value": "1"}]}
    defaulted = apply_defaults(schema, raw)
    spec = FineTuneJobSpec.from_dict(defaulted)
    assert FineTuneJobSpec.from_dict(spec.to_dict()) == spec
    assert apply_defaults(schema, spec.to_dict()) == spec.to_dict()


def test_policy_job_template_is_the_finetunejob_spec():
    actual = crds.openapi_schema("MaintenancePolicy")["properties"]["spec"]["properties"]["jobTemplate"]["properties"]["spec"]
    assert actual == crds.job_template_spec_schema(), "run: python -m tuneloop.api.crds sync"


def test_every_field_has_help():
    for key, text in help_text(FineTuneJobSpec).items():
        assert text, key
