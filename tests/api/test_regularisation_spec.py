"""training.dropout and dataset.augmentation: accepted as documented, refused with the field and the fix (issue 14)."""

from __future__ import annotations

import copy

import pytest

from tuneloop.api.finetunejob import AugmentationSpec, DropoutSpec
from tuneloop.api.validate import parse_spec, validate_manifest

from support.manifests import finetunejob

BASE = finetunejob(
    "regularised",
    model={"source": "s3://models/base"},
    dataset={"train": "s3://data/train.jsonl", "augmentation": {"factor": 2, "deletion": 0.1, "swap": 0.05}},
    output={"uri": "s3://out/regularised"},
    training={"dropout": {"all": 0.1, "classifier": 0.3}, "weightDecay": 0.01},
)


def spec_with(mutate=None) -> dict:
    doc = copy.deepcopy(BASE)
    if mutate:
        mutate(doc["spec"])
    return doc


def test_the_documented_shape_parses_into_the_typed_spec() -> None:
    spec, problems = parse_spec("FineTuneJob", spec_with()["spec"])
    assert problems == []
    assert spec.training.dropout == DropoutSpec(all=0.1, classifier=0.3)
    assert spec.dataset.augmentation == AugmentationSpec(factor=2.0, deletion=0.1, swap=0.05, insertion=0.1)
    assert validate_manifest(spec_with()).problems == []


def test_both_are_off_by_default() -> None:
    spec, problems = parse_spec("FineTuneJob", spec_with(lambda s: (s["training"].pop("dropout"), s["dataset"].pop("augmentation")))["spec"])
    assert problems == [] and spec.training.dropout is None and spec.dataset.augmentation is None


MEANING_CASES = [
    ("dropout of 1", lambda s: s["training"]["dropout"].update(hidden=1.0),
     "spec.training.dropout.hidden: 1.0 is not a probability below 1; use a value with 0 <= p < 1"),
    ("negative dropout", lambda s: s["training"]["dropout"].update(all=-0.1),
     "spec.training.dropout.all: -0.1 is not a probability below 1"),
    ("an empty dropout", lambda s: s["training"].update(dropout={}),
     "spec.training.dropout: changes nothing; set one of all, hidden, attention, classifier or remove it"),
    ("augmentation for SFT", lambda s: s.update(task="causal-lm-sft"),
     "spec.dataset.augmentation: applies to sequence-classification and regression only, not causal-lm-sft; remove it"),
    ("a zero factor", lambda s: s["dataset"]["augmentation"].update(factor=0),
     "spec.dataset.augmentation.factor: 0.0 is out of range; give 0 < factor <= 10 extra rows per training row"),
    ("a probability of 1", lambda s: s["dataset"]["augmentation"].update(deletion=1),
     "spec.dataset.augmentation.deletion: 1.0 is not a probability below 1"),
    ("every operation off", lambda s: s["dataset"]["augmentation"].update(deletion=0, swap=0, insertion=0),
     "spec.dataset.augmentation: every operation (deletion, swap, insertion) has probability 0"),
]


@pytest.mark.parametrize("name,mutate,expected", MEANING_CASES, ids=[c[0] for c in MEANING_CASES])
def test_meaning_checks_name_the_field_and_the_fix(name, mutate, expected) -> None:
    """The trainer's config loader and the operator share these checks (parse_spec)."""
    _, problems = parse_spec("FineTuneJob", spec_with(mutate)["spec"])
    assert any(str(p).startswith(expected) for p in problems), problems


@pytest.mark.parametrize("name,mutate,field", [
    ("dropout of 1", lambda s: s["training"]["dropout"].update(hidden=1.0), "spec.training.dropout.hidden"),
    ("an empty dropout", lambda s: s["training"].update(dropout={}), "spec.training.dropout"),
    ("a factor above 10", lambda s: s["dataset"]["augmentation"].update(factor=11), "spec.dataset.augmentation.factor"),
    ("augmentation for SFT", lambda s: s.update(task="causal-lm-sft"), "spec.dataset.augmentation"),
    ("every operation off", lambda s: s["dataset"]["augmentation"].update(deletion=0, swap=0, insertion=0),
     "spec.dataset.augmentation"),
])
def test_the_crd_refuses_them_too(name, mutate, field) -> None:
    """`tuneloop validate` (the CRD's schema and CEL rules as the API server applies them)."""
    problems = validate_manifest(spec_with(mutate)).problems
    assert any(p.path == field for p in problems), [str(p) for p in problems]


def test_dropout_and_augmentation_are_searchable() -> None:
    """A scalar field is a search path with no change to the tuning module; a range end out of
    bounds is blamed on the searchSpace entry before any trial runs."""
    def search(s, high):
        s["training"]["evalEverySteps"] = 5
        s["tuning"] = {"objective": {"metric": "accuracy"}, "trials": 2, "searchSpace": [
            {"path": "training.dropout.all", "low": 0.0, "high": high},
            {"path": "dataset.augmentation.factor", "low": 0.5, "high": 2.0}]}
    assert validate_manifest(spec_with(lambda s: search(s, 0.3))).problems == []
    problems = [str(p) for p in validate_manifest(spec_with(lambda s: search(s, 1.0))).problems]
    assert any(p.startswith("spec.tuning.searchSpace[0]") for p in problems), problems
